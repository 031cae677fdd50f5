"""The state store contract, and opening a store by URL through the `storage_open` hook.

core/ holds no SQL: it calls these methods, and a storage plugin implements them (the embedded
default is `psabridge.plugins.storage_sqlite`). Every method that writes is atomic on its own;
`transaction()` groups several into one logical change.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import platformdirs

from psabridge.core import logs, plugins
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
)

ENV_DB = "PSABRIDGE_DB"

log = logs.get_logger(__name__)

# The tables a store keeps. `plugins remove` purges a plugin's rows from all but the journal,
# which is an append-only record of what was done on remote systems and is kept on purpose.
PLUGIN_TABLES = (
    "plugins",
    "company_sites",
    "device_types",
    "device_configurations",
    "alert_tickets",
    "warnings",
    "cursors",
    "options",
    "device_details",
    "outbox",
)

# The leases the running code holds (in this thread or task); a store checks them at every
# fenced commit. `psabridge.core.coordination` sets it; stores only read it.
_held_fences: contextvars.ContextVar[tuple[Lease, ...]] = contextvars.ContextVar(
    "psabridge_held_fences", default=())


def held_fences() -> tuple[Lease, ...]:
    return _held_fences.get()


# The leases held here as `psabridge.core.coordination.Held`s. One whose remote write was answered
# (`answered`) is still marked in flight in its store: the store clears the mark in the holder's
# next commit (the journal entry of that answer, or at the latest the lease's release), so that
# an answered write costs no commit of its own.
_held_in_flight: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar(
    "psabridge_held_in_flight", default=())


def answered_in_flight(store: Store) -> list[Any]:
    """The holders whose leases `store` marks in flight although their writes were answered."""
    return [held for held in _held_in_flight.get() if held.store is store and held.answered]


class LeaseLost(StoreError):
    """A holder tried to commit under a lease that is no longer its own."""

    def __init__(self, lease: Lease):
        self.lease = lease
        super().__init__(f"this process no longer holds {lease.name!r} (it stalled past its lease "
                         "and another took over); its change was not saved and will be redone")


class StoreReadOnly(StoreError):
    """The store can be read but not written (a read-only file system, an immutable file)."""


class Store(Protocol):
    # plugin state
    def plugin_state(self, name: str) -> PluginState | None: ...
    def plugin_states(self) -> list[PluginState]: ...
    def save_settings(self, name: str, settings: dict[str, str]) -> None: ...
    def set_enabled(self, name: str, enabled: bool) -> None: ...
    def purge_plugin(self, name: str) -> dict[str, int]: ...

    # mappings
    def save_company_mapping(self, mapping: CompanySiteMapping) -> None: ...
    def delete_company_mapping(self, psa: str, rmm: str, company_id: str) -> bool: ...
    def company_mappings(self, psa: str, rmm: str) -> list[CompanySiteMapping]: ...
    def company_mapping_of_site(self, psa: str, rmm: str, site_uid: str) -> CompanySiteMapping | None: ...
    def save_device_type_mapping(self, mapping: DeviceTypeMapping) -> None: ...
    def device_type_mappings(self, psa: str, rmm: str) -> list[DeviceTypeMapping]: ...
    def save_device_mapping(self, mapping: DeviceMapping) -> None: ...
    def delete_device_mapping(self, psa: str, rmm: str, device_uid: str) -> bool: ...
    def device_mappings(self, psa: str, rmm: str) -> list[DeviceMapping]: ...
    def device_mapping(self, psa: str, rmm: str, device_uid: str) -> DeviceMapping | None: ...
    def device_mappings_of(self, plugin: str) -> list[DeviceMapping]: ...

    # audit cache: the RMM's hardware identity of a device as of its last audit
    def device_details(self, rmm: str, device_uid: str) -> tuple[dt.datetime, DeviceDetails] | None: ...
    def save_device_details(
        self, rmm: str, device_uid: str, audited_at: dt.datetime, details: DeviceDetails
    ) -> None: ...

    # tickets: what became of each alert; locks; webhook messages already processed
    def alert_ticket(self, psa: str, rmm: str, alert_uid: str) -> AlertTicket | None: ...
    def save_alert_ticket(self, entry: AlertTicket) -> AlertTicket: ...
    def alert_tickets(self, psa: str, rmm: str, states: tuple[str, ...] = (),
                      ticket_id: str | None = None) -> list[AlertTicket]: ...
    def latest_ticket_for(self, psa: str, rmm: str, monitor: str, device_uid: str,
                          since: dt.datetime) -> AlertTicket | None: ...
    def message_seen(self, message_id: str) -> bool: ...
    def remember_message(self, message_id: str, keep_seconds: float = ...) -> None: ...

    # coordination (docs/architecture.md): leases timed by the store's own clock, with fencing
    # tokens checked by every fenced commit; the outbox of follow-up writes
    def acquire_lease(self, name: str, owner: str, ttl: float,
                      replacing: str | None = None) -> Lease | None: ...
    def renew_lease(self, lease: Lease) -> bool: ...
    def release_lease(self, lease: Lease) -> None: ...
    def lease_holder(self, name: str) -> LeaseHolder | None: ...
    def mark_in_flight(self, leases: list[Lease], seconds: float | None) -> None: ...
    def enqueue(self, item: OutboxItem) -> OutboxItem: ...
    def outbox(self, due_only: bool = False, key: str | None = None) -> list[OutboxItem]: ...
    def outbox_done(self, item: OutboxItem) -> None: ...
    def outbox_retry(self, item: OutboxItem, error: str, delay: float) -> None: ...

    # warnings, cursors, journal
    def add_warning(self, plugin: str, subject: str, message: str) -> StoredWarning: ...
    def warnings(self, plugin: str | None = None) -> list[StoredWarning]: ...
    def clear_warnings(self, plugin: str | None = None) -> int: ...
    def cursor(self, plugin: str, name: str) -> str | None: ...
    def set_cursor(self, plugin: str, name: str, value: str) -> None: ...
    def option(self, plugin: str, name: str) -> Any: ...
    def set_option(self, plugin: str, name: str, value: Any) -> None: ...
    def record(self, entry: JournalEntry) -> JournalEntry: ...
    def journal(self, plugin: str | None = None) -> list[JournalEntry]: ...

    # plumbing
    def transaction(self, fenced: bool = True) -> AbstractContextManager[None]: ...
    def table_rows(self, table: str) -> Iterator[dict]: ...
    def replace_rows(self, table: str, rows: list[dict]) -> None: ...  # `store copy`, ids kept
    def close(self) -> None: ...


def default_db_path() -> Path:
    return Path(platformdirs.user_data_dir("psabridge")) / "psabridge.db"


def store_url(db: str | os.PathLike | None) -> str:
    """Turn `--db`, `$PSABRIDGE_DB` or the default path into a store URL.

    An empty value is an error, not a way to ask for the default: a variable that was meant to
    point at the service's store but came out empty must not quietly open another one. The
    default store's folder is created here, on first use; a folder the admin named must exist
    (a typo must not start a new, empty store)."""
    if db is None:
        db = os.environ.get(ENV_DB)
    if db is not None and not str(db).strip():
        # click ignores an empty variable, so an empty value from the variable arrives as None
        # and an empty --db as "", but a blank one ("  ") arrives as itself: say which it was.
        source = ENV_DB if os.environ.get(ENV_DB) == db else "--db"
        raise StoreError(f"{source} is empty: give it the store's path (or URL), or leave it out "
                         f"to use the default store {default_db_path()}")
    if db is None:
        db = default_db_path()
        db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = str(db)
    return text if "://" in text else f"sqlite://{Path(text).expanduser().resolve()}"


def masked_url(url: str) -> str:
    """`url` as it may be shown: its password (in the address or `?password=`) as ***."""
    parts = urlsplit(url)
    if not parts.password and "password" not in dict(parse_qsl(parts.query)):
        return url
    netloc = parts.netloc
    if parts.password:
        credentials, host = netloc.rsplit("@", 1)
        netloc = f"{credentials.split(':', 1)[0]}:***@{host}"
    query = urlencode([(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)],
                      safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def open_store(pm, url: str) -> Store:
    """Ask the storage plugins for a store for `url`.

    A store written before secrets were encrypted has its plaintext secrets encrypted here, once,
    whatever engine keeps it. A read-only one is still opened for reading."""
    store = pm.hook.storage_open(url=url)
    if store is None:
        scheme = url.split("://", 1)[0]
        raise StoreError(f"no storage plugin understands {scheme}:// URLs (try sqlite:///path)")
    try:
        plugins.seal_plaintext_secrets(pm, store)
    except StoreReadOnly as exc:
        log.warning("secrets in the store are in plaintext and stay so until it can be written",
                    reason=str(exc))
    except BaseException:
        store.close()
        raise
    return store
