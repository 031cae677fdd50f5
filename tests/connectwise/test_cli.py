"""`psabridge simulate connectwise`: registered by the plugin, serves until interrupted."""

from __future__ import annotations

import os
import shlex
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
from click.testing import CliRunner

from psabridge.cli import cli
from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator


def test_the_plugin_adds_connectwise_to_the_simulate_group():
    result = CliRunner().invoke(cli, ["simulate", "connectwise", "--help"])
    assert result.exit_code == 0
    assert "--port" in result.output and "--companies" in result.output


def simulate_connectwise() -> subprocess.Popen:
    env = {**os.environ, "PSABRIDGE_LOAD_PLUGINS": "connectwise,sqlite"}
    return subprocess.Popen(
        [sys.executable, "-c", "from psabridge.cli import cli; cli()", "simulate", "connectwise",
         "--port", "0", "--companies", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # A shell that started us in the background has SIGINT ignored, and the child would
        # inherit that and never see Ctrl-C: give it the default, as a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def printed_lines(process: subprocess.Popen) -> list[str]:
    """What it printed, up to "Press Ctrl-C to stop."."""
    lines = []
    while not lines or not lines[-1].startswith("Press Ctrl-C"):
        line = process.stdout.readline()
        assert line, process.stderr.read()
        lines.append(line.strip())
    return lines


def key_file_named(lines: list[str]) -> Path:
    (configure,) = [shlex.split(line) for line in lines if "psabridge configure" in line]
    return Path(configure[configure.index("--private-key-file") + 1])


def test_it_serves_prints_the_settings_with_the_key_in_a_file_and_stops_on_ctrl_c():
    process = simulate_connectwise()
    try:
        lines = printed_lines(process)
        url = lines[0].rsplit(" ", 1)[1]
        assert httpx.get(f"{url}/login/companyinfo/psabridge", timeout=5).json()["Codebase"] == "v2025_1/"
        (configure,) = [shlex.split(line) for line in lines if "psabridge configure" in line]
        assert configure[configure.index("--public-key") + 1] == "simPublicKey0001"
        key_file = key_file_named(lines)
        private_key = ConnectWiseSimulator().options.private_key
        assert key_file.read_text() == private_key + "\n"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert "--private-key" not in configure and not any(private_key in line for line in lines)
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=10)
    assert process.returncode == 0 and "Stopped." in out
    assert not key_file.exists()  # removed with the simulator


def test_stopped_by_sigterm_it_removes_its_key_file_as_on_ctrl_c():
    process = simulate_connectwise()
    try:
        key_file = key_file_named(printed_lines(process))
        assert key_file.exists()
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=10)
    assert process.returncode == 0 and "Stopped." in out
    assert not key_file.exists() and not key_file.parent.exists()
