"""The shared state store: PostgreSQL through psycopg 3, reached as `postgresql://...`.

Several `sync --watch` workers and `serve` replicas on several hosts can share one PostgreSQL
store. Installed with `pip install 'psabridge[postgres]'`.
"""

from __future__ import annotations

from psabridge.core.errors import StoreError
from psabridge.core.hookspecs import hookimpl

SCHEMES = ("postgresql://", "postgres://")


@hookimpl
def storage_open(url: str):
    if not url.startswith(SCHEMES):
        return None
    # Imported here: a command that opens no store need not load psycopg, and an installation
    # without the extra can still run on SQLite.
    try:
        from psabridge.plugins.storage_postgres.store import PostgresStore
    except ModuleNotFoundError as missing:
        if not (missing.name or "").startswith("psycopg"):
            raise
        raise StoreError("a postgresql:// store needs psycopg, which is not installed: "
                         "pip install 'psabridge[postgres]'") from missing
    return PostgresStore(url)
