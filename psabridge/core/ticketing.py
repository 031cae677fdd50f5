"""Alerts to tickets and back, connector-neutral.

Exactly once: before the PSA is asked to create a ticket, the alert's row is written as
`pending` with a marker unique to the alert, and the PSA stores that marker on the ticket. If
the process dies, or the request times out, after the PSA created the ticket but before the row
says `open`, the next pass finds the ticket by its marker and adopts it instead of creating a
second one. A `pending` row is therefore always checked with `psa_find_ticket` before any create.

Round trip without loops: a ticket closed in the PSA resolves its alerts and marks their rows
`resolved`; an alert resolved in the RMM closes its ticket and marks its row `closed`. Each side
only acts on rows still `open`, so neither echo comes back.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import attrs

from psabridge.core import coordination, logs, outbox
from psabridge.core.bridge import Bridge, Change, Failed
from psabridge.core.errors import PsabridgeError
from psabridge.core.mapping import device_url
from psabridge.core.models import (
    Alert,
    AlertTicket,
    Device,
    LeaseHolder,
    Ticket,
    TicketDraft,
    TicketOptions,
    converter,
    utcnow,
)
from psabridge.core.store import LeaseLost

log = logs.get_logger(__name__)

Origin = Literal["alert", "manual"]
ORIGINS: tuple[Origin, ...] = ("alert", "manual")


class TicketingError(PsabridgeError):
    """A ticket cannot be created or closed as asked."""


# -- settings --------------------------------------------------------------------------------


@attrs.frozen
class TicketAttributes:
    """Where a ticket goes and how it opens and closes, by PSA ids. `routing` maps the PSA's
    routing fields (as its `psa_ticket_options` names them) to choice ids."""

    routing: dict[str, str] = attrs.field(factory=dict)
    open_status_id: str | None = None
    closed_status_id: str | None = None


@attrs.frozen
class MonitorOverride:
    """A monitor may turn tickets off, or send them elsewhere."""

    create_tickets: bool = True
    attributes: TicketAttributes | None = None


@attrs.frozen
class TicketSettings:
    enabled: bool = False
    enabled_at: dt.datetime | None = None  # when ticketing was last turned on (for people)
    source_id: str | None = None  # Read at creation time, so a change applies from then on
    priorities: dict[str, str] = attrs.field(factory=dict)  # RMM priority -> PSA priority id
    attributes: dict[str, TicketAttributes] = attrs.field(factory=dict)  # origin -> attributes
    monitors: dict[str, MonitorOverride] = attrs.field(factory=dict)
    repeat_minutes: int | None = None  # None = repeating-alert detection off

    def attributes_for(self, origin: Origin, monitor: str = "") -> TicketAttributes:
        override = self.monitors.get(monitor)
        if override and override.attributes:
            return override.attributes
        return self.attributes.get(origin, TicketAttributes())


OPTION = "ticketing"


STATUS_KEYS = ("open_status_id", "closed_status_id")


def _routing_from_fields(stored: dict | None) -> dict | None:
    """Stored attributes as saved before routing was generic, one key per field
    (`{"board_id": "1", "type_id": "5", ...}`), as `{"routing": {"board": "1", "type": "5"}}`.
    Attributes already in the present form come back as they are."""
    if not stored or "routing" in stored:
        return stored
    routing = {key.removesuffix("_id"): value for key, value in stored.items()
               if key.endswith("_id") and key not in STATUS_KEYS and value is not None}
    return {"routing": routing, **{key: stored.get(key) for key in STATUS_KEYS}}


def _upgraded(stored: dict) -> dict:
    """Settings saved by an earlier version, converted once as they are read (the next save
    writes them in the present form)."""
    attributes = {origin: _routing_from_fields(a) for origin, a in
                  (stored.get("attributes") or {}).items()}
    monitors = {monitor: {**o, "attributes": _routing_from_fields(o.get("attributes"))}
                for monitor, o in (stored.get("monitors") or {}).items()}
    return {**stored, "attributes": attributes, "monitors": monitors}


def ticket_settings(bridge: Bridge) -> TicketSettings:
    stored = bridge.store.option(bridge.psa.name, OPTION)
    return converter.structure(_upgraded(stored), TicketSettings) if stored else TicketSettings()


def save_ticket_settings(bridge: Bridge, settings: TicketSettings) -> None:
    bridge.store.set_option(bridge.psa.name, OPTION, converter.unstructure(settings))


def change_ticket_settings(bridge: Bridge, settings: TicketSettings,
                           options: TicketOptions | None = None,
                           dry_run: bool = False) -> list[Problem]:
    """Save `settings` unless they would add an error to those the saved settings already
    have: then nothing is saved and TicketingError names each new error. Errors that were
    there before do not block a change (it may be the one that fixes them). Returns every
    problem of the new settings, for the caller to show; `dry_run` checks without saving."""
    options = options or bridge.psa.ticket_options()
    before = ticket_settings(bridge)
    known = {p.message for p in check_ticket_settings(bridge, before, options)}
    problems = check_ticket_settings(bridge, settings, options)
    added = [p.message for p in problems if p.severity == "error" and p.message not in known]
    if added:
        raise TicketingError("nothing saved: " + "; ".join(added))
    if not dry_run:
        save_ticket_settings(bridge, settings)
    return problems


def check_can_enable(bridge: Bridge, settings: TicketSettings | None = None,
                     options: TicketOptions | None = None) -> None:
    """Raise TicketingError naming each error of the ticket settings: tickets made with them
    would be refused by the PSA, so ticketing is not turned on (nor said to be on)."""
    settings = settings or ticket_settings(bridge)
    errors = [p.message for p in check_ticket_settings(bridge, settings, options)
              if p.severity == "error"]
    if errors:
        state = ("ticketing is on, but its settings make alert tickets fail: " if settings.enabled
                 else "cannot enable ticketing: ")
        raise TicketingError(state + "; ".join(errors) + " (fix them with `psabridge ticketing "
                             "set` or on the console's Ticketing page)")


def set_ticketing_enabled(bridge: Bridge, enabled: bool, now: dt.datetime | None = None) -> TicketSettings:
    """Turning ticketing off keeps every setting; on again, tickets start from that moment.

    "From that moment" is decided by what is open in the RMM when ticketing is turned on, not
    by comparing the RMM's alert times with our clock: those clocks differ (skew, and Datto
    keeps milliseconds), and an alert raised a millisecond after "on" must make its ticket.
    Every alert open at that moment is recorded as skipped; every later one is ticketed.
    """
    settings = ticket_settings(bridge)
    if enabled:
        check_can_enable(bridge, settings)
    if enabled and not settings.enabled:
        psa, rmm = bridge.pair
        for alert in bridge.rmm.list_alerts(resolved=False, since=None):
            if bridge.store.alert_ticket(psa, rmm, alert.uid) is None:
                _skip(bridge, alert, "raised while ticketing was off")
        settings = attrs.evolve(settings, enabled=True, enabled_at=now or utcnow())
    elif not enabled:
        settings = attrs.evolve(settings, enabled=False)
    save_ticket_settings(bridge, settings)
    return settings


@attrs.frozen
class Problem:
    severity: Literal["error", "warning"]
    message: str


def check_ticket_settings(
    bridge: Bridge, settings: TicketSettings, options: TicketOptions | None = None
) -> list[Problem]:
    """Validate settings against the PSA's ticket options, as its connector declares them."""
    options = options or bridge.psa.ticket_options()
    problems = []

    def error(message):
        problems.append(Problem("error", message))

    if settings.source_id and settings.source_id not in {s.id for s in options.sources}:
        error(f"source {settings.source_id} does not exist in the PSA")
    priorities = {p.id: p for p in options.priorities}
    for rmm_priority, psa_priority in sorted(settings.priorities.items()):
        if psa_priority not in priorities:
            error(f"priority {psa_priority} (for RMM priority {rmm_priority}) does not exist in the PSA")
        elif priorities[psa_priority].inactive:
            error(f"priority {priorities[psa_priority].name} (for RMM priority {rmm_priority}) is "
                  "inactive in the PSA")
    if options.priority_required and not settings.priorities:
        error("the PSA needs a priority on every ticket: map the RMM's priorities to the PSA's")
    named = [(f"origin {o}", a) for o, a in settings.attributes.items()]
    named += [(f"monitor {m}", o.attributes) for m, o in settings.monitors.items() if o.attributes]
    for where, attributes in sorted(named, key=lambda item: item[0]):
        for message in routing_problems(options, attributes):
            error(f"{where}: {message}")
    if "alert" not in settings.attributes:
        problems.append(Problem("warning", "no ticket attributes for origin alert; tickets go to "
                                           "the PSA's defaults"))
    return problems


