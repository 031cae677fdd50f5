"""Exactly once, nothing lost: the issue's numbered scenarios, driven through real processes.

Each test is one scenario of the issue "Exactly once, nothing lost: under concurrency, slow
APIs and clock skew". The test process serves the ConnectWise and Datto RMM simulators on
loopback and sets up the store as an admin would (`world.set_up`); everything under test runs
as separate psabridge processes on that store file: `python -m psabridge ...` commands, some
started side by side, some with the host clock off (`skewed.py`), and `psabridge serve`
receiving webhooks. PSABRIDGE_LOCK_TTL and PSABRIDGE_CLAIM_TTL cut the sync lock and the
alert claims to a second or two, so that outliving them takes seconds, not minutes.

What happened is read from the simulators' own records: tickets by the alert's marker in
ConnectWise, configurations by their Manage Device link, Datto sites by name, alerts' states;
then `check_invariants` where the whole store must add up. The guarantees these scenarios
check (leases with heartbeat and fencing, claims that outlive retries, cursors from remote
timestamps, per-item failure isolation, the outbox for follow-up writes, webhook de-dup by
event identity, plugins re-checked per event) are described in docs/architecture.md.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from psabridge.demo import ALERT_KINDS
from psabridge.simulation import ScriptedFault
from tests.reliability.processes import (
    Finished,
    configurations_linking,
    device_link,
    eventually,
    notes_on,
    pause_until,
    psabridge_env,
    run,
    serving,
    sites_named,
    start,
    tickets_for_alert,
    wait_until,
)
from tests.reliability.world import (
    World,
    check_invariants,
    converge,
    raise_alerts,
    set_up,
    technician_closes,
    world,
)

SEED = 61
COMPANIES = 4
TTL = 1.0  # seconds a dead process's sync lock and alert claims stay held
LATENCY = 0.05  # seconds added to every simulator request, so that two processes overlap
TICKET_CREATE = r"/service/tickets$"
CONFIGURATION_CREATE = r"/company/configurations$"
SITE_CREATE = r"/api/v2/site$"


@attrs.frozen
class Scene:
    """Both simulators on loopback and the store file an admin has set up: companies and device
    types mapped, automatic mapping on, ticketing on with a 60-minute repeat window."""

    world: World
    db: Path
    logs: Path

    def env(self, lock_ttl: float = TTL, claim_ttl: float = TTL) -> dict[str, str]:
        return psabridge_env(self.db, lock_ttl=lock_ttl, claim_ttl=claim_ttl)


@pytest.fixture
def scene(tmp_path) -> Iterator[Scene]:
    db = tmp_path / "psabridge.db"
    with world(db, SEED, COMPANIES, loopback=True) as w:
        set_up(w)
        yield Scene(w, db, tmp_path)


def map_devices(w: World) -> None:
    """The syncs before the scenario: every audited device of the mapped sites gets its
    configuration, the alerts open before ticketing was turned on are skipped."""
    converge(w, max_passes=6)


def mapped_sites(w: World) -> list[str]:
    return sorted(m.site_uid for m in w.store.company_mappings(*w.bridge.pair))


def add_devices(w: World, prefix: str, count: int) -> list[dict]:
    """New, audited desktops enrolled in the mapped sites: automatic mapping's work."""
    sites = mapped_sites(w)
    return [w.datto.add_device(sites[n % len(sites)], f"{prefix}-PC{n + 1:02d}")
            for n in range(count)]


def mapped_agents(w: World) -> list[str]:
    """Devices already mapped to a configuration that run an agent (the ones monitors alert on)."""
    mapped = {m.device_uid for m in w.store.device_mappings(*w.bridge.pair)}
    return sorted(uid for uid in mapped if w.datto.devices[uid]["deviceClass"] == "device")


def agents_in_mapped_sites(w: World) -> list[str]:
    """Devices with an agent in the mapped sites, mapped to a configuration or not."""
    sites = set(mapped_sites(w))
    return sorted(uid for uid, d in w.datto.devices.items()
                  if d["siteUid"] in sites and d["deviceClass"] == "device" and not d["deleted"])


def raise_alert(w: World, device_uid: str, kind: int = 0) -> dict:
    """An alert of one of the demo's monitors, recorded for `check_invariants`."""
    context, priority = ALERT_KINDS[kind]
    alert = w.datto.raise_alert(device_uid, context, priority)
    w.raised.append(alert)
    return alert


