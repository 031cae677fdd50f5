"""Real `psabridge` processes for the reliability tests: started, killed, started again.

A `Process` is one psabridge command line run as a child (`python -m psabridge ...`, or through
`skewed.py` on a clock that is off), with its stdout and stderr appended to files that outlive
restarts, so that a failing test can show what each process said.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import attrs
import httpx

PLUGINS = "connectwise,datto,sqlite"
SKEWED = Path(__file__).with_name("skewed.py")
T = TypeVar("T")


def psabridge_env(db: Path, **settings: str) -> dict[str, str]:
    """The environment a psabridge process on the store `db` runs with (plus `settings`)."""
    env = {**os.environ, "PSABRIDGE_DB": str(db), "PSABRIDGE_LOAD_PLUGINS": PLUGINS,
           "PYTHONUNBUFFERED": "1", **settings}
    env.pop("PYTHONWARNINGS", None)  # pytest's filters would turn the children's warnings into noise
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], T], timeout: float, what: str, every: float = 0.2) -> T:
    """Poll `condition` until it returns something true; fail saying `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(every)


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no output)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:]) or "(empty)"


@attrs.define
class Process:
    """One psabridge command line as a child process, restartable; output kept in `log_dir`."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_dir: Path
    clock_offset: float = 0.0  # seconds its wall clock is ahead (negative: behind)
    popen: subprocess.Popen | None = None
    starts: int = 0
    kills: int = 0

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / f"{self.name}.out"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"{self.name}.err"

    def command(self) -> list[str]:
        if self.clock_offset:
            return [sys.executable, str(SKEWED), str(self.clock_offset), *self.args]
        return [sys.executable, "-m", "psabridge", *self.args]

    def start(self) -> Process:
        self.starts += 1
        banner = f"--- start {self.starts} at {time.strftime('%H:%M:%S')}: {' '.join(self.args)}\n"
        with self.stdout_path.open("a") as out, self.stderr_path.open("a") as err:
            out.write(banner)
            err.write(banner)
            out.flush()
            err.flush()
            self.popen = subprocess.Popen(self.command(), env=self.env, stdout=out, stderr=err,
                                          stdin=subprocess.DEVNULL)
        return self

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def exit_code(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def kill(self) -> None:
        """kill -9: no cleanup, no goodbye; whatever it held stays held."""
        if self.running():
            self.popen.send_signal(signal.SIGKILL)
            self.kills += 1
        if self.popen is not None:
            self.popen.wait()

    def stop(self, grace: float = 5.0) -> None:
        """SIGINT (what Ctrl-C sends a service), then SIGKILL if it does not go within `grace`."""
        if not self.running():
            return
        self.popen.send_signal(signal.SIGINT)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def run(self, timeout: float) -> tuple[int, str]:
        """Start, wait for the end (kill -9 after `timeout`); the exit code and what this run
        printed on stdout."""
        self.start()
        try:
            code = self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.popen.returncode
        printed = self.stdout_path.read_text(errors="replace").rpartition("--- start ")[2]
        return code, printed.partition("\n")[2]

    def tails(self, lines: int = 40) -> str:
        return (f"==== {self.name} stdout ({self.stdout_path})\n{tail(self.stdout_path, lines)}\n"
                f"==== {self.name} stderr ({self.stderr_path})\n{tail(self.stderr_path, lines)}")


def wait_until_serving(process: Process, url: str, timeout: float = 20.0) -> None:
    """Until `serve` answers GET /health; fail at once, with its output, if it exited instead."""

    def healthy() -> bool:
        if not process.running():
            raise AssertionError(f"{process.name} exited with {process.exit_code()} before "
                                 f"serving:\n{process.tails()}")
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        return False

    wait_until(healthy, timeout, f"{process.name} answering {url}/health")


def pass_reports(watcher: Process) -> list[dict]:
    """The pass reports a `sync --json` process printed, one JSON object a line, oldest first."""
    reports = []
    if watcher.stdout_path.exists():
        for line in watcher.stdout_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                if isinstance(report := json.loads(line), dict):
                    reports.append(report)
    return reports


# What a pass report counts that is work done (alerts_skipped is a decision, not a change).
WORK = ("mapping_changes", "tickets_created", "tickets_joined", "tickets_closed",
        "alerts_resolved", "recovered")


def quiet_report(report: dict) -> bool:
    """A pass that did nothing and failed nothing: as `world.quiet`, for a printed report."""
    return not report.get("errors") and not any(report.get(k) for k in WORK)
