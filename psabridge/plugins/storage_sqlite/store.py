"""The state store on SQLite, through sqlite-utils.

Schema changes are numbered migrations recorded in `PRAGMA user_version`; a file written by a
newer psabridge is refused rather than guessed at. Each thread's connection runs in autocommit
mode and `transaction()` issues `BEGIN IMMEDIATE`, so a logical change is all-or-nothing and
two threads or processes never interleave their writes. (sqlite-utils' own insert helpers commit
on their own, so writes here are plain SQL inside our transactions; sqlite-utils does schema
work and reads.)
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import sqlite_utils

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
)
from psabridge.plugins.storage_sqlite import files


def _v1(db: sqlite_utils.Database) -> None:
    db["plugins"].create({"name": str, "enabled": int, "settings": str, "updated_at": str}, pk="name")
    db["company_sites"].create(
        {"psa": str, "rmm": str, "company_id": str, "company_name": str, "company_type": str,
         "site_uid": str, "site_name": str, "mapped_at": str},
        pk=("psa", "rmm", "company_id"),
    )
    db["company_sites"].create_index(["psa", "rmm", "site_uid"], unique=True)
    db["device_types"].create(
        {"psa": str, "rmm": str, "device_type": str, "configuration_type_id": str,
         "configuration_type_name": str, "mapped_at": str},
        pk=("psa", "rmm", "device_type"),
    )
    db["device_configurations"].create(
        {"psa": str, "rmm": str, "device_uid": str, "configuration_id": str, "company_id": str,
         "site_uid": str, "mapped_at": str},
        pk=("psa", "rmm", "device_uid"),
    )
    # One device per configuration, enforced by the database, not only by the engine.
    db["device_configurations"].create_index(["psa", "configuration_id"], unique=True)
    db["alert_tickets"].create(
        {"psa": str, "rmm": str, "alert_uid": str, "ticket_id": str, "state": str, "monitor": str,
         "device_uid": str, "opened_at": str, "updated_at": str},
        pk=("psa", "rmm", "alert_uid"),
    )
    db["warnings"].create(
        {"id": int, "plugin": str, "subject": str, "message": str, "created_at": str}, pk="id"
    )
    db["cursors"].create({"plugin": str, "name": str, "value": str}, pk=("plugin", "name"))
    db["device_details"].create(
        {"rmm": str, "device_uid": str, "audited_at": str, "serial_number": str,
         "manufacturer": str, "model": str},
        pk=("rmm", "device_uid"),
    )
    db["journal"].create(
        {"id": int, "at": str, "plugin": str, "action": str, "target": str, "outcome": str,
         "detail": str},
        pk="id",
    )
    db["journal"].create_index(["plugin", "id"])


def _v2(db: sqlite_utils.Database) -> None:
    # Integration options (automatic mapping, ticketing...) kept per PSA plugin, so that
    # disable keeps them and remove purges them.
    db["options"].create({"plugin": str, "name": str, "value": str}, pk=("plugin", "name"))


def _v3(db: sqlite_utils.Database) -> None:
    # Exactly-once ticketing: the marker a ticket carries, its origin, why an alert was skipped;
    # repeat detection looks up by monitor and device. Locks keep two syncs from overlapping.
    table = db["alert_tickets"]
    for column in ("marker", "origin", "note"):
        table.add_column(column, str)
    table.create_index(["psa", "rmm", "monitor", "device_uid", "opened_at"])
    table.create_index(["psa", "ticket_id"])
    db["locks"].create({"name": str, "owner": str, "expires_at": float}, pk="name")
    db["webhook_messages"].create({"id": str, "received_at": float}, pk="id")


def _v4(db: sqlite_utils.Database) -> None:
    # Coordination (docs/architecture.md): leases with fencing tokens replace the locks; the
    # token is an AUTOINCREMENT key, so SQLite never hands the same one out twice. The outbox
    # keeps follow-up writes until they are made. Replay checks look messages up by age.
    db.execute("drop table locks")
    db.execute("""create table leases (
                    token integer primary key autoincrement,
                    name text not null unique,
                    owner text not null,
                    expires_at real not null,
                    quiet_until real not null default 0)""")
    db.execute("""create table outbox (
                    id integer primary key autoincrement,
                    key text not null unique,
                    plugin text not null,
                    action text not null,
                    target text not null,
                    payload text not null,
                    attempts integer not null default 0,
                    due_at real not null,
                    last_error text not null default '',
                    created_at text not null)""")
    db.execute("create index outbox_due on outbox (due_at)")
    db.execute("create index webhook_messages_received on webhook_messages (received_at)")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3, _v4]
SCHEMA_VERSION = len(MIGRATIONS)

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


@attrs.define
class _Connection:
    """One thread's connection to the store, and how deeply its `transaction()` calls nest."""

    db: sqlite_utils.Database
    depth: int = 0


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused because another connection holds a lock it needs."""
    return files.primary_code(exc) == sqlite3.SQLITE_BUSY


class SQLiteStore:
    """The store; any number of threads may use one, each through its own connection.

    Threads do not share a connection because SQLite's transactions and read snapshots belong
    to the connection: sharing one, a thread's write could land in another's transaction, and
    its `BEGIN IMMEDIATE` would upgrade another thread's half-done read, which SQLite refuses
    at once while another process writes (see `_when_not_busy`).
    """

    def __init__(self, path: str | Path, busy_timeout: float = 10.0):
        self.path = Path(path)
        self.busy_timeout = busy_timeout  # seconds a write waits for another's write lock
        self.read_only: str | None = None  # why this store cannot be written here, if it cannot
        self._uri = files.file_uri(self.path, read_only=False)
        self._connections: dict[threading.Thread, _Connection] = {}
        self._connections_lock = threading.Lock()
        self._closed = False
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # -- plumbing ---------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            # What can be said about the path and the files comes first, in the admin's terms;
            # SQLite's own errors say less ("unable to open database file").
            files.refuse_unusable_path(self.path)
            if not self.path.exists():
                files.create_private(self.path)
            files.keep_private(self.path)
            self.read_only = files.why_read_only(self.path)
            if self.read_only:
                # Opened for reading only, so that reading works wherever it can: `plugins
                # list` on a read-only mount. Writes are refused by `transaction()`.
                self._uri = files.file_uri(self.path, read_only=True)
            self._refuse_newer(self._schema_version())  # before anything writes, WAL mode included
            if not self.read_only and self.db.journal_mode != "wal":
                # The mode is kept in the file; processes opening a new store at once all ask
                # for it, each waiting for the others' locks. One that waits too long should
                # say that the store is busy, not that it may be damaged.
                self._when_not_busy(self.db, "PRAGMA journal_mode = wal")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            explained = files.explain(exc, self.path, self.read_only)
            raise explained or StoreError(f"cannot open the store {self.path}: {exc}") from exc
        except OSError as exc:
            what = (exc.strerror or str(exc)).lower()
            advice = ("; run psabridge as the user the store belongs to, or fix the permissions "
                      "of the store and its folder") if isinstance(exc, PermissionError) else ""
            raise StoreError(f"cannot open the store {self.path}: {what} ({exc.filename})"
                             f"{advice}") from exc

    @property
    def db(self) -> sqlite_utils.Database:
        """The calling thread's connection, for reads and for SQL inside `transaction()`."""
        return self._connection().db

    def _connection(self) -> _Connection:
        """The calling thread's connection, opened on its first use."""
        thread = threading.current_thread()
        connection = self._connections.get(thread)
        if connection is None:
            connection = _Connection(self._connect())
            with self._connections_lock:
                if self._closed:
                    connection.db.close()
                    raise StoreError(f"the store {self.path} is closed")
                # A server with a thread per request would otherwise keep one connection for
                # every request it ever served.
                for ended in [other for other in self._connections if not other.is_alive()]:
                    self._connections.pop(ended).db.close()
                self._connections[thread] = connection
        return connection

    def _connect(self) -> sqlite_utils.Database:
        # Only ever used by the thread that opened it, but close() and the cleanup of ended
        # threads close it from another thread.
        conn = sqlite3.connect(self._uri, uri=True, timeout=self.busy_timeout,
                               isolation_level=None, check_same_thread=False,
                               factory=files.ExplainingConnection)
        conn.path, conn.read_only = self.path, self.read_only
        # In WAL mode NORMAL survives a killed process (the case we must converge from);
        # only a power cut may lose the last commits, never corrupt the file.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        # Freed space is zeroed: a value rewritten in place (the plaintext secret of an old
        # store, sealed when it is opened) leaves no copy behind in the file.
        conn.execute("PRAGMA secure_delete = ON")
        return sqlite_utils.Database(conn)

    def _schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the store {self.path} has schema version {version}, written by a newer psabridge "
                f"(this one knows up to {SCHEMA_VERSION}); upgrade psabridge to use it"
            )

    def _migrate(self) -> None:
        # Read first without the write lock, so that opening an up-to-date store (the usual
        # case, perhaps read-only) takes no lock and writes nothing.
        version = self._schema_version()
        if version < SCHEMA_VERSION and self.read_only:
            raise StoreReadOnly(
                f"the store {self.path} is read-only ({self.read_only}) and was written by an "
                "older psabridge: it must be upgraded once, which writes to it; make it writable "
                "and run any psabridge command, then it may be read-only again")
        for number in range(version, SCHEMA_VERSION):
            with self.transaction():
                # Read again under the write lock: another process opening the store at the
                # same time may have applied this migration since.
                version = self._schema_version()
                self._refuse_newer(version)
                if version == number:
                    MIGRATIONS[number](self.db)
                    self.db.execute(f"PRAGMA user_version = {number + 1}")

    @contextmanager
    def transaction(self, fenced: bool = True) -> Iterator[None]:
        """One logical change: nested calls join the outermost transaction.

        A `fenced` transaction commits only while every lease the caller holds is still its
        holder's (`psabridge.core.store.held_fences`): a holder that lost its lease cannot
        write over the next holder's work."""
        if self.read_only:
            raise files.read_only_error(self.path, self.read_only)
        connection = self._connection()
        depth = connection.depth
        answered = []
        if depth == 0:
            self._when_not_busy(connection.db, "BEGIN IMMEDIATE")
            if fenced:
                self._check_fences(connection.db)
            try:
                answered = self._clear_answered(connection.db)
            except sqlite3.DatabaseError as exc:
                self._roll_back(connection.db)
                raise StoreError(f"cannot write to the store {self.path}: {exc}") from exc
        connection.depth = depth + 1
        try:
            yield
        except BaseException:
            connection.depth = depth
            if depth == 0:
                self._roll_back(connection.db)
                self._still_answered(answered)
            raise
        connection.depth = depth
        if depth == 0:
            try:
                connection.db.execute("COMMIT")
            except StoreError:
                self._still_answered(answered)
                self._roll_back(connection.db)
                raise
            except sqlite3.DatabaseError as exc:
                self._roll_back(connection.db)
                self._still_answered(answered)
                raise StoreError(f"cannot write to the store {self.path}: {exc}") from exc

    @staticmethod
    def _roll_back(db: sqlite_utils.Database) -> None:
        """Undo the open transaction, if SQLite has not already: after some errors (a full
        disk, an I/O error) it rolls back by itself, and a ROLLBACK then would fail with "no
        transaction is active", hiding the error that says what happened."""
        if db.conn.in_transaction:
            try:
                db.execute("ROLLBACK")
            except (sqlite3.Error, StoreError):
                pass  # the error being raised says more; closing the connection rolls back

    def _when_not_busy(self, db: sqlite_utils.Database, statement: str) -> sqlite3.Cursor:
        """Run a statement that takes a lock, trying again while another connection holds it,
        for up to the busy timeout.

        SQLite's busy timeout does not cover every wait. A connection that already has a read
        transaction open (a cursor not read to its end) and asks for the write lock while
        another connection holds it gets SQLITE_BUSY at once, as waiting could not help: in
        rollback-journal mode (a new file's, until it is switched to WAL) the writer cannot
        commit before that reader ends, a deadlock; in WAL mode the writer's commit leaves the
        reader's snapshot too old to write from (SQLITE_BUSY_SNAPSHOT). Once the other
        connection is done, trying again succeeds if it changed nothing or our read has ended.
        """
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                return db.execute(statement)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreError(
                        f"the store {self.path} is busy: another process has held its write lock "
                        f"for over {self.busy_timeout:g} s; if a psabridge sync or server is using "
                        "this file, let it finish (or stop it if it hangs) and try again"
                    ) from exc
                # Jittered, so that connections turned away together do not come back together.
                time.sleep(min(left, random.uniform(0.001, 0.02)))

    def _clear_answered(self, db: sqlite_utils.Database) -> list:
        """Clear, in the transaction just begun, the in-flight marks of writes answered since
        (`psabridge.core.store.answered_in_flight`): the holders whose marks it clears."""
        answered = answered_in_flight(self)
        if not answered:
            return []
        # Taken now, under the write lock: an answer that comes meanwhile (another thread of
        # the holder) is cleared by the next commit.
        for held in answered:
            held.answered = False
            held.in_flight_until = 0.0  # the next write marks again
        tokens = [held.lease.token for held in answered]
        try:
            db.execute(f"update leases set quiet_until = 0 where token in "
                       f"({', '.join('?' * len(tokens))})", tokens)
        except BaseException:
            self._still_answered(answered)
            raise
        return answered

    @staticmethod
    def _still_answered(answered: list) -> None:
        """The transaction that was to clear these marks was rolled back: the next one does."""
        for held in answered:
            held.answered = True

    @staticmethod
    def _check_fences(db: sqlite_utils.Database) -> None:
        fences = held_fences()
        if not fences:
            return
        found = set(db.execute(f"select name, token from leases where token in "
                               f"({', '.join('?' * len(fences))})",
                               [lease.token for lease in fences]).fetchall())
        for lease in fences:
            if (lease.name, lease.token) not in found:
                db.execute("ROLLBACK")
                raise LeaseLost(lease)

    def _write(self, sql: str, params: tuple | dict = (), conflict: str = "",
               fenced: bool = True) -> sqlite3.Cursor:
        """Run one write in a transaction; `conflict` explains a uniqueness violation."""
        try:
            with self.transaction(fenced):
                return self.db.execute(sql, params)
        except sqlite3.IntegrityError as exc:
            raise StoreError(conflict or f"the store refused a write: {exc}") from exc
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot write to the store {self.path}: {exc}") from exc

    def table_rows(self, table: str) -> Iterator[dict]:
        # Read at once: a cursor left half-read would keep a read transaction open on this
        # thread's connection, and a write from inside the caller's loop could be refused.
        return iter(list(self.db[table].rows_where(order_by="rowid")))

    def replace_rows(self, table: str, rows: list[dict]) -> None:
        """Replace a table's rows with `rows`, exactly as given (their ids included), in the
        caller's transaction: how `psabridge store copy` fills a store."""
        if table not in self.db.table_names():
            raise StoreError(f"the store {self.path} has no table {table!r}")
        known = set(self.db[table].columns_dict)
        columns = [c for c in (rows[0] if rows else ()) if c in known]
        try:
            with self.transaction(fenced=False):
                self.db.execute(f"delete from [{table}]")
                if rows:
                    self.db.conn.executemany(
                        f"insert into [{table}] ({', '.join(f'[{c}]' for c in columns)}) "
                        f"values ({', '.join('?' * len(columns))})",
                        [tuple(row[c] for c in columns) for row in rows])
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot write to the store {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close every thread's connection; the store cannot be used afterwards."""
        with self._connections_lock:
            self._closed = True
            for connection in self._connections.values():
                connection.db.close()
            self._connections.clear()

    # -- plugin state -----------------------------------------------------------------------

    def plugin_state(self, name: str) -> PluginState | None:
        row = self.db.execute(
            "select name, enabled, settings from plugins where name = ?", (name,)
        ).fetchone()
        if row is None:
            return None
        return PluginState(name=row[0], enabled=bool(row[1]), settings=json.loads(row[2] or "{}"))

    def plugin_states(self) -> list[PluginState]:
        # One query: `serve` and `sync --watch` read every plugin's state for each event.
        rows = self.db.execute("select name, enabled, settings from plugins order by name").fetchall()
        return [PluginState(name=name, enabled=bool(enabled), settings=json.loads(settings or "{}"))
                for name, enabled, settings in rows]

    def save_settings(self, name: str, settings: dict[str, str]) -> None:
        self._write(
            """insert into plugins (name, enabled, settings, updated_at) values (?, 0, ?, ?)
               on conflict(name) do update set settings = excluded.settings,
               updated_at = excluded.updated_at""",
            (name, json.dumps(settings, sort_keys=True), utcnow().isoformat()),
        )

    def set_enabled(self, name: str, enabled: bool) -> None:
        self._write(
            """insert into plugins (name, enabled, settings, updated_at) values (?, ?, '{}', ?)
               on conflict(name) do update set enabled = excluded.enabled""",
            (name, int(enabled), utcnow().isoformat()),
        )

    def purge_plugin(self, name: str) -> dict[str, int]:
        deleted = {}
        with self.transaction():
            for table, columns in _OWNER_COLUMNS.items():
                where = " or ".join(f"{column} = :name" for column in columns)
                deleted[table] = self.db.execute(
                    f"delete from {table} where {where}", {"name": name}
                ).rowcount
        return deleted

    # -- mappings ---------------------------------------------------------------------------

    def save_company_mapping(self, mapping: CompanySiteMapping) -> None:
        self._write(
            """insert into company_sites
               (psa, rmm, company_id, company_name, company_type, site_uid, site_name, mapped_at)
               values (:psa, :rmm, :company_id, :company_name, :company_type, :site_uid,
                       :site_name, :mapped_at)
               on conflict (psa, rmm, company_id) do update set company_name = :company_name,
                 company_type = :company_type, site_uid = :site_uid, site_name = :site_name,
                 mapped_at = :mapped_at""",
            {**converter.unstructure(mapping), "mapped_at": utcnow().isoformat()},
            conflict=f"site {mapping.site_name} is already mapped to another company; unmap it first",
        )

    def delete_company_mapping(self, psa: str, rmm: str, company_id: str) -> bool:
        cursor = self._write(
            "delete from company_sites where psa = ? and rmm = ? and company_id = ?",
            (psa, rmm, company_id),
        )
        return cursor.rowcount > 0

    def company_mappings(self, psa: str, rmm: str) -> list[CompanySiteMapping]:
        return self._rows(CompanySiteMapping, "company_sites", psa, rmm, "company_name")

    def company_mapping_of_site(self, psa: str, rmm: str, site_uid: str) -> CompanySiteMapping | None:
        return self._row(CompanySiteMapping, "company_sites", psa, rmm, site_uid=site_uid)

    def save_device_type_mapping(self, mapping: DeviceTypeMapping) -> None:
        self._write(
            """insert or replace into device_types
               (psa, rmm, device_type, configuration_type_id, configuration_type_name, mapped_at)
               values (:psa, :rmm, :device_type, :configuration_type_id,
                       :configuration_type_name, :mapped_at)""",
            {**converter.unstructure(mapping), "mapped_at": utcnow().isoformat()},
        )

    def device_type_mappings(self, psa: str, rmm: str) -> list[DeviceTypeMapping]:
        return self._rows(DeviceTypeMapping, "device_types", psa, rmm, "device_type")

    def save_device_mapping(self, mapping: DeviceMapping) -> None:
        self._write(
            """insert into device_configurations
               (psa, rmm, device_uid, configuration_id, company_id, site_uid, mapped_at)
               values (:psa, :rmm, :device_uid, :configuration_id, :company_id, :site_uid,
                       :mapped_at)
               on conflict (psa, rmm, device_uid) do update set
                 configuration_id = :configuration_id, company_id = :company_id,
                 site_uid = :site_uid, mapped_at = :mapped_at""",
            {**converter.unstructure(mapping), "mapped_at": utcnow().isoformat()},
            conflict=f"configuration {mapping.configuration_id} is already mapped to another "
            "device (one device per configuration); unmap that device first",
        )

    def delete_device_mapping(self, psa: str, rmm: str, device_uid: str) -> bool:
        cursor = self._write(
            "delete from device_configurations where psa = ? and rmm = ? and device_uid = ?",
            (psa, rmm, device_uid),
        )
        return cursor.rowcount > 0

    def device_mappings(self, psa: str, rmm: str) -> list[DeviceMapping]:
        return self._rows(DeviceMapping, "device_configurations", psa, rmm, "device_uid")

    def device_mapping(self, psa: str, rmm: str, device_uid: str) -> DeviceMapping | None:
        return self._row(DeviceMapping, "device_configurations", psa, rmm, device_uid=device_uid)

    def device_mappings_of(self, plugin: str) -> list[DeviceMapping]:
        rows = self._select("select * from device_configurations where psa = ? or rmm = ? "
                            "order by device_uid", (plugin, plugin))
        return [_structure(DeviceMapping, row) for row in rows]

    def _row(self, cls, table: str, psa: str, rmm: str, **key: str):
        """One row by a unique key of the pair's (an index serves each: one lookup, whatever
        the estate's size)."""
        [(column, value)] = key.items()
        rows = self._select(f"select * from [{table}] where psa = ? and rmm = ? and [{column}] = ?",
                            (psa, rmm, value))
        return _structure(cls, rows[0]) if rows else None

    def _rows(self, cls, table: str, psa: str, rmm: str, order_by: str):
        rows = self._select(f"select * from [{table}] where psa = ? and rmm = ? order by {order_by}",
                            (psa, rmm))
        return [_structure(cls, row) for row in rows]

    def _select(self, sql: str, params: tuple | list = ()) -> list[dict]:
        """The rows of a query as dicts. Not sqlite-utils' `rows_where`, which asks SQLite for
        the table's names and columns on every call: four statements more per lookup, on the
        paths every alert and every webhook take."""
        cursor = self.db.execute(sql, params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    # -- audit cache ------------------------------------------------------------------------

    def device_details(self, rmm: str, device_uid: str):
        row = self.db.execute(
            """select audited_at, serial_number, manufacturer, model from device_details
               where rmm = ? and device_uid = ?""",
            (rmm, device_uid),
        ).fetchone()
        if row is None:
            return None
        audited_at, serial, manufacturer, model = row
        return dt.datetime.fromisoformat(audited_at), DeviceDetails(serial, manufacturer, model)

    def save_device_details(self, rmm, device_uid, audited_at, details) -> None:
        self._write(
            """insert or replace into device_details
               (rmm, device_uid, audited_at, serial_number, manufacturer, model)
               values (?, ?, ?, ?, ?, ?)""",
            (rmm, device_uid, audited_at.isoformat(), details.serial_number,
             details.manufacturer, details.model),
        )

    # -- warnings, cursors, journal ---------------------------------------------------------

    def add_warning(self, plugin: str, subject: str, message: str) -> StoredWarning:
        at = utcnow()
        cursor = self._write(
            "insert into warnings (plugin, subject, message, created_at) values (?, ?, ?, ?)",
            (plugin, subject, message, at.isoformat()),
        )
        return StoredWarning(plugin, subject, message, id=cursor.lastrowid, created_at=at)

    def warnings(self, plugin: str | None = None) -> list[StoredWarning]:
        where, params = ("plugin = ?", [plugin]) if plugin else (None, [])
        rows = self._select(f"select * from warnings {'where ' + where if where else ''} "
                            "order by id", params)
        return [_structure(StoredWarning, row) for row in rows]

    def clear_warnings(self, plugin: str | None = None) -> int:
        if plugin:
            return self._write("delete from warnings where plugin = ?", (plugin,)).rowcount
        return self._write("delete from warnings").rowcount

    def cursor(self, plugin: str, name: str) -> str | None:
        row = self.db.execute(
            "select value from cursors where plugin = ? and name = ?", (plugin, name)
        ).fetchone()
        return row[0] if row else None

    def set_cursor(self, plugin: str, name: str, value: str) -> None:
        self._write(
            "insert or replace into cursors (plugin, name, value) values (?, ?, ?)",
            (plugin, name, value),
        )

    def alert_ticket(self, psa: str, rmm: str, alert_uid: str) -> AlertTicket | None:
        rows = self._select("select * from alert_tickets where psa = ? and rmm = ? and alert_uid = ?",
                            (psa, rmm, alert_uid))
        return _structure(AlertTicket, rows[0]) if rows else None

    def save_alert_ticket(self, entry: AlertTicket) -> AlertTicket:
        now = utcnow()
        entry = attrs.evolve(entry, opened_at=entry.opened_at or now, updated_at=now)
        values = converter.unstructure(entry)
        columns = ", ".join(values)
        self._write(
            f"insert or replace into alert_tickets ({columns}) "
            f"values ({', '.join(':' + c for c in values)})",
            values,
        )
        return entry

    def alert_tickets(self, psa: str, rmm: str, states: tuple[str, ...] = (),
                      ticket_id: str | None = None) -> list[AlertTicket]:
        where, params = ["psa = ?", "rmm = ?"], [psa, rmm]
        if states:
            where.append(f"state in ({', '.join('?' * len(states))})")
            params.extend(states)
        if ticket_id is not None:
            where.append("ticket_id = ?")
            params.append(ticket_id)
        rows = self._select(f"select * from alert_tickets where {' and '.join(where)} order by rowid",
                            params)
        return [_structure(AlertTicket, row) for row in rows]

    def latest_ticket_for(self, psa: str, rmm: str, monitor: str, device_uid: str,
                          since: dt.datetime) -> AlertTicket | None:
        """The newest ticketed alert of this monitor on this device opened at or after `since`."""
        rows = self._select(
            "select * from alert_tickets where psa = ? and rmm = ? and monitor = ? "
            "and device_uid = ? and opened_at >= ? and ticket_id is not null "
            "order by opened_at desc limit 1",
            (psa, rmm, monitor, device_uid, since.isoformat()))
        return _structure(AlertTicket, rows[0]) if rows else None

    # -- leases and the outbox: timed by the store's clock, never the caller's ---------------

    _NOW = "((julianday('now') - 2440587.5) * 86400.0)"  # SQLite's own clock, in Unix seconds

    def acquire_lease(self, name: str, owner: str, ttl: float,
                      replacing: str | None = None) -> Lease | None:
        """Grant `name` to `owner` for `ttl` seconds if it is free, or held by `replacing` (a
        holder the caller knows is dead): None while someone else holds it, or while a write
        sent under it may still be acted on (`mark_in_flight`)."""
        with self.transaction(fenced=False):
            self.db.execute(
                f"""delete from leases where name = ? and quiet_until <= {self._NOW}
                    and (expires_at <= {self._NOW} or owner = ?)""", (name, replacing or ""))
            try:
                cursor = self.db.execute(
                    f"insert into leases (name, owner, expires_at) values (?, ?, {self._NOW} + ?)",
                    (name, owner, ttl))
            except sqlite3.IntegrityError:
                return None
        return Lease(name, owner, cursor.lastrowid, ttl)

    def renew_lease(self, lease: Lease) -> bool:
        """Extend `lease` by its ttl from now; False when it is no longer this holder's."""
        cursor = self._write(f"update leases set expires_at = {self._NOW} + ? "
                             "where name = ? and token = ?", (lease.ttl, lease.name, lease.token),
                             fenced=False)
        return cursor.rowcount == 1

    def release_lease(self, lease: Lease) -> None:
        """Give the lease up; one with a write still in flight stays taken until it lands."""
        with self.transaction(fenced=False):
            deleted = self.db.execute(f"delete from leases where name = ? and token = ? "
                                      f"and quiet_until <= {self._NOW}", (lease.name, lease.token))
            if deleted.rowcount == 0:
                self.db.execute("update leases set expires_at = 0 where name = ? and token = ?",
                                (lease.name, lease.token))

    def mark_in_flight(self, leases: list[Lease], seconds: float | None) -> None:
        tokens = [lease.token for lease in leases]
        if not tokens:
            return
        quiet_until = f"{self._NOW} + ?" if seconds is not None else "0"
        self._write(f"update leases set quiet_until = {quiet_until} "
                    f"where token in ({', '.join('?' * len(tokens))})",
                    ((seconds,) if seconds is not None else ()) + tuple(tokens), fenced=False)

    def lease_holder(self, name: str) -> LeaseHolder | None:
        row = self.db.execute(f"select owner, token, max(expires_at, quiet_until) - {self._NOW}, "
                              f"expires_at <= {self._NOW} from leases where name = ?",
                              (name,)).fetchone()
        return LeaseHolder(name, row[0], row[1], row[2], bool(row[3])) if row else None

    def enqueue(self, item: OutboxItem) -> OutboxItem:
        """Queue a follow-up write, due now; one waiting item per key (the latest replaces it)."""
        payload = json.dumps(dict(item.payload), sort_keys=True, default=str)
        with self.transaction():
            self.db.execute(
                f"""insert into outbox (key, plugin, action, target, payload, due_at, created_at)
                    values (?, ?, ?, ?, ?, {self._NOW}, ?)
                    on conflict (key) do update set plugin = excluded.plugin,
                      action = excluded.action, target = excluded.target,
                      payload = excluded.payload, due_at = excluded.due_at, attempts = 0,
                      last_error = ''""",
                (item.key, item.plugin, item.action, item.target, payload, utcnow().isoformat()))
            (item_id,) = self.db.execute("select id from outbox where key = ?",
                                         (item.key,)).fetchone()
        return attrs.evolve(item, id=item_id, attempts=0, last_error="")

    def outbox(self, due_only: bool = False, key: str | None = None) -> list[OutboxItem]:
        where, params = [], []
        if due_only:
            where.append(f"due_at <= {self._NOW}")
        if key is not None:
            where.append("key = ?")
            params.append(key)
        rows = self._select(f"select * from outbox {'where ' + ' and '.join(where) if where else ''} "
                            "order by id", params)
        return [_structure(OutboxItem, {**row, "payload": json.loads(row["payload"])})
                for row in rows]

    def outbox_done(self, item: OutboxItem) -> None:
        """The item's write was made: forget it (unless a newer wish replaced it meanwhile)."""
        self._write("delete from outbox where id = ? and action = ? and payload = ?",
                    (item.id, item.action,
                     json.dumps(dict(item.payload), sort_keys=True, default=str)))

    def outbox_retry(self, item: OutboxItem, error: str, delay: float) -> None:
        self._write(f"update outbox set attempts = attempts + 1, last_error = ?, "
                    f"due_at = {self._NOW} + ? where id = ?", (error, delay, item.id))

    def message_seen(self, message_id: str) -> bool:
        """Whether a webhook message was processed before (and not forgotten since)."""
        row = self.db.execute("select 1 from webhook_messages where id = ?", (message_id,)).fetchone()
        return row is not None

    def remember_message(self, message_id: str, keep_seconds: float = 7 * 86400) -> None:
        """Record a webhook message as processed, and forget those older than `keep_seconds`.

        Two deliveries of one message may both be processed and remembered: the first stays."""
        with self.transaction():
            self.db.execute(f"delete from webhook_messages where received_at < {self._NOW} - ?",
                            (keep_seconds,))
            self.db.execute("insert or ignore into webhook_messages (id, received_at) "
                            f"values (?, {self._NOW})", (message_id,))

    def option(self, plugin: str, name: str):
        row = self.db.execute(
            "select value from options where plugin = ? and name = ?", (plugin, name)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def set_option(self, plugin: str, name: str, value) -> None:
        self._write(
            "insert or replace into options (plugin, name, value) values (?, ?, ?)",
            (plugin, name, json.dumps(value)),
        )

    def record(self, entry: JournalEntry) -> JournalEntry:
        at = entry.at or utcnow()
        # Not fenced: what was done on a remote system is recorded whoever did it.
        cursor = self._write(
            """insert into journal (at, plugin, action, target, outcome, detail)
               values (?, ?, ?, ?, ?, ?)""",
            (at.isoformat(), entry.plugin, entry.action, entry.target, entry.outcome,
             json.dumps(dict(entry.detail), sort_keys=True, default=str)),
            fenced=False,
        )
        return JournalEntry(
            entry.plugin, entry.action, entry.target, entry.outcome, entry.detail,
            id=cursor.lastrowid, at=at,
        )

    def journal(self, plugin: str | None = None) -> list[JournalEntry]:
        where, params = ("plugin = ?", [plugin]) if plugin else (None, [])
        return [
            _structure(JournalEntry, {**row, "detail": json.loads(row["detail"])})
            for row in self._select(f"select * from journal {'where ' + where if where else ''} "
                                    "order by id", params)
        ]


def _structure(cls, row: dict):
    """Build an attrs model from a row, ignoring bookkeeping columns the model does not carry."""
    fields = {field.name for field in cls.__attrs_attrs__}
    return converter.structure({k: v for k, v in row.items() if k in fields}, cls)
