"""The SQLite store shared by several processes and threads at once, as `psabridge serve` (a
thread per request) and `psabridge sync --watch` share one file.

The racers are real processes, started with `spawn` and released together by a barrier.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import stat
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlite_utils

from psabridge.core.errors import StoreError
from psabridge.plugins.storage_sqlite.store import MIGRATIONS, SCHEMA_VERSION, SQLiteStore
from tests.storage_sqlite import workers

spawn = multiprocessing.get_context("spawn")


@contextmanager
def racing(work, calls: list[tuple]) -> Iterator[None]:
    """Run `work(*call)` in one process per call, all released at the same moment as this
    process enters the block; on leaving it, wait for them and fail naming each that raised."""
    barrier = spawn.Barrier(len(calls) + 1)
    results = spawn.Queue()
    processes = [spawn.Process(target=workers.run, args=(barrier, results, index, work, *call))
                 for index, call in enumerate(calls)]
    for process in processes:
        process.start()
    try:
        barrier.wait(workers.START_TIMEOUT)
        yield
    finally:
        outcomes = [results.get(timeout=workers.START_TIMEOUT) for _ in processes]
        for process in processes:
            process.join()
    failures = {f"process {index}": error for index, error in outcomes if error}
    assert not failures, failures


def schema_version(path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def test_processes_creating_the_same_new_store_at_once_all_open_it(tmp_path):
    path = tmp_path / "state.db"

    with racing(workers.open_store, [(str(path),)] * 8):
        pass

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert schema_version(path) == SCHEMA_VERSION
    store = SQLiteStore(path)
    store.set_cursor("datto", "alerts", "x")
    assert store.cursor("datto", "alerts") == "x"
    store.close()


def test_processes_upgrading_an_old_store_at_once_apply_each_migration_once(tmp_path):
    path, log = tmp_path / "state.db", tmp_path / "migrations.log"
    old_version = 2
    conn = sqlite3.connect(path, isolation_level=None)  # not in WAL mode yet: that races too
    for migration in MIGRATIONS[:old_version]:
        migration(sqlite_utils.Database(conn))
    conn.execute(f"PRAGMA user_version = {old_version}")
    conn.close()

    with racing(workers.open_store_recording_migrations, [(str(path), str(log))] * 6):
        pass

    applied = Counter(int(line) for line in log.read_text().split())
    assert applied == Counter(range(old_version + 1, SCHEMA_VERSION + 1))
    assert schema_version(path) == SCHEMA_VERSION


def test_threads_and_processes_writing_at_once_lose_no_write(tmp_path):
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    threads = [f"thread {n}" for n in range(16)]
    processes = [f"process {n}" for n in range(2)]
    thread_rounds, process_rounds = 10, 40
    errors = []

    def write(writer):
        try:
            workers.write(store, writer, thread_rounds)
        except Exception as exc:
            errors.append(f"{writer}: {type(exc).__name__}: {exc}")

    with racing(workers.write_in_own_store, [(str(path), name, process_rounds) for name in processes]):
        started = [threading.Thread(target=write, args=(name,)) for name in threads]
        for thread in started:
            thread.start()
        for thread in started:
            thread.join()

    assert errors == []
    expected = {**dict.fromkeys(threads, thread_rounds), **dict.fromkeys(processes, process_rounds)}
    for table, writer_column in (("warnings", "plugin"), ("cursors", "plugin"), ("options", "plugin")):
        written = Counter(row[writer_column] for row in store.table_rows(table))
        assert written == expected, table
    messages = Counter(row["id"].rsplit(" message ", 1)[0] for row in store.table_rows("webhook_messages"))
    assert messages == expected
    store.close()


def test_a_write_blocked_past_the_busy_timeout_fails_clearly_and_succeeds_once_released(tmp_path):
    path = tmp_path / "state.db"
    store = SQLiteStore(path, busy_timeout=0.5)
    holding, release = spawn.Event(), spawn.Event()
    holder = spawn.Process(target=workers.hold_write_lock, args=(str(path), holding, release))
    holder.start()
    try:
        assert holding.wait(workers.START_TIMEOUT)
        with pytest.raises(StoreError) as error:
            store.set_cursor("datto", "alerts", "x")
    finally:
        release.set()
        holder.join()
    assert str(error.value).startswith(
        f"the store {path} is busy: another process has held its write lock for over 0.5 s")
    assert store.cursor("datto", "alerts") is None

    store.set_cursor("datto", "alerts", "x")
    assert store.cursor("datto", "alerts") == "x"
    store.close()


def test_a_write_sqlite_refuses_without_waiting_is_tried_again_until_the_lock_is_free(tmp_path):
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    holding, release = spawn.Event(), spawn.Event()
    holder = spawn.Process(target=workers.hold_write_lock, args=(str(path), holding, release))
    holder.start()
    try:
        assert holding.wait(workers.START_TIMEOUT)
        # A half-read cursor keeps a read transaction open on this thread's connection: asked
        # for the write lock, SQLite now answers "database is locked" at once, busy_timeout or not.
        half_read = store.db.execute("select name from sqlite_master")
        half_read.fetchone()
        threading.Timer(0.3, release.set).start()
        store.set_cursor("datto", "alerts", "x")
    finally:
        release.set()
        holder.join()
    half_read.fetchall()
    assert store.cursor("datto", "alerts") == "x"
    store.close()
