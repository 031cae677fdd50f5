"""The reliability suite's world: both simulators, a store, a bridge, and what the servers saw.

`World` is one MSP described by a ConnectWise and a Datto RMM simulator (in-process or on
loopback), with `Reached` counters placed *behind* each fault injector, so they count only the
requests a simulator actually processed (a fault served instead of an answer never reaches the
app), with the status it answered. That is what the journal is compared with: a write the
simulator processed and answered 2xx is a change made on a remote system.

`set_up` is the admin's part of `psabridge demo` (map companies, device types, devices, set up
ticketing), repeated until every step has gone through; `converge` runs sync passes until one
has nothing left to do; `check_invariants` asserts what must hold after any run, faults and
crashes included.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
import time
import unittest.mock
from collections.abc import Callable, Collection
from pathlib import Path

import attrs

from psabridge.core import coordination, http, mapping, sync, ticketing
from psabridge.core.bridge import Bridge, open_bridge
from psabridge.core.errors import PsabridgeError
from psabridge.core.http import RetryPolicy
from psabridge.core.plugins import configure_plugin, enable_plugin, make_plugin_manager
from psabridge.core.store import Store, open_store
from psabridge.plugins.connectwise.client import ConnectWiseClient
from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator, company_names
from psabridge.plugins.connectwise.simulator.app import endpoint_template
from psabridge.plugins.rmm_datto import client as datto_client
from psabridge.plugins.rmm_datto.simulator import DattoSimulator
from psabridge.plugins.rmm_datto.simulator.quota import Quotas
from psabridge.plugins.rmm_datto.throttle import Limits
from psabridge.simulation import Faults

# Retries as the product does them, only with waits in milliseconds so that the suite is fast.
FAST_RETRY = RetryPolicy(attempts=6, base_delay=0.005, max_delay=0.05, max_retry_after=5.0)
# The simulators act on a request before answering it or not at all, so a write whose answer was
# lost cannot land later: its in-flight window is cut from minutes to a fifth of a second.
IN_FLIGHT_WINDOW = 0.2
# The simulated account's quota is not what is under test here: make it out of reach.
ROOMY_QUOTAS = Quotas(reads=10**6, writes=10**6, operation=10**6)
# What the issue asks for: 10 % 5xx, 5 % 429 with Retry-After, 2 % dropped connections, and
# 200 ms latency spikes. Retry-After is short (the client honours it exactly).
ISSUE_FAULTS = dict(error_rate=0.10, throttle_rate=0.05, retry_after=0.02, drop_rate=0.02,
                    spike_rate=0.03, spike=0.2)
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


class Reached:
    """WSGI middleware behind the fault injector: counts (endpoint, status) of what the app answered."""

    def __init__(self, app, endpoint_of: Callable[[str, str], str]):
        self.app = app
        self.endpoint_of = endpoint_of
        self.answers: collections.Counter[tuple[str, int]] = collections.Counter()
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        endpoint = self.endpoint_of(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""))

        def counting_start_response(status, headers, *args):
            with self._lock:
                self.answers[(endpoint, int(status.split()[0]))] += 1
            return start_response(status, headers, *args)

        return self.app(environ, counting_start_response)

    def ok(self, endpoint: str) -> int:
        """How many requests to `endpoint` the app processed and answered 2xx."""
        return sum(n for (e, status), n in self.answers.items() if e == endpoint and status < 300)

    def writes_ok(self) -> dict[str, int]:
        return {e: self.ok(e) for e, _ in self.answers
                if e.split()[0] in WRITE_METHODS and "oauth/token" not in e and self.ok(e)}


def make_simulators(seed: int, companies: int, cw_faults: Faults, datto_faults: Faults):
    cw = ConnectWiseSimulator(seed=seed, companies=companies, faults=cw_faults)
    datto = DattoSimulator(seed=seed, company_names=company_names(seed, companies),
                           faults=datto_faults, quotas=ROOMY_QUOTAS)
    cw_reached = Reached(cw.app.app, endpoint_template)
    cw.app.app = cw_reached
    datto_reached = Reached(datto.injector.app, datto.endpoint_of)
    datto.injector.app = datto_reached
    return cw, datto, cw_reached, datto_reached


def fast_clients(bridge: Bridge) -> None:
    """Give the bridge's connections their clients now, with short waits (tests only).

    Datto: the client-side quota is raised out of reach, a 429 without Retry-After waits
    milliseconds instead of 60-120 s, and retries back off in milliseconds. ConnectWise: the
    same retry policy. Everything else (what is retried, what is not) is the product's.
    """
    ConnectWiseClient.for_connection(bridge.psa.connection, policy=FAST_RETRY)
    datto_client.client_for(bridge.rmm.connection, datto_client.ClientOptions(
        limits=Limits(reads=10**6, writes=10**6, operation=10**6), retry=FAST_RETRY,
        throttle_backoff=(0.01, 0.02), block_seconds=1.0))


@attrs.define
class World:
    cw: ConnectWiseSimulator
    datto: DattoSimulator
    cw_reached: Reached
    datto_reached: Reached
    faults: list[Faults]
    pm: object
    store: Store
    bridge: Bridge
    cw_url: str
    datto_url: str
    transports: dict
    seeded_configurations: set[int]
    seeded_sites: set[str]
    enabled_at: float = 0.0
    raised: list[dict] = attrs.field(factory=list)  # alerts raised after ticketing was on
    closed_by_technician: list[str] = attrs.field(factory=list)  # ticket ids

    def inject(self, **rates) -> None:
        for faults in self.faults:
            for name, value in rates.items():
                setattr(faults, name, value)

    def reopen(self) -> None:
        """A new bridge over the same store (what a new `psabridge sync` process would open)."""
        self.bridge = open_bridge(self.pm, self.store, self.transports)
        fast_clients(self.bridge)


@contextlib.contextmanager
def world(db_path: Path, seed: int, companies: int, loopback: bool = False) -> World:
    """Both simulators and a configured, enabled store; faults off until `inject`."""
    cw_faults, datto_faults = Faults(seed=seed), Faults(seed=seed + 1)
    cw, datto, cw_reached, datto_reached = make_simulators(seed, companies, cw_faults, datto_faults)
    with contextlib.ExitStack() as stack:
        stack.enter_context(unittest.mock.patch.object(http, "IN_FLIGHT_WINDOW", IN_FLIGHT_WINDOW))
        if loopback:
            cw_url = stack.enter_context(cw.serve()).url
            datto_url = stack.enter_context(datto.serve()).url
            transports = {}
        else:
            cw_url, datto_url = "http://connectwise.simulator", "http://datto.simulator"
            transports = {"connectwise": cw.transport(), "datto": datto.transport()}
        pm = make_plugin_manager()
        store = open_store(pm, f"sqlite://{db_path}")
        stack.callback(store.close)
        configure_plugin(pm, store, "connectwise", cw.settings(cw_url))
        configure_plugin(pm, store, "datto", {**datto.settings(datto_url),
                                              "requests_per_minute": "1000000"})
        enable_plugin(pm, store, "connectwise", transport=transports.get("connectwise"))
        enable_plugin(pm, store, "datto", transport=transports.get("datto"))
        bridge = open_bridge(pm, store, transports)
        fast_clients(bridge)
        yield World(cw, datto, cw_reached, datto_reached, [cw_faults, datto_faults], pm, store,
                    bridge, cw_url, datto_url, transports, set(cw.db.configurations),
                    set(datto.sites))


# -- the admin's part, repeated until it went through ----------------------------------------


def until_done(step: Callable[[], bool], what: str, tries: int = 30) -> None:
    """Repeat an admin command until it reports nothing left to do (faults make some fail)."""
    errors = []
    for _ in range(tries):
        try:
            if step():
                return
        except PsabridgeError as exc:
            errors.append(str(exc))
    raise AssertionError(f"{what} did not go through in {tries} tries: {errors[-3:]}")


def set_up(w: World, leave_unmapped: Collection[str] = ()) -> None:
    """Map companies, device types and devices, and set up ticketing, as demo.py does.

    `leave_unmapped`: ids of companies the admin keeps for later (e.g. `companies map ID=new`)."""
    b = w.bridge

    def unmapped_rows():
        return [r for r in mapping.load_companies(b) if r.company.id not in leave_unmapped]

    def companies() -> bool:
        rows = unmapped_rows()
        outcome = mapping.apply(b, mapping.plan_company_mappings(b, {r.company.id: None for r in rows}))
        return not rows or not outcome.failed and not unmapped_rows()

    def device_types() -> bool:
        for row in mapping.load_device_types(b):
            if row.configuration_type and not row.flagged and not row.mapped:
                mapping.map_device_type(b, row.device_type, row.configuration_type.id)
        return True

    def ticket_settings() -> bool:
        options = b.psa.ticket_options()
        attributes = ticketing.workable_attributes(options)
        priorities = [p.id for p in options.priorities]
        ticketing.save_ticket_settings(b, ticketing.TicketSettings(
            priorities={p: priorities[min(i, len(priorities) - 1)] for i, p in
                        enumerate(("Critical", "High", "Moderate", "Low", "Information"))},
            attributes={"alert": attributes, "manual": attributes}, repeat_minutes=60))
        ticketing.set_ticketing_enabled(b, True)
        return True

    until_done(companies, "mapping companies")
    until_done(device_types, "mapping device types")
    b.set_option("auto_map", True)
    until_done(ticket_settings, "ticket settings")
    w.enabled_at = time.time()


def raise_alerts(w: World, count: int, rng, repeats: int = 1) -> list[dict]:
    """Alerts on devices of mapped sites (some mapped yet, some not: the sync maps them)."""
    from psabridge.demo import ALERT_KINDS

    mapped_sites = {m.site_uid for m in w.store.company_mappings(*w.bridge.pair)}
    devices = sorted(uid for uid, d in w.datto.devices.items()
                     if d["siteUid"] in mapped_sites and not d["deleted"])
    new = []
    for uid in rng.sample(devices, min(count, len(devices))):
        context, priority = rng.choice(ALERT_KINDS)
        new.append(w.datto.raise_alert(uid, context, priority))
    for original in new[:repeats]:  # the same monitor on the same device: joins the ticket (R26)
        new.append(w.datto.raise_alert(original["alertSourceInfo"]["deviceUid"],
                                       original["alertContext"], original["priority"]))
    w.raised += new
    return new


# -- converging ------------------------------------------------------------------------------


@attrs.define
class Convergence:
    passes: int
    reports: list[sync.PassReport]


def quiet(report: sync.PassReport) -> bool:
    return not report.errors and not any((report.mapping_changes, report.tickets_created,
                                          report.tickets_joined, report.tickets_closed,
                                          report.alerts_resolved, report.recovered))


def settled(w: World) -> bool:
    """Every alert raised has been decided (an alert whose earlier repeat was claimed by another
    process waits for a later pass, which a pass's report does not show)."""
    psa, rmm = w.bridge.pair
    rows = [w.store.alert_ticket(psa, rmm, a["alertUid"]) for a in w.raised]
    return all(r is not None and r.state != "pending" for r in rows)


def converge(w: World, max_passes: int) -> Convergence:
    """Run passes until one does nothing and fails nothing (that pass included)."""
    reports = []
    for number in range(1, max_passes + 1):
        try:
            report = sync.run_pass(w.bridge)
        except PsabridgeError as exc:  # a read the pass cannot do without failed every retry
            report = sync.PassReport(errors=[f"pass failed: {exc}"])
        reports.append(report)
        if quiet(report):
            if settled(w):
                return Convergence(number, reports)
            # An unanswered write is waited out first (its mark lasts a little longer).
            time.sleep(IN_FLIGHT_WINDOW * (1 + coordination.HEADROOM))
    summary = [(r.tickets_created, r.mapping_changes, r.errors[:2]) for r in reports[-3:]]
    raise AssertionError(f"no quiet pass in {max_passes} passes; last passes: {summary}")


# -- after the fact ----------------------------------------------------------------------------


def technician_closes(w: World, ticket_id: str) -> None:
    """A technician closes a ticket in ConnectWise's UI (not through the API psabridge uses)."""
    db = w.cw.db
    with db.lock:
        ticket = db.tickets[int(ticket_id)]
        closed = next(s for s in db.statuses_of(ticket["board"]["id"]) if s["closedStatus"])
        ticket.update(status={"id": closed["id"], "name": closed["name"]}, closedFlag=True,
                      closedDate=db.clock(), closedBy="technician")
        db.touch(ticket)
    w.closed_by_technician.append(ticket_id)


def _marker(alert_uid: str) -> str:
    from psabridge.plugins.connectwise.convert import stored_marker

    return stored_marker(f"psabridge:datto:{alert_uid}")


# Each write the simulators can answer, and the journal actions that may account for it.
# Manufacturers are created inside psa_create_configuration and configurations attached inside
# psa_create_ticket (or when a ticket is adopted): one journal entry covers the hook, whatever
# requests it took. A configuration is patched to update it, or to clear its link on unmap.
JOURNALLED_AS = {
    "POST /service/tickets": ("create_ticket",),
    "POST /service/tickets/{id}/configurations": ("create_ticket", "attach_configuration"),
    "POST /service/tickets/{id}/notes": ("add_ticket_note",),
    "PATCH /service/tickets/{id}": ("close_ticket",),
    "POST /company/configurations": ("create_configuration",),
    "POST /procurement/manufacturers": ("create_configuration",),
    "PATCH /company/configurations/{id}": ("update_configuration", "unmap_configurations"),
    "PUT /api/v2/site": ("create_site",),
    "POST /api/v2/alert/{uid}/resolve": ("resolve_alert",),
}


def check_invariants(w: World, interrupted: int = 0) -> dict[str, int]:
    """Assert what must hold once a run has converged; returns figures for the report.

    `interrupted`: how many processes were killed; each may leave one write journalled as an
    intent without an outcome (killed while the request was in flight)."""
    psa, rmm = w.bridge.pair
    store, db = w.store, w.cw.db
    journal = store.journal()
    entries = collections.defaultdict(list)  # action -> [(target, outcome)]
    for entry in journal:
        entries[entry.action].append((entry.target, entry.outcome))

    # Devices: each mapped device has one configuration, found by its Manage Device link; no
    # configuration was created twice; no device was left behind without a lasting reason.
    estate = mapping.Estate.read(w.bridge)
    url_of = {d.uid: mapping.device_url(w.bridge, d) for d in estate.devices}
    links = collections.Counter(c.get("managementLink") for c in db.configurations.values()
                                if c.get("managementLink"))
    doubled = {link: n for link, n in links.items() if n > 1}
    assert not doubled, f"configurations created twice (same Manage Device link): {doubled}"
    mappings = store.device_mappings(psa, rmm)
    for m in mappings:
        configuration = db.configurations.get(int(m.configuration_id))
        assert configuration is not None, f"device {m.device_uid} mapped to a missing configuration"
        assert configuration["managementLink"] == url_of[m.device_uid], (
            f"configuration {m.configuration_id} does not link device {m.device_uid}")
    new_configurations = {cid: c for cid, c in db.configurations.items()
                          if cid not in w.seeded_configurations}
    mapped_ids = {m.configuration_id for m in mappings}
    orphans = [cid for cid in new_configurations if str(cid) not in mapped_ids]
    assert not orphans, f"configurations created but not mapped to their device: {orphans}"
    warned = {wn.subject: wn.message for wn in store.warnings(psa)}
    mapped_uids = {m.device_uid for m in mappings}
    for device in estate.devices:
        if (device.deleted or device.uid in mapped_uids or device.last_audit is None
                or device.site_uid not in estate.site_company):
            continue
        why = warned.get(f"{device.hostname} ({device.uid})")
        assert why and " failed: " not in why, (
            f"device {device.hostname} is neither mapped nor held back by a lasting problem "
            f"(warning: {why!r})")
    assert mapping.plan_automatic_mapping(w.bridge).changes == []

    # Alerts: none lost; each group of repeats (same monitor, same device) has one ticket,
    # found by marker exactly once in ConnectWise.
    markers = collections.Counter(t.get("externalXRef") for t in db.tickets.values()
                                  if (t.get("externalXRef") or "").startswith("psabridge"))
    doubled = {m: n for m, n in markers.items() if n > 1}
    assert not doubled, f"tickets created twice for one alert: {doubled}"
    ticket_of_marker = {t["externalXRef"]: str(t["id"]) for t in db.tickets.values()
                        if t.get("externalXRef")}
    rows = {a["alertUid"]: store.alert_ticket(psa, rmm, a["alertUid"]) for a in w.raised}
    lost = {uid: row and (row.state, row.note) for uid, row in rows.items()
            if row is None or row.state in ("pending", "skipped")}
    assert not lost, f"alerts raised but without a ticket: {lost}"
    # A group has one ticket at a time: a repeat joins the open ticket; a problem that comes
    # back once its ticket is closed opens the next one (only in runs that close tickets
    # while alerts are still being raised).
    groups = collections.defaultdict(list)
    for alert in w.raised:
        row = rows[alert["alertUid"]]
        groups[(row.device_uid, row.monitor)].append(alert)
    for group in groups.values():
        uids = [a["alertUid"] for a in group]
        tickets = sorted({rows[uid].ticket_id for uid in uids},
                         key=lambda t: (db.tickets[int(t)]["_info"]["dateEntered"], int(t)))
        for earlier, later in itertools.pairwise(tickets):
            closed_at = db.tickets[int(earlier)].get("closedDate")
            opened_at = db.tickets[int(later)]["_info"]["dateEntered"]
            assert closed_at and closed_at <= opened_at, (
                f"one alert group, two tickets at once: {earlier} (closed {closed_at}) and "
                f"{later} (opened {opened_at}); group {uids}")
        for ticket_id in tickets:
            own = [uid for uid in uids if rows[uid].ticket_id == ticket_id and _marker(uid) in markers]
            assert len(own) == 1, f"group {uids}: ticket {ticket_id} carries {len(own)} of their markers"
            assert ticket_of_marker[_marker(own[0])] == ticket_id

    # Round trip: resolved in the RMM -> ticket closed; closed in the PSA -> alerts resolved.
    for alert in w.raised:
        row = store.alert_ticket(psa, rmm, alert["alertUid"])
        ticket = db.tickets[int(row.ticket_id)]
        if w.datto.alerts[alert["alertUid"]]["resolved"] and row.ticket_id not in w.closed_by_technician:
            siblings_open = [a for a in w.raised if store.alert_ticket(psa, rmm, a["alertUid"]).ticket_id
                             == row.ticket_id and not w.datto.alerts[a["alertUid"]]["resolved"]]
            if not siblings_open:
                assert ticket["closedFlag"], f"alert {alert['alertUid']} resolved, ticket open"
        if row.ticket_id in w.closed_by_technician:
            assert w.datto.alerts[alert["alertUid"]]["resolved"], (
                f"ticket {row.ticket_id} closed, alert {alert['alertUid']} still open")
            assert row.state == "resolved"

    # The journal accounts for every remote write: each write the simulators processed and
    # answered 2xx belongs to an action the journal records, and creations match one to one.
    processed = {**w.cw_reached.writes_ok(), **w.datto_reached.writes_ok()}
    unaccounted = {e: n for e, n in processed.items() if e not in JOURNALLED_AS}
    assert not unaccounted, f"writes with no journal action: {unaccounted}"
    for endpoint, n in processed.items():
        journalled = sum(len(entries[action]) for action in JOURNALLED_AS[endpoint])
        assert journalled > 0, f"{n} x {endpoint}, no journal entry"

    # Every write is journalled as an intent first, then as ok or failed; only a killed
    # process leaves an intent without its outcome, at most one each.
    intents = sum(e.outcome == "intent" for e in journal)
    outcomes = sum(e.outcome in ("ok", "failed") for e in journal)
    assert 0 <= intents - outcomes <= interrupted, (intents, outcomes, interrupted)

    def ok_targets(action):
        targets = [t for t, outcome in entries[action] if outcome == "ok"]
        assert len(targets) == len(set(targets)), f"{action} succeeded twice for one target"
        return set(targets)

    def all_targets(action):
        return {t for t, _ in entries[action]}

    # Tickets: one processed POST per ticket carrying a marker; every such ticket has a
    # create_ticket entry (ok, or failed when the answer was lost and the ticket later adopted).
    assert w.cw_reached.ok("POST /service/tickets") == sum(markers.values())
    assert ok_targets("create_ticket") <= set(markers)
    assert set(markers) <= all_targets("create_ticket")
    # Configurations: one processed POST per new configuration, each journalled by device.
    assert w.cw_reached.ok("POST /company/configurations") == len(new_configurations)
    device_of_url = {url: uid for uid, url in url_of.items()}
    created_for = {device_of_url[c["managementLink"]] for c in new_configurations.values()}
    assert ok_targets("create_configuration") <= created_for <= all_targets("create_configuration")
    # Sites: one per company that asked for a new one (never two of a name), one processed PUT
    # per new site, each journalled by name.
    site_names = collections.Counter(s["name"] for uid, s in w.datto.sites.items()
                                     if uid not in w.seeded_sites)
    doubled = {name: n for name, n in site_names.items() if n > 1}
    assert not doubled, f"sites created twice for one company: {doubled}"
    new_sites = set(site_names)
    assert w.datto_reached.ok("PUT /api/v2/site") == len(new_sites)
    assert ok_targets("create_site") <= new_sites <= all_targets("create_site")
    # Notes and resolves: never more processed than journalled attempts.
    assert w.cw_reached.ok("POST /service/tickets/{id}/notes") <= len(entries["add_ticket_note"])
    assert w.datto_reached.ok("POST /api/v2/alert/{uid}/resolve") <= len(entries["resolve_alert"])
    return {"journal entries": len(journal), "interrupted writes": intents - outcomes,
            "tickets": sum(markers.values()),
            "configurations created": len(new_configurations), "sites created": len(new_sites),
            "devices mapped": len(mappings), "alerts": len(w.raised)}
