"""Secret settings at rest: sealed with a key kept outside the store, or referenced; old stores'
plaintext secrets sealed when opened. Through the real CLI (in-process), on a real store file."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet

from psabridge.cli import App, cli
from psabridge.core import secrets
from psabridge.core.plugins import plugin_settings
from psabridge.core.store import open_store
from psabridge.plugins.storage_sqlite.store import SQLiteStore
from tests.core.test_plugins import dump_tables

CW_SECRET = "cw-private-SENTINEL-5150"
DATTO_SECRET = "datto-secret-SENTINEL-6262"
CW_OPTIONS = ["--url", "https://cw.example.com", "--company", "acme", "--public-key", "pub"]


@pytest.fixture
def run(pm, db_path):
    """Invoke the CLI in-process on the test's store; the result has stdout and stderr apart."""

    def invoke(*args, input=None, env=None):
        return CliRunner().invoke(cli, ["--db", str(db_path), *args], obj=App(pm=pm),
                                  input=input, env=env)

    return invoke


def stored_settings(db_path, plugin: str) -> dict:
    """The settings exactly as the store file holds them."""
    conn = sqlite3.connect(db_path)
    try:
        (text,) = conn.execute("select settings from plugins where name = ?", (plugin,)).fetchone()
    finally:
        conn.close()
    return json.loads(text)


def settings_in_use(pm, db_path, plugin: str) -> dict:
    store = open_store(pm, f"sqlite://{db_path}")
    try:
        return plugin_settings(pm, store, plugin)
    finally:
        store.close()


def error_of(result) -> str:
    assert result.exit_code == 1, result.output
    return result.stderr.strip()


# Secrets come from the environment (or a prompt, or a file), never a flag.
CW_KEY = {"PSABRIDGE_CONNECTWISE_PRIVATE_KEY": CW_SECRET}
DATTO_KEY = {"PSABRIDGE_DATTO_API_SECRET": DATTO_SECRET}


def key_id(key: str) -> str:
    return secrets.SecretKey.parse(key, "test").id


def test_a_secret_is_sealed_with_a_private_key_file_made_on_first_need(run, pm, db_path):
    key_file = secrets.key_file_path()
    assert not key_file.exists()
    result = run("configure", "connectwise", *CW_OPTIONS, env=CW_KEY)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    stored = stored_settings(db_path, "connectwise")
    assert stored["private_key"].startswith(f"fernet:{key_id(key_file.read_text())}:")
    assert CW_SECRET.encode() not in db_path.read_bytes()
    assert stored["public_key"] == "pub"  # only secrets are sealed
    assert settings_in_use(pm, db_path, "connectwise")["private_key"] == CW_SECRET


def test_a_key_file_open_to_other_users_is_refused_with_the_chmod_that_fixes_it(run, db_path):
    assert run("configure", "connectwise", *CW_OPTIONS, env=CW_KEY).exit_code == 0
    key_file = secrets.key_file_path()
    key_file.chmod(0o640)
    before = dump_tables(db_path)
    assert error_of(run("plugins", "enable", "connectwise", "--skip-check")) == (
        f"Error: the key file {key_file} is open to other users (mode 0640), and it unlocks the "
        f"connectors' secrets: make it private with `chmod 600 {key_file}` and try again")
    assert dump_tables(db_path) == before
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o640  # the admin's to fix, not ours


