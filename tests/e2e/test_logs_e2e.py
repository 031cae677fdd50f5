"""What a sync logs, against both simulators: only JSON lines with `--log-format json`, and one
info event for each thing done where it is done; and `sync --watch`, which keeps its clients
(their connections, the Datto token, the ConnectWise codebase) from pass to pass."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from psabridge.core import logs, mapping, sync
from psabridge.core.bridge import open_bridge
from psabridge.core.plugins import disable_plugin, enable_plugin
from psabridge.simulation import ScriptedFault
from tests.e2e.conftest import map_everything


def environment() -> dict[str, str]:
    """The processes' environment, as the test has it when they start (its own config folder,
    where the key that seals the connectors' secrets is)."""
    return {**os.environ, "PSABRIDGE_LOAD_PLUGINS": "connectwise,autotask,datto,sqlite,postgres"}


def psabridge(db, *args: str) -> list[str]:
    return [sys.executable, "-m", "psabridge", "--db", str(db), *args]


def parsed(lines: list[str]) -> list[dict]:
    """Each line as the JSON object it must be; the line itself in the failure otherwise."""
    events = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(event, dict), line
        assert {"timestamp", "level", "logger", "event"} <= event.keys(), line
        events.append(event)
    return events


def named(events: list[dict], name: str) -> list[dict]:
    return [e for e in events if e["event"] == name]


def secrets_of(desk) -> list[str]:
    """The PSA's secret settings, as its connector declares them, and Datto's key and secret."""
    psa = desk.bridge.psa
    datto = desk.sims.datto.settings(desk.sims.datto_url)
    return [psa.connection.settings[s.name] for s in psa.info().settings if s.secret] + [
        datto["api_key"], datto["api_secret"]]


@pytest.mark.parametrize("sims", ["loopback"], indirect=True)  # the process reaches them by URL
def test_a_json_sync_writes_only_json_lines_with_its_info_events(desk, db_path):
    desk.enable()
    device = desk.devices[0]
    alert = desk.raise_alert(device)

    result = subprocess.run(psabridge(db_path, "--log-format", "json", "-vv", "sync", "--once"),
                            env=environment(), capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    events = parsed(result.stderr.splitlines())
    loggers = {e["logger"] for e in events}
    assert "httpx" in loggers and "psabridge.core.sync" in loggers  # theirs and ours, alike
    ticket = desk.ticket_for(alert)
    (created,) = named(events, "ticket_created")
    assert created["level"] == "info"
    assert (created["alert_uid"], created["device_uid"], created["ticket_id"]) == (
        alert, device.uid, ticket.id)
    (finished,) = named(events, "pass_finished")
    assert finished["tickets_created"] == 1 and finished["errors"] == 0
    assert isinstance(finished["duration_seconds"], float) and finished["duration_seconds"] > 0
    # The command's own report stays on stdout, for people.
    assert [r.split() for r in result.stdout.splitlines() if r.startswith("tickets created")] == [
        ["tickets", "created", "1"]]
    for secret in secrets_of(desk):
        assert secret not in result.stderr


@pytest.fixture
def log_events():
    """psabridge's log, as JSON lines, read back as events."""
    stream = io.StringIO()
    logs.configure_logging(verbosity=1, fmt="json", stream=stream)
    yield lambda: parsed(stream.getvalue().splitlines())
    logs.configure_logging()


@pytest.mark.parametrize("sims", ["in-process"], indirect=True)
def test_the_round_trip_logs_a_note_a_close_and_a_resolve_where_each_is_sent(desk, log_events):
    desk.enable(repeat_minutes=60)
    first_device, second_device = desk.devices[:2]
    first = desk.raise_alert(first_device)
    sync.run_pass(desk.bridge)
    ticket = desk.ticket_for(first)
    repeat = desk.raise_alert(first_device)  # the same monitor on the same device: a note
    sync.run_pass(desk.bridge)
    (noted,) = named(log_events(), "ticket_noted")
    assert (noted["ticket_id"], noted["alert_uid"]) == (ticket.id, repeat)

    for uid in (first, repeat):
        desk.sims.datto.resolve_alert(uid)
    desk.clock.advance(1)
    sync.run_pass(desk.bridge)
    (closed,) = named(log_events(), "ticket_closed")
    assert closed["ticket_id"] == ticket.id and closed["alert_uid"] in (first, repeat)

    other = desk.raise_alert(second_device)
    sync.run_pass(desk.bridge)
    desk.close_in_psa(desk.ticket_for(other), desk.psa.alert_route.closed_status)
    sync.run_pass(desk.bridge)
    (resolved,) = named(log_events(), "alert_resolved")
    assert (resolved["alert_uid"], resolved["ticket_id"]) == (other, desk.ticket_for(other).id)
    assert desk.alert(other)["resolved"]
    finished = named(log_events(), "pass_finished")
    assert [e["tickets_created"] for e in finished] == [1, 0, 0, 1, 0]
    assert [(e["tickets_joined"], e["tickets_closed"], e["alerts_resolved"]) for e in finished] == [
        (0, 0, 0), (1, 0, 0), (0, 2, 0), (0, 0, 0), (0, 0, 1)]  # both alerts' rows closed


@pytest.mark.parametrize("sims", ["in-process"], indirect=True)
def test_mapping_logs_each_configuration_created_or_linked(e2e, log_events):
    map_everything(e2e)  # most devices get a new configuration, those the MSP entered are linked
    mappings = {m.device_uid: m.configuration_id for m in e2e.store.device_mappings(*e2e.pair)}
    created = named(log_events(), "configuration_created")
    linked_first = named(log_events(), "configuration_linked")
    assert created and linked_first
    assert {e["device_uid"]: e["configuration_id"] for e in created + linked_first} == mappings
    assert len(created) + len(linked_first) == len(mappings)

    device_uid, configuration_id = next(iter(mappings.items()))
    assert mapping.apply(e2e, mapping.unmap_devices(e2e, [device_uid])).done
    assert mapping.apply(e2e, mapping.plan_device_mappings(e2e, {device_uid: configuration_id})).done
    (linked,) = named(log_events(), "configuration_linked")[len(linked_first):]
    assert (linked["device_uid"], linked["configuration_id"]) == (device_uid, configuration_id)
    assert len(named(log_events(), "configuration_created")) == len(created)  # none more


def logins(sims) -> tuple[int, int]:
    """ConnectWise codebase look-ups and Datto token grants: one per store, shared by its processes."""
    lookups = sum(n for key, n in sims.cw.counts.items() if key.startswith("GET /login/companyinfo/"))
    return lookups, sims.datto.counts["POST /auth/oauth/token"]


@pytest.mark.parametrize("sims", ["loopback"], indirect=True)
def test_sync_watch_keeps_its_clients_from_pass_to_pass(desk, db_path, tmp_path):
    desk.enable()
    before = logins(desk.sims)
    output = tmp_path / "watch.log"  # a file, not a pipe: a full pipe would block the process
    with output.open("w") as log:
        process = subprocess.Popen(
            psabridge(db_path, "--log-format", "json", "-v", "sync", "--watch", "--interval", "1"),
            env=environment(), stdout=subprocess.DEVNULL, stderr=log)

    def passes() -> list[dict]:
        return named(parsed(output.read_text().splitlines()), "pass_finished")

    def wait_for_passes(count: int) -> list[dict]:
        deadline = time.monotonic() + 60
        while len(passes()) < count:
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.05)
        return passes()

    try:
        wait_for_passes(1)
        alert = desk.raise_alert(desk.devices[0])
        created = wait_for_passes(3)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert sum(e["tickets_created"] for e in created) == 1 and len(desk.tickets_for(alert)) == 1
    # Three passes and more, and no login at all: the ConnectWise codebase and the Datto token
    # that enabling the plugins got are in the store, for every process on it.
    assert logins(desk.sims) == before and before >= (1, 1)
    parsed(output.read_text().splitlines())  # the whole log, to its last line, is JSON