def describe_choice(options: TicketOptions, field_name: str, choice_id: str | None) -> str:
    """A routing choice as people read it: "board Service Desk", or "board 12" if unknown."""
    field = options.field(field_name)
    label = field.label.lower() if field else field_name
    choice = next((c for c in field.choices if c.id == choice_id), None) if field else None
    return f"{label} {choice.name if choice else choice_id}"


def routing_problems(options: TicketOptions, attributes: TicketAttributes) -> list[str]:
    """What is wrong with one set of ticket attributes, by what the PSA declares: unknown or
    missing routing choices, choices outside their scope, inactive or unusable ones, statuses
    that are not of the ticket's scope or not open (closed) as their use needs."""
    problems = []
    routing = attributes.routing
    declared = {f.name for f in options.routing}
    for name in sorted(set(routing) - declared):
        problems.append(f"the PSA has no ticket field {name!r} (its fields: "
                        f"{', '.join(sorted(declared)) or 'none'}); unset it")
    for field in options.routing:
        label = field.label.lower()
        value = routing.get(field.name)
        if not value:
            if field.required:
                problems.append(f"no {label} is set")
            continue
        choice = next((c for c in field.choices if c.id == value), None)
        if choice is None:
            problems.append(f"{label} {value} does not exist in the PSA")
            continue
        if field.scoped_by and choice.scope_id is not None:
            scope = routing.get(field.scoped_by)
            if not scope:
                owner = describe_choice(options, field.scoped_by, choice.scope_id)
                problems.append(f"{label} {choice.name} is a {label} of {owner}, which is not set")
            elif scope != choice.scope_id:
                problems.append(f"{label} {choice.name} is not a {label} of "
                                f"{describe_choice(options, field.scoped_by, scope)}")
        if choice.inactive:
            problems.append(f"{label} {choice.name} is inactive in the PSA")
        if choice.unusable:
            problems.append(f"{label} {choice.name} cannot take tickets: {choice.unusable}")
    scope = options.status_scope
    scope_id = routing.get(scope) if scope else None
    if scope and not scope_id:
        scoped = []  # no scope chosen: its statuses cannot be checked (said above if required)
    else:
        scoped = [s for s in options.statuses if not scope or s.scope_id == scope_id]
    for label, status_id, must_close in (("open", attributes.open_status_id, False),
                                         ("closed", attributes.closed_status_id, True)):
        if not status_id or (scope and not scope_id):
            continue
        status = next((s for s in scoped if s.id == status_id), None)
        if status is None:
            where = f" of {describe_choice(options, scope, scope_id)}" if scope else " in the PSA"
            problems.append(f"{label} status {status_id} is not a status{where}")
        elif status.closed != must_close:
            problems.append(f"{label} status {status.name} is {'not ' if must_close else ''}a "
                            "closed status")
        elif status.inactive:
            problems.append(f"{label} status {status.name} is inactive in the PSA")
    if not attributes.closed_status_id:
        problems.append("no closed status is set, so resolved alerts cannot close tickets")
    return problems


