"""The embedded state store: SQLite through sqlite-utils, reached as `sqlite:///absolute/path`."""

from __future__ import annotations

from psabridge.core.hookspecs import hookimpl

SCHEME = "sqlite://"


@hookimpl
def storage_open(url: str):
    if not url.startswith(SCHEME):
        return None
    # Imported here: a command that opens no store (`--help`) need not load sqlite-utils.
    from psabridge.plugins.storage_sqlite.store import SQLiteStore

    return SQLiteStore(url[len(SCHEME) :])