def webhook_body(alert: dict) -> bytes:
    """What Datto RMM posts with the template {"alertUid": "[alert_uid]"}: the same bytes for
    every event of one alert, raised or resolved."""
    return b'{"alertUid": "%s"}' % alert["alertUid"].encode()


def link_of(w: World, device: dict) -> str:
    return device_link(w.datto, w.datto_url, device["uid"])


def configurations_per_device(w: World, devices: list[dict]) -> dict[str, list[int]]:
    """ConnectWise configuration ids per device hostname, found by the device's portal link."""
    return {d["hostname"]: sorted(c["id"] for c in configurations_linking(w.cw, link_of(w, d)))
            for d in devices}


def not_exactly_one(per_device: dict[str, list[int]]) -> dict[str, list[int]]:
    return {hostname: ids for hostname, ids in per_device.items() if len(ids) != 1}


def stepped_aside_or_succeeded(finished: Finished) -> bool:
    """A command beside another either did its work or refused, saying the other is running."""
    return finished.ok or finished.refused_as_busy


# -- 1. a claim outlived by a throttled create ------------------------------------------------


def test_1_webhook_during_a_create_throttled_past_the_claim_makes_no_second_ticket(scene):
    """The sync claims the alert and asks ConnectWise for the ticket; ConnectWise answers 429
    with a Retry-After half again as long as the claim, three times. The Datto webhook for the
    same alert reaches `serve` after the claim's TTL, while the sync still waits to retry."""
    w = scene.world
    claim_ttl = 2.0
    map_devices(w)
    env = scene.env(lock_ttl=claim_ttl, claim_ttl=claim_ttl)
    alert = raise_alert(w, mapped_agents(w)[0])
    uid = alert["alertUid"]

    with serving(env, scene.logs / "serve.log") as server:
        throttle = w.cw.faults.add(ScriptedFault("throttle", "POST", TICKET_CREATE,
                                                 seconds=1.5 * claim_ttl, times=3))
        sync = start(env, "sync", "--once", "--json")
        wait_until(lambda: throttle.served or not sync.running, 30,
                   "the sync's ticket create to be throttled")
        struck = time.monotonic()
        assert throttle.served, f"the sync never asked for the ticket: {sync.finish()}"
        # The claim was taken just before the create: unless it is renewed, it is over by now,
        # and the sync's next try is still half a second away.
        pause_until(struck + claim_ttl + 0.5)
        webhook = server.post_rmm({"alertUid": uid})
        synced = sync.finish(timeout=60)

    tickets = tickets_for_alert(w.cw, uid)
    assert len(tickets) == 1, (
        f"alert {uid} has {len(tickets)} tickets {[t['id'] for t in tickets]}: the webhook, "
        f"posted {claim_ttl + 0.5:g} s after the sync's create was first throttled (Retry-After "
        f"{1.5 * claim_ttl:g} s, {throttle.served} throttles in all), answered "
        f"{webhook.status_code} {webhook.text}; sync: {synced}")
    assert webhook.status_code < 500, webhook.text
    assert synced.ok, synced
    row = w.store.alert_ticket(*w.bridge.pair, uid)
    assert (row.state, row.ticket_id) == ("open", str(tickets[0]["id"])), row
    check_invariants(w)


# -- 2. two processes on the same work --------------------------------------------------------


def test_2a_devices_map_all_beside_sync_gives_each_new_device_one_configuration(scene):
    """New devices in mapped sites, automatic mapping on: the admin's `devices map --all` and
    the scheduled `sync --once` start together, both about to create their configurations."""
    w = scene.world
    map_devices(w)
    env = scene.env()
    run(env, "devices", "auto", "on").check()
    new = add_devices(w, "SCN2A", 6)
    # Each command's first create is slow to be processed, so each plans before the other's
    # first configuration exists, however the two processes' start-up times fall.
    w.cw.faults.add(ScriptedFault("delay", "POST", CONFIGURATION_CREATE, seconds=2.0, times=2))

    w.inject(latency=LATENCY)
    mapping, syncing = start(env, "devices", "map", "--all"), start(env, "sync", "--once", "--json")
    mapped, synced = mapping.finish(), syncing.finish()
    w.inject(latency=0.0)

    per_device = configurations_per_device(w, new)
    assert not not_exactly_one(per_device), (
        f"devices without exactly one configuration: {not_exactly_one(per_device)}; "
        f"devices map --all: {mapped}; sync: {synced}")
    for finished in (mapped, synced):
        assert stepped_aside_or_succeeded(finished), finished
    check_invariants(w)  # among them: no two configurations with one device link


