"""What an admin reads when the store cannot be used: the real cause and what to do, on one
line, and nothing in the store changed.

Each case runs the real command line (`python -m psabridge`, or click's runner where the case
is set up in the process) on a store file. CI runs as root, whom file modes do not stop: a
read-only or full file system is made in a private mount namespace (`unshare`, which changes
nothing outside the test's own processes), and a read-only file with `chattr +i`; a test skips,
saying why, only where this machine allows neither.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sqlite3
import stat
import subprocess
import sys

import pytest
from click.testing import CliRunner

from psabridge.cli import App, cli
from psabridge.core.plugins import configure_plugin, make_plugin_manager
from psabridge.core.store import open_store
from tests.core.test_secrets import CW_SECRET, build_old_store

PLUGINS = "connectwise,datto,sqlite"


def psabridge(*args: str, prefix: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "psabridge", *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PSABRIDGE_LOAD_PLUGINS": PLUGINS, **env})


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one line a failed command printed; there must be exactly one, and no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def make_store(path, **settings) -> None:
    """A store with connectwise configured, as `psabridge configure` leaves it."""
    pm = make_plugin_manager()
    store = open_store(pm, f"sqlite://{path}")
    configure_plugin(pm, store, "connectwise", {
        "url": "https://cw.example.com", "company": "acme", "public_key": "pub",
        "private_key": CW_SECRET, **settings})
    store.close()


def snapshot(folder) -> dict[str, bytes]:
    return {file.name: file.read_bytes() for file in sorted(folder.iterdir()) if file.is_file()}


def in_private_mounts(setup: str, after: str = "") -> tuple[str, ...]:
    """The command prefix that runs psabridge in a mount namespace of its own, after the shell
    commands `setup` (mounts) and followed by `after`; what it mounts is gone when it ends."""
    for unshare in (["unshare", "--map-root-user", "--mount"], ["unshare", "--mount"]):
        try:
            probe = subprocess.run([*unshare, "true"], capture_output=True, text=True)
        except FileNotFoundError:
            pytest.skip("unshare (util-linux) is not installed: no private mounts to test with")
        if probe.returncode == 0:
            script = f'set -e\n{setup}\nset +e\n"$@"; status=$?\n{after}\nexit $status'
            return (*unshare, "sh", "-c", script, "sh")
    pytest.skip(f"this machine allows no private mount namespace: {probe.stderr.strip()}")


def read_only_mount(folder) -> str:
    folder = shlex.quote(str(folder))
    return f"mount --bind {folder} {folder}\nmount -o remount,bind,ro {folder}"


@contextlib.contextmanager
def immutable(path):
    """Make `path` unwritable even for root (CI runs as root) with the immutable attribute."""
    try:
        made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("chattr (e2fsprogs) is not installed")
    if made.returncode != 0:
        pytest.skip(f"this file system has no immutable attribute: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def read_only_message(db, why: str) -> str:
    return (f"Error: the store {db} is read-only ({why}): nothing was written; to change it, "
            "make it writable, or copy it somewhere writable and point --db there")


# -- read-only ----------------------------------------------------------------------------------


def test_on_a_read_only_file_system_the_store_is_listed_and_writes_say_why_they_fail(tmp_path):
    folder = tmp_path / "mounted"
    folder.mkdir()
    db = folder / "state.db"
    make_store(db)
    before = snapshot(folder)
    mounted = in_private_mounts(read_only_mount(folder))

    listed = psabridge("--db", str(db), "plugins", "list", "--json", prefix=mounted)
    assert listed.returncode == 0, listed.stderr
    assert '"name": "connectwise"' in listed.stdout
    for command in (["configure", "connectwise", "--company", "other"],
                    ["plugins", "disable", "connectwise"]):
        result = psabridge("--db", str(db), *command, prefix=mounted)
        assert error_line(result) == read_only_message(db, "read-only file system")
    created = psabridge("--db", str(folder / "new.db"), "plugins", "list", prefix=mounted)
    assert error_line(created) == (
        f"Error: cannot create the store {folder / 'new.db'}: read-only file system; create it "
        "where psabridge can write, and point --db (or PSABRIDGE_DB) there")
    assert snapshot(folder) == before


def test_an_immutable_store_file_is_listed_and_writes_say_why_they_fail(tmp_path):
    db = tmp_path / "state.db"
    make_store(db)
    before = db.read_bytes()
    with immutable(db):
        listed = psabridge("--db", str(db), "plugins", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        result = psabridge("--db", str(db), "configure", "connectwise", "--company", "other")
        assert error_line(result) == read_only_message(
            db, "the file cannot be written; see ls -l and lsattr")
    assert db.read_bytes() == before


def test_an_old_read_only_store_is_listed_with_its_plaintext_secrets_left_as_they_are(tmp_path):
    db = tmp_path / "state.db"
    build_old_store(db)
    before = db.read_bytes()
    with immutable(db):
        listed = psabridge("--db", str(db), "plugins", "list")
        assert listed.returncode == 0, listed.stderr
        assert "secrets in the store are in plaintext and stay so until it can be written" \
            in listed.stderr
    assert db.read_bytes() == before
    sealed = psabridge("--db", str(db), "plugins", "list")  # writable again: sealed now
    assert sealed.returncode == 0 and CW_SECRET.encode() not in db.read_bytes()


# -- a full disk --------------------------------------------------------------------------------


def test_a_full_disk_is_named_and_nothing_is_written(tmp_path):
    """A real full disk: a 512 KiB tmpfs holding the store, filled up to 36 KiB. That leaves
    room for the 32 KiB -shm file SQLite maps on open, not for the -wal frames of a write."""
    db = tmp_path / "state.db"
    make_store(db)
    full, copy = tmp_path / "full", tmp_path / "after.db"
    full.mkdir()
    db_, full_, copy_ = (shlex.quote(str(path)) for path in (db, full, copy))
    mounted = in_private_mounts(
        setup=f"mount -t tmpfs -o size=512k tmpfs {full_}\n"
              f"cp -p {db_} {full_}/\n"
              f"dd if=/dev/zero of={full_}/filler bs=4k 2>/dev/null || true\n"
              f"truncate -s -36864 {full_}/filler",
        after=f"cp {full_}/state.db {copy_}")
    result = psabridge("--db", str(full / "state.db"), "configure", "connectwise",
                       "--company", "renamed", prefix=mounted)
    assert error_line(result) == (f"Error: the disk holding {full / 'state.db'} is full: free "
                                  "space and retry; nothing was written")
    assert copy.read_bytes() == db.read_bytes()


def test_a_full_database_is_named_and_nothing_is_written(pm, tmp_path):
    """SQLite's own limit, `PRAGMA max_page_count`, makes the database "full" where no small
    file system can be mounted: SQLite reports SQLITE_FULL, the error a full disk gives, and
    psabridge takes the same path (see the tmpfs test above for a real full disk)."""
    db = tmp_path / "state.db"
    make_store(db)
    store = open_store(pm, f"sqlite://{db}")
    (pages,) = store.db.execute("PRAGMA page_count").fetchone()
    store.db.execute(f"PRAGMA max_page_count = {pages}")  # this connection: no page to spare
    before = {row["name"]: row["settings"] for row in store.table_rows("plugins")}
    result = CliRunner().invoke(cli, ["--db", str(db), "configure", "connectwise",
                                      "--company", "x" * 20_000], obj=App(pm=pm, store=store))
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"Error: the disk holding {db} is full: free space and "
                                     "retry; nothing was written")
    store = open_store(pm, f"sqlite://{db}")
    try:
        assert {row["name"]: row["settings"] for row in store.table_rows("plugins")} == before
    finally:
        store.close()


# -- where the store is -------------------------------------------------------------------------


def test_a_store_path_under_a_file_names_that_file(tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    db = tmp_path / "notes.txt" / "sub" / "state.db"
    assert error_line(psabridge("--db", str(db), "plugins", "list")) == (
        f"Error: --db {db}: its folder {tmp_path / 'notes.txt'} is a file, not a folder")
    assert (tmp_path / "notes.txt").read_text() == "a file, not a folder"


def test_a_store_in_a_missing_folder_is_refused_not_started_afresh(tmp_path):
    db = tmp_path / "typo" / "state.db"
    assert error_line(psabridge("--db", str(db), "plugins", "list")) == (
        f"Error: --db {db}: its folder {db.parent} does not exist; create it "
        f"(`mkdir -p {db.parent}`) or correct the path")
    assert not db.parent.exists()


def test_a_store_path_that_is_a_folder_is_not_called_damaged(tmp_path):
    assert error_line(psabridge("--db", str(tmp_path), "plugins", "list")) == (
        f"Error: the store {tmp_path} is a folder, not a file: point --db (or PSABRIDGE_DB) at "
        f"a file, such as {tmp_path / 'psabridge.db'}")
    assert list(tmp_path.iterdir()) == []


def test_a_store_path_that_is_not_a_regular_file_is_refused_and_left_as_it_was(tmp_path):
    """A pipe here; /dev/null in the report that found it, whose mode psabridge then changed."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe, 0o666)
    os.chmod(pipe, 0o666)
    assert error_line(psabridge("--db", str(pipe), "plugins", "list")) == (
        f"Error: the store {pipe} is not a regular file: point --db (or PSABRIDGE_DB) at a file "
        "psabridge may create and keep")
    assert stat.S_IMODE(pipe.stat().st_mode) == 0o666 and sorted(tmp_path.iterdir()) == [pipe]


