"""The state store on PostgreSQL, through psycopg 3 and a psycopg_pool connection pool.

Many processes on many hosts may share one database. How the coordination maps onto it
(docs/architecture.md, "Coordination"):

* Every logical change is one READ COMMITTED transaction on a connection the calling thread
  keeps from the pool until it ends; each write is one statement that decides on the rows it
  locks (`insert ... on conflict`, `update ... where token = ...`), so no read-then-write races.
* Time is the database server's (`clock_timestamp()`), never the client's: leases' and outbox
  items' times are epoch seconds by that clock.
* A lease is claimed with `select ... for update skip locked`: a lease another holder is
  changing at that very moment counts as taken, without waiting for it. Tokens come from a
  sequence, which never hands the same one out twice.
* A fenced commit checks, just before COMMIT, that the caller's lease rows still carry its
  tokens, and locks them (`for share`) until the commit: a takeover, which must update those
  rows, waits for the commit, so nothing commits under a lease after it passed to another.
* Schema changes are numbered migrations recorded in `schema_version`, applied under a
  transaction-scoped advisory lock, so processes starting at once apply each once.

Rows keep the same column types as the SQLite store's (ISO text times, JSON as text), so that
`psabridge store copy` moves them across unchanged.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import attrs
import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.rows import dict_row

from psabridge.core import logs
from psabridge.core.errors import StoreError
from psabridge.core.models import (
    AlertTicket,
    CompanySiteMapping,
    DeviceDetails,
    DeviceMapping,
    DeviceTypeMapping,
    JournalEntry,
    Lease,
    LeaseHolder,
    OutboxItem,
    PluginState,
    StoredWarning,
    converter,
    utcnow,
)
from psabridge.core.store import (
    PLUGIN_TABLES,
    LeaseLost,
    StoreReadOnly,
    answered_in_flight,
    held_fences,
    masked_url,
)

# Text compares byte by byte, as in SQLite, whatever the database's locale: ISO times compare
# as times, and lists come out in the same order from either store.
T = 'text collate "C"'


def _v1(conn: psycopg.Connection) -> None:
    # The SQLite store's schema as of its fourth migration, in one step.
    statements = [
        f"""create table plugins (name {T} primary key, enabled integer, settings {T},
                                  updated_at {T})""",
        f"""create table company_sites (psa {T}, rmm {T}, company_id {T}, company_name {T},
                company_type {T}, site_uid {T}, site_name {T}, mapped_at {T},
                primary key (psa, rmm, company_id))""",
        "create unique index company_sites_site on company_sites (psa, rmm, site_uid)",
        f"""create table device_types (psa {T}, rmm {T}, device_type {T},
                configuration_type_id {T}, configuration_type_name {T}, mapped_at {T},
                primary key (psa, rmm, device_type))""",
        f"""create table device_configurations (psa {T}, rmm {T}, device_uid {T},
                configuration_id {T}, company_id {T}, site_uid {T}, mapped_at {T},
                primary key (psa, rmm, device_uid))""",
        # One device per configuration, enforced by the database, not only by the engine.
        """create unique index device_configurations_configuration
               on device_configurations (psa, configuration_id)""",
        # `row_order` keeps the SQLite store's order (of last save) for lists of alerts.
        f"""create table alert_tickets (psa {T}, rmm {T}, alert_uid {T}, ticket_id {T},
                state {T}, monitor {T}, device_uid {T}, opened_at {T}, updated_at {T},
                marker {T}, origin {T}, note {T}, row_order bigserial not null,
                primary key (psa, rmm, alert_uid))""",
        """create index alert_tickets_repeat
               on alert_tickets (psa, rmm, monitor, device_uid, opened_at)""",
        "create index alert_tickets_ticket on alert_tickets (psa, ticket_id)",
        f"""create table warnings (id bigserial primary key, plugin {T}, subject {T},
                message {T}, created_at {T})""",
        f"create table cursors (plugin {T}, name {T}, value {T}, primary key (plugin, name))",
        f"create table options (plugin {T}, name {T}, value {T}, primary key (plugin, name))",
        f"""create table device_details (rmm {T}, device_uid {T}, audited_at {T},
                serial_number {T}, manufacturer {T}, model {T}, primary key (rmm, device_uid))""",
        f"""create table journal (id bigserial primary key, at {T}, plugin {T}, action {T},
                target {T}, outcome {T}, detail {T})""",
        "create index journal_plugin on journal (plugin, id)",
        f"""create table leases (token bigserial primary key, name {T} not null unique,
                owner {T} not null, expires_at double precision not null,
                quiet_until double precision not null default 0)""",
        f"""create table outbox (id bigserial primary key, key {T} not null unique,
                plugin {T} not null, action {T} not null, target {T} not null,
                payload {T} not null, attempts integer not null default 0,
                due_at double precision not null, last_error {T} not null default '',
                created_at {T} not null)""",
        "create index outbox_due on outbox (due_at)",
        f"create table webhook_messages (id {T} primary key, received_at double precision)",
        "create index webhook_messages_received on webhook_messages (received_at)",
    ]
    for statement in statements:
        conn.execute(statement)


MIGRATIONS: list[Callable[[psycopg.Connection], None]] = [_v1]
SCHEMA_VERSION = len(MIGRATIONS)

# Seconds after which the server ends a session that sits idle in a transaction.
IDLE_IN_TRANSACTION = 120

# Any fixed number: the key of the advisory lock that serialises migrations.
MIGRATION_LOCK = 0x70736162  # "psab"

# The database server's clock, in Unix seconds (as the SQLite store keeps its times).
NOW = "extract(epoch from clock_timestamp())::double precision"

# Which column names the plugin a row belongs to, per table.
_OWNER_COLUMNS = {
    "plugins": ("name",),
    "company_sites": ("psa", "rmm"),
    "device_types": ("psa", "rmm"),
    "device_configurations": ("psa", "rmm"),
    "alert_tickets": ("psa", "rmm"),
    "warnings": ("plugin",),
    "cursors": ("plugin",),
    "options": ("plugin",),
    "device_details": ("rmm",),
    "outbox": ("plugin",),
}
assert set(_OWNER_COLUMNS) == set(PLUGIN_TABLES)

# Each table's order for `table_rows` (the order rows were added in, as SQLite's rowid gives),
# and the columns only this store keeps.
_ROW_ORDER = {"warnings": "id", "journal": "id", "outbox": "id", "leases": "token",
              "alert_tickets": "row_order"}
_OWN_COLUMNS = {"row_order"}
# The serial columns `insert_rows` moves past the rows it copies in.
_SERIALS = {"warnings": "id", "journal": "id", "outbox": "id", "leases": "token",
            "alert_tickets": "row_order"}


def explain_connect_error(exc: psycopg.Error, shown: str) -> StoreError:
    """What a failed connection means to the admin, in one line that names what to fix."""
    text = str(exc).strip()
    # libpq says `connection failed: connection to server at "H", port P failed: FATAL:  why`,
    # then a hint on a line of its own: the why is what the admin needs.
    first = text.splitlines()[0].rsplit(" failed: ", 1)[-1] if text else type(exc).__name__
    first = first.removeprefix("FATAL:").strip()
    lowered = text.lower()
    state = getattr(exc, "sqlstate", None)
    if state == "3D000" or ("database" in lowered and "does not exist" in lowered):
        return StoreError(f"cannot open the store {shown}: {first}; create it (createdb, or "
                          "CREATE DATABASE) or correct the database name in the URL")
    if state in ("28P01", "28000") or "authentication failed" in lowered \
            or "no password supplied" in lowered or ("role" in lowered and "does not exist" in lowered):
        return StoreError(f"cannot open the store {shown}: the server refused the user or password "
                          f"({first}); correct them in the URL (or in ~/.pgpass / PGPASSWORD)")
    if "refused" in lowered or "timeout" in lowered or "resolve host" in lowered \
            or "translate host" in lowered \
            or "no route" in lowered or "unreachable" in lowered or "could not connect" in lowered:
        return StoreError(f"cannot reach the PostgreSQL server of the store {shown} ({first}); "
                          "check the host and port in the URL and that the server is running")
    return StoreError(f"cannot open the store {shown}: {first}")


@attrs.define
class _Transaction:
    """The calling thread's open transaction: its connection and how deeply calls nest."""

    conn: psycopg.Connection | None = None
    depth: int = 0


