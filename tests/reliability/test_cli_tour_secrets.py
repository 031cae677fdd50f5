"""The README's CLI tour, run as an admin runs it, shows no secret anywhere a person or `ps` sees.

Every documented command runs as its own process (`python -m psabridge -vv --log-format F`),
against both simulators started with `psabridge simulate`: ConnectWise configured with the
command its simulator prints (the private key in a file), Datto RMM with its secret in the
environment, and `serve` with a webhook secret holding `+ / = &`, in the environment, receiving a
ConnectWise callback and Datto-style webhooks. Scanned for the two connectors' secrets and the
webhook secret, raw, percent-encoded (once and twice) and base64: the command line of every child
process as `ps` shows it (`/proc/PID/cmdline`, read while it runs), and everything each one wrote
to stdout and stderr. The store file itself is scanned elsewhere.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import attrs
import httpx
import pytest

from psabridge.core import ticketing
from psabridge.core.models import Connection
from psabridge.core.plugins import Connector, make_plugin_manager
from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator
from psabridge.plugins.rmm_datto.simulator import DattoSimulator

WEBHOOK_SECRET = "tour+webhook/secret=with&odd-0123"
SEED, COMPANIES = "0", "4"
# No PSABRIDGE_* of the developer's own: only what each step gives.
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PSABRIDGE_")} | {
    "PSABRIDGE_LOAD_PLUGINS": "connectwise,datto,sqlite"}


def written_forms(secret: str) -> dict[str, str]:
    """The forms a leak could take: as is, percent-encoded (upper and lower-case hex, once and
    twice), and base64."""
    once = quote(secret, safe="")
    b64 = base64.b64encode(secret.encode()).decode()
    urlsafe = base64.urlsafe_b64encode(secret.encode()).decode()
    return {"raw": secret, "quote": once, "quote keeping /": quote(secret),
            "quote_plus": quote_plus(secret), "lower-case hex": once.lower(),
            "encoded twice": quote(once, safe=""), "encoded twice, plus": quote_plus(once),
            "base64": b64.rstrip("="), "url-safe base64": urlsafe.rstrip("=")}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cmdline(process: subprocess.Popen) -> str:
    """The command line `ps` shows for `process`, once it runs psabridge (between fork and exec
    it is still ours); empty if it ended first."""
    deadline = time.monotonic() + 10
    while True:
        try:
            shown = Path(f"/proc/{process.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError):
            shown = ""
        if "-m psabridge" in shown or process.poll() is not None or time.monotonic() > deadline:
            return shown
        time.sleep(0.005)


@attrs.define
class Running:
    """A long-running command (`simulate`, `serve`, `sync --watch`), its output in a file."""

    process: subprocess.Popen
    output: Path

    def text(self) -> str:
        return self.output.read_text()

    def wait_for(self, words: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while words not in self.text():
            assert self.process.poll() is None, self.text()
            assert time.monotonic() < deadline, f"no {words!r} in: {self.text()}"
            time.sleep(0.05)
        return self.text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=15)


@attrs.define
class Tour:
    """Runs psabridge commands as the admin would, and keeps what `ps` and the admin saw."""

    folder: Path
    log_format: str
    seen: list[tuple[str, str]] = attrs.field(factory=list)  # (what, text)
    running: list[Running] = attrs.field(factory=list)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "psabridge", "-vv", "--log-format", self.log_format,
                "--db", str(self.folder / "psabridge.db"), *args]

    def run(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        process = subprocess.Popen(self.argv(*args), env=BASE_ENV | (env or {}), text=True,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE,
                                   # SIGINT as a terminal gives it (a background shell ignores it)
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.seen.append((f"ps: {args[:2]}", cmdline(process)))  # read while python starts up
        out, err = process.communicate(timeout=120)
        self.seen += [(f"argv: {args[:2]}", shlex.join(process.args)),
                      (f"stdout: {args[:2]}", out), (f"stderr: {args[:2]}", err)]
        assert process.returncode == 0, f"{shlex.join(args)}:\n{out}\n{err}"
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def start(self, *args: str, env: dict | None = None) -> Running:
        output = self.folder / f"{len(self.running)}-{args[0]}.log"
        with output.open("w") as file:  # a file, not a pipe: a full pipe would block the server
            process = subprocess.Popen(self.argv(*args), env=BASE_ENV | (env or {}),
                                       stdin=subprocess.DEVNULL, stdout=file, stderr=subprocess.STDOUT,
                                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        running = Running(process, output)
        self.running.append(running)
        return running

    def look_at(self, running: Running) -> None:
        """What `ps` shows for a running command, read while it runs."""
        assert running.process.poll() is None
        self.seen.append((f"ps: {running.process.args[8:10]}", cmdline(running.process)))
        self.seen.append((f"argv: {running.process.args[8:10]}", shlex.join(running.process.args)))

    def finish(self) -> None:
        for running in reversed(self.running):
            running.stop()
            self.seen.append((f"output: {running.process.args[8:10]}", running.text()))


def printed_configure_command(text: str, plugin: str) -> list[str]:
    """The `psabridge configure PLUGIN ...` line a simulator printed, without `psabridge`."""
    (line,) = [line for line in text.splitlines() if f"psabridge configure {plugin}" in line]
    return shlex.split(line)[1:]


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def choices() -> dict[str, str]:
    """What the admin picks from the lists the tour's commands print: a company and a site with
    devices (mapped by hand, as the tour's `companies map ID=SITE_UID` does), and the board,
    statuses, priority and source for tickets. Read from in-process twins of the served
    simulators: seeded, they hold the same data."""
    cw = ConnectWiseSimulator(seed=int(SEED), companies=int(COMPANIES))
    datto = DattoSimulator(seed=int(SEED), companies=int(COMPANIES))
    devices = collections.Counter(d["siteUid"] for d in datto.devices.values() if not d["deleted"])
    site = next(uid for uid, _ in devices.most_common() if not datto.sites[uid].get("system"))
    connection = Connection("connectwise", cw.settings(), transport=cw.transport())
    options = Connector(make_plugin_manager(), connection).call("psa_ticket_options")
    workable = ticketing.workable_attributes(options)
    return {"company": str(min(cw.db.companies)), "site": site,
            "board": workable.routing["board"], "open": workable.open_status_id,
            "closed": workable.closed_status_id,
            "priority": options.priorities[0].id, "source": options.sources[0].id}


# About a minute each: JSON, what a service writes, runs by default; console with `pytest -m slow`.
@pytest.mark.parametrize("log_format", [pytest.param("console", marks=pytest.mark.slow), "json"])
def test_the_readme_tour_shows_no_secret_to_ps_or_in_any_output(tmp_path, log_format):
    tour = Tour(tmp_path, log_format)
    try:
        secrets = walk_the_tour(tour)
    finally:
        tour.finish()

    shown_to_ps = [text for what, text in tour.seen if what.startswith("ps:")]
    assert len(shown_to_ps) >= 40 and all("-m psabridge" in text for text in shown_to_ps)
    assert any("webhook_handled" in text for _, text in tour.seen)  # -vv really logged
    leaks = [f"{name} ({form}) in {what}" for name, secret in secrets.items()
             for form, written in written_forms(secret).items()
             for what, text in tour.seen if written in text]
    assert leaks == []


def walk_the_tour(tour: Tour) -> dict[str, str]:
    """The README's CLI tour, in order; returns the secrets it used."""
    # The simulators, and the configure commands they print.
    cw_sim = tour.start("simulate", "connectwise", "--port", "0", "--seed", SEED,
                        "--companies", COMPANIES)
    datto_sim = tour.start("simulate", "datto", "--port", "0", "--seed", SEED, "--sites", COMPANIES)
    cw_configure = printed_configure_command(cw_sim.wait_for("Press Ctrl-C"), "connectwise")
    datto_configure = printed_configure_command(datto_sim.wait_for("until the simulator stops"),
                                                "datto")
    tour.look_at(cw_sim)
    tour.look_at(datto_sim)
    private_key = Path(option(cw_configure, "--private-key-file")).read_text().removesuffix("\n")
    secret_file = option(datto_configure, "--api-secret-file")
    datto_secret = Path(secret_file).read_text().removesuffix("\n")
    secrets = {"ConnectWise private key": private_key, "Datto RMM API secret": datto_secret,
               "webhook secret": WEBHOOK_SECRET}

    tour.run("plugins", "list")
    tour.run("plugins", "list", "--json")
    tour.run(*cw_configure)  # as printed: --private-key-file PATH
    datto_by_env = [w for w in datto_configure if w not in ("--api-secret-file", secret_file)]
    tour.run(*datto_by_env, env={"PSABRIDGE_DATTO_API_SECRET": datto_secret})
    tour.run("plugins", "enable", "connectwise")
    tour.run("plugins", "enable", "datto")

    ids = choices()
    tour.run("companies", "load")
    tour.run("companies", "map", "--suggested", "--dry-run")
    tour.run("companies", "map", f"{ids['company']}={ids['site']}")
    tour.run("companies", "map", "--suggested")
    tour.run("device-types", "list")
    tour.run("device-types", "map", "--suggested")
    tour.run("devices", "load")
    tour.run("devices", "map", "--all", "--dry-run")
    tour.run("devices", "map", "--all")
    mapped = json.loads(tour.run("devices", "load", "--mapping", "mapped", "--json").stdout)
    device = mapped[0]["device_uid"]
    tour.run("devices", "auto", "on")
    tour.run("devices", "map-now")
    tour.run("warnings", "list")

    for origin in ("alert", "manual"):
        tour.run("ticketing", "set", "--origin", origin, "--board", ids["board"], "--open-status",
                 ids["open"], "--closed-status", ids["closed"], "--priority",
                 f"Critical={ids['priority']}", "--source", ids["source"], "--repeat-minutes", "60")
    tour.run("ticketing", "show")
    tour.run("ticketing", "monitor", "eventlog_ctx:code=7036", "--no-tickets")
    tour.run("ticketing", "enable")

    # serve, with its callback registered in ConnectWise; then events of both kinds.
    port = free_port()
    hooks = f"http://127.0.0.1:{port}"
    serve = tour.start("serve", "--port", str(port), "--public-url", hooks,
                       env={"PSABRIDGE_WEBHOOK_SECRET": WEBHOOK_SECRET})
    serve.wait_for("Listening on")
    tour.look_at(serve)
    tour.run("tickets", "create", device, "Printer out of toner")  # ConnectWise calls back
    serve.wait_for("webhook_handled")
    tour.run("sync", "--once")
    alerts = json.loads(tour.run("tickets", "list", "--json").stdout)
    alert = alerts[0]["alert_uid"]
    with httpx.Client(base_url=hooks, timeout=30) as http:
        by_header = http.post("/hooks/rmm", json={"alertUid": alert},
                              headers={"X-Psabridge-Token": WEBHOOK_SECRET})
        by_bearer = http.post("/hooks/rmm", json={"alertUid": alert, "event": "raised"},
                              headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"})
        by_url = http.post(f"/hooks/rmm?token={quote(WEBHOOK_SECRET, safe='')}",
                           json={"alertUid": alert})
        wrong = http.post("/hooks/rmm?token=nope", json={"alertUid": alert})
    assert by_header.status_code in (200, 202) and by_bearer.status_code in (200, 202, 409)
    assert by_url.status_code in (200, 202, 409) and wrong.status_code == 401

    tour.run("sync", "--dry-run")
    watch = tour.start("sync", "--watch", "--interval", "1")
    watch.wait_for("pass_finished", timeout=60)
    tour.look_at(watch)
    tour.run("tickets", "list")
    tour.run("warnings", "list")
    tour.run("warnings", "clear")
    tour.run("devices", "unmap", device)
    tour.run("devices", "auto", "off")
    tour.run("ticketing", "disable")
    watch.stop()
    serve.stop()
    tour.run("plugins", "disable", "connectwise")
    tour.run("plugins", "remove", "connectwise", "--yes")
    return secrets
