"""Writing commands against both simulators: `--dry-run` shows the change and leaves the store
and the simulators as they were; a command that could not make the change asked for exits
non-zero (and, where nothing could be made, changes nothing)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.core.test_cli_lookups import run, sims  # noqa: F401 - fixtures

# Tables that reads fill too (caches, coordination): not "a change" in the admin's sense.
READ_SIDE = {"leases", "locks", "device_details", "cursors", "webhook_messages"}
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def snapshot(db_path, sims) -> dict:  # noqa: F811
    cw, datto = sims
    with sqlite3.connect(db_path) as db:
        tables = [name for (name,) in db.execute(
            "select name from sqlite_master where type = 'table' and name not like 'sqlite_%'")]
        rows = {t: sorted(map(repr, db.execute(f"select * from [{t}]")))
                for t in tables if t not in READ_SIDE}
    writes = {f"{side} {endpoint}": count
              for side, counts in (("cw", cw.counts), ("datto", datto.counts))
              for endpoint, count in counts.items()
              if endpoint.split()[0] in WRITES and "token" not in endpoint}
    return {"store": rows, "remote writes": writes}


def json_of(result) -> dict | list:
    return json.loads(result.stdout)


def first(run, *args, key):  # noqa: F811
    return json_of(run(*args, "--json"))[0][key]


def map_everything(invoke):
    invoke("companies", "map", "--suggested")
    invoke("device-types", "map", "--suggested")
    invoke("devices", "map", "--all", ok=False)  # some devices may be left out; fine here


def valid_alert_settings(invoke):
    invoke("ticketing", "set", "--origin", "alert", "--board", "RMM Alerts", "--open-status",
        "New (Alert)", "--closed-status", "Resolved")


# Each: the setup (run for real), then the command to run dry.
DRY_RUNS = {
    "plugins enable": (lambda invoke: invoke("plugins", "disable", "datto"),
                       ["plugins", "enable", "datto"]),
    "plugins disable": (None, ["plugins", "disable", "datto"]),
    "plugins remove": (map_everything, ["plugins", "remove", "datto"]),
    "companies map": (None, ["companies", "map", "--suggested"]),
    "companies unmap": (lambda invoke: invoke("companies", "map", "--suggested"),
                        ["companies", "unmap", "@company"]),
    "device-types map": (None, ["device-types", "map", "--suggested"]),
    "devices map": (lambda invoke: (invoke("companies", "map", "--suggested"),
                                 invoke("device-types", "map", "--suggested")),
                    ["devices", "map", "--all"]),
    "devices unmap": (map_everything, ["devices", "unmap", "@device"]),
    "devices auto": (None, ["devices", "auto", "on"]),
    "devices map-now": (lambda invoke: (invoke("companies", "map", "--suggested"),
                                     invoke("device-types", "map", "--suggested"),
                                     invoke("devices", "auto", "on")),
                        ["devices", "map-now"]),
    "warnings clear": (lambda invoke: (invoke("companies", "map", "--suggested"),
                                    invoke("devices", "map", "--all", ok=False)),
                       ["warnings", "clear"]),
    "ticketing set": (None, ["ticketing", "set", "--origin", "manual", "--board", "Help Desk",
                             "--closed-status", "Closed", "--source", "Email"]),
    "ticketing monitor": (None, ["ticketing", "monitor", "comp_script_ctx", "--no-tickets"]),
    "ticketing enable": (valid_alert_settings, ["ticketing", "enable"]),
    "ticketing disable": (lambda invoke: (valid_alert_settings(invoke), invoke("ticketing", "enable")),
                          ["ticketing", "disable"]),
    "tickets create": (map_everything, ["tickets", "create", "@device", "Printer out of toner"]),
}


def placeholders(run) -> dict[str, str]:  # noqa: F811
    """A mapped device and company, for the commands that name one (when both connectors are
    enabled: a case may have disabled one)."""
    values = {}
    mapped = run("devices", "load", "--mapping", "mapped", "--json", ok=False)
    if mapped.exit_code == 0 and json_of(mapped):
        values["@device"] = json_of(mapped)[0]["hostname"]
    companies = run("companies", "load", "--mapping", "mapped", "--json", ok=False)
    if companies.exit_code == 0 and json_of(companies):
        values["@company"] = json_of(companies)[0]["company"]
    return values


@pytest.mark.parametrize("command", sorted(DRY_RUNS))
def test_a_dry_run_shows_the_change_and_changes_nothing(run, sims, db_path, command):  # noqa: F811
    setup, args = DRY_RUNS[command]
    if setup:
        setup(run)
    values = placeholders(run)
    args = [values.get(a, a) for a in args]
    before = snapshot(db_path, sims)
    shown = run(*args, "--dry-run")
    report = json_of(run(*args, "--dry-run", "--json"))
    assert snapshot(db_path, sims) == before
    assert report["dry_run"] is True
    planned = [c for c in report["changes"] if c["result"] == "planned"]
    assert planned, f"the dry run of {command} had nothing to change: {report}"
    assert "nothing done" in shown.output
    assert all(c["subject"] in shown.output for c in planned[:3]), shown.output


# `sync` reports a pass, not a list of changes: its dry run and its failure have tests of their own
# below.
PASS_REPORTS = {"sync"}


def test_dry_run_is_on_every_writing_command():
    from tests.core.test_cli_json import data_commands

    writing = {path for path, command in data_commands().items()
               if any(p.name == "dry_run" for p in command.params)}
    assert writing == set(DRY_RUNS) | {"plugins remove"} | PASS_REPORTS


def unknown_board_for_alerts(invoke, store):
    store.set_option("connectwise", "ticketing", {"attributes": {"alert": {
        "board_id": "999", "closed_status_id": "1"}}})


# Each: the setup (run for real), the command, whether nothing at all may have changed.
NOT_DONE = {
    "plugins enable unknown": (None, ["plugins", "enable", "nope"], True),
    "plugins enable without settings": (
        lambda invoke, store: invoke("plugins", "remove", "datto", "--yes"),
        ["plugins", "enable", "datto"], True),
    "plugins disable": (None, ["plugins", "disable", "nope"], True),
    "plugins remove": (None, ["plugins", "remove", "nope", "--yes"], True),
    "companies map unknown company": (None, ["companies", "map", "No Such Company"], True),
    "companies map unknown site": (None, ["companies", "map", "@company=No Such Site"], True),
    "companies unmap": (None, ["companies", "unmap", "No Such Company"], True),
    "device-types map": (None, ["device-types", "map", "Desktop=No Such Type"], True),
    "devices map unknown device": (None, ["devices", "map", "no-such-host"], True),
    "devices map leaves some out": (
        lambda invoke, store: (invoke("companies", "map", "--suggested"),
                               invoke("device-types", "map", "Desktop")),  # not the others
        ["devices", "map", "--all"], False),
    "devices unmap": (None, ["devices", "unmap", "no-such-host"], True),
    "devices auto": (None, ["devices", "auto", "maybe"], True),
    "devices map-now while automatic mapping is off": (None, ["devices", "map-now"], True),
    "warnings clear": (None, ["warnings", "clear", "--plugin", "nope"], True),
    "ticketing set unknown board": (None, ["ticketing", "set", "--origin", "alert", "--board",
                                           "999"], True),
    "ticketing set board that cannot take tickets": (
        None, ["ticketing", "set", "--origin", "alert", "--board", "Projects Intake",
               "--closed-status", "Done"], True),
    "ticketing set unknown priority": (None, ["ticketing", "set", "--priority",
                                              "Critical=Priority 9"], True),
    "ticketing monitor": (lambda invoke, store: invoke("plugins", "disable", "connectwise"),
                          ["ticketing", "monitor", "comp_script_ctx", "--no-tickets"], True),
    "ticketing enable": (unknown_board_for_alerts, ["ticketing", "enable"], True),
    "ticketing disable": (lambda invoke, store: invoke("plugins", "disable", "connectwise"),
                          ["ticketing", "disable"], True),
    "tickets create": (None, ["tickets", "create", "no-such-host", "Printer out of toner"], True),
}


@pytest.mark.parametrize("case", sorted(NOT_DONE))
def test_a_command_that_did_not_do_what_was_asked_exits_non_zero(run, sims, db_path, store,  # noqa: F811
                                                                   case):
    setup, args, nothing_changes = NOT_DONE[case]
    company = json_of(run("psa", "companies", "--json"))[0]["name"]
    args = [a.replace("@company", company) for a in args]
    if setup:
        setup(run, store)
    before = snapshot(db_path, sims)
    if nothing_changes:
        result = run(*args, ok=False)
        assert result.exit_code != 0, result.output
        assert "Traceback" not in result.output
        assert snapshot(db_path, sims) == before
    else:  # partly done: the report says what was left out, and the exit status that it was
        result = run(*args, "--json", ok=False)
        assert result.exit_code == 1, result.output
        report = json_of(result)
        assert not report["complete"] and report["summary"]["skipped"] > 0
        assert report["summary"]["done"] > 0


def test_every_writing_command_has_a_failing_case():
    from tests.core.test_cli_json import data_commands

    writing = {path for path, command in data_commands().items()
               if any(p.name == "dry_run" for p in command.params)}
    covered = {" ".join(args[:2]) for _, args, _ in NOT_DONE.values()}
    assert writing - PASS_REPORTS <= covered


def test_a_sync_dry_run_says_what_it_would_do_and_does_nothing(run, sims, db_path):  # noqa: F811
    map_everything(run)
    valid_alert_settings(run)
    run("ticketing", "enable")
    _, datto = sims
    mapped = json_of(run("devices", "load", "--mapping", "mapped", "--json"))[0]["device_uid"]
    datto.raise_alert(mapped)
    before = snapshot(db_path, sims)
    report = json_of(run("sync", "--dry-run", "--json"))
    assert report["planned"] and report["tickets_created"] == 0
    assert snapshot(db_path, sims) == before


def test_a_sync_that_could_not_do_its_work_exits_non_zero(run, sims):  # noqa: F811
    cw, _ = sims
    map_everything(run)
    valid_alert_settings(run)
    run("ticketing", "enable")
    cw.faults.error_rate = 1.0  # every ConnectWise request fails: the pass goes on, and says so
    result = run("sync", "--json", ok=False)
    assert result.exit_code == 1, result.output
    assert json_of(result)["errors"]


def test_ticketing_set_with_an_unknown_board_saves_nothing_and_says_which_boards_exist(run, store):  # noqa: F811
    result = run("ticketing", "set", "--origin", "alert", "--board", "999", "--source", "Email",
                 ok=False)
    assert result.exit_code == 1
    assert "Ticket settings saved" not in result.output
    assert "no board with id or name '999'" in result.output
    assert "psabridge psa choices board" in result.output
    assert store.option("connectwise", "ticketing") is None


def test_a_dry_run_refuses_what_the_real_run_would_refuse(run, sims):  # noqa: F811
    _, datto = sims
    device = next(d for d in datto.devices.values() if not d["deleted"])
    result = run("tickets", "create", device["uid"], "Printer out of toner", "--dry-run",
                 ok=False)
    assert result.exit_code == 1
    assert "is not mapped to a configuration" in result.output
