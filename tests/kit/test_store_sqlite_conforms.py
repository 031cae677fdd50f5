"""The SQLite store honours the store contract (psabridge.testing.store)."""

from __future__ import annotations

import sqlite3

import pytest

from psabridge.testing.store import StoreContract


class TestSQLiteStoreConforms(StoreContract):
    @pytest.fixture
    def store_url(self, tmp_path):
        return f"sqlite://{tmp_path / 'state.db'}"

    def schema_version(self, url: str) -> int:
        conn = sqlite3.connect(url.removeprefix("sqlite://"))
        try:
            return conn.execute("pragma user_version").fetchone()[0]
        finally:
            conn.close()
