"""The PostgreSQL store honours the store contract (psabridge.testing.store), on a throwaway
server (`postgres_url` in tests/conftest.py); each test gets a database of its own."""

from __future__ import annotations

import psycopg
import pytest

from psabridge.testing.store import StoreContract


class TestPostgresStoreConforms(StoreContract):
    @pytest.fixture
    def store_url(self, postgres_db):
        return postgres_db

    def schema_version(self, url: str) -> int:
        with psycopg.connect(url) as conn:
            return conn.execute("select max(version) from schema_version").fetchone()[0]