@pytest.mark.parametrize("args, env, source", [
    (["--db", ""], {}, "--db"),
    ([], {"PSABRIDGE_DB": ""}, "PSABRIDGE_DB"),
    ([], {"PSABRIDGE_DB": "  "}, "PSABRIDGE_DB"),
])
def test_an_empty_store_path_is_an_error_naming_where_it_came_from(private_home, args, env, source):
    result = psabridge(*args, "plugins", "list", **env)
    default = private_home / "data" / "psabridge" / "psabridge.db"
    assert error_line(result) == (f"Error: {source} is empty: give it the store's path (or URL), "
                                  f"or leave it out to use the default store {default}")
    assert not default.exists()


# -- damaged, or not ------------------------------------------------------------------------------


def test_a_store_is_called_damaged_when_sqlites_check_finds_damage(tmp_path):
    db = tmp_path / "state.db"
    make_store(db)
    conn = sqlite3.connect(db)
    (root,) = conn.execute("select rootpage from sqlite_master where name = 'plugins'").fetchone()
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with db.open("r+b") as file:  # the plugins table's page: a leaf whose cells point nowhere
        file.seek((root - 1) * page_size)
        file.write(b"\x0d\x00\x00\x00\x05\x0f\x00\x00" + b"\xff" * (page_size - 8))
    before = db.read_bytes()
    line = error_line(psabridge("--db", str(db), "plugins", "list"))
    assert line.startswith(f"Error: the store {db} is damaged (SQLite's check says: On tree page "
                           f"{root} cell ")
    assert line.endswith("): move it away and restore a backup (psabridge never edits it in place)")
    assert db.read_bytes() == before


