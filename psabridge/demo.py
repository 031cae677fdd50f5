"""`psabridge demo`: the whole job, end to end, against the two simulators on loopback.

It does what an admin and the sync would do, through the same library calls as the CLI:
configure and enable both connectors, map companies, device types and devices, set up ticketing,
then play a day in the life of an MSP (alerts raised, repeats, alerts resolved in the RMM,
tickets closed in the PSA) and show the round trip. Nothing is faked on psabridge's side: every
change crosses HTTP to a simulator that keeps state and checks what it is sent.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import attrs
from tabulate import tabulate

from psabridge.core import mapping, sync, ticketing
from psabridge.core.bridge import Bridge, open_bridge
from psabridge.core.errors import PsabridgeError
from psabridge.core.plugins import configure_plugin, enable_plugin, make_plugin_manager
from psabridge.core.store import open_store
from psabridge.plugins.autotask.simulator import AutotaskSimulator
from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator
from psabridge.plugins.rmm_datto.simulator import DattoSimulator

# The PSAs the demo can run on: plugin name -> (short name, product name, simulator class).
PSA_SIMULATORS = {"connectwise": ("ConnectWise", "ConnectWise Manage", ConnectWiseSimulator),
                  "autotask": ("Autotask", "Autotask PSA", AutotaskSimulator)}

# Alert contexts in Datto's wire shape (API-NOTES §5), one per kind of monitor.
ALERT_KINDS = (
    ({"@class": "perf_disk_usage_ctx", "diskName": "C:", "freeSpace": 2.1, "totalVolume": 238.0,
      "unitOfMeasure": "GB"}, "Critical"),
    ({"@class": "online_offline_status_ctx", "status": "OFFLINE"}, "High"),
    ({"@class": "eventlog_ctx", "logName": "System", "code": "7036", "type": "Error",
      "source": "Service Control Manager", "description": "The Print Spooler service terminated."},
     "Moderate"),
    ({"@class": "antivirus_ctx", "status": "NOT_RUNNING", "productName": "Defender"}, "High"),
    ({"@class": "perf_resource_usage_ctx", "type": "CPU", "percentage": 97.5}, "Low"),
)


class DemoError(PsabridgeError):
    pass


@attrs.define
class Demo:
    """The two simulators on loopback, a fresh store, and the bridge between them."""

    cw: ConnectWiseSimulator | AutotaskSimulator  # the PSA's simulator, whichever PSA it is
    datto: DattoSimulator
    bridge: Bridge
    echo: Callable[[str], None]
    psa_title: str = "ConnectWise"

    def section(self, title: str) -> None:
        self.echo(f"\n== {title} ==")

    def table(self, rows: list[dict]) -> None:
        self.echo(tabulate(rows, headers="keys") if rows else "(none)")


def run_demo(db_path: Path, seed: int = 0, companies: int = 12,
             echo: Callable[[str], None] = print, psa: str = "connectwise") -> dict[str, int]:
    """Run the demo on a fresh store at `db_path` with the PSA `psa` (a key of PSA_SIMULATORS);
    returns the summary figures."""
    if psa not in PSA_SIMULATORS:
        raise DemoError(f"the demo has no {psa!r} PSA: choose one of {', '.join(PSA_SIMULATORS)}")
    psa_title, product, simulator = PSA_SIMULATORS[psa]
    if db_path.exists():
        raise DemoError(f"{db_path} already exists; the demo starts from a fresh store: give a new path")
    # The same seed and number of companies: both describe the same MSP (psabridge.simulated_msp),
    # as `psabridge simulate connectwise` and `psabridge simulate datto` started alone do.
    cw = simulator(seed=seed, companies=companies)
    datto = DattoSimulator(seed=seed, companies=companies)
    with contextlib.ExitStack() as stack:
        cw_server = stack.enter_context(cw.serve())
        datto_server = stack.enter_context(datto.serve())
        pm = make_plugin_manager()
        store = open_store(pm, f"sqlite://{db_path}")
        stack.callback(store.close)
        echo(f"{product + ' simulator:':<30}{cw_server.url}")
        echo(f"Datto RMM simulator:          {datto_server.url}")
        echo(f"State store (fresh SQLite):   {db_path}")

        configure_plugin(pm, store, psa, cw.settings(cw_server.url))
        configure_plugin(pm, store, "datto", datto.settings(datto_server.url))
        report = enable_plugin(pm, store, psa)
        enable_plugin(pm, store, "datto")
        echo(f"Enabled {psa}: {report.detail}")
        demo = Demo(cw, datto, open_bridge(pm, store), echo, psa_title)
        summary = Counter()
        _map_companies(demo, summary)
        _map_device_types(demo)
        _map_devices(demo, summary)
        _set_up_ticketing(demo)
        _day_in_the_life(demo, random.Random(seed), summary)
        _summary(demo, summary)
        return dict(summary)


def _map_companies(demo: Demo, summary: Counter) -> None:
    demo.section("Companies -> sites (suggested by name similarity)")
    rows = mapping.load_companies(demo.bridge)
    # A company of several types is listed once per type; it is one company to map.
    types: dict[str, list[str]] = {}
    for row in rows:
        types.setdefault(row.company.id, []).append(row.company_type)
    once = list({r.company.id: r for r in rows}.values())
    demo.table([{"company": r.company.name, "types": ", ".join(types[r.company.id]),
                 "suggested site": r.suggestion.site_name if r.suggestion.site_uid
                 else f"Create New: {r.suggestion.site_name}", "score": round(r.suggestion.score)}
                for r in once])
    plan = mapping.plan_company_mappings(demo.bridge, {r.company.id: None for r in rows})
    outcome = mapping.apply(demo.bridge, plan)
    summary["companies mapped"] = len(outcome.done)
    summary["sites created in the RMM"] = sum(c.action == "create site" for c in outcome.done)


def _map_device_types(demo: Demo) -> None:
    demo.section("Device types -> configuration types")
    rows = mapping.load_device_types(demo.bridge)
    for row in rows:
        if row.configuration_type and not row.flagged:
            mapping.map_device_type(demo.bridge, row.device_type, row.configuration_type.id)
    demo.table([{"device type": r.device_type,
                 "configuration type": r.configuration_type.name if r.configuration_type else "-",
                 "score": round(r.score or 0)} for r in rows])


def _map_devices(demo: Demo, summary: Counter) -> None:
    demo.section("Devices -> configurations (automatic mapping, Map Now)")
    rows = mapping.load_devices(demo.bridge)
    steps = Counter(r.match.step if r.match else r.state for r in rows)
    found = {step: n for step, n in sorted(steps.items()) if step not in ("none", "unaudited")}
    demo.echo(f"Proposals: {sum(found.values())} devices match a configuration the MSP had entered ("
              + ", ".join(f"{n} by {step}" for step, n in found.items())
              + f"), {steps['none']} need a new one, {steps['unaudited']} are not audited yet.")
    demo.bridge.set_option("auto_map", True)
    outcome = mapping.apply(demo.bridge, mapping.map_now(demo.bridge))
    summary["configurations created"] = sum(c.action == "create configuration" for c in outcome.done)
    summary["devices matched to existing configurations"] = sum(c.action == "map device"
                                                                for c in outcome.done)
    matched = [r for r in rows if r.match and r.match.configuration][:6]
    demo.echo(f"The first {len(matched)} matches:")
    demo.table([{"device": r.device.hostname, "configuration": r.match.configuration.name,
                 "found by": r.match.step, "why": r.match.reason} for r in matched])
    warnings = demo.bridge.store.warnings()
    if warnings:
        demo.echo(f"{len(warnings)} warning(s), e.g.: {warnings[0].subject}: {warnings[0].message}")


def _set_up_ticketing(demo: Demo) -> None:
    demo.section(f"Ticketing settings (checked against {demo.bridge.psa.info().title})")
    options = demo.bridge.psa.ticket_options()
    attributes = ticketing.workable_attributes(options)
    if attributes is None:
        raise PsabridgeError("the PSA offers no ticket routing that can take tickets")
    rmm_priorities = ("Critical", "High", "Moderate", "Low", "Information")
    psa_priorities = list(options.priorities)
    settings = ticketing.TicketSettings(
        source_id=options.sources[0].id if options.sources else None,
        priorities={p: psa_priorities[min(i, len(psa_priorities) - 1)].id
                    for i, p in enumerate(rmm_priorities)},
        attributes={"alert": attributes, "manual": attributes}, repeat_minutes=60)
    ticketing.save_ticket_settings(demo.bridge, settings)
    names = {s.id: s.name for s in options.statuses}
    where = ", ".join(ticketing.describe_choice(options, field, choice)
                      for field, choice in attributes.routing.items()) or "the PSA's default routing"
    opening = names.get(attributes.open_status_id, "the default")
    demo.echo(f"{where[:1].upper() + where[1:]}, open status {opening}, closed status "
              f"{names[attributes.closed_status_id]}; repeating alerts within 60 minutes join "
              "the open ticket.")
    unusable = [f"{field.label.lower()} {c.name}" for field in options.routing
                for c in field.choices if c.unusable]
    if unusable:
        demo.echo(f"Not offered (they cannot take tickets): {', '.join(unusable)}")
    ticketing.set_ticketing_enabled(demo.bridge, True)


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _day_in_the_life(demo: Demo, rng: random.Random, summary: Counter) -> None:
    bridge, datto = demo.bridge, demo.datto
    mapped = [m.device_uid for m in bridge.store.device_mappings(*bridge.pair)]
    # Alerts already in the account when ticketing was switched on make no tickets.
    existing = sum(not a["resolved"] for a in datto.alerts.values())
    demo.section(f"Alerts raised in Datto RMM -> tickets in {demo.psa_title}")
    raised = []
    for device_uid in rng.sample(mapped, min(10, len(mapped))):
        context, priority = rng.choice(ALERT_KINDS)
        raised.append(datto.raise_alert(device_uid, context, priority))
    repeat_of = raised[0]
    raised.append(datto.raise_alert(repeat_of["alertSourceInfo"]["deviceUid"],
                                    repeat_of["alertContext"], repeat_of["priority"]))
    datto.raise_alert(raised[1]["alertSourceInfo"]["deviceUid"], ALERT_KINDS[4][0], "Low",
                      creates_ticket=False)
    first = sync.run_pass(bridge)
    summary["tickets created"] += first.tickets_created
    summary["repeating alerts added as notes"] += first.tickets_joined
    demo.echo(f"{_count(first.tickets_created, 'ticket')} created, "
              f"{_count(first.tickets_joined, 'repeating alert')} added as a note to its open "
              f"ticket, {_count(first.alerts_skipped, 'alert')} left without a ticket (its monitor "
              f"does not create tickets). The {existing} alerts already open when ticketing was "
              "switched on make no tickets.")
    rows = {r.alert_uid: r for r in bridge.store.alert_tickets(*bridge.pair)}
    demo.table([{"alert": a["alertUid"][:8], "device": a["alertSourceInfo"]["deviceName"],
                 "priority": a["priority"], "monitor": rows[a["alertUid"]].monitor[:40],
                 "ticket": rows[a["alertUid"]].ticket_id,
                 "how": "note on the open ticket" if rows[a["alertUid"]].note == "repeat" else "new"}
                for a in raised if a["alertUid"] in rows])

    demo.section("Round trip")
    with_tickets = [a for a in raised[1:-1] if rows.get(a["alertUid"]) and rows[a["alertUid"]].ticket_id]
    for alert in with_tickets[:3]:  # a technician fixes the device; the RMM resolves the alert
        datto.resolve_alert(alert["alertUid"])
    closed_in_psa = with_tickets[3:6]
    technician = bridge.psa  # closing through the PSA's API, as a technician's PSA would
    closed_status = ticketing.ticket_settings(bridge).attributes["alert"].closed_status_id
    for alert in closed_in_psa:
        technician.close_ticket(ticket_id=rows[alert["alertUid"]].ticket_id,
                        closed_status_id=closed_status)
    second = sync.run_pass(bridge)
    summary["tickets closed after their alert was resolved"] += second.tickets_closed
    summary["alerts resolved after their ticket was closed"] += second.alerts_resolved
    demo.echo(f"Resolved in Datto RMM -> {second.tickets_closed} tickets moved to the closed status.")
    demo.echo(f"Closed in {demo.psa_title} -> {second.alerts_resolved} alerts resolved in Datto RMM "
              f"({sum(demo.datto.alerts[a['alertUid']]['resolved'] for a in closed_in_psa)} of "
              f"{len(closed_in_psa)} now show resolved).")
    quiet = sync.run_pass(bridge)
    demo.echo(f"A further pass changes nothing: {quiet.tickets_created} created, "
              f"{quiet.tickets_closed} closed, {quiet.alerts_resolved} resolved.")


def _summary(demo: Demo, summary: Counter) -> None:
    demo.section("Summary")
    demo.table([{"what": k, "count": v} for k, v in summary.items()])
    writes = Counter(e.action for e in demo.bridge.store.journal() if e.outcome == "ok")
    demo.echo("Journal of remote writes: " + ", ".join(f"{k} {v}" for k, v in sorted(writes.items())))
    cw_requests, datto_requests = sum(demo.cw.counts.values()), sum(demo.datto.counts.values())
    summary[f"requests to {demo.psa_title}"] = cw_requests
    summary["requests to Datto RMM"] = datto_requests
    demo.echo(f"API requests: {demo.psa_title} {cw_requests}, Datto RMM {datto_requests}.")