def workable_attributes(options: TicketOptions) -> TicketAttributes | None:
    """Ticket attributes that the PSA would take, picked from its options: the first usable
    active choice of every required routing field (within the scope picked before it), and
    the scope's default open status and first closed status. None when the options offer no
    such combination. For the demo and for tests; admins choose their own."""
    def pick(routing: dict[str, str], fields: list) -> dict[str, str] | None:
        if not fields:
            return routing
        field, rest = fields[0], fields[1:]
        scope = routing.get(field.scoped_by) if field.scoped_by else None
        for choice in field.choices:
            if choice.inactive or choice.unusable or (scope and choice.scope_id not in (None, scope)):
                continue
            found = pick({**routing, field.name: choice.id}, rest)
            if found is not None and _statuses_of(options, found):
                return found
        return None

    routing = pick({}, [f for f in options.routing if f.required])
    statuses = _statuses_of(options, routing) if routing is not None else None
    if statuses is None:
        return None
    opening, closed = statuses
    return TicketAttributes(routing=routing, open_status_id=opening, closed_status_id=closed)


def _statuses_of(options: TicketOptions, routing: dict[str, str]) -> tuple[str | None, str] | None:
    scope = options.status_scope
    if scope and scope not in routing:
        return None
    statuses = [s for s in options.statuses if not s.inactive
                and (not scope or s.scope_id == routing[scope])]
    closed = next((s.id for s in statuses if s.closed), None)
    if closed is None:
        return None
    opening = next((s.id for s in statuses if s.default and not s.closed),
                   next((s.id for s in statuses if not s.closed), None))
    return opening, closed


