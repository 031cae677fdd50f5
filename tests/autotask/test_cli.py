"""The Autotask plugin from the command line: `simulate autotask` registered by the plugin, and an
admin configuring and enabling it against the simulator on loopback."""

from __future__ import annotations

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
    assert "Enabled autotask." in enabled.output
    assert sim.counts["GET /V1.0/ThresholdInformation"] == 1  # the check ran, authenticated


def test_a_wrong_secret_stops_the_enable_naming_the_setting_not_the_value(run, served):
    _, settings = served
    wrong = "Wrong-Secret-Sentinel-9"
    assert configure(run, settings, wrong).exit_code == 0
    enabled = run("plugins", "enable", "autotask")
    assert enabled.exit_code != 0
    assert "secret" in enabled.output and wrong not in enabled.output
    assert "Traceback" not in enabled.output
