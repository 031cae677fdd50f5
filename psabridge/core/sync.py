"""One pass of the integration, and the loop that repeats it (`psabridge sync`).

A pass: mapping triggers (automatic mapping, deleted devices), settle interrupted ticket
creations, new alerts to tickets, resolved alerts to closed tickets, closed tickets to resolved
alerts, then the follow-up writes still waiting in the outbox. Polling and webhooks both end in
the same functions of `ticketing`, so an event seen both ways acts once.

A pass holds the `sync` lease (one pass at a time per store) and its mapping step the mapping
lease, which admin commands share; see docs/architecture.md. Each step, and each item within a
step, fails on its own: a device whose audit cannot be read, or an alert the PSA refuses, is
reported and tried again next pass while the rest of the pass goes on.

Cursors are high-water marks of the remote systems' own timestamps (when an alert was resolved
in the RMM, when a ticket last changed in the PSA), less an overlap, and never pass an item
that could not be settled: the local clock is never compared with a remote one, so a host
clock hours off loses nothing. An event is sometimes seen twice, which the rows make harmless.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import attrs

from psabridge.core import coordination, logs, mapping, outbox, ticketing
from psabridge.core.bridge import Bridge, Failed, LiveBridge
from psabridge.core.errors import PsabridgeError
from psabridge.core.models import Alert
from psabridge.core.store import LeaseLost, Store

log = logs.get_logger(__name__)

OVERLAP = dt.timedelta(minutes=5)
LOCK = "sync"
# New alerts are claimed and ticketed in groups of this many (`ticketing.tickets_for_alerts`):
# fewer commits per alert; a process killed mid-group leaves at most this many `pending` rows,
# each settled by one look for its ticket in the next pass.
ALERT_GROUP = 20
# A lease nobody renews or releases: a watcher takes it when its pass ends, so that the next
# pass on the store, whichever watcher runs it, starts no sooner than an interval later.
SCHEDULE = "sync:schedule"
# The others stand by half an interval longer than the watcher that ran the pass waits, so that
# it keeps the schedule while it lives rather than racing them for it.
STANDBY = 1.5


class SyncBusy(coordination.Busy):
    """Another sync pass holds the lease."""


@attrs.define
class PassReport:
    """What one pass did, for the CLI and the demo."""

    mapping_changes: int = 0
    tickets_created: int = 0
    tickets_joined: int = 0
    alerts_skipped: int = 0
    tickets_closed: int = 0
    alerts_resolved: int = 0
    recovered: int = 0
    follow_ups_sent: int = 0
    follow_ups_waiting: int = 0  # failed for a passing reason: the next pass sends them again
    errors: list[str] = attrs.field(factory=list)
    planned: list[str] = attrs.field(factory=list)  # --dry-run: what would be done


@contextmanager
def sync_lock(bridge: Bridge) -> Iterator[coordination.Held]:
    try:
        # The pass's lease only keeps passes apart; what it writes is guarded by the claims on
        # each alert and the mapping lease, so an unanswered write does not hold up the next pass.
        with coordination.hold(bridge.store, LOCK, what="a sync pass",
                               guards_writes=False) as held:
            yield held
    except coordination.Busy as busy:
        raise SyncBusy(busy.name, busy.holder, "another psabridge sync is running on this store") \
            from None


def _cursor(bridge: Bridge, plugin: str, name: str) -> dt.datetime | None:
    value = bridge.store.cursor(plugin, name)
    return dt.datetime.fromisoformat(value) if value else None


@attrs.define
class HighWater:
    """A cursor's next value: the newest remote timestamp seen, held back before the oldest item
    that could not be settled this pass (it must be seen again)."""

    previous: dt.datetime | None
    newest: dt.datetime | None = None
    oldest_unsettled: dt.datetime | None = None

    def saw(self, moment: dt.datetime | None, settled: bool) -> None:
        if moment is None:
            return
        if self.newest is None or moment > self.newest:
            self.newest = moment
        if not settled and (self.oldest_unsettled is None or moment < self.oldest_unsettled):
            self.oldest_unsettled = moment

    def next_value(self) -> dt.datetime | None:
        mark = self.newest
        if self.oldest_unsettled is not None:
            mark = self.oldest_unsettled
        if mark is None:
            return self.previous
        candidate = mark - OVERLAP
        return candidate if self.previous is None or candidate > self.previous else self.previous


def _guarded(report: PassReport, what: str, action: Callable[[], object]):
    """Run one item's work; a failure is reported and the pass goes on. Losing the pass's own
    lease is not an item's failure: the pass must stop, so that propagates."""
    try:
        return action()
    except LeaseLost as exc:
        if exc.lease.name == LOCK:
            raise
        report.errors.append(f"{what}: {exc}")
        return None
    except PsabridgeError as exc:
        report.errors.append(f"{what}: {exc}")
        log.warning("sync step failed", step=what, error=str(exc))
        return None


