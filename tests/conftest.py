"""Fixtures shared by every test: a fresh plugin manager and a store in a temporary file; a
throwaway PostgreSQL server for the tests of the PostgreSQL store."""

from __future__ import annotations

import os

import pytest

from psabridge.core.plugins import make_plugin_manager
from psabridge.core.store import open_store

# The store conformance kit's checks are plain asserts: have pytest explain them.
pytest.register_assert_rewrite("psabridge.testing.store")


@pytest.fixture(autouse=True)
def private_home(tmp_path_factory, monkeypatch):
    """Each test gets its own config and data folders (the secret key file, the default store),
    never the real user's; so do the psabridge processes it starts, which inherit them."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("PSABRIDGE_SIMULATOR_DIR", str(home / "simulators"))  # their control files
    monkeypatch.delenv("PSABRIDGE_SECRET_KEY", raising=False)
    monkeypatch.delenv("PSABRIDGE_DB", raising=False)
    return home


@pytest.fixture
def pm(monkeypatch):
    """A plugin manager with the built-in plugins, loaded through their entry points."""
    monkeypatch.delenv("PSABRIDGE_LOAD_PLUGINS", raising=False)
    return make_plugin_manager()


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "state.db"


@pytest.fixture
def store(pm, db_path):
    store = open_store(pm, f"sqlite://{db_path}")
    yield store
    store.close()


@pytest.fixture(scope="session")
def postgres_url():
    """A URL to a throwaway PostgreSQL server's `postgres` database, for the whole session.

    Without PostgreSQL's server binaries the tests that need it fail, saying how to get them,
    unless PSABRIDGE_SKIP_POSTGRES=1 (then they are skipped)."""
    from psabridge.testing.postgres import PostgresUnavailable, throwaway_postgres

    if os.environ.get("PSABRIDGE_SKIP_POSTGRES") == "1":
        pytest.skip("PSABRIDGE_SKIP_POSTGRES=1: the PostgreSQL store is not tested")
    try:
        server = throwaway_postgres()
        url = server.__enter__()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


@pytest.fixture
def postgres_db(postgres_url):
    """A URL to a new, empty database on the throwaway server, dropped after the test."""
    from psabridge.testing.postgres import fresh_database

    with fresh_database(postgres_url) as url:
        yield url
