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
from tests.core.test_secrets import settings_in_use

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
                 "acme", "--public-key", "pub", input=SENTINEL + "\n")
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
    """The sentinel key goes in through a file, the environment and a prompt, and is refused as
    a flag; it never comes out."""
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

    key_file = db_path.parent / "private-key"
    key_file.write_text(SENTINEL + "\n")
    invoke("configure", "connectwise", "--url", "https://cw.example.com", "--company", "acme",
           "--public-key", "pub", "--private-key-file", str(key_file))
    invoke("configure", "connectwise", env={"PSABRIDGE_CONNECTWISE_PRIVATE_KEY": SENTINEL})
    invoke("configure", "connectwise", "--private-key", SENTINEL)
    invoke("configure", "otherpsa", "--url", "https://o.example.com", input=SENTINEL + "\n")
    invoke("plugins", "enable", "connectwise", "--skip-check")
    invoke("plugins", "list", "--json")
    invoke("plugins", "disable", "connectwise")
    failed = invoke("plugins", "enable", "otherpsa")  # raises an error quoting the key
    logging.getLogger("httpx").warning("Authorization: Basic %s", SENTINEL)

    assert failed.exit_code == 1 and "connection refused for key ***" in failed.output
    captured = capsys.readouterr()
    everything = "\n".join([*outputs, captured.out, captured.err])
    assert "plugin_configured" in everything  # the logs were captured, not silent
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


# -- secrets never from the command line -------------------------------------------------------


def stored_settings(pm, db_path, name: str) -> dict | None:
    from psabridge.core.store import open_store

    store = open_store(pm, f"sqlite://{db_path}")
    try:
        state = store.plugin_state(name)
        return dict(state.settings) if state else None
    finally:
        store.close()


@pytest.mark.parametrize(("plugin", "url", "flag", "envvar"), [
    ("connectwise", "--url", "--private-key", "PSABRIDGE_CONNECTWISE_PRIVATE_KEY"),
    ("datto", "--api-url", "--api-secret", "PSABRIDGE_DATTO_API_SECRET"),
])
def test_a_secret_given_as_a_flag_is_refused_with_the_alternatives_and_nothing_is_saved(
        run, pm, db_path, plugin, url, flag, envvar):
    for argv in ([flag, SENTINEL], [f"{flag}={SENTINEL}"]):
        result = run("configure", plugin, url, "https://x.example.com", *argv)
        assert result.exit_code == 2, result.output
        assert (f"{flag} would show in `ps` and shell history; set {envvar} or run without it to "
                f"be prompted, or {flag}-file PATH") in result.output
        assert SENTINEL not in result.output
    assert stored_settings(pm, db_path, plugin) is None


def test_a_secret_is_read_from_its_file_without_the_trailing_newline(run, pm, db_path, tmp_path):
    key_file = tmp_path / "private-key"
    for written in (SENTINEL + "\n", SENTINEL + "\r\n", SENTINEL):
        key_file.write_bytes(written.encode())
        result = run("configure", "connectwise", "--private-key-file", str(key_file))
        assert result.exit_code == 0, result.output
        assert settings_in_use(pm, db_path, "connectwise")["private_key"] == SENTINEL


def test_a_secret_file_is_named_by_its_environment_variable_too(pm, db_path, tmp_path):
    key_file = tmp_path / "api-secret"
    key_file.write_text(SENTINEL + "\n")
    result = CliRunner().invoke(cli, ["--db", str(db_path), "configure", "datto"], obj=App(pm=pm),
                                env={"PSABRIDGE_DATTO_API_SECRET_FILE": str(key_file)})
    assert result.exit_code == 0, result.output
    assert settings_in_use(pm, db_path, "datto")["api_secret"] == SENTINEL


