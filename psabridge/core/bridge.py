"""The running integration: the enabled PSA and RMM connectors, the store, and the options.

Every engine function (mapping, ticketing, sync) takes a `Bridge`. Remote writes go through
`Bridge.write`, which journals them, so the journal accounts for every change made elsewhere.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import attrs
import cattrs
import pluggy

from psabridge.core import coordination, http, logs, pacing, secrets
from psabridge.core.connectors import FACADES, PsaConnector, RmmConnector
from psabridge.core.errors import PluginError, PsabridgeError
from psabridge.core.models import (
    CompanyFilters,
    Device,
    JournalEntry,
    PluginState,
    Site,
    TicketOptions,
    converter,
)
from psabridge.core.plugins import Connector, connection_for, enabled_plugins, plugin_settings
from psabridge.core.store import LeaseLost, Store

T = TypeVar("T")
R = TypeVar("R")
log = logs.get_logger(__name__)

# The PSA's ticket options as every process on the store reuses them (`Bridge.ticket_options`),
# and for how long (seconds).
SHARED_TICKET_OPTIONS, TICKET_OPTIONS_KEPT = "core:ticket options", 3600.0

# Integration options, per PSA plugin, with their defaults.
OPTION_DEFAULTS: dict[str, Any] = {
    "auto_map": False,  # Off until the admin has checked the matching
    "site_threshold": 85.0,  # minimum score for a suggested site
}


@attrs.define
class Bridge:
    pm: pluggy.PluginManager
    store: Store
    psa: PsaConnector
    rmm: RmmConnector
    # Workers per remote system (PSABRIDGE_CONCURRENCY): how many of its calls may be in flight.
    workers: int = attrs.field(factory=pacing.concurrency_from_environment, kw_only=True)
    _configuration_types: list | None = attrs.field(default=None, repr=False)
    # One slot, shared with this bridge's `with_fresh_reads` copies: options a pass read are
    # kept for the next pass, not read again by every pass that makes a ticket.
    _ticket_options: dict[str, TicketOptions] = attrs.field(factory=dict, repr=False)
    _company_ids: set[str] | None = attrs.field(default=None, repr=False)
    _devices: list[Device] | None = attrs.field(default=None, repr=False)
    _sites: list[Site] | None = attrs.field(default=None, repr=False)
    _lists_lock: threading.RLock = attrs.field(factory=threading.RLock, repr=False)
    _keeping: int = attrs.field(default=0, repr=False)  # depth of `one_run` blocks

    @property
    def pair(self) -> tuple[str, str]:
        return self.psa.name, self.rmm.name

    def configuration_types(self) -> list:
        """The PSA's configuration types, read once per bridge: they change rarely and cost
        one request per type where questions live on their own endpoint (ConnectWise)."""
        if self._configuration_types is None:
            self._configuration_types = list(self.psa.list_configuration_types())
        return self._configuration_types

    def ticket_options(self) -> TicketOptions:
        """The PSA's ticket options for creating tickets (their limits), read once for every
        process on the store, at most an hour ago: reading them costs a request per board
        and more on some PSAs, which every worker, replica and restart would otherwise pay.
        Settings are checked against a fresh reading (`psa.ticket_options()`), not this one."""
        if "options" not in self._ticket_options:
            self._ticket_options["options"] = (self._shared_ticket_options()
                                               or self._read_ticket_options())
        return self._ticket_options["options"]

    def _shared_ticket_options(self) -> TicketOptions | None:
        shared = self.psa.connection.shared
        text = shared.get(SHARED_TICKET_OPTIONS) if shared is not None else None
        if not text:
            return None
        try:
            kept = json.loads(text)
            if time.time() - float(kept["read_at"]) > TICKET_OPTIONS_KEPT:
                return None
            return converter.structure(kept["options"], TicketOptions)
        except (ValueError, KeyError, TypeError, cattrs.BaseValidationError):
            return None  # kept by another version of psabridge: read them afresh

    def _read_ticket_options(self) -> TicketOptions:
        options = self.psa.ticket_options()
        if (shared := self.psa.connection.shared) is not None:
            shared.put(SHARED_TICKET_OPTIONS, json.dumps(
                {"read_at": time.time(), "options": converter.unstructure(options)}))
        return options

    def company_ids(self) -> set[str]:
        """Ids of the companies the PSA lists now (deleted ones are not listed), read once per
        bridge: a mapping whose company is gone must not have configurations created under it."""
        if self._company_ids is None:
            self._company_ids = {c.id for c in self.psa.list_companies(filters=CompanyFilters())
                                 if not c.deleted}
        return self._company_ids

    @contextmanager
    def one_run(self) -> Iterator[Bridge]:
        """Within this block (a sync pass, a plan being applied, a benchmark's run of the
        mapping commands), the RMM's device and site lists are read once: every command and
        step plans from one reading, whose pages are the bulk of a no-change run's requests.
        Outside it each asks the RMM afresh. Blocks nest; the outermost one forgets the lists."""
        with self._lists_lock:
            self._keeping += 1
        try:
            yield self
        finally:
            with self._lists_lock:
                self._keeping -= 1
                if not self._keeping:
                    self._devices = self._sites = None

    def devices(self) -> list[Device]:
        """Every device of the RMM's account (read once per `one_run`; psabridge's own writes
        do not change it)."""
        with self._lists_lock:
            if self._devices is not None:
                return self._devices
            devices = list(self.rmm.list_devices(site_uid=None))
            if self._keeping:
                self._devices = devices
            return devices

    def sites(self) -> list[Site]:
        """The RMM's sites (read once per `one_run`, and again after psabridge created one)."""
        with self._lists_lock:
            if self._sites is not None:
                return self._sites
            sites = list(self.rmm.list_sites())
            if self._keeping:
                self._sites = sites
            return sites

    def forget_sites(self) -> None:
        """A site was created: the next `sites()` reads the list again."""
        with self._lists_lock:
            self._sites = None

    def concurrently(self, function: Callable[[T], R], items: Sequence[T]) -> list[pacing.Done]:
        """`function(item)` for each item on this bridge's workers, under the leases held here
        (see `pacing.concurrently`)."""
        return pacing.concurrently(function, items, self.workers)

    def with_fresh_reads(self) -> Bridge:
        """This bridge's connectors (their HTTP clients, tokens and caches), without the reads
        it keeps for one run: the next pass of `sync --watch` must see a company deleted since
        the last, or a configuration type added."""
        fresh = Bridge(pm=self.pm, store=self.store, psa=self.psa, rmm=self.rmm,
                       workers=self.workers)
        fresh._ticket_options = self._ticket_options  # only its limits are read: they stay
        return fresh

    def option(self, name: str) -> Any:
        value = self.store.option(self.psa.name, name)
        return OPTION_DEFAULTS[name] if value is None else value

    def set_option(self, name: str, value: Any) -> None:
        if name not in OPTION_DEFAULTS:
            raise PluginError(f"unknown option {name!r}; options are {', '.join(OPTION_DEFAULTS)}")
        self.store.set_option(self.psa.name, name, value)

    def announce(self, event: str, **kwargs: Any) -> None:
        """Tell every plugin listening to `event` (an `on_*` hook) what happened. Each listener is
        called on its own: one that raises is logged and neither stops the others nor the work
        that was done."""
        for impl in getattr(self.pm.hook, event).get_hookimpls():
            try:
                impl.function(**{name: kwargs[name] for name in impl.argnames})
            except Exception:  # noqa: BLE001 - a listener's failure is not the engine's
                log.warning("event listener failed", hook=event, plugin=impl.plugin_name,
                            exc_info=True)

    def write(self, connector: Connector, action: str, target: str, call: Callable[[], T],
              *, before: Callable[[], object] | None = None,
              after: Callable[[T], R] | None = None, **detail: Any) -> T | R:
        """Make one change on a remote system and journal how it ended.

        The intent is journalled first, and the leases held here are marked in flight in the
        same commit: a process killed while the request is in flight (after the remote system
        acted, before the answer was recorded) still leaves a trace of it, and nobody takes its
        work over before the remote system is done with it. Nothing is sent by a holder whose
        lease covering this write was lost.

        `before` makes the store writes that must be saved before the request leaves (a row
        saying the change is under way), in that same commit. `after` makes those that follow
        from the answer (given the call's result), in one commit with the journal's outcome;
        the write then returns what `after` returns. One change, two commits."""
        [outcome] = self.write_each(connector, action,
                                    [Change(target, call, before, after, detail)])
        if isinstance(outcome, Failed):
            raise outcome.error
        return outcome

    def write_each(self, connector: Connector, action: str, changes: Sequence[Change],
                   claims: coordination.Claims | None = None) -> list[Any]:
        """Make a group of changes on one remote system as `write` makes one, in two commits
        for the whole group: the intents, `before` writes and in-flight marks of all of them,
        then (after every call) the outcomes and `after` writes of those that were made.

        `claims` are a group of claims (`coordination.try_hold_each`); a change whose `claim`
        is one of them is made under that claim alone, so that a write of one that got no
        answer keeps only its own claim in flight. Returns, per change, what
        `after` returned (or the call's result without one), or `Failed` with the error: one
        change failing does not stop the others, except a lost lease or an error that is not a
        `PsabridgeError` (a fault of psabridge's own), which are raised."""
        coordination.ensure_held()
        batch = _batch.get()

        def intended(change: Change) -> bool:
            return batch is not None and (connector.name, action, change.target) in batch.intended

        def alone(change: Change):
            if change.claim is None or claims is None:
                return contextlib.nullcontext()
            return claims.alone(change.claim)

        def entry(change: Change, outcome: str, **more: Any) -> JournalEntry:
            return JournalEntry(connector.name, action, change.target, outcome,
                                {**change.detail, **more})

        ahead = [change for change in changes if change.before is not None or not intended(change)]
        if ahead:
            with self.store.transaction():
                for change in ahead:
                    if not intended(change):
                        self.store.record(entry(change, "intent"))
                    if change.before is not None:
                        change.before()
                claimed = [change.claim for change in ahead if change.claim is not None]
                if claimed:  # each under its own claim, in one statement
                    coordination.mark_in_flight(http.IN_FLIGHT_WINDOW, claimed)
                if len(claimed) < len(ahead):
                    coordination.mark_in_flight(http.IN_FLIGHT_WINDOW)
        outcomes: list[Any] = []
        for change in changes:
            with alone(change):
                try:
                    outcomes.append(change.call())
                except Exception as exc:
                    coordination.mark_in_flight(None)  # unless a request of it got no answer
                    self.store.record(entry(change, "failed", error=logs.redact_text(str(exc))))
                    if isinstance(exc, LeaseLost) or not isinstance(exc, PsabridgeError):
                        raise  # the holder's lease is gone, or psabridge itself is at fault
                    outcomes.append(Failed(exc))
                    continue
                coordination.mark_in_flight(None)
        made = [(n, change) for n, change in enumerate(changes)
                if not isinstance(outcomes[n], Failed)]
        done = [entry(change, "ok") for _, change in made]
        if not any(change.after is not None for _, change in made):
            for journalled in done:
                self.record_soon(journalled)
            return outcomes
        try:
            with self.store.transaction():
                for journalled in done:
                    self.store.record(journalled)
                for n, change in made:
                    if change.after is not None:
                        outcomes[n] = change.after(outcomes[n])
        except LeaseLost:
            with self.store.transaction(fenced=False):  # what was done elsewhere is journalled,
                for journalled in done:  # whoever did it
                    self.store.record(journalled)
            raise
        return outcomes

    # -- store writes batched per group of changes ---------------------------------------------

    def record_soon(self, entry: JournalEntry) -> None:
        """Journal `entry` now, or with the batch being collected (`batched_writes`)."""
        batch = _batch.get()
        if batch is None:
            self.store.record(entry)
        else:
            batch.journal.append(entry)

    def save_soon(self, write: Callable[[], object]) -> None:
        """Make a store write now, or in the batch's one transaction (`batched_writes`).

        Only for a write whose loss in a crash the next run makes good by itself: a mapping to
        a record the remote system now holds with psabridge's link on it, which the next run's
        matching finds and adopts."""
        batch = _batch.get()
        if batch is None:
            write()
        else:
            batch.writes.append(write)

    @contextmanager
    def batched_writes(self, intents: Sequence[JournalEntry] = ()) -> Iterator[None]:
        """Collect the `record_soon` and `save_soon` writes made in this block (by any worker
        started in it) and commit them at its end: the journal in one unfenced transaction (what
        was done elsewhere is recorded whoever did it), the rest in one fenced one.

        `intents` are the remote writes the block is about to make: journalled together, before
        any is sent, so that `write` does not journal them one by one."""
        batch = _Batch(intended={(e.plugin, e.action, e.target) for e in intents})
        if intents:
            with self.store.transaction(fenced=False):
                for entry in intents:
                    self.store.record(entry)
        token = _batch.set(batch)
        try:
            yield
        finally:
            _batch.reset(token)
            if batch.journal:
                with self.store.transaction(fenced=False):
                    for entry in batch.journal:
                        self.store.record(entry)
            if batch.writes:
                with self.store.transaction():
                    for write in batch.writes:
                        write()


