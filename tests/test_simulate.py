"""The simulators as docs/operating.md has an admin use them: `psabridge simulate connectwise` and
`psabridge simulate datto` started on their own, each in its own process, configured with the
commands they print; then mapping, and the round trip driven by `psabridge simulate raise-alert`,
`resolve-alert` and `close-ticket` against the running simulators."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import attrs
import httpx
import jsonschema
import pytest
from click.testing import CliRunner

from psabridge import simulated_msp
from psabridge.cli import cli
from psabridge.core.plugins import make_plugin_manager
from psabridge.core.store import open_store
from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator
from psabridge.plugins.rmm_datto.simulator import DattoSimulator
from tests.core.test_cli_json import schema_for

SEED, COMPANIES = 0, 8


@attrs.define
class Simulator:
    process: subprocess.Popen
    lines: list[str]

    @property
    def url(self) -> str:
        return next(word for line in self.lines for word in line.split() if word.startswith("http://"))

    def configure_args(self) -> list[str]:
        (line,) = [line for line in self.lines if "psabridge configure" in line]
        return shlex.split(line)[1:]

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
        out, _ = self.process.communicate(timeout=15)
        return out


def start(plugin: str, *options: str, last: str) -> Simulator:
    """`psabridge simulate PLUGIN --port 0 ...` in its own process; what it printed up to the
    line starting with `last`."""
    process = subprocess.Popen(
        [sys.executable, "-m", "psabridge", "simulate", plugin, "--port", "0", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    while not lines or not lines[-1].startswith(last):
        line = process.stdout.readline()
        if not line:
            process.kill()
            raise AssertionError(f"{plugin} simulator ended: {process.stderr.read()}")
        lines.append(line.strip())
    return Simulator(process, lines)


@pytest.fixture
def control_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "simulators"
    monkeypatch.setenv("PSABRIDGE_SIMULATOR_DIR", str(folder))
    monkeypatch.delenv("PSABRIDGE_SIMULATOR_TOKEN", raising=False)
    return folder


@pytest.fixture
def simulators(control_dir):
    """Both simulators, started alone with the same seed and number of companies."""
    common = ("--seed", str(SEED), "--companies", str(COMPANIES))
    cw = start("connectwise", *common, last="Press Ctrl-C")
    try:
        datto = start("datto", *common, last="Act in it with")
    except BaseException:
        cw.stop()
        raise
    yield cw, datto
    outputs = [datto.stop(), cw.stop()]
    assert all("Stopped." in out for out in outputs)
    assert not list(control_dir.glob("*.json"))  # each removed its control file on stop


@pytest.fixture
def psabridge(tmp_path):
    db = tmp_path / "psabridge.db"

    def run(*args: str, ok: bool = True):
        result = CliRunner().invoke(cli, ["--db", str(db), *args])
        if ok:
            assert result.exit_code == 0, f"{shlex.join(args)}: {result.output}"
        return result

    run.db = db
    return run


def mapped_state(db: Path):
    store = open_store(make_plugin_manager(), f"sqlite://{db}")
    try:
        return (store.company_mappings("connectwise", "datto"),
                store.device_mappings("connectwise", "datto"))
    finally:
        store.close()


@pytest.fixture
def mapped(simulators, psabridge):
    """Configured with the printed commands, enabled, and mapped as docs/operating.md says."""
    cw, datto = simulators
    psabridge(*cw.configure_args())
    psabridge(*datto.configure_args())
    psabridge("plugins", "enable", "connectwise")
    psabridge("plugins", "enable", "datto")
    psabridge("companies", "map", "--suggested")
    psabridge("device-types", "map", "--suggested")
    psabridge("devices", "map", "--all")
    return simulators


def test_simulators_started_alone_share_customers_so_companies_and_devices_map(mapped, psabridge):
    companies, devices = mapped_state(psabridge.db)
    # In-process twins: seeded alike, they hold what the served simulators hold.
    cw = ConnectWiseSimulator(seed=SEED, companies=COMPANIES)
    datto = DattoSimulator(seed=SEED, companies=COMPANIES)
    company_names = {str(c["id"]): c["name"] for c in cw.db.companies.values()}
    to_own_site = [m for m in companies
                   if datto.estate.site_origins.get(m.site_uid, (None,))[0] == company_names[m.company_id]]
    # Most companies find the site made from them (a typo or a location tag may be too far).
    assert len(to_own_site) >= COMPANIES - 2

    configuration_of = {m.device_uid: m.configuration_id for m in devices}
    site_of = {company: uid for uid, (company, _) in datto.estate.site_origins.items() if company}
    matched = 0
    for client in simulated_msp.clients(SEED, COMPANIES):
        if not any(m.site_uid == site_of[client.name] for m in to_own_site):
            continue
        company_id = next(i for i, name in company_names.items() if name == client.name)
        for machine in (m for m in client.machines if m.in_psa):
            device = next(d for d in datto.devices.values()
                          if d["siteUid"] == site_of[client.name] and d["hostname"] == machine.hostname)
            recorded = next(c for c in cw.db.configurations.values()
                            if str(c["company"]["id"]) == company_id
                            and c["name"] == machine.configuration_name)
            # The configuration the MSP recorded by hand is the device's, not a new one.
            assert configuration_of[device["uid"]] == str(recorded["id"])
            matched += 1
    assert matched >= 3


def test_the_round_trip_driven_from_the_command_line(mapped, psabridge):
    _, devices = mapped_state(psabridge.db)
    twin = ConnectWiseSimulator(seed=SEED, companies=COMPANIES)
    board = twin.board("RMM Alerts")
    ids = {"board": board["id"], "open": twin.board_status("RMM Alerts", "New (Alert)")["id"],
           "closed": twin.board_status("RMM Alerts", "Resolved")["id"],
           "priority": twin.db.by_name(twin.db.priorities, "Priority 2 - Quick Response")["id"],
           "source": twin.db.by_name(twin.db.sources, "Monitoring")["id"]}
    psabridge("ticketing", "set", "--origin", "alert", "--board", str(ids["board"]), "--open-status",
              str(ids["open"]), "--closed-status", str(ids["closed"]), "--priority",
              f"High={ids['priority']}", "--source", str(ids["source"]))
    psabridge("ticketing", "enable")

    first, second = (m.device_uid for m in devices[:2])
    raised = json.loads(psabridge("simulate", "raise-alert", "--device", first, "--json").output)
    jsonschema.validate(raised, schema_for("simulate raise-alert"))
    assert raised["device_uid"] == first and raised["priority"] == "High" and not raised["resolved"]
    other = json.loads(psabridge("simulate", "raise-alert", "--device", second, "--kind", "offline",
                                 "--json").output)
    assert other["monitor"] == "online_offline_status_ctx"
    psabridge("sync", "--once")
    tickets = ticket_rows(psabridge.db)
    assert tickets[raised["alert_uid"]].state == tickets[other["alert_uid"]].state == "open"

    # Resolved in the RMM: the next pass closes its ticket in the PSA.
    resolved = psabridge("simulate", "resolve-alert", raised["alert_uid"])
    assert f"Resolved alert {raised['alert_uid']}" in resolved.output
    psabridge("sync", "--once")
    closed_ticket = tickets[raised["alert_uid"]].ticket_id
    assert ticket_rows(psabridge.db)[raised["alert_uid"]].state == "closed"
    again = psabridge("simulate", "close-ticket", str(closed_ticket), ok=False)
    assert again.exit_code == 1 and f"ticket {closed_ticket} is already closed" in again.output

    # Closed in the PSA: the next pass resolves its alert in the RMM.
    ticket = tickets[other["alert_uid"]].ticket_id
    closing = json.loads(psabridge("simulate", "close-ticket", str(ticket), "--json").output)
    jsonschema.validate(closing, schema_for("simulate close-ticket"))
    assert closing == {"ticket_id": int(ticket), "summary": closing["summary"], "board": "RMM Alerts",
                       "status": "Resolved", "closed": True, "company": closing["company"]}
    psabridge("sync", "--once")
    assert ticket_rows(psabridge.db)[other["alert_uid"]].state == "resolved"
    already = psabridge("simulate", "resolve-alert", other["alert_uid"], ok=False)
    assert already.exit_code == 1 and "is already resolved" in already.output


def ticket_rows(db: Path) -> dict:
    store = open_store(make_plugin_manager(), f"sqlite://{db}")
    try:
        return {row.alert_uid: row for row in store.alert_tickets("connectwise", "datto")}
    finally:
        store.close()


def test_add_device_and_what_the_commands_refuse(simulators, psabridge, control_dir):
    cw, datto = simulators
    twin = DattoSimulator(seed=SEED, companies=COMPANIES)
    site = next(s for uid, s in twin.sites.items() if twin.estate.site_origins[uid][0])
    added = json.loads(psabridge("simulate", "add-device", "--site", site["name"].upper(), "--hostname",
                                 "NEW-LAPTOP-7", "--kind", "laptop", "--serial", "SN-TEST-1",
                                 "--json").output)
    assert added["site_uid"] == site["uid"] and added["serial_number"] == "SN-TEST-1"
    jsonschema.validate(added, schema_for("simulate add-device"))
    on_it = json.loads(psabridge("simulate", "raise-alert", "--device", "new-laptop-7", "--json").output)
    assert on_it["device_uid"] == added["device_uid"]
    off = json.loads(psabridge("simulate", "resolve-alert", on_it["alert_uid"], "--json").output)
    jsonschema.validate(off, schema_for("simulate resolve-alert"))
    assert (off["alert_uid"], off["resolved"]) == (on_it["alert_uid"], True)

    refusals = {
        ("raise-alert", "--device", "NO-SUCH-PC"): "no device with uid or hostname 'NO-SUCH-PC'",
        ("raise-alert", "--device", "RECEPTION-PC"): "3 devices are named 'RECEPTION-PC'",
        ("resolve-alert", "not-an-alert"): "no alert with uid not-an-alert",
        ("add-device", "--site", "Nowhere Inc.", "--hostname", "X1"): "no site with uid or name",
        ("add-device", "--site", site["uid"], "--hostname", "TWO WORDS"): "is not a machine name",
        ("close-ticket", "99999"): "no ticket 99999",
        ("close-ticket", "twelve"): "ticket must be a ticket number",
    }
    for args, message in refusals.items():
        result = psabridge("simulate", *args, ok=False)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output

    # --url: the token comes from the environment, and a wrong one is refused.
    wrong = CliRunner().invoke(cli, ["simulate", "resolve-alert", "x", "--url", datto.url],
                               env={"PSABRIDGE_SIMULATOR_TOKEN": "wrong", "PSABRIDGE_SIMULATOR_DIR":
                                    str(control_dir / "elsewhere")})
    assert wrong.exit_code == 1 and "control token is missing or wrong" in wrong.output
    token = json.loads((control_dir / "datto.json").read_text())["token"]
    right = CliRunner().invoke(cli, ["simulate", "raise-alert", "--device", added["device_uid"], "--url",
                                     datto.url, "--json"],
                               env={"PSABRIDGE_SIMULATOR_TOKEN": token, "PSABRIDGE_SIMULATOR_DIR":
                                    str(control_dir / "elsewhere")})
    assert right.exit_code == 0, right.output
    # The control endpoints are not the simulated API's: the API user's token is not theirs.
    assert httpx.post(f"{datto.url}/_simulator/raise-alert", json={"device": "x"}).status_code == 401


def test_control_files_are_private_and_name_the_running_simulator(simulators, control_dir):
    cw, datto = simulators
    for plugin, simulator in (("connectwise", cw), ("datto", datto)):
        path = control_dir / f"{plugin}.json"
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        record = json.loads(path.read_text())
        assert record["url"] == simulator.url and record["pid"] == simulator.process.pid
        assert not any(record["token"] in line for line in simulator.lines)  # never printed
    assert oct(control_dir.stat().st_mode & 0o777) == "0o700"


def test_without_a_running_simulator_the_commands_say_how_to_start_one(control_dir, psabridge):
    result = psabridge("simulate", "raise-alert", "--device", "PC-1", ok=False)
    assert result.exit_code == 1
    assert "no Datto RMM simulator is running" in result.output
    assert "psabridge simulate datto" in result.output

    control_dir.mkdir(mode=0o700)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    (control_dir / "connectwise.json").write_text(json.dumps(
        {"plugin": "connectwise", "url": "http://127.0.0.1:9", "token": "t", "pid": int(ended.stdout)}))
    stale = psabridge("simulate", "close-ticket", "5", ok=False)
    assert stale.exit_code == 1 and "is no longer running" in stale.output

    no_token = psabridge("simulate", "close-ticket", "5", "--url", "http://127.0.0.1:10", ok=False)
    assert no_token.exit_code == 1 and "PSABRIDGE_SIMULATOR_TOKEN" in no_token.output

    unreachable = CliRunner().invoke(cli, ["simulate", "close-ticket", "5", "--url", "http://127.0.0.1:9"],
                                     env={"PSABRIDGE_SIMULATOR_TOKEN": "t"})
    assert unreachable.exit_code == 1
    assert "cannot reach the ConnectWise Manage simulator" in unreachable.output


def test_simulate_datto_takes_the_fault_options_simulate_connectwise_has(control_dir):
    for plugin in ("connectwise", "datto"):
        help_text = CliRunner().invoke(cli, ["simulate", plugin, "--help"]).output
        for option in ("--latency", "--error-rate", "--throttle-rate", "--drop-rate", "--seed",
                       "--companies"):
            assert option in help_text, (plugin, option)
    throttled = start("datto", "--throttle-rate", "1", "--token-ttl", "60", last="Act in it with")
    try:
        answer = httpx.get(f"{throttled.url}/api/v2/system/status", timeout=5)
        assert answer.status_code == 429 and answer.headers["Retry-After"] == "1"
        assert answer.json()["error"] == "too_many_requests"
    finally:
        throttled.stop()
    dropping = start("datto", "--drop-rate", "1", last="Act in it with")
    try:
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"{dropping.url}/api/v2/system/status", timeout=5)
    finally:
        dropping.stop()


@pytest.fixture(autouse=True)
def _no_plugin_limit(monkeypatch):
    monkeypatch.delenv("PSABRIDGE_LOAD_PLUGINS", raising=False)


# -- the control endpoints stay out of the simulated APIs ------------------------------------------


def test_control_actions_are_not_faulted_counted_or_part_of_the_api():
    from psabridge.simulation import Faults

    sim = DattoSimulator(seed=SEED, companies=3, faults=Faults(error_rate=1.0))
    device = next(d for d in sim.devices.values() if not d["deleted"])
    with httpx.Client(transport=httpx.WSGITransport(app=sim.controlled_app("tok")),
                      base_url="http://datto") as http:
        raised = http.post("/_simulator/raise-alert", json={"device": device["uid"]},
                           headers={"Authorization": "Bearer tok"})
        assert raised.status_code == 200 and raised.json()["alert_uid"] in sim.alerts
        assert http.get("/api/v2/system/status").status_code >= 500  # the API is still faulty
        unknown = http.post("/_simulator/delete-everything", json={},
                            headers={"Authorization": "Bearer tok"})
        assert unknown.status_code == 404 and "raise-alert" in unknown.json()["error"]
    assert all("_simulator" not in endpoint for endpoint in sim.counts)
    # Served without a control token, the simulator has no such endpoints: the API's own 404.
    with httpx.Client(transport=httpx.WSGITransport(app=sim.app), base_url="http://datto") as http:
        sim.injector.faults.error_rate = 0.0
        assert http.post("/_simulator/raise-alert", json={"device": device["uid"]}).status_code == 404


def test_closing_a_ticket_calls_back_as_a_change_made_in_connectwise_does():
    from psabridge.plugins.connectwise.simulator import controls

    sim = ConnectWiseSimulator(seed=SEED, companies=2)
    company = next(iter(sim.db.companies.values()))
    ticket = sim.db.add_ticket(company, "Printer jammed", sim.board("Help Desk"))
    sim.api.notify = lambda kind, action, record: calls.append((kind, action, record["id"]))
    calls: list = []
    closed = controls.close_ticket(sim, {"ticket": str(ticket["id"]), "status": "closed"})
    assert closed["status"] == "Closed" and ticket["closedFlag"] is True
    assert calls == [("ticket", "updated", ticket["id"])]


def test_a_simulator_started_later_takes_the_control_file_over(control_dir):
    import contextlib

    from psabridge.simulator_commands import control_file_written, find_simulator

    with contextlib.ExitStack() as first:
        path = first.enter_context(control_file_written("datto", "http://127.0.0.1:1", "first"))
        with control_file_written("datto", "http://127.0.0.1:2", "second"):
            assert find_simulator("datto", "Datto RMM").url == "http://127.0.0.1:2"
            first.close()  # the first stops while the second runs: the file is not its own now
            assert find_simulator("datto", "Datto RMM").url == "http://127.0.0.1:2"
        assert not path.exists()  # the second removed its own on stop


# -- close-ticket drives whichever PSA's simulator -------------------------------------------------


@pytest.fixture
def both_psa_simulators(control_dir):
    """The ConnectWise and Autotask simulators running at once, as an admin trying both does."""
    common = ("--seed", str(SEED), "--companies", str(COMPANIES))
    cw = start("connectwise", *common, last="Press Ctrl-C")
    try:
        autotask = start("autotask", *common, last="Press Ctrl-C")
    except BaseException:
        cw.stop()
        raise
    yield cw, autotask
    autotask.stop(), cw.stop()


def autotask_ticket(autotask: Simulator, title: str) -> int:
    """A new ticket in the running Autotask simulator, made through its REST API."""
    from psabridge.plugins.autotask.simulator import AutotaskSimulator

    twin = AutotaskSimulator(seed=SEED, companies=COMPANIES)  # the same API user
    with twin.client(autotask.url, timeout=10) as client:
        body = {"companyID": twin.companies()[1]["id"], "title": title, "status": 1, "priority": 1,
                "queueID": 29682833, "issueType": 4, "subIssueType": 40, "ticketType": 5,
                "source": 8, "ticketCategory": 101}
        created = client.post("Tickets", json=body)
        assert created.status_code == 200, created.text
        return created.json()["itemId"]


def autotask_status(autotask: Simulator, ticket_id: int) -> int:
    from psabridge.plugins.autotask.simulator import AutotaskSimulator

    with AutotaskSimulator(seed=SEED, companies=COMPANIES).client(autotask.url, timeout=10) as client:
        return client.get(f"Tickets/{ticket_id}").json()["item"]["status"]


def test_close_ticket_drives_the_simulator_of_the_psa_enabled_or_chosen(both_psa_simulators, psabridge):
    cw, autotask = both_psa_simulators
    first = autotask_ticket(autotask, "Printer offline")

    # Two PSA simulators and no PSA enabled: which one is not guessed.
    unsure = psabridge("simulate", "close-ticket", str(first), ok=False)
    assert unsure.exit_code == 1 and "autotask, connectwise" in unsure.output
    assert "--psa" in unsure.output and "Traceback" not in unsure.output
    assert autotask_status(autotask, first) == 1

    chosen = psabridge("simulate", "close-ticket", str(first), "--psa", "autotask")
    assert f"Closed ticket {first} (Printer offline) in the Autotask PSA simulator" in chosen.output
    assert "ConnectWise" not in chosen.output
    assert autotask_status(autotask, first) == 5  # Complete

    # The PSA enabled in the store is the one whose simulator is driven.
    psabridge(*autotask.configure_args())
    psabridge("plugins", "enable", "autotask")
    second = autotask_ticket(autotask, "Disk C: below 10 %")
    closed = json.loads(psabridge("simulate", "close-ticket", str(second), "--json").output)
    jsonschema.validate(closed, schema_for("simulate close-ticket"))
    assert (closed["ticket_id"], closed["status"], closed["closed"]) == (second, "Complete", True)
    assert autotask_status(autotask, second) == 5
    again = psabridge("simulate", "close-ticket", str(second), ok=False)
    assert again.exit_code == 1 and f"Autotask PSA simulator: ticket {second} is already complete" \
        in again.output

    # --psa overrides the store: ConnectWise's simulator has no such ticket, and says so by name.
    elsewhere = psabridge("simulate", "close-ticket", "424242", "--psa", "connectwise", ok=False)
    assert elsewhere.exit_code == 1 and "ConnectWise Manage simulator: no ticket 424242" in elsewhere.output
    unknown = psabridge("simulate", "close-ticket", "1", "--psa", "nosuch", ok=False)
    assert unknown.exit_code == 2 and "'nosuch' is not an installed PSA plugin" in unknown.output

    # Through --url the messages still name the product the simulator is.
    unreachable = CliRunner().invoke(cli, ["--db", str(psabridge.db), "simulate", "close-ticket", "5",
                                           "--url", "http://127.0.0.1:9"],
                                     env={"PSABRIDGE_SIMULATOR_TOKEN": "t"})
    assert unreachable.exit_code == 1
    assert "cannot reach the Autotask PSA simulator at http://127.0.0.1:9" in unreachable.output


def test_close_ticket_without_any_psa_simulator_says_how_to_start_one(control_dir, psabridge):
    result = psabridge("simulate", "close-ticket", "5", ok=False)
    assert result.exit_code == 1 and "no PSA simulator is running" in result.output
    for start_it in ("psabridge simulate autotask", "psabridge simulate connectwise"):
        assert start_it in result.output
