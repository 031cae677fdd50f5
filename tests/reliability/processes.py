"""Real psabridge processes for black-box tests, and what the simulators recorded of them.

The test process serves both simulators on loopback (`world.world(..., loopback=True)`) and
owns the store file; every psabridge here is a separate process on that file, as on a customer's
host: the command line (`python -m psabridge ...`), optionally with its host clock off
(`skewed.py`), and `psabridge serve` receiving webhooks on a free loopback port.

Outcomes are read from the simulators' own records (tickets by marker, configurations by the
device link, sites by name), not from what psabridge says it did.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import httpx

from psabridge.plugins.connectwise.convert import stored_marker
from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator
from psabridge.plugins.rmm_datto.simulator import DattoSimulator

PLUGINS = "connectwise,datto,sqlite"
SKEWED = Path(__file__).with_name("skewed.py")
WEBHOOK_SECRET = "reliability-webhook-secret-0123456789"

# How a command says it stepped aside for another one on the same store ("another psabridge
# sync is running on this store"); the wording of a future mapping lock is not known yet.
BUSY = re.compile(r"is running|already running|in progress|busy", re.IGNORECASE)


# -- waiting -----------------------------------------------------------------------------------


def eventually(condition: Callable[[], object], timeout: float, interval: float = 0.02) -> bool:
    """Poll `condition` until it holds (True) or `timeout` s have passed (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail saying `what` was awaited after `timeout` s."""
    if not eventually(condition, timeout):
        raise AssertionError(f"waited {timeout:g} s for {what}")


def pause_until(moment: float) -> None:
    """Let time pass until `moment` (time.monotonic()): for a test whose point is that a
    deadline (a claim's or a lock's TTL) went by, not for waiting on an event."""
    time.sleep(max(0.0, moment - time.monotonic()))


# -- the command line --------------------------------------------------------------------------


def psabridge_env(db: Path, lock_ttl: float, claim_ttl: float, **extra: str) -> dict[str, str]:
    """The environment of a psabridge process on the store `db`: its plugins loaded by name,
    the sync lock and alert claims expiring after seconds instead of a minute, and an unanswered
    write waited out for as long as a claim instead of two minutes."""
    env = {**os.environ, "PSABRIDGE_DB": str(db), "PSABRIDGE_LOAD_PLUGINS": PLUGINS,
           "PSABRIDGE_LOCK_TTL": f"{lock_ttl:g}", "PSABRIDGE_CLAIM_TTL": f"{claim_ttl:g}",
           "PSABRIDGE_IN_FLIGHT_WINDOW": f"{claim_ttl:g}",
           "PSABRIDGE_WEBHOOK_SECRET": WEBHOOK_SECRET, **extra}
    # A warnings filter meant for the test run (e.g. "error") would make the child's own
    # deprecation warnings fatal: the child runs as it would on a customer's host.
    env.pop("PYTHONWARNINGS", None)
    return env


def command(args: tuple[str, ...], skew: float | None = None) -> list[str]:
    """`python -m psabridge ARGS`, or the same under skewed.py with the clock `skew` s off."""
    if skew is None:
        return [sys.executable, "-m", "psabridge", *args]
    return [sys.executable, str(SKEWED), f"{skew:g}", *args]


@attrs.frozen
class Finished:
    """A psabridge command that ended: how, and what it printed."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def refused_as_busy(self) -> bool:
        """It exited non-zero saying another command was running on the store."""
        return self.returncode != 0 and BUSY.search(self.stderr) is not None

    def report(self) -> dict | None:
        """The JSON report a `--json` command printed last (`sync --json`), if any."""
        lines = self.stdout.strip().splitlines()
        try:
            return json.loads(lines[-1]) if lines else None
        except ValueError:
            return None

    def check(self) -> Finished:
        assert self.ok, f"psabridge failed: {self}"
        return self

    def __str__(self) -> str:
        return (f"`psabridge {' '.join(self.args)}` exit {self.returncode} after "
                f"{self.seconds:.1f} s; stdout: {self.stdout.strip()[-600:]!r}; "
                f"stderr: {self.stderr.strip()[-600:]!r}")


@attrs.define
class Running:
    """A psabridge command started and not waited for yet (to run beside another)."""

    args: tuple[str, ...]
    process: subprocess.Popen
    started: float

    def finish(self, timeout: float = 60.0) -> Finished:
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
            raise AssertionError(f"`psabridge {' '.join(self.args)}` still running after "
                                 f"{timeout:g} s; stderr: {err[-600:]!r}") from None
        return Finished(self.args, self.process.returncode, out, err,
                        time.monotonic() - self.started)

    @property
    def running(self) -> bool:
        return self.process.poll() is None


def start(env: dict[str, str], *args: str, skew: float | None = None) -> Running:
    process = subprocess.Popen(command(args, skew), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    return Running(args, process, time.monotonic())


def run(env: dict[str, str], *args: str, skew: float | None = None,
        timeout: float = 60.0) -> Finished:
    return start(env, *args, skew=skew).finish(timeout)


# -- serve -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@attrs.define
class Server:
    """A running `psabridge serve`, and a client that posts webhooks to it with the token."""

    url: str
    process: subprocess.Popen
    log: Path
    http: httpx.Client = attrs.field(factory=lambda: httpx.Client(timeout=60.0))

    def post_rmm(self, body: dict | bytes) -> httpx.Response:
        """An RMM alert webhook (Datto: a template such as {"alertUid": "[alert_uid]"})."""
        return self._post("/hooks/rmm", body)

    def post_psa(self, body: dict | bytes) -> httpx.Response:
        """A PSA ticket callback (ConnectWise: {"Type": "ticket", "ID": ..., ...})."""
        return self._post("/hooks/psa", body)

    def _post(self, path: str, body: dict | bytes) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post(f"{self.url}{path}", params={"token": WEBHOOK_SECRET},
                              content=content, headers={"Content-Type": "application/json"})

    def healthy(self) -> bool:
        try:
            return self.http.get(f"{self.url}/health", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def serving(env: dict[str, str], log: Path, skew: float | None = None,
            ready_within: float = 20.0) -> Iterator[Server]:
    """`psabridge serve` on a free loopback port, ready (GET /health answers) when yielded.

    Its output goes to `log` (a pipe nobody reads could fill up and stall it)."""
    port = free_port()
    with log.open("w") as output:
        process = subprocess.Popen(command(("serve", "--host", "127.0.0.1", "--port", str(port)),
                                           skew), env=env, stdout=output, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until(lambda: server.healthy() or process.poll() is not None, ready_within,
                   "psabridge serve to answer /health")
        assert process.poll() is None, f"psabridge serve exited: {server.output()}"
        yield server
    finally:
        server.stop()


# -- what the simulators hold ------------------------------------------------------------------


def alert_marker(alert_uid: str, rmm: str = "datto") -> str:
    """The marker psabridge puts on an alert's ticket, as ConnectWise stores it (externalXRef)."""
    return stored_marker(f"psabridge:{rmm}:{alert_uid}")


def tickets_for_alert(cw: ConnectWiseSimulator, alert_uid: str) -> list[dict]:
    """ConnectWise tickets carrying this alert's marker: exactly one is exactly once."""
    marker = alert_marker(alert_uid)
    with cw.db.lock:
        return [dict(t) for t in cw.db.tickets.values() if t.get("externalXRef") == marker]


def notes_on(cw: ConnectWiseSimulator, ticket_id: int) -> list[str]:
    with cw.db.lock:
        return [n["text"] for n in cw.db.ticket_notes.values() if n["ticketId"] == ticket_id]


def device_link(datto: DattoSimulator, datto_url: str, device_uid: str) -> str:
    """The device's page in the Datto portal: what a configuration's Manage Device link holds."""
    return f"{datto_url.rstrip('/')}/portal/device/{datto.devices[device_uid]['id']}"


def configurations_linking(cw: ConnectWiseSimulator, link: str) -> list[dict]:
    with cw.db.lock:
        return [dict(c) for c in cw.db.configurations.values() if c.get("managementLink") == link]


def sites_named(datto: DattoSimulator, name: str) -> list[dict]:
    return [site for site in list(datto.sites.values()) if site["name"] == name]
