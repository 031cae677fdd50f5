"""The store's files on disk: where the store may be, who may read it, whether it can be
written, and what SQLite's errors about it mean to the admin who reads them.

A store is the database file and, beside it, the `-wal` and `-shm` files SQLite keeps while it
is in use. All three hold the same data (mappings, tickets, the connectors' sealed secrets), so
all three are kept to their owner.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from urllib.parse import quote

from psabridge.core import logs
from psabridge.core.errors import StoreError
from psabridge.core.store import StoreReadOnly

log = logs.get_logger(__name__)

RESTORE_A_BACKUP = "move it away and restore a backup (psabridge never edits it in place)"
SQLITE_HEADER = b"SQLite format 3\0"  # the first bytes of every SQLite database file


def store_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def refuse_unusable_path(path: Path) -> None:
    """Say what is wrong with a store path before SQLite gives its vaguer account of it."""
    if path.is_dir():
        raise StoreError(f"the store {path} is a folder, not a file: point --db (or "
                         f"PSABRIDGE_DB) at a file, such as {path / 'psabridge.db'}")
    if path.exists() and not path.is_file():  # a device (/dev/null), a pipe, a socket
        raise StoreError(f"the store {path} is not a regular file: point --db (or PSABRIDGE_DB) "
                         "at a file psabridge may create and keep")
    folder = next(folder for folder in path.parents if folder.exists())
    if not folder.is_dir():
        raise StoreError(f"--db {path}: its folder {folder} is a file, not a folder")
    if folder != path.parent:
        raise StoreError(f"--db {path}: its folder {path.parent} does not exist; create it "
                         f"(`mkdir -p {path.parent}`) or correct the path")
    # A file that is not a database is left as it is, its permissions included.
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except OSError:
        return  # missing (to be created), or unreadable: opening it says why
    if header and header != SQLITE_HEADER:  # empty is a store not yet written
        raise not_a_database(path)


def not_a_database(path: Path) -> StoreError:
    return StoreError(f"cannot open the store {path}: it is not a SQLite database; if it is "
                      f"your store, it is damaged: {RESTORE_A_BACKUP}")


def create_private(path: Path) -> None:
    """Create the database file readable by its owner only, before SQLite opens it.

    SQLite gives its -wal and -shm files the permissions of the database file.
    """
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return  # another process opening the store created it first, private as well
    except OSError as exc:
        raise StoreError(f"cannot create the store {path}: {exc.strerror.lower()}; create it where "
                         "psabridge can write, and point --db (or PSABRIDGE_DB) there") from exc
    os.close(fd)


def keep_private(path: Path) -> None:
    """Make the store's files readable by their owner only, or refuse to use them.

    psabridge creates them private, but a file restored from a backup, copied, or made by hand
    may have come with looser permissions. A file this process owns is fixed; another's is
    refused with the command that fixes it, as reading it must not look like approving it."""
    refused = []
    for file in store_files(path):
        try:
            info = file.stat()
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if not mode & 0o077 or not stat.S_ISREG(info.st_mode):
            continue  # private already; or not a file of ours at all (refused when opened)
        if info.st_uid == os.geteuid():
            try:
                file.chmod(0o600)
            except OSError:
                pass  # a read-only file system, an immutable file: refused below
            else:
                log.warning("the store was open to other users: made it private (chmod 600)",
                            file=str(file), mode=f"{mode:04o}")
                continue
        refused.append((file, mode))
    if refused:
        files = " ".join(str(file) for file, _ in refused)
        modes = ", ".join(f"{file} has mode {mode:04o}" for file, mode in refused)
        raise StoreError(f"the store is open to other users ({modes}) and holds the connectors' "
                         f"settings: make it private with `chmod 600 {files}` and try again")


def why_read_only(path: Path) -> str | None:
    """Why SQLite could not write the store, or None if it can: it writes the database file
    and, beside it, the -wal and -shm files (which it creates when they do not exist)."""
    folder = path.parent
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
        return "read-only file system"
    if not os.access(path, os.W_OK):  # root too is refused an immutable file (chattr +i)
        return "the file cannot be written; see ls -l and lsattr"
    beside = store_files(path)[1:]
    if not os.access(folder, os.W_OK) and not all(os.access(f, os.W_OK) for f in beside):
        return f"its folder {folder} cannot be written, for the -wal and -shm files"
    return None


def read_only_error(path: Path, why: str) -> StoreReadOnly:
    return StoreReadOnly(f"the store {path} is read-only ({why}): nothing was written; to change "
                         "it, make it writable, or copy it somewhere writable and point --db there")


def file_uri(path: Path, read_only: bool) -> str:
    """The URI SQLite opens the store with.

    SQLite reads a WAL-mode database read-only only if its -wal and -shm files exist or can be
    created; on a read-only file system they cannot, and only `immutable` (no locks, no WAL)
    opens it. That reads the right data when no -wal file holds changes the database file lacks
    (nothing can add them while the file system is read-only)."""
    uri = f"file:{quote(str(path))}"
    if not read_only:
        return uri
    try:
        probe = sqlite3.connect(f"{uri}?mode=ro", uri=True)
        try:
            probe.execute("select count(*) from sqlite_master").fetchone()
        finally:
            probe.close()
    except sqlite3.OperationalError as exc:
        if primary_code(exc) != sqlite3.SQLITE_CANTOPEN or store_files(path)[1].exists():
            raise
        return f"{uri}?immutable=1"
    return f"{uri}?mode=ro"


def primary_code(exc: sqlite3.Error) -> int:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF  # absent when raised by Python, not SQLite


def explain(exc: sqlite3.DatabaseError, path: Path, read_only: str | None) -> StoreError | None:
    """The error an admin reads for an SQLite error with a cause they can act on, or None for
    the others (busy locks, constraint violations, mistakes in SQL), which the store handles."""
    code = primary_code(exc)
    if code == sqlite3.SQLITE_FULL:
        return StoreError(f"the disk holding {path} is full: free space and retry; nothing was "
                          "written")
    if code == sqlite3.SQLITE_READONLY:
        return read_only_error(path, read_only or why_read_only(path) or str(exc))
    if code == sqlite3.SQLITE_NOTADB:
        return not_a_database(path)
    if code == sqlite3.SQLITE_CORRUPT:
        if problem := integrity_problem(path):
            return StoreError(f"the store {path} is damaged (SQLite's check says: {problem}): "
                              f"{RESTORE_A_BACKUP}")
        return StoreError(f"cannot read the store {path}: {exc}, yet SQLite's check finds no "
                          "damage in it; retry, and if it happens again, copy the store aside "
                          "(with its -wal file) before anything else")
    if code == sqlite3.SQLITE_IOERR:
        return StoreError(f"cannot read or write the store {path}: input/output error ({exc}); "
                          "check the disk and its messages (dmesg), then retry")
    if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        return StoreError(f"cannot open the store {path} or the -wal and -shm files beside it "
                          f"({exc}): check the permissions of the files and their folder")
    return None


def integrity_problem(path: Path) -> str | None:
    """The first problem SQLite's quick check finds in the store, or None if it finds none.

    Only this makes psabridge call a store damaged: an error that merely looks like damage
    must not send an admin to throw away a good store."""
    try:
        check = sqlite3.connect(f"{file_uri(path, read_only=False)}?mode=ro", uri=True)
        try:
            rows = check.execute("PRAGMA quick_check(1)").fetchall()
        finally:
            check.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    if rows == [("ok",)]:
        return None
    # The first problem, on one line: "*** in database main ***\nOn tree page 2 cell 4: ..."
    return " ".join(line for line in str(rows[0][0]).splitlines() if not line.startswith("***"))


class ExplainingConnection(sqlite3.Connection):
    """A connection whose errors with a cause the admin can act on (disk full, read-only,
    damaged) come out as a StoreError saying so, wherever in the store they happen."""

    path: Path
    read_only: str | None = None

    # try/except in each method rather than a shared context manager: every statement of
    # every alert passes here.
    def execute(self, *args):
        try:
            return super().execute(*args)
        except sqlite3.DatabaseError as exc:
            self._explain(exc)
            raise

    def executescript(self, script):
        try:
            return super().executescript(script)
        except sqlite3.DatabaseError as exc:
            self._explain(exc)
            raise

    def _explain(self, exc: sqlite3.DatabaseError) -> None:
        """Raise the StoreError that explains `exc`, if there is one."""
        if (error := explain(exc, self.path, self.read_only)) is not None:
            raise error from exc