# -- alerts to tickets -----------------------------------------------------------------------


def alert_marker(bridge: Bridge, alert_uid: str) -> str:
    return f"psabridge:{bridge.rmm.name}:{alert_uid}"


def _describe(alert: Alert) -> str:
    """The ticket's description: what the alert says. The links to the RMM travel beside it
    (`TicketDraft.device_url`, `alert_url`), for the connector to place."""
    lines = [alert.message or f"Alert from monitor {alert.monitor}", ""]
    if alert.diagnostics:
        lines += ["Diagnostics:", alert.diagnostics, ""]
    lines += [f"Priority: {alert.priority}", f"Device: {alert.device_name or alert.device_uid}",
              f"Site: {alert.site_name or alert.site_uid}"]
    if alert.raised_at:
        lines.append(f"Raised: {alert.raised_at.isoformat()}")
    return "\n".join(lines)


def _summary(alert: Alert, hostname: str, limit: int | None) -> str:
    text = f"{alert.priority}: {alert.message or alert.monitor} on {hostname}"
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


@attrs.define
class TicketContext:
    """What deciding an alert's ticket reads besides the alert: the settings, read once for a
    pass over many alerts, and which company the alert's site is mapped to and which
    configuration its device is, looked up for each alert by their keys (an index serves each),
    so that the cost of an alert does not grow with the estate."""

    bridge: Bridge
    settings: TicketSettings
    # Sites are few and an alert storm hits a few of them: each site's company is looked up
    # once per pass.
    _companies: dict[str, str | None] = attrs.field(factory=dict)

    @classmethod
    def read(cls, bridge: Bridge) -> TicketContext:
        return cls(bridge, ticket_settings(bridge))

    def company_of_site(self, site_uid: str | None) -> str | None:
        if not site_uid:
            return None
        if site_uid not in self._companies:
            mapping = self.bridge.store.company_mapping_of_site(*self.bridge.pair, site_uid)
            self._companies[site_uid] = mapping.company_id if mapping else None
        return self._companies[site_uid]

    def configuration_of(self, device_uid: str | None) -> str | None:
        if not device_uid:
            return None
        mapping = self.bridge.store.device_mapping(*self.bridge.pair, device_uid)
        return mapping.configuration_id if mapping else None


def _skip(bridge: Bridge, alert: Alert, why: str) -> AlertTicket:
    psa, rmm = bridge.pair
    return bridge.store.save_alert_ticket(AlertTicket(
        psa, rmm, alert.uid, "skipped", monitor=alert.monitor, device_uid=alert.device_uid,
        opened_at=alert.raised_at, note=why))


@contextmanager
def _claim(bridge: Bridge, key: str) -> Iterator[bool]:
    """Hold one alert's claim while deciding and creating its ticket, so that the webhook and
    the polling path, in one process or several, never both create it. The claim is renewed
    while its work runs (however long a throttled create waits) and fences the work's commits."""
    with coordination.try_hold(bridge.store, _claim_name(bridge, key)) as held:
        yield held is not None


def _claim_name(bridge: Bridge, key: str) -> str:
    return f"alert:{bridge.psa.name}:{key}"


def claim_holder(bridge: Bridge, alert_uid: str) -> LeaseHolder | None:
    """Who holds the alert's claim now (a process working on it, or the wait for a write of it
    that got no answer: `coordination.waiting_out`), or None when it is free."""
    return bridge.store.lease_holder(_claim_name(bridge, alert_uid))


