"""Fixtures shared by every test: a fresh plugin manager and a store in a temporary file."""

from __future__ import annotations

import pytest

from psabridge.core.plugins import make_plugin_manager
from psabridge.core.store import open_store


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
