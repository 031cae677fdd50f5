"""Bad answers from either API: a clear error or warning, and nothing lost or half written.

Malformed JSON and truncated pages stop the command with one line naming the service and the
request; wrong types are read where they can be (a number where text belongs) and refused by
name where they cannot; unknown enum values pass through; a company deleted under a mapping
becomes a warning instead of configurations created under a company that is gone.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from psabridge.cli import App, cli
from psabridge.core import mapping, sync, ticketing
from psabridge.core.errors import RemoteError
from psabridge.simulation import ScriptedFault
from tests.reliability.world import set_up, world


def store_tables(w) -> dict[str, list[dict]]:
    return {t: list(w.store.table_rows(t)) for t in
            ("company_sites", "device_types", "device_configurations", "alert_tickets", "journal")}


@pytest.fixture
def w(tmp_path):
    with world(tmp_path / "state.db", seed=5, companies=4, loopback=True) as running:
        set_up(running)
        sync.run_pass(running.bridge)
        yield running


def run_cli(w, *args):
    return CliRunner().invoke(cli, ["--db", str(w.store.path), *args], obj=App(pm=w.pm))


@pytest.mark.parametrize(("side", "path", "args", "named"), [
    ("cw", "company/companies", ("companies", "load"), "ConnectWise answered GET"),
    ("datto", "account/devices", ("devices", "load"), "Datto RMM answered GET"),
])
def test_malformed_json_stops_the_command_with_one_line_and_writes_nothing(w, side, path, args, named):
    before = store_tables(w)
    faults = w.faults[0 if side == "cw" else 1]
    faults.add(ScriptedFault("malformed", method="GET", path=path))
    result = run_cli(w, *args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and named in lines[0], result.output
    assert "not JSON" in lines[0] and "Traceback" not in result.output
    assert store_tables(w) == before


def test_malformed_alerts_fail_that_step_of_the_pass_which_says_so_and_writes_nothing(w):
    before = store_tables(w)
    w.faults[1].add(ScriptedFault("malformed", method="GET", path="alerts/open"))
    result = run_cli(w, "--log-format", "console", "sync")
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert errors == ["Error: alerts: Datto RMM answered GET /api/v2/account/alerts/open with a "
                      "body that is not JSON"], result.output
    assert store_tables(w) == before
    # With JSON logs, the error is a log event like every other line on stderr.
    w.faults[1].add(ScriptedFault("malformed", method="GET", path="alerts/open"))
    result = run_cli(w, "--log-format", "json", "sync")
    assert result.exit_code == 1
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert [e["error"] for e in events if e["event"] == "pass_error"] == [
        "alerts: Datto RMM answered GET /api/v2/account/alerts/open with a body that is not JSON"]
    assert store_tables(w) == before


def test_a_truncated_second_page_fails_the_listing_and_maps_nothing_from_it(w):
    w.datto.add_device(next(iter(w.store.company_mappings(*w.bridge.pair))).site_uid, "LATE-PC")
    for extra in range(260):  # enough devices for a second page of 250
        w.datto.add_device(next(iter(w.store.company_mappings(*w.bridge.pair))).site_uid, f"PC-{extra}")
    w.bridge.set_option("auto_map", True)
    before = store_tables(w)
    w.faults[1].add(ScriptedFault("malformed", method="GET", path="account/devices"))  # page 1
    failed = sync.run_pass(w.bridge)  # the mapping step fails; the rest of the pass goes on
    assert [e for e in failed.errors if e.startswith("mapping:") and "not JSON" in e], failed.errors
    assert store_tables(w) == before
    w.faults[1].script.clear()
    w.reopen()
    w.bridge.set_option("auto_map", True)
    report = sync.run_pass(w.bridge)  # the next pass, with whole pages, maps them all
    assert report.errors == [] and report.mapping_changes >= 261


def test_wrong_types_from_connectwise_are_read_or_refused_by_name(w):
    company = next(iter(w.cw.db.companies.values()))
    company["identifier"] = 4711  # a number where text belongs: read as text
    rows = mapping.load_companies(w.bridge, "all")
    assert any(r.company.identifier == "4711" for r in rows)
    company["name"] = {"first": "Acme"}  # an object where text belongs: refused by name
    with pytest.raises(RemoteError, match=f"company {company['id']} with a dict as its name"):
        mapping.load_companies(w.bridge, "all")
    result = run_cli(w, "companies", "load")
    assert result.exit_code == 1 and "with a dict as its name" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_wrong_types_and_unknown_enums_from_datto_do_not_stop_the_sync(w):
    mappings = w.store.device_mappings(*w.bridge.pair)
    mapped = mappings[0].device_uid
    site = mappings[0].site_uid
    odd = w.datto.add_device(site, "ODD-ONE")
    odd.update(hostname=None, lastAuditDate="yesterday", deviceClass="quantum",
               deviceType={"category": "Quantum Computer", "type": None})
    alert = w.datto.raise_alert(mapped)
    alert.update(priority="Apocalyptic", alertContext={"@class": "brand_new_ctx", "level": 9})
    report = sync.run_pass(w.bridge)
    assert report.errors == []
    row = w.store.alert_ticket(*w.bridge.pair, alert["alertUid"])
    assert row.state == "open" and row.monitor.startswith("brand_new_ctx")
    devices = {r.device.uid: r for r in mapping.load_devices(w.bridge, "all")}
    assert devices[odd["uid"]].device.device_type == "Quantum Computer"
    assert devices[odd["uid"]].state == "unaudited"  # an unreadable audit date is no audit


def test_a_company_deleted_under_a_mapping_becomes_a_warning_not_configurations(w):
    gone = w.store.company_mappings(*w.bridge.pair)[0]
    w.cw.db.companies[int(gone.company_id)]["deletedFlag"] = True
    new_device = w.datto.add_device(gone.site_uid, "NEW-PC-1")
    w.reopen()
    w.bridge.set_option("auto_map", True)
    configurations_before = len(w.cw.db.configurations)
    report = sync.run_pass(w.bridge)
    assert report.errors == [] and len(w.cw.db.configurations) == configurations_before
    warning = next(x for x in w.store.warnings() if new_device["uid"] in x.subject)
    assert f"`psabridge companies unmap {gone.company_id}`" in warning.message
    shown = {r.company.id: r for r in mapping.load_companies(w.bridge, "mapped")}
    assert shown[gone.company_id].company.status == mapping.GONE
    assert w.store.company_mappings(*w.bridge.pair)[0] == gone  # nothing lost
    assert ticketing.ticket_settings(w.bridge).enabled  # and nothing else disturbed
