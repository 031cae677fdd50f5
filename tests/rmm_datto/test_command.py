"""`psabridge simulate datto` serves the simulator and says how to configure the connector,
with the secret in a file rather than on the command line it prints."""

from __future__ import annotations

import shlex
import stat
from pathlib import Path

import httpx
from click.testing import CliRunner

from psabridge.cli import cli
from psabridge.plugins.rmm_datto.simulator import DattoSimulator, command


def test_simulate_datto_is_added_to_the_simulate_group():
    result = CliRunner().invoke(cli, ["simulate", "--help"])
    assert result.exit_code == 0 and "datto" in result.output


def test_simulate_datto_serves_until_interrupted_and_prints_the_settings(monkeypatch):
    seen = {}

    def interrupt_after_a_request(sleep=None):
        url = next(line.split()[-4] for line in seen["echo"] if "listening on" in line)
        seen["status"] = httpx.get(f"{url}/api/v2/system/status").json()["status"]
        configure = next(line for line in seen["echo"] if "psabridge configure datto" in line)
        seen["secret file"] = Path(shlex.split(configure)[shlex.split(configure).index(
            "--api-secret-file") + 1])
        seen["secret"] = seen["secret file"].read_text()
        seen["mode"] = stat.S_IMODE(seen["secret file"].stat().st_mode)

    echoed: list[str] = []
    seen["echo"] = echoed
    monkeypatch.setattr(command, "_wait_for_interrupt", interrupt_after_a_request)
    monkeypatch.setattr(command.click, "echo", lambda text="", **kw: echoed.append(str(text)))
    result = CliRunner().invoke(cli, ["simulate", "datto", "--port", "0", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert seen["status"] == "OK"
    configure = next(line for line in echoed if "psabridge configure datto" in line)
    assert "--api-url http://127.0.0.1:" in configure and "--api-key SIM" in configure
    secret = DattoSimulator(seed=3).api_secret
    assert seen["secret"] == secret + "\n" and seen["mode"] == 0o600
    assert not any(secret in line for line in echoed)  # the file is named, not the secret
    assert not seen["secret file"].exists()  # removed when the simulator stopped
    assert echoed[-1] == "Stopped."


def test_waiting_ends_quietly_on_ctrl_c():
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        if len(waits) == 2:
            raise KeyboardInterrupt

    assert command._wait_for_interrupt(sleep) is None  # returned: the interrupt did not escape
    assert waits == [3600, 3600]
