"""A throwaway PostgreSQL server for tests, started from the machine's own server binaries.

    with throwaway_postgres() as url:      # postgresql://psabridge:...@127.0.0.1:PORT/postgres
        with fresh_database(url) as db_url:
            ...

The server runs from a temporary folder on a free loopback port, with durability turned off
(a test's data is worth nothing after it), and is stopped and deleted at the end. PostgreSQL
refuses to run as root, so as root (CI) it runs as an unprivileged user: `postgres` if the
package created it, else `nobody`.

The binaries are Debian's (`/usr/lib/postgresql/*/bin`, from the `postgresql` package) or
whichever `initdb` and `pg_ctl` are on PATH.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

USER = "psabridge"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, or the server would not start."""


def server_binaries() -> Path:
    """The folder holding `initdb`, `pg_ctl` and `postgres`: the newest Debian install, or PATH."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda path: int(Path(path).parent.name)
                         if Path(path).parent.name.isdigit() else 0, reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(os.path.realpath(initdb)).parent
    raise PostgresUnavailable(
        "no PostgreSQL server binaries found (initdb and pg_ctl, in /usr/lib/postgresql/*/bin or "
        "on PATH): install Debian's `postgresql` package (apt-get install postgresql), or set "
        "PSABRIDGE_SKIP_POSTGRES=1 to skip the tests that need it")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_user() -> str | None:
    """The user the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise PostgresUnavailable("running as root, and neither a `postgres` nor a `nobody` user "
                              "exists to run the PostgreSQL server as (it refuses root)")


def _run(command: list[str], user: str | None, what: str) -> None:
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, cwd="/", check=False)
    if done.returncode != 0:
        raise PostgresUnavailable(f"{what} failed (exit {done.returncode}): "
                                  f"{(done.stderr or done.stdout).strip()[-2000:]}")


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a private PostgreSQL server; yield a URL to its `postgres` database as a superuser
    with a password; stop the server and delete its files on leaving."""
    binaries = server_binaries()
    user = _server_user()
    password = secrets.token_urlsafe(16)
    # Not under pytest's tmp_path: its folders are private to root, and the server's user must
    # be able to reach its own data directory.
    base = Path(tempfile.mkdtemp(prefix="psabridge-pg-"))
    data, sockets = base / "data", base / "sockets"
    try:
        sockets.mkdir()
        password_file = base / "password"
        password_file.write_text(password)
        if user is not None:
            entry = pwd.getpwnam(user)
            for path in (base, sockets, password_file):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        _run([str(binaries / "initdb"), "-D", str(data), "-U", USER, "--auth=scram-sha-256",
              f"--pwfile={password_file}", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"],
             user, "initdb")
        password_file.unlink()
        port = _free_port()
        options = (f"-c listen_addresses=127.0.0.1 -c port={port} "
                   f"-c unix_socket_directories={sockets} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        _run([str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l",
              str(base / "server.log"), "-w", "-t", "60", "start"], user, "starting PostgreSQL")
        try:
            yield f"postgresql://{USER}:{password}@127.0.0.1:{port}/postgres"
        finally:
            _run([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                 user, "stopping PostgreSQL")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def database_url(url: str, database: str) -> str:
    """`url` pointing at another database of the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def create_database(url: str, name: str | None = None) -> str:
    """Create an empty database on the server of `url`; its URL."""
    import psycopg

    name = name or f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return database_url(url, name)


def drop_database(url: str) -> None:
    """Drop the database `url` names, ending any connection still open to it."""
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(database_url(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@contextlib.contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """A new, empty database on the server of `url` for the block, dropped afterwards."""
    db_url = create_database(url)
    try:
        yield db_url
    finally:
        drop_database(db_url)