def test_the_key_in_the_environment_takes_precedence_and_another_key_is_named(run, pm, db_path):
    old_key = Fernet.generate_key().decode()
    configured = run("configure", "connectwise", *CW_OPTIONS,
                     env={"PSABRIDGE_SECRET_KEY": old_key, **CW_KEY})
    assert configured.exit_code == 0, configured.output
    key_file = secrets.key_file_path()
    assert not key_file.exists()  # the environment's key was used: no key file was made
    assert stored_settings(db_path, "connectwise")["private_key"].startswith(
        f"fernet:{key_id(old_key)}:")
    before = dump_tables(db_path)

    # Moved to a machine with no key at all.
    assert error_of(run("plugins", "enable", "connectwise", "--skip-check")) == (
        f"Error: the private_key of connectwise in the store is encrypted (key {key_id(old_key)}), "
        f"but there is no key here: neither PSABRIDGE_SECRET_KEY nor the key file {key_file}; "
        "set PSABRIDGE_SECRET_KEY to the key it was encrypted with (the key file of the machine "
        "the store comes from), or set it again with `psabridge configure connectwise`")
    # Moved to a machine with a key of its own (made here by configuring another connector).
    assert run("configure", "datto", "--api-key", "k", env=DATTO_KEY).exit_code == 0
    after_datto = dump_tables(db_path)
    new_id = key_id(key_file.read_text())
    assert error_of(run("plugins", "enable", "connectwise", "--skip-check")) == (
        f"Error: the private_key of connectwise in the store was encrypted with another key "
        f"(key {key_id(old_key)}; the key file {key_file} holds key {new_id}); set "
        "PSABRIDGE_SECRET_KEY to the key it was encrypted with (the key file of the machine the "
        "store comes from), or set it again with `psabridge configure connectwise`")
    assert dump_tables(db_path) == after_datto
    assert [t for t in before if before[t] != after_datto[t]] == ["plugins"]

    # The first way out: the old key, from the environment.
    enabled = run("plugins", "enable", "connectwise", "--skip-check",
                  env={"PSABRIDGE_SECRET_KEY": old_key})
    assert enabled.exit_code == 0, enabled.output


def test_configuring_again_replaces_a_secret_sealed_with_another_key(run, pm, db_path):
    old_key = Fernet.generate_key().decode()
    assert run("configure", "connectwise", *CW_OPTIONS,
               env={"PSABRIDGE_SECRET_KEY": old_key, **CW_KEY}).exit_code == 0
    # The second way out: configure again; the secret that cannot be opened is asked for.
    again = run("configure", "connectwise", "--company", "acme2", input="new-private-key-77\n")
    assert again.exit_code == 0, again.output
    assert "private_key=(set)" in again.output
    enabled = run("plugins", "enable", "connectwise", "--skip-check")
    assert enabled.exit_code == 0, enabled.output
    in_use = settings_in_use(pm, db_path, "connectwise")
    assert (in_use["private_key"], in_use["company"]) == ("new-private-key-77", "acme2")


def test_a_malformed_key_in_the_environment_is_refused_and_nothing_is_saved(run, db_path):
    result = run("configure", "connectwise", *CW_OPTIONS,
                 env={"PSABRIDGE_SECRET_KEY": "not-a-key", **CW_KEY})
    assert error_of(result) == (
        "Error: PSABRIDGE_SECRET_KEY does not hold a valid key: a key is 32 random bytes in "
        "URL-safe base64 (44 characters); make one with `openssl rand -base64 32 | tr '+/' '-_'`")
    assert dump_tables(db_path)["plugins"] == []


def test_a_key_made_as_the_docs_say_is_a_valid_key():
    made = subprocess.run(["sh", "-c", secrets.MAKE_A_KEY], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"openssl is not installed here: {made.stderr.strip()}")
    assert secrets.SecretKey.parse(made.stdout, "openssl").id


def test_secrets_may_be_references_read_each_time_a_connection_is_built(
        run, pm, db_path, tmp_path, monkeypatch):
    secret_file = tmp_path / "datto.secret"
    secret_file.write_text(DATTO_SECRET + "\n")
    assert run("configure", "connectwise", *CW_OPTIONS,
               env={"PSABRIDGE_CONNECTWISE_PRIVATE_KEY": "env:CW_TEST_PRIVATE_KEY"}).exit_code == 0
    assert run("configure", "datto", "--api-url", "https://merlot-api.centrastage.net",
               "--api-key", "k", env={"PSABRIDGE_DATTO_API_SECRET": f"file:{secret_file}"}).exit_code == 0
    # The references are stored as written, never what they point to.
    assert stored_settings(db_path, "connectwise")["private_key"] == "env:CW_TEST_PRIVATE_KEY"
    assert stored_settings(db_path, "datto")["api_secret"] == f"file:{secret_file}"
    assert not secrets.key_file_path().exists()  # nothing needed sealing

    monkeypatch.setenv("CW_TEST_PRIVATE_KEY", CW_SECRET)
    assert settings_in_use(pm, db_path, "connectwise")["private_key"] == CW_SECRET
    assert settings_in_use(pm, db_path, "datto")["api_secret"] == DATTO_SECRET
    monkeypatch.setenv("CW_TEST_PRIVATE_KEY", "rotated-private-key")
    assert settings_in_use(pm, db_path, "connectwise")["private_key"] == "rotated-private-key"
    assert CW_SECRET.encode() not in db_path.read_bytes()
    assert DATTO_SECRET.encode() not in db_path.read_bytes()

    monkeypatch.delenv("CW_TEST_PRIVATE_KEY")
    assert error_of(run("plugins", "enable", "connectwise", "--skip-check")) == (
        "Error: the private_key of connectwise is read from the environment variable "
        "CW_TEST_PRIVATE_KEY, which is not set (or empty) here: set it where psabridge runs (the "
        "service's environment file), or configure the secret itself with "
        "`psabridge configure connectwise`")
    secret_file.unlink()
    assert error_of(run("plugins", "enable", "datto", "--skip-check")) == (
        f"Error: the api_secret of datto is read from the file {secret_file}, which cannot be "
        "read: No such file or directory")


