"""The throwaway PostgreSQL server the tests run on (psabridge/testing/postgres.py)."""

from __future__ import annotations

import os
import shutil

import psycopg
import pytest

from psabridge.testing import postgres


def test_without_server_binaries_the_error_says_how_to_get_them_or_skip(monkeypatch):
    monkeypatch.setattr(postgres.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(postgres.PostgresUnavailable) as error:
        postgres.server_binaries()
    assert "apt-get install postgresql" in str(error.value)
    assert "PSABRIDGE_SKIP_POSTGRES=1" in str(error.value)


def test_the_server_runs_unprivileged_and_each_fresh_database_is_empty_and_dropped(postgres_url):
    with psycopg.connect(postgres_url) as conn:
        # The server process is never root, even when the tests are (CI).
        data_dir = conn.execute("show data_directory").fetchone()[0]
        server_pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    with open(f"/proc/{server_pid}/status") as status:
        uid = next(int(line.split()[1]) for line in status if line.startswith("Uid:"))
    assert uid != 0 and os.stat(data_dir).st_uid == uid
    with postgres.fresh_database(postgres_url) as url:
        with psycopg.connect(url) as conn:
            assert conn.execute("select count(*) from information_schema.tables "
                                "where table_schema = 'public'").fetchone()[0] == 0
        name = url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone() is None