@attrs.frozen
class Change:
    """One change on a remote system, made by `Bridge.write_each` (see `Bridge.write`)."""

    target: str
    call: Callable[[], Any]
    before: Callable[[], object] | None = None
    after: Callable[[Any], Any] | None = None
    detail: Mapping[str, Any] = attrs.field(factory=dict)
    claim: coordination.Held | None = None  # its own lease, in a group of claims


@attrs.frozen
class Failed:
    """A change of a group that was not made: the error its call raised."""

    error: Exception


@attrs.define
class _Batch:
    intended: set[tuple[str, str, str]] = attrs.field(factory=set)  # journalled beforehand
    journal: list[JournalEntry] = attrs.field(factory=list)
    writes: list[Callable[[], object]] = attrs.field(factory=list)


_batch: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar(
    "psabridge_batched_writes", default=None)


def _enabled_connector(pm: pluggy.PluginManager, store: Store, kind: str,
                       transports: Mapping[str, Any]) -> Connector:
    names = enabled_plugins(pm, store, kind)
    if not names:
        raise PluginError(
            f"no {kind.upper()} plugin is enabled; configure one with `psabridge configure "
            f"NAME ...` and enable it with `psabridge plugins enable NAME`"
        )
    if len(names) > 1:
        raise PluginError(
            f"several RMM plugins are enabled ({', '.join(names)}); psabridge maps one RMM "
            "to the PSA at a time: disable all but one"
        )
    name = names[0]
    return FACADES[kind](pm, connection_for(pm, store, name, transports.get(name)))