# -- who may read it ------------------------------------------------------------------------------


def test_store_files_open_to_others_are_made_private_with_a_warning(tmp_path):
    db = tmp_path / "state.db"
    make_store(db)
    holder = sqlite3.connect(db)  # keeps the -wal and -shm files in place
    try:
        holder.execute("select count(*) from plugins").fetchone()
        files = [db, tmp_path / "state.db-wal", tmp_path / "state.db-shm"]
        for file in files:
            file.chmod(0o644)
        result = psabridge("--db", str(db), "plugins", "list")
        assert result.returncode == 0, result.stderr
        assert {stat.S_IMODE(file.stat().st_mode) for file in files} == {0o600}
        warned = [line for line in result.stderr.splitlines() if "made it private" in line]
        assert len(warned) == 3, result.stderr
    finally:
        holder.close()


def test_store_files_of_another_user_open_to_others_are_refused_with_the_chmod(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root, to give the store to another user")
    db = tmp_path / "state.db"
    make_store(db)
    db.chmod(0o644)
    os.chown(db, 4321, 4321)
    before = snapshot(tmp_path)
    assert error_line(psabridge("--db", str(db), "plugins", "list")) == (
        f"Error: the store is open to other users ({db} has mode 0644) and holds the connectors' "
        f"settings: make it private with `chmod 600 {db}` and try again")
    assert snapshot(tmp_path) == before
    assert stat.S_IMODE(db.stat().st_mode) == 0o644
