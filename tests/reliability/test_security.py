"""Secrets stay out of output, logs and the store's files; the store is private; webhooks are
refused without the right token, when oversized, and when replayed, over a real socket."""

from __future__ import annotations

import base64
import os
import sqlite3
import stat
import subprocess
import sys
import urllib.parse

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
    assert "retrying_request" in output or "plugin_enabled" in output  # -vv really logged
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


def encodings(secret: str) -> dict[str, bytes]:
    """How a secret could show up in a file: as it is, URL-encoded, or base64-encoded inside a
    longer text (an Authorization header's "company+public:private"), whatever its offset."""
    forms = {"raw": secret.encode(), "url-encoded": urllib.parse.quote(secret, safe="").encode()}
    for offset in range(3):
        # base64 encodes 3 bytes as 4 characters: past the characters the bytes before it and
        # after it share, the secret's encoding is the same wherever it is in the longer text.
        encoded = base64.b64encode(b"x" * offset + secret.encode()).rstrip(b"=")
        forms[f"base64 at offset {offset}"] = encoded[(offset * 4 + 2) // 3 + 1:-2]
    return forms


def test_no_secret_in_the_store_wal_or_shm_after_configure_enable_and_a_run(tmp_path):
    """configure, enable, map and sync through the real CLI against both simulators, while
    another connection keeps the -wal and -shm files as those commands leave them."""
    cw = ConnectWiseSimulator(seed=SEED, companies=3)
    datto = DattoSimulator(seed=SEED, company_names=company_names(SEED, 3))
    sentinels = {"cw private key": cw.options.private_key, "datto secret": datto.api_secret}
    db = tmp_path / "state.db"
    env = {**os.environ, "PSABRIDGE_LOAD_PLUGINS": "connectwise,datto,sqlite",
           "PSABRIDGE_CONNECTWISE_PRIVATE_KEY": sentinels["cw private key"],
           "PSABRIDGE_DATTO_API_SECRET": sentinels["datto secret"]}

    def psabridge(*args):
        result = subprocess.run([sys.executable, "-m", "psabridge", "--db", str(db), *args],
                                capture_output=True, text=True, timeout=120, env=env,
                                stdin=subprocess.DEVNULL)
        assert result.returncode == 0, (args, result.stderr[-2000:])

    with cw.serve() as cw_server, datto.serve() as datto_server:
        cw_settings = {k: v for k, v in cw.settings(cw_server.url).items() if k != "private_key"}
        psabridge("configure", "connectwise",
                  *(arg for k, v in cw_settings.items() for arg in (f"--{k.replace('_', '-')}", v)))
        holder = sqlite3.connect(db)
        try:
            holder.execute("select count(*) from plugins").fetchone()  # now the -shm is kept
            psabridge("configure", "datto", "--api-url", datto_server.url, "--api-key",
                      datto.api_key, "--requests-per-minute", "1000000")
            psabridge("plugins", "enable", "connectwise")
            psabridge("plugins", "enable", "datto")
            psabridge("companies", "map", "--suggested")
            psabridge("device-types", "map", "--suggested")
            psabridge("devices", "map", "--all")
            psabridge("sync", "--once")
            files = {name: (tmp_path / name).read_bytes()
                     for name in ("state.db", "state.db-wal", "state.db-shm")}
        finally:
            holder.close()
    assert len(files["state.db-wal"]) > 4096, "the -wal file should hold the commands' writes"
    for name, secret in sentinels.items():
        for form, encoded in encodings(secret).items():
            assert len(encoded) >= 8, (name, form)
            for file, content in files.items():
                assert encoded not in content, f"{name} ({form}) in {file}"


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
