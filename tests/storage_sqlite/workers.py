"""What the processes started by the concurrency tests run (importable without pytest, so that
a spawned process starts quickly)."""

from __future__ import annotations

import time

from psabridge.plugins.storage_sqlite import store as store_module
from psabridge.plugins.storage_sqlite.store import SQLiteStore

# Long enough for every process to have imported psabridge on a busy machine.
START_TIMEOUT = 60


def run(barrier, results, index: int, work, *args) -> None:
    """Wait until every racer is ready, run `work(*args)`, and report how it ended: None, or
    what it raised."""
    try:
        barrier.wait(START_TIMEOUT)
        work(*args)
    except BaseException as exc:  # reported to the test, which names the process that failed
        results.put((index, f"{type(exc).__name__}: {exc}"))
    else:
        results.put((index, None))


def open_store(path: str) -> None:
    SQLiteStore(path).close()


def open_store_recording_migrations(path: str, log: str) -> None:
    """Open the store, appending the number of each migration this process applies to `log`."""

    def recording(number, migration):
        def apply(db):
            migration(db)
            with open(log, "a") as file:  # a single short append: whole lines, never interleaved
                file.write(f"{number}\n")
        return apply

    store_module.MIGRATIONS[:] = [
        recording(number, migration) for number, migration in enumerate(store_module.MIGRATIONS, 1)
    ]
    SQLiteStore(path).close()


def write(store: SQLiteStore, writer: str, rounds: int) -> None:
    """Each round: a warning, a cursor, and a change of two writes that holds the write lock a
    few milliseconds, with reads in between as a server and a sync do."""
    for round_ in range(rounds):
        store.add_warning(writer, f"subject {round_}", "message")
        store.set_cursor(writer, f"cursor {round_}", str(round_))
        store.warnings()  # every writer's: long enough for other threads to write meanwhile
        with store.transaction():
            store.set_option(writer, f"option {round_}", round_)
            time.sleep(0.003)
            store.remember_message(f"{writer} message {round_}")
        store.cursor(writer, f"cursor {round_}")


def write_in_own_store(path: str, writer: str, rounds: int) -> None:
    store = SQLiteStore(path)
    try:
        write(store, writer, rounds)
    finally:
        store.close()


def hold_write_lock(path: str, holding, release) -> None:
    """Take the store's write lock, say so, and keep it until told to release it."""
    store = SQLiteStore(path)
    try:
        with store.transaction():
            holding.set()
            release.wait(START_TIMEOUT)
    finally:
        store.close()