def ticket_for_alert(
    bridge: Bridge, alert: Alert, context: TicketContext | None = None
) -> AlertTicket | None:
    """Give an open alert its ticket, exactly once: create one, join a repeat, or skip.

    Returns None when another process is handling this alert right now."""
    with _claim(bridge, alert.uid) as claimed:
        if not claimed:
            return None
        return _ticket_for_alert(bridge, alert, context)


@attrs.frozen
class _NewTicket:
    """The decision to create an alert's ticket, in this company, with this configuration."""

    company_id: str
    configuration_id: str | None
    settings: TicketSettings


def _ticket_for_alert(bridge: Bridge, alert: Alert, context: TicketContext | None) -> AlertTicket | None:
    decided = _decide(bridge, alert, context)
    if isinstance(decided, _NewTicket):
        return _create_ticket(bridge, alert, "alert", decided.company_id,
                              decided.configuration_id, decided.settings)
    return decided


def _decide(bridge: Bridge, alert: Alert,
            context: TicketContext | None) -> AlertTicket | _NewTicket | None:
    """Under the alert's claim: settle what was left of it (an interrupted creation), skip it,
    join it to its problem's ticket, or decide that it needs a new ticket."""
    psa, rmm = bridge.pair
    row = bridge.store.alert_ticket(psa, rmm, alert.uid)
    if row is not None and row.state != "pending":
        return row
    if row is not None:
        found = bridge.psa.find_ticket(marker=row.marker)
        if found is not None:  # the PSA created it; the answer was lost last time
            return _adopt(bridge, row, found)
        if row.ticket_id:  # a note for a repeating alert, interrupted: its ticket is known
            return bridge.store.save_alert_ticket(attrs.evolve(row, state="open"))
    context = context or TicketContext.read(bridge)
    settings = context.settings
    bridge.announce("on_alert_raised", rmm=rmm, alert=alert)

    if not settings.enabled:
        return _skip(bridge, alert, "ticketing is off")
    override = settings.monitors.get(alert.monitor)
    creates = override.create_tickets if override else alert.creates_ticket
    if not creates:
        return _skip(bridge, alert, f"monitor {alert.monitor} does not create tickets")
    company_id = context.company_of_site(alert.site_uid)
    if company_id is None:
        return _skip(bridge, alert, f"site {alert.site_name or alert.site_uid} is not mapped to a company")

    configuration_id = context.configuration_of(alert.device_uid)
    if not settings.repeat_minutes:
        return _NewTicket(company_id, configuration_id, settings)
    # Two alerts of one problem (a monitor on a device) handled at once, in two processes, must
    # not both find no ticket to join and each open one: "join or create" is decided under the
    # problem's claim.
    problem = f"problem:{psa}:{alert.device_uid}:{alert.monitor}"
    with coordination.try_hold(bridge.store, problem) as held:
        if held is None:
            return None  # another alert of this problem is being handled: come back to it
        since = (alert.raised_at or utcnow()) - dt.timedelta(minutes=settings.repeat_minutes)
        if not _settle_pending_repeats(bridge, alert, since):
            return None  # an earlier alert of this problem is in another process's hands
        if (joined := _join_repeat(bridge, alert, settings)) is not None:
            return joined
        return _create_ticket(bridge, alert, "alert", company_id, configuration_id, settings)


def _join_repeat(bridge: Bridge, alert: Alert, settings: TicketSettings) -> AlertTicket | None:
    """Within the window, the same monitor on the same device adds to an open ticket."""
    psa, rmm = bridge.pair
    raised = alert.raised_at or utcnow()
    since = raised - dt.timedelta(minutes=settings.repeat_minutes)
    previous = bridge.store.latest_ticket_for(psa, rmm, alert.monitor, alert.device_uid, since)
    if previous is None or previous.alert_uid == alert.uid:
        return None
    ticket = bridge.psa.get_ticket(ticket_id=previous.ticket_id)
    if ticket is None or ticket.closed:
        return None
    text = f"Repeating alert ({alert.priority}) at {raised.isoformat()}:\n{alert.message}"
    if alert.diagnostics:
        text += f"\n{alert.diagnostics}"
    with bridge.store.transaction():  # the row and its note are saved together
        row = bridge.store.save_alert_ticket(AlertTicket(
            psa, rmm, alert.uid, "open", marker=alert_marker(bridge, alert.uid),
            monitor=alert.monitor, device_uid=alert.device_uid, ticket_id=ticket.id,
            opened_at=alert.raised_at, note="repeat"))
        note = outbox.enqueue(bridge, bridge.psa, "add_ticket_note", f"note:{alert.uid}",
                              ticket.id, text=text, alert=alert.uid)
    outbox.drain(bridge, [note.key])
    return row