def test_2b_two_companies_map_new_at_once_create_one_site(scene):
    """A company new in ConnectWise; `companies map ID=new` twice at once (two admins, or a
    retried script): one Datto site. A command that stepped aside is a no-op when rerun."""
    w = scene.world
    name = "Scenario Two-B Holdings"
    with w.cw.db.lock:
        company = w.cw.db.add_company(name)
    env = scene.env()
    choice = f"{company['id']}=new"
    # Creating a site is slow (both commands' creates are held before Datto processes them),
    # so the second command plans while the first one's site does not exist yet.
    w.datto.injector.faults.add(ScriptedFault("delay", "PUT", SITE_CREATE, seconds=2.0, times=2))

    w.inject(latency=LATENCY)
    first, second = (start(env, "companies", "map", choice) for _ in range(2))
    ended = [first.finish(), second.finish()]
    w.inject(latency=0.0)

    sites = sites_named(w.datto, name)
    assert len(sites) == 1, (
        f"{len(sites)} Datto sites named {name!r} ({[s['uid'] for s in sites]}) after two "
        f"`companies map {choice}` at once: {ended[0]} | {ended[1]}")
    for finished in ended:
        assert stepped_aside_or_succeeded(finished), finished
    if not all(finished.ok for finished in ended):
        rerun = run(env, "companies", "map", choice)
        assert rerun.ok and "Done: 0 changes" in rerun.stdout, f"the rerun was not a no-op: {rerun}"
        assert len(sites_named(w.datto, name)) == 1
    (mapping,) = [m for m in w.store.company_mappings(*w.bridge.pair)
                  if m.company_id == str(company["id"])]
    assert mapping.site_uid == sites[0]["uid"]


def test_2c_a_sync_started_after_the_lock_ttl_does_not_run_beside_a_longer_pass(scene):
    """The pass takes several lock TTLs (many new devices for automatic mapping, and every
    configuration slow to create); a second `sync --once` starts once the first has held the
    lock longer than its TTL, while the first is still creating configurations."""
    w = scene.world
    map_devices(w)
    env = scene.env(lock_ttl=TTL)
    new = add_devices(w, "SCN2C", 10)
    devices_listed = "GET /api/v2/account/devices"
    listed_before = w.datto.counts[devices_listed]

    w.cw.faults.add(ScriptedFault("delay", "POST", CONFIGURATION_CREATE, seconds=0.4, times=None))
    w.inject(latency=LATENCY)
    first = start(env, "sync", "--once", "--json")
    # The pass's first read is the device list, made once it holds the lock.
    wait_until(lambda: w.datto.counts[devices_listed] > listed_before or not first.running, 30,
               "the first sync to start its pass")
    began = time.monotonic()
    pause_until(began + TTL + 0.5)  # the lock, unless renewed, has expired
    assert first.running, f"the pass was meant to outlast the lock's TTL: {first.finish()}"
    second = start(env, "sync", "--once", "--json")
    first_done, second_done = first.finish(), second.finish()
    w.inject(latency=0.0)

    per_device = configurations_per_device(w, new)
    second_report = second_done.report() or {}
    waited = second_done.ok and second_report.get("mapping_changes") == 0
    assert second_done.refused_as_busy or waited, (
        f"a second sync started {TTL + 0.5:g} s after the first took the lock ran beside it "
        f"(configurations per new device: {per_device}); first: {first_done}; "
        f"second: {second_done}")
    assert not not_exactly_one(per_device), not_exactly_one(per_device)
    assert first_done.ok and (first_done.report() or {}).get("mapping_changes") == len(new), first_done
    check_invariants(w)


# -- 3. cursors and clock skew ----------------------------------------------------------------