class PostgresStore:
    """The store; any number of threads may use one. A thread borrows a connection from the
    pool for each read, and keeps one for the length of each transaction."""

    def __init__(self, url: str, pool_size: int = 20, connect_timeout: float = 10.0,
                 pool_timeout: float = 30.0, lock_timeout: float = 10.0):
        self.url = url
        self.shown = masked_url(url)
        # A password given in the URL is masked in every log line, as the connectors' secrets are.
        logs.register_secret(urlsplit(url).password)
        self.read_only: str | None = None
        self.pool_timeout = pool_timeout
        self.lock_timeout = lock_timeout  # seconds a write waits for rows another has locked
        self._connect_timeout = connect_timeout
        # Named in pg_stat_activity, so that a DBA sees whose sessions these are.
        self._options = {"autocommit": True, "connect_timeout": max(1, int(connect_timeout))}
        try:
            given = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise StoreError(f"the store URL {self.shown} is not a valid PostgreSQL URL "
                             f"({_first_line(exc)}); it takes the form "
                             "postgresql://USER@HOST[:PORT]/DATABASE") from None
        if "application_name" not in given:
            self._options["application_name"] = "psabridge"
        self._local = threading.local()
        self._pool: psycopg_pool.ConnectionPool | None = None
        # A first connection of our own: its errors say what is wrong (the pool's would only
        # time out), and it runs the migrations before any other is opened.
        conn = self._connect()
        try:
            self._migrate(conn)
            self.read_only = self._why_read_only(conn)
        except pg_errors.InsufficientPrivilege as exc:
            raise StoreError(
                f"cannot open the store {self.shown}: {_first_line(exc)}; its tables are created "
                "(or upgraded) on first use: let the URL's user create tables in the database "
                "(GRANT CREATE ON SCHEMA public), or run psabridge once as the database's owner"
            ) from exc
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the store {self.shown}: {_first_line(exc)}") from exc
        finally:
            conn.close()
        self._pool = psycopg_pool.ConnectionPool(
            url, min_size=1, max_size=pool_size, timeout=pool_timeout, open=False,
            kwargs=self._options,
            configure=self._configure, check=psycopg_pool.ConnectionPool.check_connection,
            name="psabridge-store")
        self._pool.open(wait=False)

    # -- plumbing ---------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self.url, **self._options)
        except psycopg.Error as exc:
            raise explain_connect_error(exc, self.shown) from None
        self._configure(conn)
        return conn

    def _configure(self, conn: psycopg.Connection) -> None:
        # A write waits for rows another transaction holds for a bounded time, as SQLite's busy
        # timeout bounds a wait for its write lock. A session left in a transaction (its
        # process stopped with SIGSTOP, a frozen VM) is ended by the server, so that the rows
        # it locked, leases included, do not stay locked for ever. Our transactions never
        # wait on anything but the database.
        conn.execute(f"set lock_timeout = {int(self.lock_timeout * 1000)}")
        conn.execute(f"set idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION * 1000}")

    @staticmethod
    def _schema_version(conn: psycopg.Connection) -> int:
        if conn.execute("select to_regclass('schema_version')").fetchone()[0] is None:
            return 0
        return conn.execute("select coalesce(max(version), 0) from schema_version").fetchone()[0]

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the store {self.shown} has schema version {version}, written by a newer "
                f"psabridge (this one knows up to {SCHEMA_VERSION}); upgrade psabridge to use it")

    def _migrate(self, conn: psycopg.Connection) -> None:
        # Read first without the lock: opening an up-to-date store takes no lock, writes nothing.
        version = self._schema_version(conn)
        self._refuse_newer(version)
        if version == SCHEMA_VERSION:
            return
        with conn.transaction():
            # Another process's migration may take a while on a busy server: wait for it.
            conn.execute("set local lock_timeout = '120s'")
            conn.execute("select pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            # Read again under the lock: another process may have migrated meanwhile.
            conn.execute("""create table if not exists schema_version (
                                version integer primary key,
                                applied_at timestamptz not null default now())""")
            version = self._schema_version(conn)
            self._refuse_newer(version)
            for number in range(version, SCHEMA_VERSION):
                MIGRATIONS[number](conn)
                conn.execute("insert into schema_version (version) values (%s)", (number + 1,))

    @staticmethod
    def _why_read_only(conn: psycopg.Connection) -> str | None:
        in_recovery, read_only = conn.execute(
            "select pg_is_in_recovery(), current_setting('transaction_read_only')").fetchone()
        if in_recovery:
            return "the server is a standby"
        if read_only == "on":
            return "the server's transactions are read-only"
        return None

    def _read_only_error(self, why: str) -> StoreReadOnly:
        return StoreReadOnly(f"the store {self.shown} is read-only ({why}): nothing was written; "
                             "point --db at a server (the primary) and database that accept writes")

    def _state(self) -> _Transaction:
        state = getattr(self._local, "transaction", None)
        if state is None:
            state = self._local.transaction = _Transaction()
        return state

    def _getconn(self) -> psycopg.Connection:
        if self._pool is None or self._pool.closed:
            raise StoreError(f"the store {self.shown} is closed")
        try:
            return self._pool.getconn()
        except psycopg_pool.PoolTimeout as exc:
            # The pool may be waiting for connections it cannot make: say why, if so.
            try:
                self._connect().close()
            except StoreError as explained:
                raise explained from exc
            raise StoreError(
                f"the store {self.shown} is busy: no connection to it came free within "
                f"{self.pool_timeout:g} s; if the server is overloaded, let it catch up") from exc

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """The thread's transaction's connection, or one borrowed from the pool for a read."""
        state = self._state()
        if state.conn is not None:
            yield state.conn
            return
        conn = self._getconn()
        try:
            yield conn
        finally:
            self._pool.putconn(conn)

    def _query(self, sql: str, params=(), rows=None) -> list:
        try:
            with self._connection() as conn:
                cursor = conn.cursor(row_factory=rows) if rows else conn.cursor()
                return cursor.execute(sql, params).fetchall()
        except psycopg.OperationalError as exc:
            raise StoreError(f"cannot read the store {self.shown}: {_first_line(exc)}") from exc

    def _one(self, sql: str, params=(), rows=None):
        found = self._query(sql, params, rows)
        return found[0] if found else None

    @contextmanager
    def transaction(self, fenced: bool = True) -> Iterator[None]:
        """One logical change: nested calls join the outermost transaction.

        A `fenced` transaction commits only while every lease the caller holds is still its
        holder's (`psabridge.core.store.held_fences`): a holder that lost its lease cannot
        write over the next holder's work."""
        if self.read_only:
            raise self._read_only_error(self.read_only)
        state = self._state()
        if state.conn is not None:
            state.depth += 1
            try:
                yield
            finally:
                state.depth -= 1
            return
        conn = self._getconn()
        state.conn, state.depth = conn, 1
        answered: list = []
        committed = False
        try:
            try:
                conn.execute("begin isolation level read committed")
                if fenced:
                    self._check_fences(conn, lock=False)  # early: no work done for nothing
                answered = self._clear_answered(conn)
            except psycopg.Error as exc:
                raise self._write_error(exc) from exc
            yield
            try:
                if fenced:
                    self._check_fences(conn, lock=True)
                conn.execute("commit")
            except psycopg.Error as exc:
                raise self._write_error(exc) from exc
            committed = True
        finally:
            state.conn, state.depth = None, 0
            if not committed:
                self._still_answered(answered)
                self._roll_back(conn)
            self._pool.putconn(conn)

    @staticmethod
    def _roll_back(conn: psycopg.Connection) -> None:
        if conn.closed or conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            return
        try:
            conn.execute("rollback")
        except psycopg.Error:
            pass  # the error being raised says more; the pool discards a broken connection

    def _write_error(self, exc: psycopg.Error) -> StoreError:
        if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
            return self._read_only_error("the server refuses writes")
        if isinstance(exc, pg_errors.LockNotAvailable):
            return StoreError(
                f"the store {self.shown} is busy: another process has held rows this change "
                f"needs for over {self.lock_timeout:g} s; if a psabridge sync or server is "
                "using it, let it finish (or stop it if it hangs) and try again")
        return StoreError(f"cannot write to the store {self.shown}: {_first_line(exc)}")

    def _check_fences(self, conn: psycopg.Connection, lock: bool) -> None:
        fences = held_fences()
        if not fences:
            return
        names = [lease.name for lease in fences]
        tokens = [lease.token for lease in fences]
        # `for share` holds the rows until COMMIT: a takeover (an update of them) waits for it.
        found = {row[0] for row in conn.execute(
            f"""select token from leases where (name, token) in
                  (select * from unnest(%s::text[], %s::bigint[]))
                {'for share' if lock else ''}""", (names, tokens)).fetchall()}
        for lease in fences:
            if lease.token not in found:
                raise LeaseLost(lease)

    def _clear_answered(self, conn: psycopg.Connection) -> list:
        """Clear, in the transaction just begun, the in-flight marks of writes answered since
        (`psabridge.core.store.answered_in_flight`): the holders whose marks it clears."""
        answered = answered_in_flight(self)
        if not answered:
            return []
        for held in answered:
            held.answered = False
            held.in_flight_until = 0.0  # the next write marks again
        try:
            conn.execute("update leases set quiet_until = 0 where token = any(%s)",
                         ([held.lease.token for held in answered],))
        except BaseException:
            self._still_answered(answered)
            raise
        return answered

    @staticmethod
    def _still_answered(answered: list) -> None:
        """The transaction that was to clear these marks was rolled back: the next one does."""
        for held in answered:
            held.answered = True

    def _write(self, sql: str, params=(), conflict: str = "", fenced: bool = True,
               fetch: bool = False):
        """Run one write in a transaction: its rows if `fetch`, else how many it changed.
        `conflict` explains a uniqueness violation."""
        # Inside a caller's transaction, a refused write must not abort the whole of it (as
        # PostgreSQL does after any error): one that may be refused runs in a savepoint.
        nested = self._state().conn is not None
        guarded = bool(conflict) and nested
        # A statement is atomic on its own: one with no fence to check and no in-flight mark
        # to clear runs without a transaction around it, one round trip instead of three.
        alone = not nested and not (fenced and held_fences()) and not answered_in_flight(self)
        if alone and self.read_only:
            raise self._read_only_error(self.read_only)
        try:
            with contextlib.nullcontext() if alone else self.transaction(fenced), \
                    self._connection() as conn:
                if guarded:
                    conn.execute("savepoint psabridge_write")
                try:
                    cursor = conn.execute(sql, params)
                except psycopg.Error:
                    if guarded:
                        conn.execute("rollback to savepoint psabridge_write")
                    raise
                if guarded:
                    conn.execute("release savepoint psabridge_write")
                return cursor.fetchall() if fetch else cursor.rowcount
        except pg_errors.UniqueViolation as exc:
            raise StoreError(conflict or f"the store refused a write: {_first_line(exc)}") from exc
        except psycopg.Error as exc:
            raise self._write_error(exc) from exc

    def _execute(self, sql: str, params=()) -> psycopg.Cursor:
        """A statement inside the thread's open transaction."""
        try:
            with self._connection() as conn:
                return conn.execute(sql, params)
        except psycopg.Error as exc:
            raise self._write_error(exc) from exc

    def tables(self) -> list[str]:
        return [row[0] for row in self._query(
            """select table_name from information_schema.tables
               where table_schema = current_schema() and table_name <> 'schema_version'
               order by table_name""")]

    def table_rows(self, table: str) -> Iterator[dict]:
        if table not in self.tables():
            raise StoreError(f"the store {self.shown} has no table {table!r}")
        order = _ROW_ORDER.get(table)
        if order is None:
            order = ", ".join(self._primary_key(table))
        rows = self._query(f'select * from "{table}" order by {order}', rows=dict_row)
        return iter([{k: v for k, v in row.items() if k not in _OWN_COLUMNS} for row in rows])

    def _primary_key(self, table: str) -> list[str]:
        return [row[0] for row in self._query(
            """select a.attname from pg_index i
               join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
               where i.indrelid = %s::regclass and i.indisprimary
               order by array_position(i.indkey, a.attnum)""", (table,))]

    def replace_rows(self, table: str, rows: list[dict]) -> None:
        """Replace a table's rows with `rows`, exactly as given (their ids included), in the
        caller's transaction: how `psabridge store copy` fills a store. The serial counters
        move past the ids added, so that none is handed out twice."""
        types = dict(self._query("""select column_name, data_type from information_schema.columns
                                    where table_schema = current_schema() and table_name = %s""",
                                 (table,)))
        if not types:
            raise StoreError(f"the store {self.shown} has no table {table!r}")
        columns = [c for c in (rows[0] if rows else ()) if c in types]
        names = ", ".join(f'"{c}"' for c in columns)
        marks = ", ".join(["%s"] * len(columns))
        with self.transaction(fenced=False), self._connection() as conn:
            conn.execute(f'delete from "{table}"')
            if rows:
                with conn.cursor() as cursor:
                    cursor.executemany(f'insert into "{table}" ({names}) values ({marks})',
                                       [tuple(_as(types[c], row[c]) for c in columns)
                                        for row in rows])
            serial = _SERIALS.get(table)
            if serial:
                conn.execute(f"""select setval(pg_get_serial_sequence('{table}', '{serial}'),
                                     coalesce((select max("{serial}") from "{table}"), 0) + 1,
                                     false)""")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    # -- plugin state -----------------------------------------------------------------------

    def plugin_state(self, name: str) -> PluginState | None:
        row = self._one("select name, enabled, settings from plugins where name = %s", (name,))
        if row is None:
            return None
        return PluginState(name=row[0], enabled=bool(row[1]), settings=json.loads(row[2] or "{}"))

    def plugin_states(self) -> list[PluginState]:
        rows = self._query("select name, enabled, settings from plugins order by name")
        return [PluginState(name=name, enabled=bool(enabled), settings=json.loads(settings or "{}"))
                for name, enabled, settings in rows]

    def save_settings(self, name: str, settings: dict[str, str]) -> None:
        self._write(
            """insert into plugins (name, enabled, settings, updated_at) values (%s, 0, %s, %s)
               on conflict (name) do update set settings = excluded.settings,
               updated_at = excluded.updated_at""",
            (name, json.dumps(settings, sort_keys=True), utcnow().isoformat()))

    def set_enabled(self, name: str, enabled: bool) -> None:
        self._write(
            """insert into plugins (name, enabled, settings, updated_at) values (%s, %s, '{}', %s)
               on conflict (name) do update set enabled = excluded.enabled""",
            (name, int(enabled), utcnow().isoformat()))

    def purge_plugin(self, name: str) -> dict[str, int]:
        deleted = {}
        with self.transaction():
            for table, columns in _OWNER_COLUMNS.items():
                where = " or ".join(f"{column} = %(name)s" for column in columns)
                deleted[table] = self._execute(f"delete from {table} where {where}",
                                               {"name": name}).rowcount
        return deleted

    # -- mappings ---------------------------------------------------------------------------

    def save_company_mapping(self, mapping: CompanySiteMapping) -> None:
        self._write(
            """insert into company_sites
               (psa, rmm, company_id, company_name, company_type, site_uid, site_name, mapped_at)
               values (%(psa)s, %(rmm)s, %(company_id)s, %(company_name)s, %(company_type)s,
                       %(site_uid)s, %(site_name)s, %(mapped_at)s)
               on conflict (psa, rmm, company_id) do update set
                 company_name = excluded.company_name, company_type = excluded.company_type,
                 site_uid = excluded.site_uid, site_name = excluded.site_name,
                 mapped_at = excluded.mapped_at""",
            {**converter.unstructure(mapping), "mapped_at": utcnow().isoformat()},
            conflict=f"site {mapping.site_name} is already mapped to another company; unmap it first")

    def delete_company_mapping(self, psa: str, rmm: str, company_id: str) -> bool:
        return self._write("delete from company_sites where psa = %s and rmm = %s and company_id = %s",
                           (psa, rmm, company_id)) > 0

    def company_mappings(self, psa: str, rmm: str) -> list[CompanySiteMapping]:
        return self._rows(CompanySiteMapping, "company_sites", psa, rmm, "company_name")

    def company_mapping_of_site(self, psa: str, rmm: str, site_uid: str) -> CompanySiteMapping | None:
        return self._row(CompanySiteMapping, "company_sites", psa, rmm, site_uid=site_uid)

    def save_device_type_mapping(self, mapping: DeviceTypeMapping) -> None:
        self._write(
            """insert into device_types
               (psa, rmm, device_type, configuration_type_id, configuration_type_name, mapped_at)
               values (%(psa)s, %(rmm)s, %(device_type)s, %(configuration_type_id)s,
                       %(configuration_type_name)s, %(mapped_at)s)
               on conflict (psa, rmm, device_type) do update set
                 configuration_type_id = excluded.configuration_type_id,
                 configuration_type_name = excluded.configuration_type_name,
                 mapped_at = excluded.mapped_at""",
            {**converter.unstructure(mapping), "mapped_at": utcnow().isoformat()})

    def device_type_mappings(self, psa: str, rmm: str) -> list[DeviceTypeMapping]:
        return self._rows(DeviceTypeMapping, "device_types", psa, rmm, "device_type")

    def save_device_mapping(self, mapping: DeviceMapping) -> None:
        self._write(
            """insert into device_configurations
               (psa, rmm, device_uid, configuration_id, company_id, site_uid, mapped_at)
               values (%(psa)s, %(rmm)s, %(device_uid)s, %(configuration_id)s, %(company_id)s,
                       %(site_uid)s, %(mapped_at)s)
               on conflict (psa, rmm, device_uid) do update set
                 configuration_id = excluded.configuration_id, company_id = excluded.company_id,
                 site_uid = excluded.site_uid, mapped_at = excluded.mapped_at""",
            {**converter.unstructure(mapping), "mapped_at": utcnow().isoformat()},
            conflict=f"configuration {mapping.configuration_id} is already mapped to another "
            "device (one device per configuration); unmap that device first")

    def delete_device_mapping(self, psa: str, rmm: str, device_uid: str) -> bool:
        return self._write(
            "delete from device_configurations where psa = %s and rmm = %s and device_uid = %s",
            (psa, rmm, device_uid)) > 0

    def device_mappings(self, psa: str, rmm: str) -> list[DeviceMapping]:
        return self._rows(DeviceMapping, "device_configurations", psa, rmm, "device_uid")

    def device_mapping(self, psa: str, rmm: str, device_uid: str) -> DeviceMapping | None:
        return self._row(DeviceMapping, "device_configurations", psa, rmm, device_uid=device_uid)

    def device_mappings_of(self, plugin: str) -> list[DeviceMapping]:
        rows = self._query("select * from device_configurations where psa = %s or rmm = %s "
                           "order by device_uid", (plugin, plugin), rows=dict_row)
        return [_structure(DeviceMapping, row) for row in rows]

    def _row(self, cls, table: str, psa: str, rmm: str, **key: str):
        [(column, value)] = key.items()
        row = self._one(f"select * from {table} where psa = %s and rmm = %s and {column} = %s",
                        (psa, rmm, value), rows=dict_row)
        return None if row is None else _structure(cls, row)

    def _rows(self, cls, table: str, psa: str, rmm: str, order_by: str):
        rows = self._query(f"select * from {table} where psa = %s and rmm = %s order by {order_by}",
                           (psa, rmm), rows=dict_row)
        return [_structure(cls, row) for row in rows]

    # -- audit cache ------------------------------------------------------------------------

    def device_details(self, rmm: str, device_uid: str):
        row = self._one("""select audited_at, serial_number, manufacturer, model from device_details
                           where rmm = %s and device_uid = %s""", (rmm, device_uid))
        if row is None:
            return None
        audited_at, serial, manufacturer, model = row
        return dt.datetime.fromisoformat(audited_at), DeviceDetails(serial, manufacturer, model)

    def save_device_details(self, rmm, device_uid, audited_at, details) -> None:
        self._write(
            """insert into device_details
               (rmm, device_uid, audited_at, serial_number, manufacturer, model)
               values (%s, %s, %s, %s, %s, %s)
               on conflict (rmm, device_uid) do update set audited_at = excluded.audited_at,
                 serial_number = excluded.serial_number, manufacturer = excluded.manufacturer,
                 model = excluded.model""",
            (rmm, device_uid, audited_at.isoformat(), details.serial_number,
             details.manufacturer, details.model))

    # -- warnings, cursors, options, journal ------------------------------------------------

    def add_warning(self, plugin: str, subject: str, message: str) -> StoredWarning:
        at = utcnow()
        [(warning_id,)] = self._write(
            """insert into warnings (plugin, subject, message, created_at)
               values (%s, %s, %s, %s) returning id""",
            (plugin, subject, message, at.isoformat()), fetch=True)
        return StoredWarning(plugin, subject, message, id=warning_id, created_at=at)

    def warnings(self, plugin: str | None = None) -> list[StoredWarning]:
        if plugin:
            rows = self._query("select * from warnings where plugin = %s order by id", (plugin,),
                               rows=dict_row)
        else:
            rows = self._query("select * from warnings order by id", rows=dict_row)
        return [_structure(StoredWarning, row) for row in rows]

    def clear_warnings(self, plugin: str | None = None) -> int:
        if plugin:
            return self._write("delete from warnings where plugin = %s", (plugin,))
        return self._write("delete from warnings")

    def cursor(self, plugin: str, name: str) -> str | None:
        row = self._one("select value from cursors where plugin = %s and name = %s", (plugin, name))
        return row[0] if row else None

    def set_cursor(self, plugin: str, name: str, value: str) -> None:
        self._write("""insert into cursors (plugin, name, value) values (%s, %s, %s)
                       on conflict (plugin, name) do update set value = excluded.value""",
                    (plugin, name, value))

    def option(self, plugin: str, name: str):
        row = self._one("select value from options where plugin = %s and name = %s", (plugin, name))
        return json.loads(row[0]) if row else None

    def set_option(self, plugin: str, name: str, value) -> None:
        self._write("""insert into options (plugin, name, value) values (%s, %s, %s)
                       on conflict (plugin, name) do update set value = excluded.value""",
                    (plugin, name, json.dumps(value)))

    def record(self, entry: JournalEntry) -> JournalEntry:
        at = entry.at or utcnow()
        # Not fenced: what was done on a remote system is recorded whoever did it.
        [(entry_id,)] = self._write(
            """insert into journal (at, plugin, action, target, outcome, detail)
               values (%s, %s, %s, %s, %s, %s) returning id""",
            (at.isoformat(), entry.plugin, entry.action, entry.target, entry.outcome,
             json.dumps(dict(entry.detail), sort_keys=True, default=str)),
            fenced=False, fetch=True)
        return JournalEntry(entry.plugin, entry.action, entry.target, entry.outcome, entry.detail,
                            id=entry_id, at=at)

    def journal(self, plugin: str | None = None) -> list[JournalEntry]:
        if plugin:
            rows = self._query("select * from journal where plugin = %s order by id", (plugin,),
                               rows=dict_row)
        else:
            rows = self._query("select * from journal order by id", rows=dict_row)
        return [_structure(JournalEntry, {**row, "detail": json.loads(row["detail"])})
                for row in rows]

    # -- tickets ----------------------------------------------------------------------------

    def alert_ticket(self, psa: str, rmm: str, alert_uid: str) -> AlertTicket | None:
        row = self._one("select * from alert_tickets where psa = %s and rmm = %s and alert_uid = %s",
                        (psa, rmm, alert_uid), rows=dict_row)
        return _structure(AlertTicket, row) if row else None

    def save_alert_ticket(self, entry: AlertTicket) -> AlertTicket:
        now = utcnow()
        entry = attrs.evolve(entry, opened_at=entry.opened_at or now, updated_at=now)
        values = converter.unstructure(entry)
        columns = ", ".join(values)
        updates = ", ".join(f"{c} = excluded.{c}" for c in values
                            if c not in ("psa", "rmm", "alert_uid"))
        # A save moves the row to the end of the list, as SQLite's `insert or replace` does.
        self._write(
            f"""insert into alert_tickets ({columns})
                values ({', '.join(f'%({c})s' for c in values)})
                on conflict (psa, rmm, alert_uid) do update set {updates},
                  row_order = nextval(pg_get_serial_sequence('alert_tickets', 'row_order'))""",
            values)
        return entry

    def alert_tickets(self, psa: str, rmm: str, states: tuple[str, ...] = (),
                      ticket_id: str | None = None) -> list[AlertTicket]:
        where, params = ["psa = %s", "rmm = %s"], [psa, rmm]
        if states:
            where.append("state = any(%s)")
            params.append(list(states))
        if ticket_id is not None:
            where.append("ticket_id = %s")
            params.append(ticket_id)
        rows = self._query(f"select * from alert_tickets where {' and '.join(where)} "
                           "order by row_order", params, rows=dict_row)
        return [_structure(AlertTicket, row) for row in rows]

    def latest_ticket_for(self, psa: str, rmm: str, monitor: str, device_uid: str,
                          since: dt.datetime) -> AlertTicket | None:
        """The newest ticketed alert of this monitor on this device opened at or after `since`."""
        row = self._one(
            """select * from alert_tickets where psa = %s and rmm = %s and monitor = %s
                 and device_uid = %s and opened_at >= %s and ticket_id is not null
               order by opened_at desc limit 1""",
            (psa, rmm, monitor, device_uid, since.isoformat()), rows=dict_row)
        return _structure(AlertTicket, row) if row else None

    def message_seen(self, message_id: str) -> bool:
        return self._one("select 1 from webhook_messages where id = %s", (message_id,)) is not None

    def remember_message(self, message_id: str, keep_seconds: float = 7 * 86400) -> None:
        """Record a webhook message as processed, and forget those older than `keep_seconds`."""
        with self.transaction():
            self._execute(f"delete from webhook_messages where received_at < {NOW} - %s",
                          (keep_seconds,))
            self._execute(f"""insert into webhook_messages (id, received_at) values (%s, {NOW})
                              on conflict (id) do nothing""", (message_id,))

    # -- leases and the outbox: timed by the server's clock, never the caller's -------------

    def acquire_lease(self, name: str, owner: str, ttl: float,
                      replacing: str | None = None) -> Lease | None:
        """Grant `name` to `owner` for `ttl` seconds if it is free, or held by `replacing` (a
        holder the caller knows is dead): None while someone else holds it, or while a write
        sent under it may still be acted on (`mark_in_flight`)."""
        try:
            with self.transaction(fenced=False):
                # A row another transaction has locked (its holder renewing it, another process
                # claiming it) is skipped: the lease is being taken, so it is not ours.
                row = self._execute(
                    f"""select owner, expires_at <= {NOW}, quiet_until <= {NOW}
                        from leases where name = %s for update skip locked""", (name,)).fetchone()
                if row is None:
                    # No row, or one locked by another: an insert that conflicts does nothing.
                    granted = self._execute(
                        f"""insert into leases (name, owner, expires_at)
                            values (%s, %s, {NOW} + %s)
                            on conflict (name) do nothing returning token""",
                        (name, owner, ttl)).fetchone()
                else:
                    holder, expired, quiet = row
                    if not quiet or not (expired or holder == (replacing or "")):
                        return None
                    granted = self._execute(
                        f"""update leases set owner = %s, expires_at = {NOW} + %s, quiet_until = 0,
                              token = nextval(pg_get_serial_sequence('leases', 'token'))
                            where name = %s returning token""", (owner, ttl, name)).fetchone()
        except psycopg.Error as exc:
            raise self._write_error(exc) from exc
        return Lease(name, owner, granted[0], ttl) if granted else None

    def renew_lease(self, lease: Lease) -> bool:
        """Extend `lease` by its ttl from now; False when it is no longer this holder's."""
        return self._write(f"update leases set expires_at = {NOW} + %s where name = %s and token = %s",
                           (lease.ttl, lease.name, lease.token), fenced=False) == 1

    def release_lease(self, lease: Lease) -> None:
        """Give the lease up; one with a write still in flight stays taken until it lands."""
        try:
            with self.transaction(fenced=False):
                deleted = self._execute(f"""delete from leases where name = %s and token = %s
                                            and quiet_until <= {NOW}""", (lease.name, lease.token))
                if deleted.rowcount == 0:
                    self._execute("update leases set expires_at = 0 where name = %s and token = %s",
                                  (lease.name, lease.token))
        except psycopg.Error as exc:
            raise self._write_error(exc) from exc

    def mark_in_flight(self, leases: list[Lease], seconds: float | None) -> None:
        tokens = [lease.token for lease in leases]
        if not tokens:
            return
        if seconds is None:
            self._write("update leases set quiet_until = 0 where token = any(%s)", (tokens,),
                        fenced=False)
        else:
            self._write(f"update leases set quiet_until = {NOW} + %s where token = any(%s)",
                        (seconds, tokens), fenced=False)

    def lease_holder(self, name: str) -> LeaseHolder | None:
        row = self._one(f"""select owner, token, greatest(expires_at, quiet_until) - {NOW},
                                   expires_at <= {NOW}
                            from leases where name = %s""", (name,))
        return LeaseHolder(name, row[0], row[1], row[2], bool(row[3])) if row else None

    def enqueue(self, item: OutboxItem) -> OutboxItem:
        """Queue a follow-up write, due now; one waiting item per key (the latest replaces it)."""
        payload = json.dumps(dict(item.payload), sort_keys=True, default=str)
        [(item_id,)] = self._write(
            f"""insert into outbox (key, plugin, action, target, payload, due_at, created_at)
                values (%s, %s, %s, %s, %s, {NOW}, %s)
                on conflict (key) do update set plugin = excluded.plugin,
                  action = excluded.action, target = excluded.target,
                  payload = excluded.payload, due_at = excluded.due_at, attempts = 0,
                  last_error = ''
                returning id""",
            (item.key, item.plugin, item.action, item.target, payload, utcnow().isoformat()),
            fetch=True)
        return attrs.evolve(item, id=item_id, attempts=0, last_error="")

    def outbox(self, due_only: bool = False, key: str | None = None) -> list[OutboxItem]:
        where, params = [], []
        if due_only:
            where.append(f"due_at <= {NOW}")
        if key is not None:
            where.append("key = %s")
            params.append(key)
        rows = self._query(f"select * from outbox {'where ' + ' and '.join(where) if where else ''} "
                           "order by id", params, rows=dict_row)
        return [_structure(OutboxItem, {**row, "payload": json.loads(row["payload"])})
                for row in rows]

    def outbox_done(self, item: OutboxItem) -> None:
        """The item's write was made: forget it (unless a newer wish replaced it meanwhile)."""
        self._write("delete from outbox where id = %s and action = %s and payload = %s",
                    (item.id, item.action,
                     json.dumps(dict(item.payload), sort_keys=True, default=str)))

    def outbox_retry(self, item: OutboxItem, error: str, delay: float) -> None:
        self._write(f"""update outbox set attempts = attempts + 1, last_error = %s,
                        due_at = {NOW} + %s where id = %s""", (error, delay, item.id))


def _as(data_type: str, value):
    """`value` as a column of `data_type` takes it (SQLite may keep a number in a text column)."""
    if value is None:
        return None
    if data_type == "text":
        return value if isinstance(value, str) else str(value)
    if data_type in ("integer", "bigint"):
        return int(value)
    if data_type == "double precision":
        return float(value)
    return value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _structure(cls, row: dict):
    """Build an attrs model from a row, ignoring bookkeeping columns the model does not carry."""
    fields = {field.name for field in cls.__attrs_attrs__}
    return converter.structure({k: v for k, v in row.items() if k in fields}, cls)