def _settle_pending_repeats(bridge: Bridge, alert: Alert, since: dt.datetime) -> bool:
    """An earlier alert of the same monitor and device may be `pending` with its ticket already
    made in the PSA (the answer was lost). Adopt that ticket first, so that this alert joins it
    instead of opening a second ticket for one problem. False when such an alert is claimed by
    another process (or by one that died, until its claim expires): decide later."""
    psa, rmm = bridge.pair
    for row in bridge.store.alert_tickets(psa, rmm, ("pending",)):
        if (row.alert_uid == alert.uid or row.ticket_id or row.monitor != alert.monitor
                or row.device_uid != alert.device_uid or (row.opened_at and row.opened_at < since)):
            continue
        with _claim(bridge, row.alert_uid) as claimed:
            if not claimed:
                return False
            current = bridge.store.alert_ticket(psa, rmm, row.alert_uid)
            if current is None or current.state != "pending":
                continue
            found = bridge.psa.find_ticket(marker=current.marker)
            if found is not None:
                log.info("ticket_adopted", alert_uid=current.alert_uid, ticket_id=found.id)
                bridge.store.save_alert_ticket(attrs.evolve(current, state="open", ticket_id=found.id))
    return True


def _create_ticket(bridge: Bridge, alert: Alert, origin: Origin, company_id: str,
                   configuration_id: str | None, settings: TicketSettings,
                   device: Device | None = None) -> AlertTicket:
    change = _ticket_change(bridge, alert, origin, company_id, configuration_id, settings, device)
    created = bridge.write(bridge.psa, "create_ticket", change.target, change.call,
                           before=change.before, after=change.after, **change.detail)
    return _ticket_created(bridge, alert, origin, company_id, created)


def _ticket_change(bridge: Bridge, alert: Alert, origin: Origin, company_id: str,
                   configuration_id: str | None, settings: TicketSettings,
                   device: Device | None = None, claim: coordination.Held | None = None) -> Change:
    """The creation of an alert's ticket, as a change for `Bridge.write_each`: the `pending`
    row is saved before the create leaves (a create whose answer is lost is found later by its
    marker, never made twice), the `open` row with the answer."""
    psa, rmm = bridge.pair
    attributes = settings.attributes_for(origin, alert.monitor)
    marker = alert_marker(bridge, alert.uid)
    device = device or Device(alert.device_uid, alert.device_name, alert.site_uid)
    device_link = device_url(bridge, device)
    alert_link = bridge.rmm.alert_url(alert=alert) if origin == "alert" else None
    draft = TicketDraft(
        summary=_summary(alert, alert.device_name or device.hostname,
                         bridge.ticket_options().summary_max),
        description=_describe(alert), company_id=company_id, marker=marker,
        routing=dict(attributes.routing), status_id=attributes.open_status_id,
        priority_id=settings.priorities.get(alert.priority), source_id=settings.source_id,
        configuration_id=configuration_id, device_url=device_link, alert_url=alert_link,
    )
    pending = AlertTicket(psa, rmm, alert.uid, "pending", marker=marker, monitor=alert.monitor,
                          device_uid=alert.device_uid, origin=origin, opened_at=alert.raised_at)

    def saved(ticket: Ticket) -> tuple[Ticket, AlertTicket]:
        return ticket, bridge.store.save_alert_ticket(
            attrs.evolve(pending, state="open", ticket_id=ticket.id))

    return Change(marker, lambda: bridge.psa.create_ticket(draft=draft),
                  before=lambda: bridge.store.save_alert_ticket(pending), after=saved,
                  detail={"alert": alert.uid}, claim=claim)


def _ticket_created(bridge: Bridge, alert: Alert, origin: Origin, company_id: str,
                    created: tuple[Ticket, AlertTicket]) -> AlertTicket:
    ticket, saved = created
    log.info("ticket_created", alert_uid=alert.uid, device_uid=alert.device_uid,
             ticket_id=ticket.id, company_id=company_id, origin=origin)
    bridge.announce("on_ticket_created", psa=bridge.psa.name,
                    alert=alert if origin == "alert" else None, ticket=ticket)
    return saved


