"""`psabridge serve` as the admin runs it: a process of its own on a shared store, reaching both
simulators over loopback, while `psabridge plugins disable/enable` run in other processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

SECRET = "serve-webhook-secret-0123456789"


def environment() -> dict[str, str]:
    """The processes' environment, as the test has it when they start (its own config folder,
    where the key that seals the connectors' secrets is)."""
    return {**os.environ, "PSABRIDGE_LOAD_PLUGINS": "connectwise,datto,sqlite",
            "PSABRIDGE_WEBHOOK_SECRET": SECRET}


def psabridge(db, *args: str) -> list[str]:
    return [sys.executable, "-m", "psabridge", "--db", str(db), *args]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served(db_path, tmp_path) -> Iterator[str]:
    """`psabridge serve` on a free loopback port; its URL once it answers /health."""
    port = free_port()
    output = tmp_path / "serve.log"  # a file, not a pipe: a full pipe would block the server
    with output.open("w") as log:
        process = subprocess.Popen(psabridge(db_path, "serve", "--port", str(port)), env=environment(),
                                   stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, output.read_text()
            try:
                httpx.get(f"{url}/health", timeout=1).raise_for_status()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, output.read_text()
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def run(db, *args: str) -> None:
    result = subprocess.run(psabridge(db, *args), env=environment(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("sims", ["loopback"], indirect=True)  # the server reaches them by URL
def test_serve_ignores_events_while_the_psa_is_disabled_and_handles_them_once_enabled(
        desk, db_path, served):
    desk.enable()
    cw, datto = desk.sims.cw, desk.sims.datto

    def logins() -> tuple[int, int]:
        """ConnectWise codebase look-ups and Datto token grants: one per client made."""
        lookups = sum(n for key, n in cw.counts.items() if key.startswith("GET /login/companyinfo/"))
        return lookups, datto.counts["POST /auth/oauth/token"]

    logins_before = logins()

    def webhook(alert: str) -> httpx.Response:
        return httpx.post(f"{served}/hooks/rmm?token={SECRET}", json={"alertUid": alert}, timeout=30)

    before = desk.raise_alert(desk.devices[0])
    assert webhook(before).json()["state"] == "open"
    assert len(desk.tickets_for(before)) == 1

    run(db_path, "plugins", "disable", "connectwise")
    alert = desk.raise_alert(desk.devices[1])
    ignored = webhook(alert)
    assert ignored.status_code == 202
    assert ignored.json() == {"status": "ignored", "reason": "connectwise is disabled"}
    assert desk.tickets_for(alert) == [] and cw.counts["POST /service/tickets"] == 1

    run(db_path, "plugins", "enable", "connectwise", "--skip-check")
    handled = webhook(alert)  # Datto delivering it again: ignored before, so not a replay
    assert handled.status_code == 200 and handled.json()["state"] == "open"
    assert handled.json()["ticket"] == str(desk.ticket_for(alert)["id"])

    # The server kept its connections across the events: one codebase look-up, one token.
    assert logins() == (logins_before[0] + 1, logins_before[1] + 1)
