"""Tables on a terminal of 80 columns: text columns wrap rather than being left out, and a
column that still cannot fit is named under the table, with how to see it."""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
import sys
import termios

import pytest

from tests.core.test_cli_lookups import run, sims  # noqa: F401 - fixtures

ROWS = [
    {"hostname": "BPHL-WS01", "type": "Desktop", "company": "Lakeside Marketing P.C.",
     "state": "unmapped", "configuration": "229", "step": "serial",
     "reason": "same serial number ABC123 and the same manufacturer",
     "device_uid": "1d451b58-e109-4e97-8b84-d1314d86fa47"},
    {"hostname": "PSL-LT06", "type": "Laptop", "company": "Northwind Corp.", "state": "unaudited",
     "configuration": "", "step": None, "reason": "not audited by the RMM yet",
     "device_uid": "2d451b58-e109-4e97-8b84-d1314d86fa47"},
]
HEADERS = ["hostname", "type", "company", "state", "configuration", "step", "reason"]


def in_a_pty(code: str, columns: int) -> str:
    """What `code` prints with its stdout on a real terminal `columns` wide."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["NO_COLOR"] = "1"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=follower, stderr=follower,
                               env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal is gone once the process has ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=30)
    os.close(leader)
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    return re.sub(r"\x1b\[[0-9;]*m", "", text)  # bold headers: a style, not a colour


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_on_an_80_column_terminal_text_wraps_and_a_left_out_column_is_named():
    out = in_a_pty(f"from psabridge import output; output.table({ROWS!r})", 80)
    lines = out.rstrip("\n").splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80, out
    assert lines[0].split() == HEADERS  # every text column is there, wrapped
    assert "Marketing" in out and "manufacturer" in out  # wrapped, not cut
    assert "…" not in out
    note = " ".join(lines[-2:])
    assert note == ("(1 more column than the terminal has room for: device_uid; widen it or use "
                    "--json)"), out


def test_columns_that_fit_are_all_shown_with_no_note(monkeypatch, capsys):
    from psabridge import output

    monkeypatch.setenv("COLUMNS", "200")
    output.table(ROWS)
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [*HEADERS, "device_uid"]
    assert "more column" not in out and ROWS[0]["device_uid"] in out


def test_devices_load_at_80_columns_names_what_it_leaves_out(run, monkeypatch):  # noqa: F811
    run("companies", "map", "--suggested")
    monkeypatch.setenv("COLUMNS", "80")
    out = run("devices", "load").output
    lines = out.rstrip("\n").splitlines()
    assert max(map(len, lines)) <= 80
    assert lines[0].split() == HEADERS
    assert "device_uid; widen it or use --json" in " ".join(lines[-2:])
    hostnames = {r["hostname"] for r in json.loads(run("devices", "load", "--json").stdout)}
    assert all(hostname in out for hostname in hostnames)