def tickets_for_alerts(bridge: Bridge, alerts: list[Alert],
                       context: TicketContext | None = None) -> list[AlertTicket | Failed | None]:
    """Give a pass's open alerts their tickets as `ticket_for_alert` gives one, as a group:
    their claims are taken in one commit and given up in one, and the new tickets they call for
    are created with two commits for the whole group (`Bridge.write_each`), where one alert at
    a time costs four. Whatever else an alert calls for (a skip, a repeat to join, an
    interrupted creation to settle) is done for it alone, under its own claim.

    Returns, per alert, its row, `Failed` when its ticket could not be created (it stays
    `pending`: the next pass tries again), or None when another process is handling it."""
    context = context or TicketContext.read(bridge)
    names = {_claim_name(bridge, alert.uid): alert for alert in alerts}
    results: dict[str, AlertTicket | Failed | None] = {}
    with coordination.try_hold_each(bridge.store, names) as claims:
        new: list[tuple[Alert, _NewTicket, Change]] = []
        for name, alert in names.items():
            if (claim := claims.get(name)) is None:
                results[alert.uid] = None
                continue
            try:
                with claims.alone(claim):
                    decided = _decide(bridge, alert, context)
                    if not isinstance(decided, _NewTicket):
                        results[alert.uid] = decided
                        continue
                    new.append((alert, decided, _ticket_change(
                        bridge, alert, "alert", decided.company_id, decided.configuration_id,
                        decided.settings, claim=claim)))
            except LeaseLost as exc:
                if exc.lease != claim.lease:
                    raise  # the pass's own: the pass stops
                results[alert.uid] = Failed(exc)
            except PsabridgeError as exc:  # this alert's failure, not the group's
                results[alert.uid] = Failed(exc)
        outcomes = bridge.write_each(bridge.psa, "create_ticket",
                                     [change for _, _, change in new], claims)
    for (alert, decided, _), outcome in zip(new, outcomes, strict=True):
        results[alert.uid] = (outcome if isinstance(outcome, Failed) else
                              _ticket_created(bridge, alert, "alert", decided.company_id, outcome))
    return [results[alert.uid] for alert in alerts]


def _adopt(bridge: Bridge, row: AlertTicket, found: Ticket) -> AlertTicket:
    """Take over a ticket found by the row's marker: created, but its answer lost. The create
    may have stopped before attaching the device's configuration: attach it now."""
    log.info("ticket_adopted", alert_uid=row.alert_uid, ticket_id=found.id)
    psa, rmm = bridge.pair
    mapping = bridge.store.device_mapping(psa, rmm, row.device_uid) if row.device_uid else None
    configuration_id = mapping.configuration_id if mapping else None
    if (configuration_id and configuration_id not in found.configuration_ids
            and bridge.psa.supports("psa_attach_configuration")):
        bridge.write(bridge.psa, "attach_configuration", found.id,
                     lambda: bridge.psa.attach_configuration(ticket_id=found.id,
                                             configuration_id=configuration_id), alert=row.alert_uid)
    return bridge.store.save_alert_ticket(attrs.evolve(row, state="open", ticket_id=found.id))


def create_manual_ticket(bridge: Bridge, device: Device, summary: str, description: str = "",
                         request_id: str | None = None) -> AlertTicket:
    """A manual ticket, only for a device mapped to a configuration. `request_id` makes a
    retried request idempotent (the CLI derives one from the arguments)."""
    psa, rmm = bridge.pair
    context = TicketContext.read(bridge)
    configuration_id = context.configuration_of(device.uid)
    if configuration_id is None:
        raise TicketingError(f"{device.hostname} is not mapped to a configuration; a manual ticket "
                             "needs a mapped device: map it with `psabridge devices map`")
    company_id = context.company_of_site(device.site_uid)
    if company_id is None:
        raise TicketingError(f"{device.hostname}'s site is not mapped to a company")
    uid = f"manual-{request_id or uuid.uuid4().hex}"
    pseudo = Alert(uid=uid, priority="Manual", device_uid=device.uid, site_uid=device.site_uid,
                   monitor="manual", message=summary, diagnostics=description,
                   raised_at=utcnow(), device_name=device.hostname)
    with _claim(bridge, uid) as claimed:
        if not claimed:
            raise TicketingError(f"request {request_id} is being handled by another process")
        existing = bridge.store.alert_ticket(psa, rmm, uid)
        if existing is not None and existing.state != "pending":
            return existing
        if existing is not None and (found := bridge.psa.find_ticket(marker=existing.marker)):
            return _adopt(bridge, existing, found)
        return _create_ticket(bridge, pseudo, "manual", company_id, configuration_id,
                              context.settings, device)