@pytest.mark.parametrize("sims", ["in-process"], indirect=True)
def test_watch_keeps_its_connectors_through_failed_passes_and_follows_the_plugins(
        desk, pm, store, log_events):
    """A pass whose remote system is throttled, and one with the RMM disabled: the same clients
    carry on after each, and a re-enabled RMM is taken up again."""
    desk.enable()
    sims = desk.sims
    live = sync.live_bridge(open_bridge(pm, store, sims.transports), sims.transports)
    before = logins(sims)
    alerts = []
    # The PSA throttled for an hour during the second pass: too long to wait for, so it fails.
    outage = ScriptedFault("throttle", "GET", r"/service/tickets$", seconds=3600, times=None)
    bridges, calls = [], []

    def between(pass_number: int) -> None:
        if pass_number == 1:
            sims.cw.faults.add(outage)
        elif pass_number == 2:
            sims.cw.faults.script.remove(outage)
            disable_plugin(pm, store, "datto")
        elif pass_number == 3:
            enable_plugin(pm, store, "datto", check=False)
            alerts.append(desk.raise_alert(desk.devices[0]))

    def factory():
        calls.append(1)
        bridges.append(live())
        return bridges[-1]

    reports = []
    sync.watch(factory, interval=0, on_pass=reports.append, stop=lambda: len(calls) == 4,
               sleep=lambda seconds: between(len(calls)))

    assert outage.served >= 1
    assert len(reports) == 3  # the third pass found no RMM enabled and did not run
    assert reports[1].errors and not reports[0].errors and not reports[2].errors
    (failed,) = named(log_events(), "sync pass failed")
    assert "no RMM plugin is enabled" in failed["error"]
    assert reports[2].tickets_created == 1 and desk.tickets_for(alerts[0])
    assert len(bridges) == 3
    assert all(b.psa is bridges[0].psa and b.rmm is bridges[0].rmm for b in bridges)
    # The watch's own clients, for all its passes, with the codebase and the token that enabling
    # the plugins got, from the store: not one login of their own.
    assert logins(sims) == before and before >= (1, 1)
