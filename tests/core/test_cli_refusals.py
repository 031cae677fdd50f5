"""What an outsider found the CLI reinterpreting or leaving unsaid, run against both simulators:
unknown and empty names are refused, contradictory choices are usage errors, the JSON says null
for what does not exist, and what is left out is named."""

from __future__ import annotations

import json

from psabridge.plugins.rmm_datto import ALERT_PRIORITIES
from tests.core.test_cli_lookups import run, sims  # noqa: F401 - fixtures


def report(run, *args, ok=True) -> dict:  # noqa: F811
    result = run(*args, "--json", ok=ok)
    return json.loads(result.stdout)


def refused(run, *args, code: int, says: str) -> str:  # noqa: F811
    result = run(*args, ok=False)
    assert result.exit_code == code, result.output
    assert says in result.output, result.output
    assert "Traceback" not in result.output
    return result.output


def psa_priority(run, index: int = 0) -> dict:  # noqa: F811
    return json.loads(run("psa", "priorities", "--json").stdout)[index]


def map_everything(run) -> list[dict]:  # noqa: F811
    run("companies", "map", "--suggested")
    run("device-types", "map", "--suggested")
    run("devices", "map", "--all", ok=False)
    return json.loads(run("devices", "load", "--mapping", "mapped", "--json").stdout)


def test_an_unknown_rmm_priority_is_refused_with_the_rmms_own(run):  # noqa: F811
    psa = psa_priority(run)
    out = refused(run, "ticketing", "set", "--priority", f"Bogus={psa['id']}", "--dry-run",
                  code=1, says="the RMM has no alert priority 'Bogus'")
    assert ", ".join(ALERT_PRIORITIES) in out

    plan = report(run, "ticketing", "set", "--priority", f"critical={psa['name']}", "--dry-run")
    (change,) = plan["changes"]
    assert change["subject"] == "priority Critical"  # as the RMM spells it
    assert change["ids"] == {"rmm_priority": "Critical", "psa_priority_id": psa["id"]}
    assert change["detail"] == f"PSA priority {psa['id']}"


def test_one_rmm_priority_given_two_psa_priorities_is_a_usage_error(run):  # noqa: F811
    first, second = psa_priority(run, 0), psa_priority(run, 1)
    refused(run, "ticketing", "set", "--priority", f"critical={first['id']}", "--priority",
            f"Critical={second['id']}", "--dry-run", code=2,
            says="maps the RMM priority Critical twice")
    same = report(run, "ticketing", "set", "--priority", f"critical={first['id']}",
                  "--priority", f"Critical={first['name']}", "--dry-run")
    assert [c["subject"] for c in same["changes"]] == ["priority Critical"]


def test_empty_values_of_ticketing_set_are_usage_errors(run):  # noqa: F811
    refused(run, "ticketing", "set", "--origin", "alert", "--board", "", "--dry-run", code=2,
            says="--board is empty")
    refused(run, "ticketing", "set", "--source", " ", code=2, says="--source is empty")
    refused(run, "ticketing", "set", "--priority", "=1", code=2, says="is not RMM=PSA_PRIORITY")


def test_ticketing_set_details_are_words_and_a_real_run_lists_its_changes(run):  # noqa: F811
    plan = report(run, "ticketing", "set", "--repeat-minutes", "60", "--dry-run")
    assert [c["detail"] for c in plan["changes"]] == ["off -> 60 minutes"]
    out = run("ticketing", "set", "--repeat-minutes", "45").output
    assert "repeat_minutes" in out and "off -> 45 minutes" in out
    assert "Done: 1 change, 0 failed, 0 skipped." in out


def test_ticketing_monitor_refuses_an_empty_name_and_says_an_unknown_one_is_unchecked(run):  # noqa: F811
    refused(run, "ticketing", "monitor", "", "--no-tickets", code=2, says="MONITOR is empty")
    refused(run, "ticketing", "monitor", "  ", "--no-tickets", code=2, says="MONITOR is empty")
    shown = json.loads(run("ticketing", "show", "--json").stdout)
    assert shown["monitors"] == []  # nothing was saved

    result = run("ticketing", "monitor", "nosuch_monitor", "--no-tickets", "--dry-run", "--json")
    (change,) = json.loads(result.stdout)["changes"]
    assert change["detail"] == "tickets off"
    assert "no open alert names the monitor 'nosuch_monitor'" in result.stderr


def test_ticketing_monitor_takes_an_open_alerts_monitor_case_aside(run, sims):  # noqa: F811
    _, datto = sims
    datto.raise_alert(next(iter(datto.devices)))
    monitor = json.loads(run("rmm", "monitors", "--json").stdout)[0]["monitor"]
    result = run("ticketing", "monitor", monitor.upper(), "--no-tickets", "--json")
    (change,) = json.loads(result.stdout)["changes"]
    assert change["ids"] == {"monitor": monitor}
    assert "no open alert" not in result.stderr


def test_a_ticket_needs_a_summary(run):  # noqa: F811
    (device, *_) = map_everything(run)
    refused(run, "tickets", "create", device["hostname"], "", code=2, says="SUMMARY is empty")
    assert json.loads(run("tickets", "list", "--json").stdout) == []