# -- the round trip --------------------------------------------------------------------------


def close_for_resolved_alert(bridge: Bridge, alert_uid: str) -> AlertTicket | None:
    """An alert resolved in the RMM closes its ticket with the origin's closed status, once every
    alert on that ticket is resolved (a repeating alert shares its ticket).

    Returns None while another process holds the alert (creating its ticket, say): the caller
    must come back to it."""
    with _claim(bridge, alert_uid) as claimed:
        if not claimed:
            return None
        return _close_for_resolved_alert(bridge, alert_uid)


def _close_for_resolved_alert(bridge: Bridge, alert_uid: str) -> AlertTicket | None:
    psa, rmm = bridge.pair
    row = bridge.store.alert_ticket(psa, rmm, alert_uid)
    if row is None or row.state != "open" or row.ticket_id is None:
        return row
    siblings = [r for r in bridge.store.alert_tickets(psa, rmm, ("open",), ticket_id=row.ticket_id)
                if r.alert_uid != alert_uid]
    closed_status = None
    if not siblings:
        settings = ticket_settings(bridge)
        closed_status = settings.attributes_for(row.origin, row.monitor).closed_status_id
        if closed_status is None:
            raise TicketingError(f"no closed status is set for origin {row.origin}; cannot close "
                                 f"ticket {row.ticket_id}")
    with bridge.store.transaction():  # the row and the close it calls for are saved together
        closed = bridge.store.save_alert_ticket(attrs.evolve(row, state="closed"))
        if closed_status is not None:
            close = outbox.enqueue(bridge, bridge.psa, "close_ticket", f"close:{row.ticket_id}",
                                   row.ticket_id, closed_status_id=closed_status, alert=alert_uid)
    if closed_status is not None:
        outbox.drain(bridge, [close.key])
    return closed


def resolve_for_ticket(bridge: Bridge, ticket: Ticket) -> list[AlertTicket]:
    """A ticket closed in the PSA resolves its open alerts in the RMM. Other changes (status,
    notes) have nowhere to go: Datto RMM's API has no alert notes or ticket fields to write."""
    psa, rmm = bridge.pair
    if not ticket.closed:
        return []
    done, keys = [], []
    for row in bridge.store.alert_tickets(psa, rmm, ("open",), ticket_id=ticket.id):
        with bridge.store.transaction():
            done.append(bridge.store.save_alert_ticket(attrs.evolve(row, state="resolved")))
            if row.origin == "alert":
                keys.append(outbox.enqueue(bridge, bridge.rmm, "resolve_alert",
                                           f"resolve:{row.alert_uid}", row.alert_uid,
                                           ticket=ticket.id).key)
    if keys:
        outbox.drain(bridge, keys)
    return done


def recover_pending(bridge: Bridge) -> list[AlertTicket]:
    """Settle rows left `pending` by an interrupted run: adopt the ticket found by marker, or
    leave the row for `ticket_for_alert` to create (the alert is still open) or drop it."""
    psa, rmm = bridge.pair
    settled = []
    for row in bridge.store.alert_tickets(psa, rmm, ("pending",)):
        with _claim(bridge, row.alert_uid) as claimed:
            current = bridge.store.alert_ticket(psa, rmm, row.alert_uid)
            if not claimed or current is None or current.state != "pending":
                continue  # in another process's hands, or settled meanwhile
            found = bridge.psa.find_ticket(marker=row.marker)
            if found is not None:
                settled.append(_adopt(bridge, row, found))
            elif row.ticket_id:
                settled.append(bridge.store.save_alert_ticket(attrs.evolve(row, state="open")))
    return settled