def open_bridge(
    pm: pluggy.PluginManager, store: Store, transports: Mapping[str, Any] | None = None
) -> Bridge:
    """The bridge between the enabled PSA and the enabled RMM.

    `transports` maps a plugin name to an httpx transport (a simulator mounted in-process).
    """
    transports = transports or {}
    return Bridge(pm=pm, store=store, psa=_enabled_connector(pm, store, "psa", transports),
                  rmm=_enabled_connector(pm, store, "rmm", transports))


class PluginDisabled(PsabridgeError):
    """The PSA or RMM an event is for has been disabled since `serve` started."""

    def __init__(self, plugin: str):
        super().__init__(f"{plugin} is disabled")
        self.plugin = plugin


class LiveBridge:
    """The bridge a long-running command (`serve`, `sync --watch`) works with, as `plugins
    enable/disable/configure` left it; each call costs one store read, the plugins' states.

    A connector is kept as long as its plugin is enabled with the same settings, and with it its
    HTTP client, the tokens it holds and what it has looked up once (ConnectWise's codebase); a
    failed call does not replace it. A plugin whose settings were changed is connected anew.

    While a plugin of the bridge is disabled (or removed), asking for the bridge raises
    PluginDisabled; once it is enabled again, the bridge is given again. With `switch` (`sync
    --watch`), another plugin of its kind enabled in its place is taken up instead: the PSA or
    RMM is whichever is enabled now, as for a `sync --once` started now. `serve` does not
    switch: it serves the PSA and RMM it started with, whose callbacks it was set up to receive.
    """

    def __init__(self, bridge: Bridge, transports: Mapping[str, Any] | None = None,
                 switch: bool = False):
        self._bridge = bridge
        self._transports = transports or {}  # plugin name -> httpx transport, as for open_bridge
        self._switch = switch
        self._lock = threading.Lock()  # waitress handles events on several threads
        # Per plugin: a connector found current, and the stored settings it was found current
        # with. While they are stored unchanged, it still is, and its secrets need not be
        # unsealed again (a sealed value always opens to the same secret): the key file read
        # and the decryption were most of an event's bookkeeping. Settings naming an
        # environment variable or a file are read anew for every event instead.
        self._current: dict[str, tuple[Connector, dict[str, str]]] = {}

    def __call__(self) -> Bridge:
        states = {state.name: state for state in self._bridge.store.plugin_states()}
        with self._lock:
            bridge = self._bridge
            psa = self._connector("psa", bridge.psa, states.get(bridge.psa.name))
            rmm = self._connector("rmm", bridge.rmm, states.get(bridge.rmm.name))
            if psa is not bridge.psa or rmm is not bridge.rmm:
                self._bridge = Bridge(pm=bridge.pm, store=bridge.store, psa=psa, rmm=rmm)
            return self._bridge

    def _connector(self, kind: str, connector: Connector, state: PluginState | None) -> Connector:
        pm, store = self._bridge.pm, self._bridge.store
        if state is None or not state.enabled:
            if not self._switch:
                raise PluginDisabled(connector.name)
            # Raises PluginError, saying what to do, when none (or several RMMs) is enabled.
            taken_up = _enabled_connector(pm, store, kind, self._transports)
            log.info("plugin_switched", kind=kind, previous=connector.name, plugin=taken_up.name)
            return taken_up
        seen = self._current.get(connector.name)
        if seen is not None and seen[0] is connector and seen[1] == state.settings:
            return connector
        # Compared as a connection is built from them: the store keeps secrets sealed.
        if plugin_settings(pm, store, connector.name) == dict(connector.connection.settings):
            if not any(secrets.is_reference(value) for value in state.settings.values()):
                self._current[connector.name] = (connector, dict(state.settings))
            return connector
        log.info("plugin_reconnected", plugin=connector.name, reason="settings changed")
        return FACADES[kind](pm, connection_for(pm, store, connector.name,
                                            self._transports.get(connector.name)))