@pytest.mark.parametrize("skew", [600, -3600, 3600], ids=["clock+10min", "clock-1h", "clock+1h"])
def test_3_nothing_is_lost_pass_after_pass_when_the_bridge_clock_is_off(scene, skew):
    """Every psabridge process runs with its host clock `skew` seconds off; the simulators
    (the remote systems) keep the right time."""
    w = scene.world
    env = scene.env()
    rng = random.Random(SEED)

    def sync() -> dict:
        return run(env, "sync", "--once", "--json", skew=skew).check().report()

    sync()  # maps the devices; skips the alerts open before ticketing was on
    for round_ in (1, 2):
        alerts = raise_alerts(w, 4, rng, repeats=0)
        sync()
        tickets = {a["alertUid"]: tickets_for_alert(w.cw, a["alertUid"]) for a in alerts}
        assert all(len(t) == 1 for t in tickets.values()), f"round {round_}: {tickets}"
        ticket_of = {uid: found[0]["id"] for uid, found in tickets.items()}
        resolved_in_datto = [a["alertUid"] for a in alerts[:2]]
        closed_in_cw = [a["alertUid"] for a in alerts[2:]]
        for uid in resolved_in_datto:
            w.datto.resolve_alert(uid)
        for uid in closed_in_cw:
            technician_closes(w, str(ticket_of[uid]))

        report = sync()
        left_open = [ticket_of[uid] for uid in resolved_in_datto
                     if not w.cw.db.tickets[ticket_of[uid]]["closedFlag"]]
        unresolved = [uid for uid in closed_in_cw if not w.datto.alerts[uid]["resolved"]]
        assert not left_open and not unresolved, (
            f"round {round_}, bridge clock {skew:+d} s: tickets {left_open} still open though "
            f"their alerts were resolved in Datto; alerts {unresolved} still open though their "
            f"tickets were closed in ConnectWise; the pass reported {report}")
    check_invariants(w)


# -- 4. one device's audit always fails -------------------------------------------------------


def test_4_a_device_whose_audit_always_fails_holds_up_neither_tickets_nor_other_devices(scene):
    """Three new devices for automatic mapping, one whose audit answers 500 every time, and
    new alerts on devices mapped earlier: one `sync --once`."""
    w = scene.world
    map_devices(w)
    env = scene.env()
    broken, *healthy = add_devices(w, "SCN4", 3)
    audit_fails = w.datto.injector.faults.add(ScriptedFault(
        "error", "GET", rf"/api/v2/audit/device/{broken['uid']}$", status=500, times=None))
    alerts = [raise_alert(w, uid, kind) for kind, uid in enumerate(mapped_agents(w)[:2])]

    first = run(env, "sync", "--once", "--json", timeout=120)
    assert audit_fails.served, "the broken device's audit was never asked for"
    ticketed = {a["alertUid"]: len(tickets_for_alert(w.cw, a["alertUid"])) for a in alerts}
    assert all(n == 1 for n in ticketed.values()), (
        f"tickets per alert {ticketed} after a pass in which one device's audit answered 500 "
        f"{audit_fails.served} times: {first}")
    assert not not_exactly_one(configurations_per_device(w, healthy)), (
        configurations_per_device(w, healthy), str(first))
    said = " ".join([*(first.report() or {}).get("errors", []),
                     *(f"{x.subject}: {x.message}" for x in w.store.warnings())])
    assert broken["hostname"] in said or broken["uid"] in said, (
        f"the failing device is neither in the pass's errors nor warned about: {first}")

    w.datto.injector.faults.script.remove(audit_fails)
    second = run(env, "sync", "--once", "--json", timeout=120)
    assert not not_exactly_one(configurations_per_device(w, [broken, *healthy])), (
        f"once its audit answers again: {configurations_per_device(w, [broken, *healthy])}; "
        f"{second}")
    check_invariants(w)


# -- 5. a repeat's note ------------------------------------------------------------------------


