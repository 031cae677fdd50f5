"""Bad input gives one clear line and a non-zero exit, never a traceback, and changes nothing.

Each case runs the real command line (`python -m psabridge`) on a store file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys

import pytest

from psabridge.core.plugins import configure_plugin, make_plugin_manager
from psabridge.core.store import open_store
from psabridge.plugins.storage_sqlite.store import SCHEMA_VERSION


def psabridge(db, *args, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "psabridge", "--db", str(db), *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PSABRIDGE_LOAD_PLUGINS": "connectwise,datto,sqlite",
                               **env})


def assert_one_clear_line(result, *words):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def snapshot(path):
    return path.read_bytes() if path.exists() else None


def test_a_corrupt_store_file_is_refused_and_left_alone(tmp_path):
    db = tmp_path / "state.db"
    db.write_bytes(b"this is not a database, just some bytes " * 200)
    before = snapshot(db)
    assert_one_clear_line(psabridge(db, "sync"), "cannot open the store", str(db))
    assert snapshot(db) == before


def test_a_store_from_a_newer_psabridge_is_refused_and_left_alone(tmp_path):
    db = tmp_path / "state.db"
    store = open_store(make_plugin_manager(), f"sqlite://{db}")
    store.close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.execute("PRAGMA journal_mode = DELETE")  # as a newer psabridge might leave it
    conn.close()
    before = snapshot(db)
    assert_one_clear_line(psabridge(db, "plugins", "list"), "newer psabridge", "upgrade")
    assert snapshot(db) == before


@contextlib.contextmanager
def read_only(path):
    """Make `path` unwritable even for root (CI runs as root): the immutable attribute where
    the file system has it, else plain permissions."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("root writes to read-only files and chattr is not available here")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        return
    path.chmod(0o400)
    yield


def test_a_read_only_store_gives_one_clear_line(tmp_path):
    db = tmp_path / "state.db"
    pm = make_plugin_manager()
    store = open_store(pm, f"sqlite://{db}")
    store.close()
    before = snapshot(db)
    with read_only(db):
        # Valid settings (the private key from the environment), so only the store can refuse.
        result = psabridge(db, "configure", "connectwise", "--company", "acme",
                           PSABRIDGE_CONNECTWISE_PRIVATE_KEY="a-private-key-for-the-test")
        assert_one_clear_line(result, "store")
        assert "readonly" in result.stderr or "read-only" in result.stderr
    assert snapshot(db) == before


@pytest.mark.parametrize("option, value, words", [
    ("--requests-per-minute", "lots", ("requests_per_minute", "whole number")),
    ("--api-url", "not a url", ("api_url",)),
])
def test_a_setting_of_the_wrong_type_is_refused_and_nothing_is_saved(tmp_path, option, value, words):
    db = tmp_path / "state.db"
    pm = make_plugin_manager()
    store = open_store(pm, f"sqlite://{db}")
    configure_plugin(pm, store, "datto", {"api_url": "https://merlot-api.centrastage.net",
                                          "api_key": "KEY", "api_secret": "S" * 32})
    saved = store.plugin_state("datto").settings
    store.close()
    result = psabridge(db, "configure", "datto", option, value)
    if result.returncode == 0:  # accepted at configure time: it must be refused when used
        result = psabridge(db, "plugins", "enable", "datto")
    assert_one_clear_line(result, *words)
    store = open_store(pm, f"sqlite://{db}")
    try:
        state = store.plugin_state("datto")
        if option == "--api-url":
            assert state.settings == saved
        assert not state.enabled
    finally:
        store.close()
