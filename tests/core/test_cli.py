"""The CLI: plugin commands, configure, one-line errors, and secrets kept out of every output."""

from __future__ import annotations

import json
import logging
import sys
import textwrap

import pytest
from click.testing import CliRunner

from psabridge.cli import App, cli
from psabridge.core.plugins import make_plugin_manager
from tests.core.fakes import OtherPsa

SENTINEL = "PRIVKEY-SENTINEL-4242"


@pytest.fixture
def run(pm, db_path):
    """Invoke the CLI in-process with the test's plugin manager and store."""

    def invoke(*args, input=None):
        runner = CliRunner()
        return runner.invoke(cli, ["--db", str(db_path), *args], obj=App(pm=pm), input=input)

    return invoke


def test_plugins_list_shows_name_kind_version_enabled(run):
    result = run("plugins", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["connectwise"] == {
        "name": "connectwise", "kind": "psa", "title": "ConnectWise Manage",
        "version": rows["connectwise"]["version"], "enabled": False,
    }
    assert rows["datto"]["kind"] == "rmm"
    assert rows["sqlite"]["kind"] == "storage"
    assert rows["connectwise"]["version"] not in ("", "unknown")


def test_configure_enable_disable_remove_round_trip(run):
    result = run("configure", "connectwise", "--url", "https://cw.example.com", "--company",
                 "acme", "--public-key", "pub", "--private-key", SENTINEL)
    assert result.exit_code == 0, result.output
    assert "private_key=(set)" in result.output
    assert run("plugins", "enable", "connectwise", "--skip-check").exit_code == 0
    listed = json.loads(run("plugins", "list", "--json").output)
    assert [r["enabled"] for r in listed if r["name"] == "connectwise"] == [True]
    assert "settings and mappings are kept" in run("plugins", "disable", "connectwise").output

    aborted = run("plugins", "remove", "connectwise", input="n\n")
    assert aborted.exit_code == 1
    removed = run("plugins", "remove", "connectwise", "--yes")
    assert removed.exit_code == 0, removed.output
    assert "Removed connectwise (plugins 1)" in removed.output


def test_errors_are_one_line_on_stderr_with_a_non_zero_exit(run):
    result = run("configure", "connectwise", "--url", "https://www.cw.example.com")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: invalid settings for connectwise: url: 'https://www.cw.example.com' must not "
        "contain www; use https://cw.example.com"
    ]
    assert "Traceback" not in result.output

    enable = run("plugins", "enable", "connectwise")
    assert enable.exit_code == 1
    assert "company: Company is required; set it with --company" in enable.output


def test_private_key_appears_in_no_output_log_or_exception(pm, db_path, capsys):
    """The sentinel key goes in through a flag, the environment and a prompt; it never comes out."""
    leaky = OtherPsa(fail_with=RuntimeError(f"connection refused for key {SENTINEL}"))
    pm.register(leaky, name="otherpsa")
    runner = CliRunner()
    outputs = []

    def invoke(*args, **kwargs):
        result = runner.invoke(cli, ["--db", str(db_path), "-vv", "--log-format", "json", *args],
                               obj=App(pm=pm), **kwargs)
        outputs.append(result.output)
        outputs.append(repr(result.exception))
        return result

    invoke("configure", "connectwise", "--url", "https://cw.example.com", "--company", "acme",
           "--public-key", "pub", "--private-key", SENTINEL)
    invoke("configure", "connectwise", env={"PSABRIDGE_CONNECTWISE_PRIVATE_KEY": SENTINEL})
    invoke("configure", "otherpsa", "--url", "https://o.example.com", input=SENTINEL + "\n")
    invoke("plugins", "enable", "connectwise", "--skip-check")
    invoke("plugins", "list", "--json")
    invoke("plugins", "disable", "connectwise")
    failed = invoke("plugins", "enable", "otherpsa")  # raises an error quoting the key
    logging.getLogger("httpx").warning("Authorization: Basic %s", SENTINEL)

    assert failed.exit_code == 1 and "connection refused for key ***" in failed.output
    captured = capsys.readouterr()
    everything = "\n".join([*outputs, captured.out, captured.err])
    assert "plugin configured" in everything  # the logs were captured, not silent
    assert SENTINEL not in everything
    pm.unregister(leaky)


def test_a_third_party_plugin_installed_through_an_entry_point_is_listed(tmp_path, monkeypatch, db_path):
    """A real distribution on sys.path (dist-info + entry_points.txt), found by importlib.metadata."""
    site = tmp_path / "site"
    (site / "thirdparty_psabridge").mkdir(parents=True)
    (site / "thirdparty_psabridge" / "__init__.py").write_text(textwrap.dedent("""
        from psabridge.core.hookspecs import hookimpl
        from psabridge.core.models import ConnectorInfo

        @hookimpl
        def connector_info():
            return ConnectorInfo(kind="rmm", title="Third Party RMM")
    """))
    dist = site / "thirdparty_psabridge-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-psabridge\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text("[psabridge]\nthirdparty = thirdparty_psabridge\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("PSABRIDGE_LOAD_PLUGINS", raising=False)

    result = CliRunner().invoke(
        cli, ["--db", str(db_path), "plugins", "list", "--json"], obj=App(pm=make_plugin_manager())
    )
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["thirdparty"] == {"name": "thirdparty", "kind": "rmm", "title": "Third Party RMM",
                                  "version": "1.2.3", "enabled": False}
    sys.modules.pop("thirdparty_psabridge", None)


def test_load_plugins_env_var_limits_what_is_loaded(monkeypatch):
    monkeypatch.setenv("PSABRIDGE_LOAD_PLUGINS", "sqlite")
    pm = make_plugin_manager()
    assert [name for name, _ in pm.list_name_plugin()] == ["sqlite"]
