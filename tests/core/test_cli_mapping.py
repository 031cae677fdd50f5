"""The mapping commands end to end through the CLI, on the in-memory connectors."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner

from psabridge.cli import App, cli
from psabridge.core.models import DeviceDetails, Site
from tests.core.memory import ServerError
from tests.core.test_mapping import AUDITED, bridge, psa, rmm  # noqa: F401 - fixtures


@pytest.fixture
def run(pm, db_path, bridge):  # noqa: F811 - the bridge fixture enables the memory plugins
    def invoke(*args, code=0, input=None):
        result = CliRunner().invoke(cli, ["--db", str(db_path), *args], obj=App(pm=pm),
                                    input=input)
        assert result.exit_code == code, result.output
        return result.output

    return invoke


@pytest.fixture(autouse=True)
def runners_up(rmm):  # noqa: F811
    """Sites that resemble a company without being its own: each company's runner-up."""
    rmm.sites |= {"s-acme2": Site("s-acme2", "Acme Supplies"),
                  "s-smith2": Site("s-smith2", "Smith Brothers"),
                  "s-initech": Site("s-initech", "Initech Labs")}


def test_companies_load_map_dry_run_then_map(run, rmm):  # noqa: F811
    table = json.loads(run("companies", "load", "--json"))
    assert [(r["company_id"], r["type"], r["suggestion"]["site"], r["suggestion"]["create_new"],
             r["suggestion"]["score"]) for r in table] == [
        ("1", "Client", "ACME Corporation", False, 100.0),
        ("1", "Partner", "ACME Corporation", False, 100.0),
        ("2", "Client", "Smith and Sons", False, 100.0), ("3", "Prospect", "Initech", True, 0.0)]
    assert table[0]["suggestion"]["site_uid"] == "s-acme" and table[0]["suggestion"]["reason"]

    plan = json.loads(run("companies", "map", "--suggested", "--dry-run", "--json"))
    assert plan["dry_run"] is True
    assert [(c["action"], c["ids"], c["result"]) for c in plan["changes"]] == [
        ("map company", {"company_id": "1", "site_uid": "s-acme"}, "planned"),
        ("map company", {"company_id": "2", "site_uid": "s-smith"}, "planned"),
        ("create site", {"company_id": "3", "site_uid": None}, "planned")]
    assert rmm.calls["create_site"] == 0

    assert "Done: 3 changes, 0 failed, 0 skipped." in run("companies", "map", "--suggested")
    assert "Plan (0 changes, nothing done)" in run("companies", "map", "1", "2", "3=new", "--dry-run")
    mapped = json.loads(run("companies", "load", "--mapping", "mapped", "--json"))
    assert all(r["mapped"] and r["suggestion"] is None for r in mapped)
    assert {r["company"]: r["site"] for r in mapped} == {
        "Acme Corp.": "ACME Corporation", "Smith & Sons LLC": "Smith and Sons", "Initech": "Initech"}


def test_devices_map_all_auto_and_warnings(run, psa, rmm):  # noqa: F811
    run("companies", "map", "1=s-acme")
    rmm.add_device("PC-01", "s-acme", last_audit=AUDITED, details=DeviceDetails("SN1"),
                   warranty_date=dt.date(2027, 5, 1))
    rmm.add_device("SRV-01", "s-acme", "Server", last_audit=AUDITED)
    run("device-types", "map", "Desktop")
    devices = json.loads(run("devices", "load", "--json"))
    assert [(d["hostname"], d["configuration_id"], d["create_new"], d["new_name"], d["step"])
            for d in devices] == [("PC-01", None, True, "PC-01", "none"),
                                  ("SRV-01", None, True, "SRV-01", "none")]

    out = run("devices", "map", "--all", code=1)  # SRV-01 left out: not everything was done
    assert "Done: 1 change, 0 failed, 1 skipped." in out
    warnings = json.loads(run("warnings", "list", "--json"))
    assert [w["subject"] for w in warnings] == ["SRV-01 (dev-2)"]
    assert "Cleared 1 warnings." in run("warnings", "clear")
    assert "Automatic mapping is on." in run("devices", "auto", "on")
    assert "Plan (0 changes" in run("devices", "map-now", "--dry-run")  # SRV-01 still has no type
    assert json.loads(run("devices", "load", "--mapping", "mapped", "--json"))[0]["hostname"] == "PC-01"


