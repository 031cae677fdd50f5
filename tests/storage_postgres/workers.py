"""What the processes started by the PostgreSQL store's tests run (importable without pytest)."""

from __future__ import annotations

from psabridge.plugins.storage_postgres import store as store_module
from psabridge.plugins.storage_postgres.store import PostgresStore


def open_store_recording_migrations(url: str, log: str) -> None:
    """Open the store, appending the number of each migration this process applies to `log`."""

    def recording(number, migration):
        def apply(conn):
            migration(conn)
            with open(log, "a") as file:  # a single short append: whole lines, never interleaved
                file.write(f"{number}\n")
        return apply

    store_module.MIGRATIONS[:] = [
        recording(number, migration) for number, migration in enumerate(store_module.MIGRATIONS, 1)
    ]
    PostgresStore(url).close()
