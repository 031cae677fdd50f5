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
from click.testing import CliRunner
from werkzeug.test import Client

from psabridge.cli import App, cli
from psabridge.core import webhooks

SECRET = "serve-webhook-secret-0123456789"


def environment() -> dict[str, str]:
    """The processes' environment, as the test has it when they start (its own config folder,
    where the key that seals the connectors' secrets is)."""
    return {**os.environ, "PSABRIDGE_LOAD_PLUGINS": "connectwise,autotask,datto,sqlite,postgres",
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
    result = subprocess.run(psabridge(db, *args), env=environment(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("sims", ["loopback"], indirect=True)  # the server reaches them by URL
def test_serve_ignores_events_while_the_psa_is_disabled_and_handles_them_once_enabled(
        desk, db_path, served):
    desk.enable()
    cw, datto = desk.sims.cw, desk.sims.datto

    def logins() -> tuple[int, int]:
        """ConnectWise codebase look-ups and Datto token grants: one per store, shared by its
        processes."""
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
    assert handled.json()["ticket"] == desk.ticket_for(alert).id

    # No login of the server's own, across the events and the PSA disabled and enabled again:
    # the codebase and the token that enabling the plugins got are in the store.
    assert logins() == logins_before and logins_before >= (1, 1)


@pytest.mark.parametrize("sims", ["in-process"], indirect=True)
def test_serve_reads_its_secret_from_a_file_and_registers_the_callback_url_encoded(
        e2e, sims, pm, db_path, tmp_path, monkeypatch):
    secret = "serve+file/secret=with&odd-0123"
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(secret + "\n")
    served = {}
    class NotServing:  # what `serve` would run, kept instead of run
        def __init__(self, app):
            served.update(app=app)

        def run(self):
            pass

    monkeypatch.setattr(webhooks, "listen", lambda app, host, port: NotServing(app))
    result = CliRunner().invoke(
        cli, ["--db", str(db_path), "serve", "--secret-file", str(secret_file),
              "--public-url", "https://bridge.example.com/"],
        obj=App(pm=pm, transports=sims.transports))
    assert result.exit_code == 0, result.output
    assert "callback at https://bridge.example.com/hooks/psa\n" in result.output
    (entry,) = sims.cw.db.callbacks.values()
    assert entry["url"] == ("https://bridge.example.com/hooks/psa"
                            "?token=serve%2Bfile%2Fsecret%3Dwith%26odd-0123&recordId=")
    too_deep = b"[" * 40 + b"]" * 40  # answered 400 once authenticated, 401 before
    hooks = Client(served["app"])
    assert hooks.post("/hooks/rmm", data=too_deep, headers={"Authorization": f"Bearer {secret}"}
                      ).status_code == 400
    assert hooks.post("/hooks/rmm", data=too_deep).status_code == 401
    assert secret not in result.output


@pytest.mark.parametrize("sims", ["in-process"], indirect=True)
def test_removing_the_psa_unregisters_the_ticket_callback_serve_registered(
        e2e, sims, pm, store, db_path, tmp_path, monkeypatch):
    monkeypatch.setattr(webhooks, "listen", lambda app, host, port: NotServing())
    psa = sims.psa.plugin

    def run(*args: str, transports: dict | None = None):
        return CliRunner().invoke(cli, ["--db", str(db_path), *args],
                                  obj=App(pm=pm, transports=sims.transports if transports is None
                                          else transports))

    def serve(secret: str):
        secret_file = tmp_path / "webhook-secret"
        secret_file.write_text(secret + "\n")
        result = run("serve", "--secret-file", str(secret_file), "--public-url", "https://bridge.example.com")
        assert result.exit_code == 0, result.output

    serve("first-secret-0123456789")
    serve("second-secret-0123456789")  # a new secret: the callback at the old URL goes
    (registered,) = sims.psa.callback_registrations()
    assert registered.startswith("https://bridge.example.com/hooks/psa?token=second-secret-0123456789")
    # The store records it to unregister it later, sealed as the connectors' secrets are.
    assert "second-secret" not in str(list(store.table_rows("options")))

    plan = run("plugins", "remove", psa, "--dry-run")
    assert plan.exit_code == 0 and "unregister the ticket callback psabridge registered" in plan.output
    assert sims.psa.callback_registrations() == [registered]

    # The PSA out of reach: nothing is purged, the callback stays registered, a rerun finishes.
    def unreachable(request):
        raise httpx.ConnectError("connection refused", request=request)

    failed = run("plugins", "remove", psa, "--yes",
                 transports={**sims.transports, psa: httpx.MockTransport(unreachable)})
    assert failed.exit_code != 0 and "Traceback" not in failed.output
    assert sims.psa.callback_registrations() == [registered]
    assert run("plugins", "list").output.count(psa) >= 1

    removed = run("plugins", "remove", psa, "--yes")
    assert removed.exit_code == 0, removed.output
    assert "ticket callback is unregistered" in removed.output
    assert sims.psa.callback_registrations() == []
    assert "second-secret" not in removed.output + plan.output + failed.output


class NotServing:  # what `serve` would run, kept instead of run
    def run(self):
        pass
