"""The look-up commands (`psabridge psa ...`, `psabridge rmm ...`) against both simulators,
in-process: each lists the simulator's own records, with their ids, as a table or as JSON."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from psabridge.cli import App, cli
from psabridge.core import lookups
from psabridge.core.plugins import configure_plugin, enable_plugin
from psabridge.plugins.rmm_datto.wire import monitor_identity
from tests.e2e.conftest import make_sims


@pytest.fixture
def sims():
    return make_sims(companies=4)


@pytest.fixture
def run(pm, store, db_path, sims):
    cw, datto = sims
    transports = {"connectwise": cw.transport(), "datto": datto.transport()}
    configure_plugin(pm, store, "connectwise", cw.settings("http://connectwise.simulator"))
    configure_plugin(pm, store, "datto", datto.settings("http://datto.simulator"))
    enable_plugin(pm, store, "connectwise", transport=transports["connectwise"])
    enable_plugin(pm, store, "datto", transport=transports["datto"])

    def invoke(*args, ok=True, input=None):
        result = CliRunner().invoke(cli, ["--db", str(db_path), *args],
                                    obj=App(pm=pm, transports=transports), input=input)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke


def as_json(run, *args) -> list[dict]:
    rows = json.loads(run(*args, "--json").output)
    assert isinstance(rows, list)
    return rows


def table(run, *args) -> str:
    out = run(*args).output
    assert not out.lstrip().startswith("["), out  # a table, not JSON
    return out


def no_rule_codes(text: str) -> None:
    assert not re.search(r"\bR\d+\b", text), text


def test_psa_routing_lists_the_fields_the_connector_declares(run):
    rows = as_json(run, "psa", "routing")
    assert [(r["name"], r["required"], r["scoped_by"]) for r in rows] == [
        ("board", True, None), ("type", False, "board"), ("subtype", False, "board")]
    assert "scoped_by" in table(run, "psa", "routing")


def test_psa_choices_of_the_boards_say_which_cannot_take_tickets(run, sims):
    cw, _ = sims
    rows = as_json(run, "psa", "choices", "board")
    assert {r["id"]: r["name"] for r in rows} == {str(b["id"]): b["name"]
                                                   for b in cw.db.boards.values()}
    for row in rows:
        assert set(row) == {"id", "name", "scope_id", "scope", "inactive", "default", "usable",
                            "why"}
        board_id = int(row["id"])
        team, status = cw.db.default_team(board_id), cw.db.default_status(board_id)
        assert row["usable"] == (team is not None and status is not None)
        assert bool(row["why"]) == (not row["usable"])
        no_rule_codes(row["why"])
    (unusable,) = [r for r in rows if not r["usable"]]
    assert unusable["name"] == "Projects Intake" and "default team" in unusable["why"]
    out = table(run, "psa", "choices", "board")
    assert "Help Desk" in out and "usable" in out
    unknown = run("psa", "choices", "queue", ok=False)
    assert unknown.exit_code == 1 and "its fields are board, type, subtype" in unknown.output


def test_psa_statuses_of_one_board_by_id_or_name(run, sims):
    cw, _ = sims
    help_desk = next(b for b in cw.db.boards.values() if b["name"] == "Help Desk")
    expected = {str(s["id"]): (s["name"], bool(s.get("closedStatus")))
                for s in cw.db.statuses_of(help_desk["id"])}
    rows = as_json(run, "psa", "statuses", "--within", str(help_desk["id"]))
    assert {r["id"]: (r["name"], r["closed"]) for r in rows} == expected
    assert all(set(r) >= {"id", "name", "scope_id", "scope", "closed", "default"} for r in rows)
    assert {(r["scope_id"], r["scope"]) for r in rows} == {(str(help_desk["id"]), "Help Desk")}
    assert as_json(run, "psa", "statuses", "--within", "help desk") == rows
    assert as_json(run, "psa", "statuses", "--board", "help desk") == rows  # the old spelling
    everything = as_json(run, "psa", "statuses")
    assert len(everything) == len(cw.db.board_statuses)
    assert "Waiting on Client" in table(run, "psa", "statuses", "--within", "Help Desk")
    unknown = run("psa", "statuses", "--within", "Nope", ok=False)
    assert unknown.exit_code == 1 and "psabridge psa choices board" in unknown.output
    assert "Traceback" not in unknown.output


def test_psa_choices_of_types_per_board(run, sims):
    cw, _ = sims
    alerts = next(b for b in cw.db.boards.values() if b["name"] == "RMM Alerts")
    rows = as_json(run, "psa", "choices", "type", "--within", str(alerts["id"]))
    assert {r["id"]: r["name"] for r in rows} == {
        str(t["id"]): t["name"] for t in cw.db.board_types.values() if t["board"]["id"] == alerts["id"]}
    assert all(r["scope"] == "RMM Alerts" and r["scope_id"] == str(alerts["id"]) for r in rows)
    assert len(as_json(run, "psa", "choices", "type")) == len(cw.db.board_types)
    # The PSA's default type of the board is marked.
    assert {r["id"] for r in rows if r["default"]} == {
        str(t["id"]) for t in cw.db.board_types.values()
        if t["board"]["id"] == alerts["id"] and t.get("defaultFlag")}
    assert "Service Request" in table(run, "psa", "choices", "type")


def test_psa_choices_of_subtypes_per_board(run, sims):
    cw, _ = sims
    desk = next(b for b in cw.db.boards.values() if b["name"] == "Help Desk")
    rows = as_json(run, "psa", "choices", "Subtype", "--within", "Help Desk")
    assert {r["id"]: r["name"] for r in rows} == {
        str(t["id"]): t["name"] for t in cw.db.board_subtypes.values() if t["board"]["id"] == desk["id"]}
    assert "Hardware" in table(run, "psa", "choices", "subtype", "--within", "Help Desk")


def test_psa_priorities(run, sims):
    cw, _ = sims
    rows = as_json(run, "psa", "priorities")
    assert {r["id"]: r["name"] for r in rows} == {str(p["id"]): p["name"]
                                                   for p in cw.db.priorities.values()}
    assert all(set(r) == {"id", "name", "inactive"} for r in rows)
    assert "Priority 1 - Emergency Response" in table(run, "psa", "priorities")


def test_psa_sources(run, sims):
    cw, _ = sims
    rows = as_json(run, "psa", "sources")
    assert {r["id"]: r["name"] for r in rows} == {str(s["id"]): s["name"]
                                                   for s in cw.db.sources.values()}
    assert all(set(r) == {"id", "name", "inactive"} for r in rows)
    assert "Monitoring" in table(run, "psa", "sources")


def test_psa_companies_with_and_without_search(run, sims):
    cw, _ = sims
    live = {str(c["id"]): c for c in cw.db.companies.values() if not c.get("deletedFlag")}
    rows = as_json(run, "psa", "companies")
    assert {r["id"]: r["name"] for r in rows} == {i: c["name"] for i, c in live.items()}
    assert all(set(r) >= {"id", "identifier", "name", "status", "types"} for r in rows)
    assert all(isinstance(r["types"], list) for r in rows)
    some = rows[0]["name"]
    word = some.split()[0]
    found = as_json(run, "psa", "companies", "--search", word)
    assert some in {r["name"] for r in found}
    assert all(word.casefold() in r["name"].casefold() for r in found)
    assert some in table(run, "psa", "companies")


def test_psa_configurations_of_a_company(run, sims):
    cw, _ = sims
    company = next(c for c in cw.db.companies.values()
                   if any(k["company"]["id"] == c["id"] for k in cw.db.configurations.values()))
    rows = as_json(run, "psa", "configurations", "--company", str(company["id"]))
    assert {r["id"]: r["name"] for r in rows} == {
        str(k["id"]): k["name"] for k in cw.db.configurations.values()
        if k["company"]["id"] == company["id"]}
    assert rows and all(set(r) >= {"id", "name", "type_id", "type", "status", "active",
                                   "serial_number", "management_link"} for r in rows)
    assert rows[0]["name"] in table(run, "psa", "configurations", "--company", str(company["id"]))
    missing = run("psa", "configurations", ok=False)
    assert missing.exit_code == 2 and "--company" in missing.output


def test_rmm_sites(run, sims):
    _, datto = sims
    rows = as_json(run, "rmm", "sites")
    assert {r["uid"]: r["name"] for r in rows} == {u: s["name"] for u, s in datto.sites.items()}
    assert all(set(r) >= {"uid", "id", "name", "system"} for r in rows)
    assert any(r["system"] for r in rows)  # the RMM's own site for deleted devices
    assert next(iter(datto.sites.values()))["name"] in table(run, "rmm", "sites")


def test_rmm_devices_of_one_site_and_all(run, sims):
    _, datto = sims
    site_uid = next(d["siteUid"] for d in datto.devices.values() if not d["deleted"])
    rows = as_json(run, "rmm", "devices", "--site", site_uid)
    assert {r["uid"]: r["hostname"] for r in rows} == {
        u: d["hostname"] for u, d in datto.devices.items() if d["siteUid"] == site_uid}
    assert rows and all(set(r) >= {"uid", "id", "hostname", "site_uid", "device_type",
                                   "last_audit", "deleted"} for r in rows)
    assert {r["site_uid"] for r in rows} == {site_uid}
    everything = as_json(run, "rmm", "devices")
    assert {r["uid"] for r in rows} < {r["uid"] for r in everything}
    assert rows[0]["hostname"] in table(run, "rmm", "devices", "--site", site_uid)


def test_rmm_monitors_are_the_monitors_of_open_alerts(run, sims):
    _, datto = sims
    open_alerts = [a for a in datto.alerts.values() if not a.get("resolved")]
    assert open_alerts, "the simulator seeds open alerts"
    rows = as_json(run, "rmm", "monitors")
    expected: dict[str, int] = {}
    for alert in open_alerts:
        name = monitor_identity(alert.get("alertContext"))
        expected[name] = expected.get(name, 0) + 1
    assert {r["monitor"]: r["open_alerts"] for r in rows} == expected
    assert all(set(r) >= {"monitor", "open_alerts", "devices", "priorities", "creates_ticket",
                          "example"} for r in rows)
    assert rows[0]["monitor"] in table(run, "rmm", "monitors")


# -- names wherever ids are -----------------------------------------------------------------------


def test_ticketing_set_takes_names_and_stores_the_ids(run, sims):
    cw, _ = sims
    alerts = next(b for b in cw.db.boards.values() if b["name"] == "RMM Alerts")
    statuses = {s["name"]: str(s["id"]) for s in cw.db.statuses_of(alerts["id"])}
    priority = next(p for p in cw.db.priorities.values() if p["name"].startswith("Priority 1"))
    source = next(iter(cw.db.sources.values()))
    run("ticketing", "set", "--origin", "alert", "--board", "rmm alerts", "--open-status",
        "New (Alert)", "--closed-status", "resolved", "--priority", f"Critical={priority['name']}",
        "--source", source["name"])
    shown = json.loads(run("ticketing", "show", "--json").output)
    assert shown["attributes"] == [{
        "origin": "alert", "routing": {"board": str(alerts["id"])},
        "open_status_id": statuses["New (Alert)"], "closed_status_id": statuses["Resolved"]}]
    assert shown["priorities"] == [{"rmm_priority": "Critical",
                                    "psa_priority_id": str(priority["id"])}]
    assert shown["source_id"] == str(source["id"]) and shown["enabled"] is False
    # The table names what the ids stand for.
    assert "RMM Alerts" in run("ticketing", "show").output
    # --route takes any field the PSA declares; a type is looked up among the board's.
    alert_type = next(t for t in cw.db.board_types.values() if t["board"]["id"] == alerts["id"])
    run("ticketing", "set", "--origin", "alert", "--route", f"type={alert_type['name']}")
    shown = json.loads(run("ticketing", "show", "--json").output)
    assert shown["attributes"][0]["routing"] == {"board": str(alerts["id"]),
                                                 "type": str(alert_type["id"])}
    unknown = run("ticketing", "set", "--origin", "alert", "--route", "queue=Monitoring", ok=False)
    assert unknown.exit_code == 1 and "no ticket field 'queue'" in unknown.output
    malformed = run("ticketing", "set", "--origin", "alert", "--route", "board", ok=False)
    assert malformed.exit_code == 2 and "FIELD=NAME_OR_ID" in malformed.output
    # FIELD= unsets a field: the PSA's default applies again.
    run("ticketing", "set", "--origin", "alert", "--route", "type=")
    shown = json.loads(run("ticketing", "show", "--json").output)
    assert shown["attributes"][0]["routing"] == {"board": str(alerts["id"])}


def test_an_unknown_choice_hints_at_a_command_that_lists_the_choices(run, sims):
    cw, _ = sims
    alerts = next(b for b in cw.db.boards.values() if b["name"] == "RMM Alerts")
    run("ticketing", "set", "--origin", "alert", "--board", "rmm alerts", "--open-status",
        "New (Alert)", "--closed-status", "resolved")
    for asked in (["--board", "No Such Board"], ["--route", "type=No Such Type"]):
        refused = run("ticketing", "set", "--origin", "alert", *asked, ok=False)
        assert refused.exit_code == 1, refused.output
        hinted = re.search(r"`psabridge ([^`]+)`", refused.output)
        assert hinted, refused.output
        listed = run(*hinted.group(1).split())  # the hinted command exists and succeeds
        assert listed.exit_code == 0
    assert str(alerts["id"]) in hinted.group(1)  # the types of the board chosen


def test_companies_devices_and_sites_are_taken_by_name(run, sims):
    cw, datto = sims
    site = next(s for s in datto.sites.values() if not s.get("system")
                and any(d["siteUid"] == s["uid"] and not d["deleted"] for d in datto.devices.values()))
    company = next(iter(c for c in cw.db.companies.values() if not c.get("deletedFlag")))
    plan = json.loads(run("companies", "map", f"{company['name']}={site['name']}", "--dry-run",
                          "--json").output)
    assert [c["ids"] for c in plan["changes"]] == [{"company_id": str(company["id"]),
                                                    "site_uid": site["uid"]}]
    by_name = as_json(run, "rmm", "devices", "--site", site["name"])
    assert by_name == as_json(run, "rmm", "devices", "--site", site["uid"])
    run("companies", "map", f"{company['name']}={site['name']}")
    run("device-types", "map", "--suggested")
    host = next(d for d in by_name if d["last_audit"] and not d["deleted"])
    planned = json.loads(run("devices", "map", host["hostname"], "--dry-run", "--json").output)
    assert {c["ids"]["device_uid"] for c in planned["changes"]} == {host["uid"]}
    configurations = as_json(run, "psa", "configurations", "--company", company["identifier"])
    assert configurations == as_json(run, "psa", "configurations", "--company", str(company["id"]))


def test_an_unknown_or_ambiguous_name_is_an_error_that_lists_the_candidates():
    records = [("1", "Help Desk"), ("2", "RMM Alerts"), ("3", "Help Desk"), ("4", "Projects")]
    assert lookups.resolve("board", "2", records, "`psabridge psa boards`") == "2"
    assert lookups.resolve("board", "  rmm ALERTS ", records, "`psabridge psa boards`") == "2"
    with pytest.raises(lookups.Ambiguous) as ambiguous:
        lookups.resolve("board", "help desk", records, "`psabridge psa boards`")
    assert str(ambiguous.value) == ("2 boards are named 'help desk': 'Help Desk' (1), "
                                    "'Help Desk' (3); give the id of the one you mean")
    with pytest.raises(lookups.NotFound) as unknown:
        lookups.resolve("board", "Alerts", records, "`psabridge psa boards`")
    assert str(unknown.value) == ("the PSA has no board with id or name 'Alerts'; did you mean "
                                  "'RMM Alerts' (2)? (`psabridge psa boards` lists them)")
    with pytest.raises(lookups.NotFound) as far_off:
        lookups.resolve("board", "999", records, "`psabridge psa boards`")
    assert "did you mean" not in str(far_off.value)
    assert lookups.resolve("company", "ACME", [("7", "Acme Corp.")], "x", ids=[("ACME", "7")]) == "7"


# -- tables ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("columns", [60, 100])
def test_tables_fit_the_terminal_and_keep_ids_whole(run, sims, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    _, datto = sims
    for args in (("rmm", "devices"), ("rmm", "monitors"), ("companies", "load"),
                 ("psa", "choices", "board"), ("device-types", "list")):
        out = table(run, *args)
        assert "\x1b[" not in out  # no colour: not a terminal
        assert max(map(len, out.splitlines())) <= columns, (args, out)
    uids = [d["uid"] for d in as_json(run, "rmm", "devices")]
    out = table(run, "rmm", "devices")
    assert all(uid in out for uid in uids)


def test_without_a_terminal_or_columns_rows_are_not_cut(run, sims, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    out = table(run, "rmm", "monitors")
    assert all(row["monitor"] in out and row["example"] in out
               for row in as_json(run, "rmm", "monitors"))


def test_on_a_terminal_site_names_link_to_the_rmm(monkeypatch, capsys):
    from psabridge import output

    monkeypatch.setattr(output, "_stream_is_tty", lambda stream: True)
    monkeypatch.setenv("NO_COLOR", "1")
    output.table([{"uid": "s-1", "name": "Acme HQ", "url": "https://rmm.example.com/site/1"}],
                 columns=["uid", "name"], links={"name": "url"})
    out = capsys.readouterr().out
    assert "\x1b]8;" in out and "https://rmm.example.com/site/1" in out  # an OSC 8 hyperlink
    assert "\x1b[3" not in out  # NO_COLOR: no colours, links still


def test_ticketing_enable_refuses_settings_that_would_make_alert_tickets_fail(run, sims, store):
    cw, _ = sims
    alerts = next(b for b in cw.db.boards.values() if b["name"] == "RMM Alerts")
    help_desk = next(b for b in cw.db.boards.values() if b["name"] == "Help Desk")
    help_desk_new = next(s for s in cw.db.statuses_of(help_desk["id"]) if s["name"] == "New")
    run("ticketing", "set", "--origin", "alert", "--board", "RMM Alerts", "--open-status",
        "New (Alert)", "--closed-status", "Resolved")
    run("ticketing", "enable")
    # Settings saved broken by other means (an older version, the store edited by hand).
    from psabridge.core import ticketing

    stored = store.option("connectwise", ticketing.OPTION)
    stored["attributes"]["alert"]["open_status_id"] = str(help_desk_new["id"])
    store.set_option("connectwise", ticketing.OPTION, stored)
    enabled = run("ticketing", "enable", ok=False)
    assert enabled.exit_code == 1, enabled.output
    assert "Ticketing is on." not in enabled.output
    assert (f"ticketing is on, but its settings make alert tickets fail: origin alert: open "
            f"status {help_desk_new['id']} is not a status of board {alerts['name']}"
            in enabled.output)
    run("ticketing", "disable")
    refused = run("ticketing", "enable", ok=False)
    assert refused.exit_code == 1 and "cannot enable ticketing: origin alert" in refused.output