@attrs.frozen
class Schedule:
    """The passes of every `sync --watch` on one store: `interval` seconds from the end of one
    pass to the start of the next, whichever watcher runs it. `watcher` names this watcher (the
    same for all of its passes): it runs its next pass when its own interval is over; the other
    watchers stand by, and one of them runs the pass once one and a half intervals are over and
    this watcher has not come back (it died, hangs, or was stopped). See docs/architecture.md,
    "Several workers"."""

    watcher: str
    interval: float

    def due(self, store: Store) -> bool:
        holder = store.lease_holder(SCHEDULE)
        return holder is None or holder.expires_in <= 0 or holder.owner == self.watcher

    def passed(self, store: Store) -> None:
        holder = store.lease_holder(SCHEDULE)
        store.acquire_lease(SCHEDULE, self.watcher, self.interval * STANDBY,
                            replacing=holder.owner if holder else None)


def run_pass(bridge: Bridge, dry_run: bool = False,
             schedule: Schedule | None = None) -> PassReport | None:
    """One pass; with `schedule` (`sync --watch`), None when it is not this watcher's turn: the
    store's last pass, by another watcher, ended less than one and a half intervals ago."""
    with sync_lock(bridge):
        if schedule is not None and not schedule.due(bridge.store):
            return None
        try:
            return _run_pass(bridge, dry_run)
        finally:
            if schedule is not None:
                schedule.passed(bridge.store)


def _run_pass(bridge: Bridge, dry_run: bool) -> PassReport:
    report = PassReport()
    started = time.monotonic()
    with bridge.one_run():
        _guarded(report, "mapping", lambda: _mapping_triggers(bridge, report, dry_run))
        if dry_run:
            _plan_tickets(bridge, report)
            return report
        report.recovered = len(_guarded(report, "recover", lambda: ticketing.recover_pending(bridge)) or [])
        _guarded(report, "alerts", lambda: _alerts_to_tickets(bridge, report))
        _guarded(report, "resolved alerts", lambda: _resolved_alerts(bridge, report))
        _guarded(report, "closed tickets", lambda: _closed_tickets(bridge, report))
        _guarded(report, "follow-up writes", lambda: _follow_ups(bridge, report))
    log.info("pass_finished", duration_seconds=round(time.monotonic() - started, 3),
             **{k: v for k, v in attrs.asdict(report).items() if isinstance(v, int)},
             errors=len(report.errors))
    return report


def _mapping_triggers(bridge: Bridge, report: PassReport, dry_run: bool) -> None:
    if dry_run:
        _apply_mapping_triggers(bridge, report, dry_run)
        return
    try:
        # No wait: an admin's mapping command is running; this pass leaves mapping to it.
        with mapping.mapping_lease(bridge, wait=0):
            _apply_mapping_triggers(bridge, report, dry_run)
    except coordination.Busy as busy:
        log.info("mapping_left_to_a_running_command", detail=str(busy))


def _apply_mapping_triggers(bridge: Bridge, report: PassReport, dry_run: bool) -> None:
    estate = mapping.Estate.read(bridge)  # one read of the devices serves both plans
    auto_map = bridge.option("auto_map")  # new devices in mapped sites
    plans = [mapping.plan_deleted_devices(bridge, estate)]
    if auto_map and dry_run:
        plans.append(mapping.plan_automatic_mapping(bridge, estate=estate))
    if auto_map and not dry_run:  # planned and applied side by side, a group at a time
        plans.append(lambda: mapping.map_automatically(bridge, estate=estate))
    for plan in plans:
        if dry_run:
            report.planned += [f"{c.action}: {c.subject} ({c.detail})" for c in plan.changes]
        else:
            plan, outcome = plan() if callable(plan) else (plan, mapping.apply(bridge, plan))
            report.mapping_changes += len(outcome.done)
            report.errors += [f"{c.action} {c.subject}: {e}" for c, e in outcome.failed]
            # Left out because a remote system failed for now: tried again next pass.
            report.errors += [f"{subject}: {why}" for subject, why in plan.deferred]


def _plan_tickets(bridge: Bridge, report: PassReport) -> None:
    psa, rmm = bridge.pair
    for alert in bridge.rmm.list_alerts(resolved=False, since=None):
        if bridge.store.alert_ticket(psa, rmm, alert.uid) is None:
            report.planned.append(f"ticket for alert {alert.uid} ({alert.message or alert.monitor})")


