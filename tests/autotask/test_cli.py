"""The Autotask plugin from the command line: `simulate autotask` registered by the plugin, and an
admin configuring and enabling it against the simulator on loopback."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from psabridge.cli import App, cli
from psabridge.plugins.autotask.simulator import AutotaskSimulator


@pytest.fixture
def run(pm, db_path):
    def invoke(*args, input=None, env=None):
        return CliRunner().invoke(cli, ["--db", str(db_path), *args], obj=App(pm=pm), input=input,
                                  env=env)
    return invoke


@pytest.fixture
def served():
    sim = AutotaskSimulator(seed=1, companies=2)
    with sim.serve(deliver_webhooks=False) as server:
        yield sim, sim.settings(server.url)


def test_the_plugin_adds_autotask_to_the_simulate_group(run):
    result = run("simulate", "autotask", "--help")
    assert result.exit_code == 0, result.output
    assert "--port" in result.output and "--limit-status" in result.output


def configure(run, settings, secret):
    return run("configure", "autotask", "--api-url", settings["api_url"], "--username",
               settings["username"], "--integration-code", settings["integration_code"],
               input=secret + "\n")


def test_an_admin_configures_and_enables_autotask(run, served):
    sim, settings = served
    configured = configure(run, settings, settings["secret"])
    assert configured.exit_code == 0, configured.output
    assert "secret=(set)" in configured.output and settings["secret"] not in configured.output
    enabled = run("plugins", "enable", "autotask")
    assert enabled.exit_code == 0, enabled.output
    # The connection check's detail is shown, in text and in JSON.
    assert enabled.output.startswith("Enabled autotask: connected to Autotask at "), enabled.output
    assert sim.counts["GET /V1.0/ThresholdInformation"] == 1  # the check ran, authenticated
    again = run("plugins", "enable", "autotask", "--json")
    assert again.exit_code == 0, again.output
    [change] = json.loads(again.output)["changes"]
    assert change["result"] == "unchanged"
    assert "settings checked again" in change["detail"]
    assert "connected to Autotask at" in change["detail"]


def test_enabling_again_checks_settings_changed_since(run, served, store):
    _, settings = served
    assert configure(run, settings, settings["secret"]).exit_code == 0
    assert run("plugins", "enable", "autotask").exit_code == 0
    stored = store.plugin_state("autotask").settings
    store.save_settings("autotask", {**stored, "due_hours": "0"})  # changed behind configure's back
    again = run("plugins", "enable", "autotask")
    assert again.exit_code == 1 and "due_hours" in again.output, again.output


def test_a_wrong_secret_stops_the_enable_naming_the_setting_not_the_value(run, served):
    _, settings = served
    wrong = "Wrong-Secret-Sentinel-9"
    assert configure(run, settings, wrong).exit_code == 0
    enabled = run("plugins", "enable", "autotask")
    assert enabled.exit_code != 0
    assert "secret" in enabled.output and wrong not in enabled.output
    assert "Traceback" not in enabled.output


def test_tickets_are_routed_by_queue_and_issue_types_from_the_command_line(run, served, pm, store):
    from psabridge.core.plugins import configure_plugin, enable_plugin
    from psabridge.plugins.rmm_datto.simulator import DattoSimulator

    _, settings = served
    assert configure(run, settings, settings["secret"]).exit_code == 0
    assert run("plugins", "enable", "autotask").exit_code == 0
    datto = DattoSimulator(seed=1)
    with datto.serve() as datto_server:
        configure_plugin(pm, store, "datto", datto.settings(datto_server.url))
        enable_plugin(pm, store, "datto")
        check_routing(run)


def check_routing(run):
    routing = run("psa", "routing")
    assert routing.exit_code == 0, routing.output
    queues = json.loads(run("psa", "choices", "queue", "--json").output)
    from psabridge.plugins.autotask.simulator.data import QUEUES
    # The picklist's default is marked.
    assert [q["name"] for q in queues if q["default"]] == [n for _, n, _, _, d in QUEUES if d]
    assert "queue" in routing.output and "sub_issue_type" in routing.output
    chosen = run("ticketing", "set", "--origin", "alert", "--route", "queue=Monitoring Alert",
                 "--route", "issue_type=Monitoring", "--route", "sub_issue_type=Disk Space",
                 "--open-status", "New", "--closed-status", "Complete")
    assert chosen.exit_code == 0, chosen.output
    wrong = run("ticketing", "set", "--origin", "alert", "--route", "issue_type=Hardware",
                "--route", "sub_issue_type=Disk Space")  # a sub-issue type of Monitoring
    assert wrong.exit_code == 1 and "Disk Space" in wrong.output
    not_closed = run("ticketing", "set", "--origin", "alert", "--closed-status", "In Progress")
    assert not_closed.exit_code == 1
    check_names_shown(run)


def check_names_shown(run):
    """Autotask's ids are small numbers shared by several kinds (priority 4, source 4...):
    `ticketing show` names every one, looked up in its own kind."""
    source = json.loads(run("psa", "sources", "--json").output)[0]
    priority = json.loads(run("psa", "priorities", "--json").output)[-1]
    assert run("ticketing", "set", "--source", source["id"], "--priority",
               f"Critical={priority['id']}").exit_code == 0
    shown = run("ticketing", "show")
    assert shown.exit_code == 0, shown.output
    assert f"{source['name']} ({source['id']})" in shown.output
    assert f"{priority['name']} ({priority['id']})" in shown.output
    assert "issue_type=Monitoring (" in shown.output and "sub_issue_type=Disk Space (" in shown.output
    assert "open=New (" in shown.output and "closed=Complete (5)" in shown.output


@pytest.mark.parametrize(("option", "value", "named"), [
    ("--due-hours", "abc", "due_hours"),
    ("--due-hours", "-3", "due_hours"),
    ("--due-hours", "99999999999999999999999", "due_hours"),
    ("--requests-per-hour", "0", "requests_per_hour"),
    ("--requests-per-hour", "10001", "requests_per_hour"),
    ("--device-link-field", "bogusField", "device_link_field"),
    ("--device-link-field", "udf:", "device_link_field"),
    ("--username", "", "username"),
])
def test_configure_refuses_an_invalid_value_naming_the_setting_and_saves_nothing(
        run, store, option, value, named):
    settings = {"api_url": "https://webservices14.autotask.net", "username": "api@acme.example",
                "integration_code": "CODE"}
    args = {"--api-url": settings["api_url"], "--username": settings["username"],
            "--integration-code": settings["integration_code"], option: value}
    refused = run("configure", "autotask", *[p for pair in args.items() for p in pair],
                  input="a-secret\n")
    assert refused.exit_code == 1, refused.output
    assert f"{named}:" in refused.output and "Traceback" not in refused.output
    state = store.plugin_state("autotask")
    assert state is None or not state.settings


def test_configure_refuses_an_empty_secret_read_from_stdin(run, store):
    refused = run("configure", "autotask", "--api-url", "https://webservices14.autotask.net",
                  "--username", "api@acme.example", "--integration-code", "CODE", input="")
    assert refused.exit_code == 1, refused.output
    assert "secret:" in refused.output
    state = store.plugin_state("autotask")
    assert state is None or not state.settings


def test_configure_takes_values_within_their_bounds(run, store):
    configured = run("configure", "autotask", "--api-url", "https://webservices14.autotask.net",
                     "--username", "api@acme.example", "--integration-code", "CODE",
                     "--due-hours", "48", "--requests-per-hour", "100",
                     "--device-link-field", "udf:RMM Link", input="a-secret\n")
    assert configured.exit_code == 0, configured.output
    saved = store.plugin_state("autotask").settings
    assert (saved["due_hours"], saved["requests_per_hour"], saved["device_link_field"]) == (
        "48", "100", "udf:RMM Link")