@pytest.mark.parametrize("reference, problem", [
    ("file:datto.secret", "'file:datto.secret' must give an absolute path, as in "
                          "file:/etc/psabridge/cw.key"),
    ("env:NOT A NAME", "'env:NOT A NAME' must name an environment variable, as in "
                       "env:CW_PRIVATE_KEY"),
])
def test_a_malformed_reference_is_refused_when_configured(run, db_path, reference, problem):
    result = run("configure", "datto", "--api-key", "k",
                 env={"PSABRIDGE_DATTO_API_SECRET": reference})
    assert error_of(result) == f"Error: invalid settings for datto: api_secret: {problem}"
    assert dump_tables(db_path)["plugins"] == []


def build_old_store(path) -> dict[str, dict]:
    """A store as psabridge wrote it before secrets were sealed: plaintext in the settings."""
    old = {
        "connectwise": {"url": "https://cw.example.com", "company": "acme", "public_key": "pub",
                        "private_key": CW_SECRET},
        "datto": {"api_url": "https://merlot-api.centrastage.net", "api_key": "k",
                  "api_secret": DATTO_SECRET},
    }
    store = SQLiteStore(path)  # the engine alone: it stores what it is given
    for name, settings in old.items():
        store.save_settings(name, settings)
    store.set_enabled("connectwise", True)
    store.close()
    assert CW_SECRET.encode() in path.read_bytes()
    return old


def test_an_old_stores_plaintext_secrets_are_sealed_in_place_when_it_is_opened(pm, db_path):
    old = build_old_store(db_path)
    result = subprocess.run([sys.executable, "-m", "psabridge", "--db", str(db_path), "plugins",
                             "list"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "secrets found in plaintext in the store were encrypted" in result.stderr
    for file in db_path.parent.iterdir():  # the file, and a -wal or -shm if one was left
        content = file.read_bytes()
        assert CW_SECRET.encode() not in content and DATTO_SECRET.encode() not in content, file
    for name, settings in old.items():
        secret = "private_key" if name == "connectwise" else "api_secret"
        assert secrets.is_sealed(stored_settings(db_path, name)[secret])
        assert settings_in_use(pm, db_path, name) == settings
    store = open_store(pm, f"sqlite://{db_path}")
    try:
        assert [(s.name, s.enabled) for s in store.plugin_states()] == [
            ("connectwise", True), ("datto", False)]
    finally:
        store.close()


def test_configuring_again_without_the_secret_keeps_it_and_says_how_to_replace_it(run, pm, db_path):
    assert run("configure", "connectwise", *CW_OPTIONS, env=CW_KEY).exit_code == 0
    again = run("configure", "connectwise", "--company", "acme2", input="ignored-line\n")
    assert again.exit_code == 0 and "private_key=(kept)" in again.stdout
    assert again.stderr.strip() == (
        "The stored private key was kept; to replace it, set PSABRIDGE_CONNECTWISE_PRIVATE_KEY "
        "or give --private-key-file PATH.")
    assert settings_in_use(pm, db_path, "connectwise")["private_key"] == CW_SECRET