def test_device_types_must_be_the_rmms(run):  # noqa: F811
    refused(run, "device-types", "map", "Toaster=Printer", "--dry-run", code=1,
            says="the RMM has no device of type 'Toaster'")
    refused(run, "device-types", "map", "=Printer", "--dry-run", code=2, says="names no device type")
    refused(run, "device-types", "map", "Printer=", "--dry-run", code=2,
            says="has nothing after '='")
    refused(run, "device-types", "map", "Printer=Printer", "printer=Laptop", "--dry-run", code=2,
            says="device type Printer is given twice")
    plan = report(run, "device-types", "map", "printer=Printer", "--dry-run")
    assert [c["ids"] for c in plan["changes"]] == [
        {"device_type": "Printer", "configuration_type_id": "19"}]

    run("device-types", "map", "Printer=Printer")
    again = report(run, "device-types", "map", "Printer=Printer")
    assert [(c["result"], c["ids"]) for c in again["changes"]] == [
        ("unchanged", {"device_type": "Printer", "configuration_type_id": "19"})]


def company(run, name: str) -> str:  # noqa: F811
    return next(c["id"] for c in json.loads(run("psa", "companies", "--json").stdout)
                if c["name"] == name)


def test_empty_or_contradictory_company_choices_are_usage_errors(run):  # noqa: F811
    lakeside = company(run, "Lakeside Marketing P.C.")
    refused(run, "companies", "map", f"{lakeside}=", "--dry-run", code=2,
            says="has nothing after '='")
    refused(run, "companies", "map", f"{lakeside}=Internal IT", f"{lakeside}=Staging Lab",
            "--dry-run", code=2, says=f"company {lakeside} is given twice")
    twice = report(run, "companies", "map", f"{lakeside}=Internal IT",
                   "Lakeside Marketing P.C.=internal it", "--dry-run")
    assert [c["detail"] for c in twice["changes"]] == ["site Internal IT"]


def test_a_system_site_is_refused_as_such(run):  # noqa: F811
    lakeside = company(run, "Lakeside Marketing P.C.")
    refused(run, "companies", "map", f"{lakeside}=Deleted Devices", "--dry-run", code=1,
            says="site Deleted Devices is one of the RMM's own (system) sites, which are never "
                 "mapped")


def test_new_says_when_it_maps_to_a_site_of_that_name(run):  # noqa: F811
    plan = report(run, "companies", "map", "Lakeside Marketing P.C.=new", "--dry-run")
    (change,) = plan["changes"]
    assert change["action"] == "map company"
    assert change["detail"] == ("site Lakeside Marketing P.C. (the RMM already has a site of that "
                                "name: mapped to it, not created again)")


def test_review_reads_r_without_a_runner_up_as_no_runner_up(run):  # noqa: F811
    rows = json.loads(run("companies", "load", "--json").stdout)
    lonely = next(r for r in rows if r["suggestion"]["runner_up"] is None)
    others = {r["company_id"] for r in rows} - {lonely["company_id"]}
    skips = [arg for other in sorted(others) for arg in ("--skip", other)]
    result = run("companies", "map", "--review", *skips, "--dry-run", "--json", input="r\ns\n")
    assert f"{lonely['company']} has no runner-up site" in result.stderr
    assert json.loads(result.stdout)["changes"] == []  # then skipped, not mapped to a site "r"


def test_sync_refuses_once_and_watch_together(run):  # noqa: F811
    refused(run, "sync", "--once", "--watch", code=2, says="--once and --watch contradict")


def test_unaudited_devices_are_named_in_the_load_and_left_out_by_map_all(run, sims):  # noqa: F811
    _, datto = sims
    run("companies", "map", "--suggested")
    run("device-types", "map", "--suggested")
    rows = json.loads(run("devices", "load", "--json").stdout)
    unaudited = {r["device_uid"] for r in rows if r["state"] == "unaudited"}
    assert unaudited, "the simulated MSP has devices not audited yet"
    for row in rows:
        if row["state"] == "unaudited":
            assert row["problem"].startswith("not audited by the RMM yet")
        assert row["reason"] is None or row["reason"]
        assert row["problem"] is None or row["problem"]
    table = run("devices", "load").output
    assert "not audited by the RMM yet" in table

    plan = run("devices", "map", "--all", "--dry-run", "--json")
    left_out = json.loads(plan.stdout)["left_out"]
    assert {item["ids"]["device_uid"] for item in left_out} == unaudited
    assert {item["why"] for item in left_out} == {
        "not audited by the RMM yet (each can be mapped after its first audit)"}
    said = run("devices", "map", "--all", "--dry-run").stderr
    assert said.startswith("Left out, not audited by the RMM yet")


def test_mapped_rows_and_unchanged_changes_carry_their_ids(run):  # noqa: F811
    mapped = map_everything(run)
    device = mapped[0]
    assert device["configuration_id"] and device["configuration"]  # the name, not null

    again = report(run, "devices", "map", device["hostname"], "--dry-run")
    assert [(c["result"], c["ids"]) for c in again["changes"]] == [
        ("unchanged", {"device_uid": device["device_uid"],
                       "configuration_id": device["configuration_id"]})]

    unmap = report(run, "devices", "unmap", device["device_uid"], "--dry-run")
    assert [c["subject"] for c in unmap["changes"]] == [
        f"{device['hostname']} ({device['device_uid']})"]


def test_enabling_an_enabled_plugin_is_unchanged_and_empty_details_are_null(run):  # noqa: F811
    enabled = report(run, "plugins", "enable", "datto", "--skip-check")
    assert [(c["result"], c["detail"]) for c in enabled["changes"]] == [
        ("unchanged", "already enabled; its settings checked again, the connection not tested")]
    run("plugins", "disable", "datto")
    again = report(run, "plugins", "enable", "datto", "--skip-check")
    assert [(c["result"], c["detail"]) for c in again["changes"]] == [("done", None)]