def _alerts_to_tickets(bridge: Bridge, report: PassReport) -> None:
    # Open alerts are read whole each pass (no cursor): an alert is never missed, and the rows
    # make a second look free of side effects.
    context = ticketing.TicketContext.read(bridge)
    psa, rmm = bridge.pair
    waiting: list[Alert] = []
    for alert in bridge.rmm.list_alerts(resolved=False, since=None):
        before = bridge.store.alert_ticket(psa, rmm, alert.uid)
        if before is None or before.state == "pending":
            waiting.append(alert)
        if len(waiting) == ALERT_GROUP:
            _ticket_group(bridge, report, waiting, context)
            waiting = []
    if waiting:
        _ticket_group(bridge, report, waiting, context)


def _ticket_group(bridge: Bridge, report: PassReport, alerts: list[Alert],
                  context: ticketing.TicketContext) -> None:
    rows = _guarded(report, f"alerts {alerts[0].uid} and {len(alerts) - 1} more",
                    lambda: ticketing.tickets_for_alerts(bridge, alerts, context))
    for alert, row in zip(alerts, rows or (), strict=False):
        if isinstance(row, Failed):
            report.errors.append(f"alert {alert.uid}: {row.error}")
            log.warning("sync step failed", step=f"alert {alert.uid}", error=str(row.error))
        elif row is None:
            continue
        elif row.state == "skipped":
            report.alerts_skipped += 1
        elif row.note == "repeat":
            report.tickets_joined += 1
        elif row.state == "open":
            report.tickets_created += 1


def _resolved_alerts(bridge: Bridge, report: PassReport) -> None:
    rmm = bridge.rmm.name
    mark = HighWater(_cursor(bridge, rmm, "resolved_alerts"))
    for alert in bridge.rmm.list_alerts(resolved=True, since=mark.previous):
        moment = alert.resolved_at or alert.raised_at
        before = bridge.store.alert_ticket(*bridge.pair, alert.uid)
        if before is None or before.state not in ("open", "pending"):
            mark.saw(moment, settled=True)
            continue
        if before.state == "pending":  # its ticket is being created: close it next pass
            mark.saw(moment, settled=False)
            continue
        after = _guarded(report, f"close ticket for alert {alert.uid}",
                         lambda a=alert: ticketing.close_for_resolved_alert(bridge, a.uid))
        mark.saw(moment, settled=after is not None and after.state != "open")
        if after is not None and after.state == "closed":
            report.tickets_closed += 1
    _advance(bridge, rmm, "resolved_alerts", mark)


def _closed_tickets(bridge: Bridge, report: PassReport) -> None:
    psa = bridge.psa.name
    mark = HighWater(_cursor(bridge, psa, "changed_tickets"))
    for ticket in bridge.psa.changed_tickets(since=mark.previous):
        resolved = _guarded(report, f"resolve alerts of ticket {ticket.id}",
                            lambda t=ticket: ticketing.resolve_for_ticket(bridge, t))
        mark.saw(ticket.last_updated, settled=resolved is not None)
        report.alerts_resolved += len(resolved or [])
    _advance(bridge, psa, "changed_tickets", mark)


def _advance(bridge: Bridge, plugin: str, name: str, mark: HighWater) -> None:
    value = mark.next_value()
    if value is not None and value != mark.previous:
        bridge.store.set_cursor(plugin, name, value.isoformat())


def _follow_ups(bridge: Bridge, report: PassReport) -> None:
    drained = outbox.drain(bridge)
    report.follow_ups_sent += drained.done
    report.errors += drained.given_up
    report.follow_ups_waiting = len(bridge.store.outbox())


def watch(bridge_factory: Callable[[], Bridge], interval: float,
          on_pass: Callable[[PassReport], None], stop: Callable[[], bool] = lambda: False,
          sleep: Callable[[float], None] = time.sleep) -> None:
    """Run passes every `interval` seconds until `stop()` says so; a failed pass is logged and
    the next one tries again. Several watchers on one store share one schedule (`Schedule`):
    one runs the passes, the others stand by and take over when it stops.

    `bridge_factory` gives each pass its bridge: a `LiveBridge` (as `sync --watch` uses) keeps
    the connectors, and so their connections, tokens and caches, from pass to pass, failed
    passes included, and follows the plugins enabled and disabled meanwhile. What a bridge reads
    once per run (the PSA's companies and configuration types) is read again each pass.
    """
    schedule = Schedule(coordination.new_owner(), interval)
    while not stop():
        try:
            report = run_pass(bridge_factory().with_fresh_reads(), schedule=schedule)
            if report is None:
                log.debug("pass_left_to_another_watcher")
            else:
                on_pass(report)
        except SyncBusy as busy:
            log.info("pass_left_to_another_watcher", detail=str(busy))
        except PsabridgeError as exc:
            log.warning("sync pass failed", error=str(exc))
        sleep(interval)


def live_bridge(bridge: Bridge, transports=None) -> LiveBridge:
    """The bridge factory of `sync --watch`, starting from `bridge`: see `watch`."""
    return LiveBridge(bridge, transports, switch=True)
