"""What only the PostgreSQL store does: migrations under an advisory lock, errors an admin can
meet when opening it (each one line, naming what to fix, the password masked), the URL choosing
it from the CLI. The behaviours it shares with SQLite are in tests/kit/test_store_postgres_conforms.py."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from urllib.parse import urlsplit

import psycopg
import pytest
from click.testing import CliRunner

from psabridge.cli import App, cli
from psabridge.core.errors import StoreError
from psabridge.core.store import LeaseLost, _held_fences, open_store
from psabridge.core.store import masked_url as masked
from psabridge.plugins.storage_postgres.store import SCHEMA_VERSION, PostgresStore
from psabridge.testing.postgres import database_url
from psabridge.testing.store import race
from tests.storage_postgres import workers


def password_of(url: str) -> str:
    return urlsplit(url).password


def test_processes_opening_a_new_store_at_once_apply_each_migration_once(postgres_db, tmp_path):
    log = tmp_path / "migrations.log"
    race(workers.open_store_recording_migrations, [(postgres_db, str(log))] * 6)
    assert Counter(int(line) for line in log.read_text().split()) == Counter(
        range(1, SCHEMA_VERSION + 1))
    with psycopg.connect(postgres_db) as conn:
        assert conn.execute("select array_agg(version order by version) from schema_version"
                            ).fetchone()[0] == list(range(1, SCHEMA_VERSION + 1))


def test_a_store_from_a_newer_schema_is_refused(pm, postgres_db):
    open_store(pm, postgres_db).close()
    with psycopg.connect(postgres_db) as conn:
        conn.execute("insert into schema_version (version) values (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="written by a newer psabridge") as error:
        open_store(pm, postgres_db)
    assert password_of(postgres_db) not in str(error.value)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_server_is_one_line_naming_host_and_port(pm, postgres_url):
    url = postgres_url.replace(f":{urlsplit(postgres_url).port}/", f":{closed_port()}/")
    with pytest.raises(StoreError) as error:
        open_store(pm, url)
    message = str(error.value)
    assert message.startswith("cannot reach the PostgreSQL server of the store postgresql://psabridge:***@127.0.0.1:")
    assert "check the host and port in the URL and that the server is running" in message
    assert "\n" not in message and password_of(url) not in message


def test_a_refused_password_is_one_line_naming_the_credentials(pm, postgres_url):
    url = postgres_url.replace(f":{password_of(postgres_url)}@", ":wrong-password@")
    with pytest.raises(StoreError) as error:
        open_store(pm, url)
    message = str(error.value)
    assert "the server refused the user or password" in message
    assert "correct them in the URL" in message
    assert "\n" not in message and "wrong-password" not in message and ":***@" in message


def test_a_missing_database_is_one_line_saying_to_create_it(pm, postgres_url):
    url = database_url(postgres_url, "no_such_store")
    with pytest.raises(StoreError) as error:
        open_store(pm, url)
    message = str(error.value)
    assert 'database "no_such_store" does not exist' in message
    assert "create it (createdb, or CREATE DATABASE)" in message
    assert "\n" not in message and password_of(url) not in message


def test_passwords_are_masked_wherever_the_url_is_shown():
    assert masked("postgresql://bridge:s3cret@db.example:5432/psabridge") == \
        "postgresql://bridge:***@db.example:5432/psabridge"
    assert masked("postgresql://db.example/psabridge?password=s3cret&sslmode=require") == \
        "postgresql://db.example/psabridge?password=***&sslmode=require"
    assert masked("postgresql://bridge@db.example/psabridge") == \
        "postgresql://bridge@db.example/psabridge"


def test_the_cli_chooses_the_store_by_url(pm, postgres_db, monkeypatch):
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", postgres_db, "plugins", "list", "--json"], obj=App(pm=pm))
    assert result.exit_code == 0, result.output
    assert {row["name"] for row in json.loads(result.output)} >= {"sqlite", "postgres"}
    monkeypatch.setenv("PSABRIDGE_DB", postgres_db)
    configured = runner.invoke(cli, ["configure", "datto", "--api-url", "https://merlot-api.centrastage.net",
                                     "--api-key", "k"], obj=App(pm=pm), input="s3cret-key\n")
    assert configured.exit_code == 0, configured.output
    store = open_store(pm, postgres_db)
    try:
        saved = store.plugin_state("datto").settings
        assert saved["api_key"] == "k" and "s3cret-key" not in json.dumps(saved)  # sealed
    finally:
        store.close()


def test_an_admin_command_against_an_unreachable_server_exits_non_zero_in_one_line(pm, postgres_url):
    url = postgres_url.replace(f":{urlsplit(postgres_url).port}/", f":{closed_port()}/")
    result = CliRunner().invoke(cli, ["--db", url, "plugins", "list"], obj=App(pm=pm))
    assert result.exit_code != 0
    assert "cannot reach the PostgreSQL server" in result.output
    assert password_of(url) not in result.output and "Traceback" not in result.output


def test_a_change_whose_lease_passed_to_another_meanwhile_is_refused_at_its_commit(postgres_db):
    """The fence is checked again at the commit (its rows locked until the commit ends), not
    only when the change began: a holder that stalls in the middle of a change saves none of it."""
    holder, successor = PostgresStore(postgres_db), PostgresStore(postgres_db)
    try:
        lease = holder.acquire_lease("sync", "holder", ttl=0.3)
        fences = _held_fences.set((lease,))
        try:
            with pytest.raises(LeaseLost), holder.transaction():
                holder.set_cursor("datto", "alerts", "by the stalled holder")
                time.sleep(0.5)  # stalls past its lease...
                taken = successor.acquire_lease("sync", "successor", ttl=30)  # ...which passes on
                assert taken is not None and taken.token > lease.token
        finally:
            _held_fences.reset(fences)
        assert successor.cursor("datto", "alerts") is None
    finally:
        holder.close()
        successor.close()


def test_a_write_blocked_past_the_lock_timeout_fails_clearly_and_succeeds_once_released(postgres_db):
    store = PostgresStore(postgres_db, lock_timeout=0.5)
    try:
        store.set_cursor("datto", "alerts", "before")
        with psycopg.connect(postgres_db) as other:  # another process, in the middle of a change
            other.execute("select * from cursors for update")
            with pytest.raises(StoreError) as error:
                store.set_cursor("datto", "alerts", "blocked")
        # Leaving the block committed the other's transaction and released its rows.
        assert str(error.value).startswith(
            "the store postgresql://psabridge:***@") and \
            "is busy: another process has held rows this change needs for over 0.5 s" in str(error.value)
        assert store.cursor("datto", "alerts") == "before"
        store.set_cursor("datto", "alerts", "after")
        assert store.cursor("datto", "alerts") == "after"
    finally:
        store.close()


def test_a_password_in_the_url_is_masked_in_the_logs(pm, postgres_db):
    import io

    from psabridge.core import logs

    stream = io.StringIO()
    logs.configure_logging(verbosity=1, fmt="json", stream=stream)
    store = open_store(pm, postgres_db)
    try:
        logs.get_logger("test").warning("connecting", url=postgres_db, error=f"no {postgres_db}")
    finally:
        store.close()
    assert "connecting" in stream.getvalue()
    assert password_of(postgres_db) not in stream.getvalue()
