"""Follow-up writes that are made however often they fail: the outbox.

A change of state that needs a write on a remote system (a repeat's note on its ticket, closing
a ticket, resolving an alert, writing or clearing a configuration's device link) is saved in
the store together with an outbox item, in one transaction. The item is then sent at once and,
if that fails for a passing reason (5xx, throttled, no answer, the process killed), sent again
by the next sync passes, waiting longer after each failure, until it is made. One that fails for a lasting
reason (the ticket was deleted, the PSA refuses the change) becomes a warning for the admin.

Items are keyed by what they change (`close:TICKET`, `configuration:ID`...): a newer wish for
the same thing replaces a waiting one, so an unmap followed by a map sends only the map. An
item is claimed while it is sent, so two processes never send it at once. A write whose answer
was lost is sent again: closes, resolves and configuration updates are idempotent; a note may
then appear twice, never not at all (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs

from psabridge.core import coordination, logs
from psabridge.core.bridge import Bridge
from psabridge.core.errors import PsabridgeError
from psabridge.core.models import ConfigurationChanges, OutboxItem, converter
from psabridge.core.plugins import Connector
from psabridge.core.store import LeaseLost

log = logs.get_logger(__name__)

# After this many failed tries an item is given up and reported as a warning; with the delays
# below that is over a day of trying.
MAX_ATTEMPTS = 40
BASE_DELAY = 2.0  # seconds before the first retry; doubles, up to MAX_DELAY
MAX_DELAY = 15 * 60.0


def _add_ticket_note(bridge: Bridge, item: OutboxItem) -> None:
    bridge.psa.add_ticket_note(ticket_id=item.target, text=item.payload["text"])


def _close_ticket(bridge: Bridge, item: OutboxItem) -> None:
    bridge.psa.close_ticket(ticket_id=item.target,
                    closed_status_id=item.payload["closed_status_id"])


def _resolve_alert(bridge: Bridge, item: OutboxItem) -> None:
    bridge.rmm.resolve_alert(alert_uid=item.target)


def _update_configuration(bridge: Bridge, item: OutboxItem) -> None:
    changes = converter.structure(item.payload["changes"], ConfigurationChanges)
    if item.payload.get("if_exists") and not bridge.psa.get_configurations(ids=[item.target]):
        return  # deleted in the PSA meanwhile: nothing left to change
    bridge.psa.update_configuration(configuration_id=item.target, changes=changes)


def _unmap_configuration(bridge: Bridge, item: OutboxItem) -> None:
    bridge.psa.unmap_configurations(configuration_ids=[item.target])


# The info event a sent item is logged with, and the item's fields it names: the alert's uid and
# the ticket's id (payloads queued before these fields were added lack them: logged as None).
SENT_EVENTS: dict[str, tuple[str, Callable[[OutboxItem], dict]]] = {
    "add_ticket_note": ("ticket_noted", lambda item: {
        "ticket_id": item.target, "alert_uid": item.payload.get("alert")}),
    "close_ticket": ("ticket_closed", lambda item: {
        "ticket_id": item.target, "alert_uid": item.payload.get("alert")}),
    "resolve_alert": ("alert_resolved", lambda item: {
        "alert_uid": item.target, "ticket_id": item.payload.get("ticket")}),
}

ACTIONS: dict[str, Callable[[Bridge, OutboxItem], None]] = {
    "add_ticket_note": _add_ticket_note,
    "close_ticket": _close_ticket,
    "resolve_alert": _resolve_alert,
    "update_configuration": _update_configuration,
    "unmap_configurations": _unmap_configuration,
}


def enqueue(bridge: Bridge, connector: Connector, action: str, key: str, target: str,
            **payload) -> OutboxItem:
    """Queue `action` on `target`; call it inside the transaction that saves the state change
    the write follows from, then `drain([item.key])` to send it at once."""
    if action not in ACTIONS:
        raise ValueError(f"unknown outbox action {action!r}")
    return bridge.store.enqueue(OutboxItem(f"{connector.name}:{key}", connector.name, action,
                                           target, converter.unstructure(payload)))


def waiting(bridge: Bridge, connector: Connector, key: str) -> bool:
    """Whether a write is queued for `key` (waiting, or being sent right now)."""
    return bool(bridge.store.outbox(key=f"{connector.name}:{key}"))


@attrs.define
class Drained:
    done: int = 0
    retrying: list[str] = attrs.field(factory=list)  # what failed and will be tried again
    given_up: list[str] = attrs.field(factory=list)  # what became a warning


def _delay(failures_before: int) -> float:
    """How long an item waits after a failure: the next pass may try it again at once the first
    time (a pass's interval is already a pause), then the wait doubles."""
    return 0.0 if failures_before == 0 else min(MAX_DELAY, BASE_DELAY * 2 ** (failures_before - 1))


def drain(bridge: Bridge, keys: Iterable[str] | None = None) -> Drained:
    """Send the waiting items that are due (or those with `keys`, due or not), each under its
    claim; an item another process is sending is left to it."""
    store = bridge.store
    connectors = {bridge.psa.name: bridge.psa, bridge.rmm.name: bridge.rmm}
    if keys is None:
        items = store.outbox(due_only=True)
    else:
        items = [item for key in keys for item in store.outbox(key=key)]
    result = Drained()
    for item in items:
        connector = connectors.get(item.plugin)
        if connector is None:
            continue  # its plugin is disabled: the item waits for it
        with coordination.try_hold(store, f"outbox:{item.key}") as held:
            if held is None:
                continue
            current = next(iter(store.outbox(key=item.key)), None)
            if current is None:
                continue  # sent by another process meanwhile
            _send(bridge, connector, current, result)
    return result


def _send(bridge: Bridge, connector: Connector, item: OutboxItem, result: Drained) -> None:
    what = f"{item.action} {item.target}"
    try:
        bridge.write(connector, item.action, item.target,
                     lambda: ACTIONS[item.action](bridge, item), outbox=item.key)
    except LeaseLost:
        raise
    except PsabridgeError as exc:
        attempts = item.attempts + 1
        if getattr(exc, "transient", False) and attempts < MAX_ATTEMPTS:
            delay = _delay(item.attempts)
            bridge.store.outbox_retry(item, str(exc), delay)
            result.retrying.append(f"{what}: {exc} (trying again in {delay:g} s)")
            log.warning("follow-up write failed; will retry", action=item.action,
                        target=item.target, attempts=attempts, error=str(exc))
            return
        with bridge.store.transaction():
            bridge.store.add_warning(item.plugin, what,
                                     f"{what} failed after {attempts} tries and was given up: "
                                     f"{exc}")
            bridge.store.outbox_done(item)
        result.given_up.append(f"{what}: {exc}")
        log.warning("follow-up write given up",
                    action=item.action, target=item.target, attempts=attempts, error=str(exc))
        return
    bridge.store.outbox_done(item)
    result.done += 1
    if item.action in SENT_EVENTS:
        event, fields = SENT_EVENTS[item.action]
        log.info(event, plugin=item.plugin, **fields(item))