def test_a_secret_given_twice_or_from_an_empty_or_missing_file_is_refused(run, pm, db_path, tmp_path):
    key_file, empty = tmp_path / "private-key", tmp_path / "empty"
    key_file.write_text(SENTINEL)
    empty.write_text("\n")
    twice = CliRunner().invoke(
        cli, ["--db", str(db_path), "configure", "connectwise", "--private-key-file", str(key_file)],
        obj=App(pm=pm), env={"PSABRIDGE_CONNECTWISE_PRIVATE_KEY": "other-key-value"})
    assert twice.exit_code == 2
    assert ("the private key is given twice, in PSABRIDGE_CONNECTWISE_PRIVATE_KEY and in "
            "--private-key-file; give it once") in twice.output
    emptied = run("configure", "connectwise", "--private-key-file", str(empty))
    assert emptied.exit_code == 2 and "is empty; it should hold the private key" in emptied.output
    missing = run("configure", "connectwise", "--private-key-file", str(tmp_path / "nope"))
    assert missing.exit_code == 2 and "does not exist" in missing.output
    assert stored_settings(pm, db_path, "connectwise") is None


def test_help_offers_the_file_and_the_environment_never_the_secret_flag(run):
    shown = run("configure", "connectwise", "--help").output
    assert "--private-key-file PATH" in shown and "PSABRIDGE_CONNECTWISE_PRIVATE_KEY" in shown
    assert "--private-key " not in shown and "--private-key\n" not in shown
    served = run("serve", "--help").output
    assert "--secret-file PATH" in served and "PSABRIDGE_WEBHOOK_SECRET" in served
    assert "--secret " not in served


def test_serve_refuses_its_secret_as_a_flag_and_registering_the_callback_needs_one(
        run, pm, db_path, tmp_path):
    refused = run("serve", "--secret", "a-long-enough-webhook-secret")
    assert refused.exit_code == 2
    assert ("--secret would show in `ps` and shell history; set PSABRIDGE_WEBHOOK_SECRET or "
            "--secret-file PATH") in refused.output
    assert "a-long-enough-webhook-secret" not in refused.output
    # Without a secret, serve serves the console only (tests/console): the callback it would
    # register needs the secret.
    missing = run("serve", "--public-url", "https://bridge.example.com")
    assert missing.exit_code == 2
    assert "needs the webhook secret: set PSABRIDGE_WEBHOOK_SECRET or --secret-file PATH" in \
        missing.output
    short = tmp_path / "short"
    short.write_text("too-short\n")
    weak = run("serve", "--secret-file", str(short))
    assert weak.exit_code == 1 and "at least 16 characters" in weak.output
    assert "too-short" not in weak.output


@pytest.mark.parametrize("args, complaint", [
    (["--priority", "Critical"], "'Critical' is not RMM=PSA_PRIORITY, e.g. Critical=1"),
    (["--priority", "=5"], "'=5' is not RMM=PSA_PRIORITY"),
    (["--repeat-minutes", "99999999999999999999"], "is not in the range 0<=x<=10080"),
])
def test_ticket_settings_out_of_shape_are_refused_before_anything_is_saved(pm, db_path, args,
                                                                           complaint):
    result = CliRunner().invoke(cli, ["--db", str(db_path), "ticketing", "set", *args],
                                obj=App(pm=pm))
    assert result.exit_code == 2 and complaint in result.output
    assert "Traceback" not in result.output and not db_path.exists()


def test_configure_dry_run_checks_the_values_and_saves_nothing(run, pm, db_path):
    checked = run("configure", "connectwise", "--url", "https://www.cw.example.com", "--dry-run")
    assert checked.exit_code == 1 and "must not contain www" in checked.output
    dry = run("configure", "connectwise", "--url", "https://cw.example.com", "--company", "acme",
              "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.output == "Would save company, url for connectwise; nothing saved (a dry run asks " \
                         "for no secret).\n"
    assert stored_settings(pm, db_path, "connectwise") is None


def test_a_failed_command_is_a_json_event_when_logs_are_asked_for_as_json(run):
    result = run("--log-format", "json", "plugins", "enable", "nosuch")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines, "the failure is reported"
    events = [json.loads(line) for line in lines]  # every line is JSON
    failed = [e for e in events if e["event"] == "command_failed"]
    assert len(failed) == 1 and "nosuch" in failed[0]["error"]
    assert failed[0]["level"] == "error"


def test_a_failed_command_is_one_error_line_for_people(run):
    result = run("--log-format", "console", "plugins", "enable", "nosuch")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "nosuch" in result.stderr