def test_devices_map_all_maps_the_rest_and_reports_a_device_it_could_not_read(run, psa, rmm):  # noqa: F811
    run("companies", "map", "1=s-acme")
    rmm.add_device("PC-01", "s-acme", last_audit=AUDITED)
    flaky = rmm.add_device("PC-02", "s-acme", last_audit=AUDITED)
    run("device-types", "map", "Desktop")
    rmm.unreadable[flaky.uid] = ServerError("the RMM answered HTTP 500")

    out = run("devices", "map", "--all", code=1)
    assert "Done: 1 change, 0 failed, 1 skipped." in out
    assert (f"Skipped PC-02 ({flaky.uid}): its hardware details (serial number, manufacturer, "
            "model) could not be read from the RMM: the RMM answered HTTP 500; the next run "
            "tries again") in out
    assert json.loads(run("warnings", "list", "--json")) == []  # retried, not held back
    assert psa.calls["create_configuration"] == 1

    del rmm.unreadable[flaky.uid]
    assert "Done: 1 change, 0 failed, 0 skipped." in run("devices", "map", "--all")


def test_companies_load_says_why_each_site_is_suggested_and_which_comes_next(run):
    rows = {r["company"]: r["suggestion"] for r in json.loads(run("companies", "load", "--json"))}
    assert rows["Acme Corp."]["reason"] == ("same name once case, punctuation, abbreviations, '&' "
                                            "and legal forms are set aside")
    assert rows["Acme Corp."]["runner_up"]["site_uid"] == "s-acme2"
    initech = rows["Initech"]
    assert initech["create_new"] and initech["site_uid"] is None
    assert initech["reason"] == "no site scores 85 or more"
    assert initech["runner_up"]["site_uid"] == "s-initech"
    table = run("companies", "load")
    assert "reason" in table and "runner_up" in table and "no site scores 85 or more" in table
    assert "Create New Initech" in table


def test_companies_map_takes_names_and_a_choice_per_company(run, rmm):  # noqa: F811
    plan = json.loads(run("companies", "map", "acme corp.=ACME Corporation", "INITECH=new",
                          "--dry-run", "--json"))
    assert [c["ids"] for c in plan["changes"]] == [
        {"company_id": "1", "site_uid": "s-acme"}, {"company_id": "3", "site_uid": None}]
    plan = json.loads(run("companies", "map", "Smith & Sons LLC=runner-up", "--dry-run", "--json"))
    assert [c["ids"] for c in plan["changes"]] == [{"company_id": "2", "site_uid": "s-smith2"}]
    # Both to the ACME site: refused before anything is done, a site maps to one company.
    refused = run("companies", "map", "Acme Corp.=s-acme", "Smith & Sons LLC=ACME Corporation", code=1)
    assert "site ACME Corporation is already mapped to another company in this request" in refused
    assert json.loads(run("companies", "load", "--mapping", "mapped", "--json")) == []

    run("companies", "map", "--suggested", "--skip", "Initech")
    mapped = json.loads(run("companies", "load", "--mapping", "mapped", "--json"))
    assert {r["company_id"]: r["site_uid"] for r in mapped} == {"1": "s-acme", "2": "s-smith"}
    assert rmm.calls["create_site"] == 0


def test_companies_map_review_asks_row_by_row(run, rmm):  # noqa: F811
    # Acme: skipped; Smith: a site by name, after a name the RMM does not have; Initech: new.
    out = run("companies", "map", "--review", input="s\nNowhere\nACME Corporation\nn\n")
    assert "the RMM has no site with id or name 'Nowhere'" in out
    mapped = json.loads(run("companies", "load", "--mapping", "mapped", "--json"))
    assert {r["company"]: r["site"] for r in mapped} == {"Smith & Sons LLC": "ACME Corporation",
                                                         "Initech": "Initech"}
    assert rmm.calls["create_site"] == 1

    # The runner-up, by its letter: Acme's own site is taken, its closest free one is next.
    run("companies", "map", "--review", input="r\n")
    mapped = json.loads(run("companies", "load", "--mapping", "mapped", "--json"))
    assert {r["company"]: r["site_uid"] for r in mapped}["Acme Corp."] == "s-acme2"


def test_devices_auto_without_an_argument_says_whether_it_is_on(run):
    assert run("devices", "auto") == "Automatic mapping is off.\n"
    assert json.loads(run("devices", "auto", "--json")) == {"auto_map": False}
    run("devices", "auto", "on")
    assert json.loads(run("devices", "auto", "--json")) == {"auto_map": True}
    again = json.loads(run("devices", "auto", "on", "--json"))
    assert [c["result"] for c in again["changes"]] == ["unchanged"] and again["complete"]