def test_5_a_repeats_note_that_failed_once_reaches_the_ticket(scene):
    """R26: a second alert of the same monitor on the same device within the repeat window
    joins the first one's ticket with a note; the note's POST fails once with 500."""
    w = scene.world
    map_devices(w)
    env = scene.env()
    run(env, "ticketing", "set", "--repeat-minutes", "60").check()
    device = mapped_agents(w)[0]
    original = raise_alert(w, device)
    run(env, "sync", "--once", "--json").check()
    (ticket,) = tickets_for_alert(w.cw, original["alertUid"])

    note_fails = w.cw.faults.add(ScriptedFault("error", "POST", r"/service/tickets/\d+/notes$",
                                               status=500))
    repeat = raise_alert(w, device)  # the same monitor on the same device, within the window
    passes = [run(env, "sync", "--once", "--json") for _ in range(3)]  # the failing one, two more
    assert note_fails.served == 1, "the repeat's note was never attempted"

    repeat_notes = [n for n in notes_on(w.cw, ticket["id"]) if n.startswith("Repeating alert")]
    assert repeat_notes, (
        f"the note of repeat {repeat['alertUid']} never reached ticket {ticket['id']} after its "
        f"POST failed once with 500; passes: {[p.report() for p in passes]}")
    if len(repeat_notes) > 1:
        print(f"note: the repeat's note is on ticket {ticket['id']} {len(repeat_notes)} times")
    assert tickets_for_alert(w.cw, repeat["alertUid"]) == []  # it joined, it did not open one
    row = w.store.alert_ticket(*w.bridge.pair, repeat["alertUid"])
    assert (row.state, row.ticket_id) == ("open", str(ticket["id"])), row
    check_invariants(w)


# -- 6. webhook replays and redeliveries --------------------------------------------------------


def test_6_identical_webhook_bodies_are_events_not_replays(scene):
    """Datto's webhook template is the same for raise and resolve ({"alertUid": ...}), so the
    two deliveries are byte for byte the same; and a delivery that failed is delivered again."""
    w = scene.world
    env = scene.env()
    one_device, another = agents_in_mapped_sites(w)[:2]

    with serving(env, scene.logs / "serve.log") as server:
        first_alert = raise_alert(w, one_device)
        body = webhook_body(first_alert)
        raised = server.post_rmm(body)
        assert raised.status_code < 300, raised.text
        # The ticket is made while the webhook is answered, or soon after (an outbox).
        wait_until(lambda: tickets_for_alert(w.cw, first_alert["alertUid"]), 5, "the raise's ticket")
        (ticket,) = tickets_for_alert(w.cw, first_alert["alertUid"])
        w.datto.resolve_alert(first_alert["alertUid"])
        resolved = server.post_rmm(body)
        assert resolved.status_code < 300, (
            f"the resolve's webhook (the same bytes as the raise's) answered "
            f"{resolved.status_code} {resolved.text}; ticket {ticket['id']} stays open")
        wait_until(lambda: w.cw.db.tickets[ticket["id"]]["closedFlag"], 5,
                   f"ticket {ticket['id']} to be closed for the resolved alert")

        second_alert = raise_alert(w, another)
        create_fails = w.cw.faults.add(ScriptedFault("error", "POST", TICKET_CREATE, status=500))
        body = webhook_body(second_alert)
        delivered = server.post_rmm(body)
        redelivered = server.post_rmm(body)
        eventually(lambda: tickets_for_alert(w.cw, second_alert["alertUid"]), 5)
        log = server.output()

    assert create_fails.served == 1
    tickets = tickets_for_alert(w.cw, second_alert["alertUid"])
    assert len(tickets) == 1, (
        f"{len(tickets)} tickets for alert {second_alert['alertUid']}: its first delivery "
        f"answered {delivered.status_code}, the redelivery {redelivered.status_code} "
        f"{redelivered.text}; serve's log: {log[-500:]}")
    if delivered.status_code >= 500:
        assert redelivered.status_code < 300, redelivered.text


# -- 7. a plugin disabled under a running serve -------------------------------------------------


def test_7_serve_makes_no_ticket_once_connectwise_is_disabled(scene):
    """`serve` runs; from another process the admin disables the ConnectWise plugin; then a
    webhook for a new alert arrives."""
    w = scene.world
    env = scene.env()
    device = agents_in_mapped_sites(w)[0]
    with serving(env, scene.logs / "serve.log") as server:
        run(env, "plugins", "disable", "connectwise").check()
        alert = raise_alert(w, device)
        answer = server.post_rmm(webhook_body(alert))

    tickets = tickets_for_alert(w.cw, alert["alertUid"])
    assert not tickets, (
        f"serve opened ticket {[t['id'] for t in tickets]} after `plugins disable connectwise`; "
        f"it answered {answer.status_code} {answer.text}")
    assert answer.status_code < 500, answer.text
