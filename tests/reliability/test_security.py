"""Secrets stay out of output, logs and the store's text; the store is private; webhooks are
refused without the right token, when oversized, and when replayed, over a real socket."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys

import httpx
import pytest

from psabridge.core.webhooks import WebhookApp
from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator, company_names
from psabridge.plugins.rmm_datto.simulator import DattoSimulator
from psabridge.simulation import start_server
from tests.reliability.world import set_up, world

SEED = 7  # the demo's default seed: its simulators' keys are the sentinels


def test_no_secret_in_a_verbose_demo_run_nor_in_the_store(tmp_path):
    db = tmp_path / "demo.db"
    result = subprocess.run([sys.executable, "-m", "psabridge", "-vv", "--db", str(db), "demo",
                             "--companies", "4"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PSABRIDGE_LOAD_PLUGINS": "connectwise,datto,sqlite"})
    assert result.returncode == 0, result.stderr[-2000:]
    cw = ConnectWiseSimulator(seed=SEED, companies=4)
    datto = DattoSimulator(seed=SEED, company_names=company_names(SEED, 4))
    sentinels = {"cw private key": cw.options.private_key, "datto secret": datto.api_secret}
    assert all(len(s) >= 8 for s in sentinels.values())
    output = result.stdout + result.stderr
    assert "retrying request" in output or "plugin enabled" in output  # -vv really logged
    conn = sqlite3.connect(db)
    journal_and_warnings = "\n".join(
        str(row) for table in ("journal", "warnings", "alert_tickets", "options")
        for row in conn.execute(f"select * from {table}"))
    settings = "\n".join(str(row) for row in conn.execute("select * from plugins"))
    conn.close()
    for name, secret in sentinels.items():
        assert secret not in output, f"{name} in the demo's output"
        assert secret not in journal_and_warnings, f"{name} in the journal or warnings"
        assert secret not in settings, f"{name} in plaintext in the settings"


def test_store_files_are_private(tmp_path):
    with world(tmp_path / "state.db", seed=3, companies=3) as w:
        set_up(w)  # writes enough for SQLite to have its -wal and -shm files
        files = [tmp_path / n for n in ("state.db", "state.db-wal", "state.db-shm")]
        present = [f for f in files if f.exists()]
        assert present[:1] == files[:1] and len(present) >= 2, present
        modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in present}
        assert all(mode == 0o600 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}


@pytest.fixture
def webhooks(tmp_path):
    with world(tmp_path / "state.db", seed=3, companies=3) as w:
        set_up(w)
        secret = "s3cret-token-for-webhooks-0123"
        app = WebhookApp(lambda: w.bridge, secret, max_body=4096)
        server = start_server(app, name="webhooks")
        try:
            yield w, server.url, secret
        finally:
            server.shutdown()


def test_webhooks_over_loopback_refuse_bad_tokens_big_bodies_and_replays(webhooks):
    w, url, secret = webhooks
    mapped_sites = {m.site_uid for m in w.store.company_mappings(*w.bridge.pair)}
    device = next(uid for uid, d in sorted(w.datto.devices.items()) if d["siteUid"] in mapped_sites)
    alert = w.datto.raise_alert(device)
    body = {"alertUid": alert["alertUid"]}
    with httpx.Client(timeout=10) as http:
        assert http.post(f"{url}/hooks/rmm", json=body).status_code == 401
        assert http.post(f"{url}/hooks/rmm?token=", json=body).status_code == 401
        assert http.post(f"{url}/hooks/rmm?token={secret[:-1]}", json=body).status_code == 401
        assert http.post(f"{url}/hooks/rmm?token={secret}x", json=body).status_code == 401
        assert w.store.alert_ticket(*w.bridge.pair, alert["alertUid"]) is None  # nothing acted on
        big = b'{"alertUid": "' + b"x" * 5000 + b'"}'
        assert http.post(f"{url}/hooks/rmm?token={secret}", content=big).status_code == 413
        chunked = http.post(f"{url}/hooks/rmm?token={secret}", content=iter([big[:3000], big[3000:]]))
        assert chunked.status_code == 413  # no Content-Length to trust: the read is bounded
        first = http.post(f"{url}/hooks/rmm?token={secret}", json=body)
        assert first.status_code == 200, first.text
        replay = http.post(f"{url}/hooks/rmm?token={secret}", json=body)
        assert replay.status_code == 409
    rows = [r for r in w.store.alert_tickets(*w.bridge.pair) if r.alert_uid == alert["alertUid"]]
    assert len(rows) == 1
