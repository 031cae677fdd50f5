"""Fixtures shared by every test: a fresh plugin manager and a store in a temporary file."""

from __future__ import annotations

import pytest

from psabridge.core.plugins import make_plugin_manager
from psabridge.core.store import open_store


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
