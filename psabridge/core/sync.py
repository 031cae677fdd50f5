"""One pass of the integration, and the loop that repeats it (`psabridge sync`).

A pass: mapping triggers (R16, R18), settle interrupted ticket creations, new alerts to tickets,
resolved alerts to closed tickets, closed tickets to resolved alerts (R28). Polling and webhooks
both end in the same functions of `ticketing`, so an event seen both ways acts once.

Cursors are advanced only after the work they cover is done, and lag a little behind the clock
(`OVERLAP`): an event is sometimes seen twice, which the rows make harmless, and never missed.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import attrs

from psabridge.core import logs, mapping, ticketing
from psabridge.core.bridge import Bridge
from psabridge.core.errors import PsabridgeError
from psabridge.core.models import utcnow

log = logs.get_logger(__name__)

OVERLAP = dt.timedelta(minutes=5)
LOCK = "sync"
# A pass that died without releasing frees the lock after this long. PSABRIDGE_LOCK_TTL
# (seconds) shortens it for tests that kill passes on purpose; keep it above a pass's length.
LOCK_TTL = float(os.environ.get("PSABRIDGE_LOCK_TTL") or 15 * 60.0)


class SyncBusy(PsabridgeError):
    """Another sync holds the lock."""


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
    errors: list[str] = attrs.field(factory=list)
    planned: list[str] = attrs.field(factory=list)  # --dry-run: what would be done


def _owner_is_dead(owner: str | None) -> bool:
    """True when the lock's owner was a process on this host that no longer runs (killed)."""
    host, _, rest = (owner or "").partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another host's process: only its lock's expiry can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False


@contextmanager
def sync_lock(bridge: Bridge) -> Iterator[str]:
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    acquired = bridge.store.acquire_lock(LOCK, owner, LOCK_TTL)
    if not acquired and _owner_is_dead(held := bridge.store.lock_owner(LOCK)):
        # A sync killed on this host (kill -9, OOM, power button) need not block the next
        # one for LOCK_TTL: its process is gone, so its lock is taken over.
        log.warning("taking over the sync lock of a process that is gone", owner=held)
        bridge.store.release_lock(LOCK, held)
        acquired = bridge.store.acquire_lock(LOCK, owner, LOCK_TTL)
    if not acquired:
        raise SyncBusy("another psabridge sync is running on this store; let it finish (the lock "
                       f"frees itself {LOCK_TTL / 60:g} minutes after a crash)")
    try:
        yield owner
    finally:
        bridge.store.release_lock(LOCK, owner)


def _cursor(bridge: Bridge, plugin: str, name: str) -> dt.datetime | None:
    value = bridge.store.cursor(plugin, name)
    return dt.datetime.fromisoformat(value) if value else None


def _guarded(report: PassReport, what: str, action: Callable[[], object]):
    try:
        return action()
    except PsabridgeError as exc:
        report.errors.append(f"{what}: {exc}")
        log.warning("sync step failed", step=what, error=str(exc))
        return None


def run_pass(bridge: Bridge, dry_run: bool = False) -> PassReport:
    report = PassReport()
    with sync_lock(bridge):
        started = utcnow()
        _mapping_triggers(bridge, report, dry_run)
        if dry_run:
            _plan_tickets(bridge, report)
            return report
        report.recovered = len(_guarded(report, "recover", lambda: ticketing.recover_pending(bridge)) or [])
        _alerts_to_tickets(bridge, report)
        _resolved_alerts(bridge, report, started)
        _closed_tickets(bridge, report, started)
    return report


def _mapping_triggers(bridge: Bridge, report: PassReport, dry_run: bool) -> None:
    estate = mapping.Estate.read(bridge)  # one read of the devices serves both plans
    plans = [mapping.plan_deleted_devices(bridge, estate)]  # R18
    if bridge.option("auto_map"):  # R16: new devices in mapped sites
        plans.append(mapping.plan_automatic_mapping(bridge, estate=estate))
    for plan in plans:
        if dry_run:
            report.planned += [f"{c.action}: {c.subject} ({c.detail})" for c in plan.changes]
        else:
            outcome = mapping.apply(bridge, plan)
            report.mapping_changes += len(outcome.done)
            report.errors += [f"{c.action} {c.subject}: {e}" for c, e in outcome.failed]


def _plan_tickets(bridge: Bridge, report: PassReport) -> None:
    psa, rmm = bridge.pair
    for alert in bridge.rmm.call("rmm_list_alerts", resolved=False, since=None):
        if bridge.store.alert_ticket(psa, rmm, alert.uid) is None:
            report.planned.append(f"ticket for alert {alert.uid} ({alert.message or alert.monitor})")


def _alerts_to_tickets(bridge: Bridge, report: PassReport) -> None:
    # Open alerts are read whole each pass (no cursor): an alert is never missed, and the rows
    # make a second look free of side effects.
    context = ticketing.TicketContext.read(bridge)
    psa, rmm = bridge.pair
    for alert in bridge.rmm.call("rmm_list_alerts", resolved=False, since=None):
        before = bridge.store.alert_ticket(psa, rmm, alert.uid)
        if before is not None and before.state != "pending":
            continue
        row = _guarded(report, f"alert {alert.uid}",
                       lambda a=alert: ticketing.ticket_for_alert(bridge, a, context))
        if row is None:
            continue
        if row.state == "skipped":
            report.alerts_skipped += 1
        elif row.note == "repeat":
            report.tickets_joined += 1
        elif row.state == "open":
            report.tickets_created += 1


def _resolved_alerts(bridge: Bridge, report: PassReport, started: dt.datetime) -> None:
    rmm = bridge.rmm.name
    since = _cursor(bridge, rmm, "resolved_alerts")
    for alert in bridge.rmm.call("rmm_list_alerts", resolved=True, since=since):
        before = bridge.store.alert_ticket(*bridge.pair, alert.uid)
        if before is None or before.state != "open":
            continue
        after = _guarded(report, f"close ticket for alert {alert.uid}",
                         lambda a=alert: ticketing.close_for_resolved_alert(bridge, a.uid))
        if after is not None and after.state == "closed":
            report.tickets_closed += 1
    if not report.errors:
        bridge.store.set_cursor(rmm, "resolved_alerts", (started - OVERLAP).isoformat())


def _closed_tickets(bridge: Bridge, report: PassReport, started: dt.datetime) -> None:
    psa = bridge.psa.name
    since = _cursor(bridge, psa, "changed_tickets")
    for ticket in bridge.psa.call("psa_changed_tickets", since=since):
        resolved = _guarded(report, f"resolve alerts of ticket {ticket.id}",
                            lambda t=ticket: ticketing.resolve_for_ticket(bridge, t))
        report.alerts_resolved += len(resolved or [])
    if not report.errors:
        bridge.store.set_cursor(psa, "changed_tickets", (started - OVERLAP).isoformat())


def watch(bridge_factory: Callable[[], Bridge], interval: float,
          on_pass: Callable[[PassReport], None], stop: Callable[[], bool] = lambda: False,
          sleep: Callable[[float], None] = time.sleep) -> None:
    """Run passes every `interval` seconds until `stop()` says so; a failed pass is logged and
    the next one tries again."""
    while not stop():
        try:
            on_pass(run_pass(bridge_factory()))
        except PsabridgeError as exc:
            log.warning("sync pass failed", error=str(exc))
        sleep(interval)
