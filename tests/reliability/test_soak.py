"""Soak: the whole integration for minutes, every process at once, under faults and kill -9.

On one SQLite store, as real processes:

* `sync --watch --interval 2`, on a host whose clock is ten minutes ahead (`skewed.py`);
* two `serve`, receiving webhooks;
* an admin typing mapping commands in a loop: map every device, map the companies kept for
  later to new sites, unmap a device and map it again, map now.

The test process is the rest of the world: both simulators on loopback, with 10 % 5xx, 5 % 429
with a Retry-After of 1 to 90 s and 2 % dropped connections; Datto raising alerts and posting
their webhooks (to either serve, sometimes twice, sometimes never: polling must catch those);
alerts resolved in Datto; tickets closed by a technician in ConnectWise; new devices. Every few
seconds one of the psabridge processes is killed with SIGKILL and started again.

Then the kills and the faults stop; the processes get time to settle, are stopped, and
`sync --once` runs until a pass has nothing left to do. What must hold is what
`world.check_invariants` asserts: one ticket per alert, one configuration per device, one site
per new company, the round trip done both ways, the journal accounting for every remote write
the simulators processed; and each company kept for later has its own new site.

Every choice is drawn from seeded generators (PSABRIDGE_SOAK_SEED), one per kind of chore, so
a chore's choices do not depend on how the chores interleave; the timing is real, so two runs
still interleave differently. PSABRIDGE_SOAK_SECONDS sets how long the chaos lasts (default
240). The processes' output is kept under the test's tmp_path; on failure, its tails are printed.
"""

from __future__ import annotations

import collections
import inspect
import json
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from psabridge.core import webhooks
from tests.reliability.soak_processes import (
    Process,
    free_port,
    pass_reports,
    psabridge_env,
    quiet_report,
    tail,
    wait_until,
    wait_until_serving,
)
from tests.reliability.world import (
    World,
    _marker,
    check_invariants,
    converge,
    raise_alerts,
    set_up,
    settled,
    technician_closes,
    world,
)

SEED = int(os.environ.get("PSABRIDGE_SOAK_SEED") or 2026)
CHAOS_SECONDS = float(os.environ.get("PSABRIDGE_SOAK_SECONDS") or 240)
COMPANIES = 10
NEW_COMPANIES = 2  # added to ConnectWise, kept unmapped, for the admin to map to new sites
SECRET = "soak-webhook-secret-0123456789"
WATCHER_CLOCK_AHEAD = 600.0  # seconds
# What a killed process held (the sync lock, an alert's claim) frees after this many seconds.
# A process that is alive must keep what it holds however long its retries take.
EXPIRY = "10"
# A killed process\'s unanswered write keeps its alert taken this long (the product: 2 min).
IN_FLIGHT_WINDOW = "3"
SOAK_FAULTS = dict(error_rate=0.10, throttle_rate=0.05, retry_after=1, retry_after_max=90,
                   drop_rate=0.02)
NO_FAULTS = dict(error_rate=0.0, throttle_rate=0.0, drop_rate=0.0)
# Once the faults stop, a process may still be waiting out a Retry-After drawn before (<= 90 s).
SETTLE_SECONDS = 150
FINAL_SYNC_SECONDS = 90
# How many remote writes a process may have in flight when it dies: one for a sync or an
# admin command, one per worker thread for serve.
SERVE_THREADS = inspect.signature(webhooks.listen).parameters["threads"].default

# One webhook event, serialised three ways (a sender's retry, or a second sender).
BODY_FORMS = (
    lambda body: json.dumps(body),
    lambda body: json.dumps(body, separators=(",", ":")),
    lambda body: json.dumps(body, indent=1),
)


class Chore:
    """Something the world does again and again during the chaos, at seeded random intervals,
    with its own random generator."""

    def __init__(self, name: str, every: tuple[float, float], act: Callable[[random.Random], None]):
        self.name = name
        self.rng = random.Random(f"{SEED}:{name}")
        self.every = every
        self.act = act
        self.due = time.monotonic() + self.rng.uniform(*every)

    def run_if_due(self, now: float) -> None:
        if now >= self.due:
            self.act(self.rng)
            self.due = now + self.rng.uniform(*self.every)


class WebhookSender:
    """Datto RMM and ConnectWise posting webhooks: in the background, giving up on an answer
    that does not come within 15 s, as real senders do."""

    def __init__(self):
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="webhook")
        self._lock = threading.Lock()
        self.outcomes: collections.Counter[str] = collections.Counter()

    def post(self, url: str, body: str) -> None:
        self._pool.submit(self._post, url, body)

    def _post(self, url: str, body: str) -> None:
        try:
            answer = httpx.post(url, content=body, timeout=15,
                                headers={"Content-Type": "application/json"})
            outcome = str(answer.status_code)
        except httpx.ConnectError:
            outcome = "refused (serve down)"
        except httpx.TimeoutException:
            outcome = "no answer in 15 s"
        except httpx.TransportError as exc:
            outcome = f"cut off ({type(exc).__name__})"
        with self._lock:
            self.outcomes[outcome] += 1

    def close(self, wait: bool = True) -> None:
        """Wait for the deliveries under way; or, `wait=False`, drop those not yet sent."""
        self._pool.shutdown(wait=wait, cancel_futures=not wait)


class Admin(threading.Thread):
    """The admin at a terminal: mapping commands one after another until told to stop."""

    def __init__(self, env: dict, log_dir: Path, new_companies: list[str], devices: list[str]):
        super().__init__(name="admin", daemon=True)
        self.env, self.log_dir = env, log_dir
        self.new_companies, self.devices = new_companies, devices
        self.rng = random.Random(f"{SEED}:admin")
        self.stopping = threading.Event()
        self.current: Process | None = None
        self.exits: collections.Counter[str] = collections.Counter()
        self.kills = 0  # commands it killed itself: timed out, or in hand when told to stop

    def cycle(self) -> list[list[str]]:
        device = self.rng.choice(self.devices)
        return [
            ["companies", "map", *(f"{company}=new" for company in self.new_companies)],
            ["devices", "map", "--all"],
            ["devices", "unmap", device],
            ["devices", "map", device],
            ["devices", "map-now"],
        ]

    def run(self) -> None:
        while not self.stopping.is_set():
            for args in self.cycle():
                if self.stopping.wait(self.rng.uniform(0.5, 2.0)):
                    return
                self.run_command(args)

    def run_command(self, args: list[str], timeout: float = 150.0) -> int:
        command = Process("admin", ["-v", *args], self.env, self.log_dir)
        self.current = command.start()
        try:
            code = command.wait(timeout)
        except subprocess.TimeoutExpired:
            command.kill()
            self.kills += 1
            code = command.exit_code()
        self.exits[f"{args[0]} {args[1]}: exit {code}"] += 1
        return code

    def stop(self) -> None:
        """Stop now: the command in hand is killed (it may be waiting out a long Retry-After)."""
        self.stopping.set()
        if self.current is not None and self.current.running():
            self.current.kill()
            self.kills += 1
        if self.is_alive():
            self.join(timeout=30)


def add_new_customers(w: World, count: int) -> list[str]:
    """Companies new in ConnectWise, with no site in Datto yet: for `companies map ID=new`."""
    return [str(w.cw.db.add_company(f"Newly Signed Customer {SEED}-{n}")["id"])
            for n in range(1, count + 1)]


class Soak:
    """One soak run: the psabridge processes on the store, and the chores of the world around
    them. `figures` gathers what the run did, for the summary printed at the end."""

    def __init__(self, w: World, log_dir: Path, new_companies: list[str]):
        self.w = w
        self.log_dir = log_dir
        self.new_companies = new_companies
        psa, rmm = w.bridge.pair
        self.mapped_sites = sorted(m.site_uid for m in w.store.company_mappings(psa, rmm))
        self.env = psabridge_env(log_dir / "state.db", PSABRIDGE_WEBHOOK_SECRET=SECRET,
                                 PSABRIDGE_LOCK_TTL=EXPIRY, PSABRIDGE_CLAIM_TTL=EXPIRY,
                                 PSABRIDGE_IN_FLIGHT_WINDOW=IN_FLIGHT_WINDOW)
        self.watcher = Process("watcher", ["-v", "sync", "--watch", "--interval", "2", "--json"],
                               self.env, log_dir, clock_offset=WATCHER_CLOCK_AHEAD)
        self.url_of: dict[str, str] = {}
        self.serves = []
        for name in ("serve-a", "serve-b"):
            port = free_port()
            self.serves.append(Process(name, ["-v", "serve", "--port", str(port)], self.env, log_dir))
            self.url_of[name] = f"http://127.0.0.1:{port}"
        self.services = [self.watcher, *self.serves]
        devices = sorted(m.device_uid for m in w.store.device_mappings(psa, rmm))
        self.admin = Admin(self.env, log_dir, new_companies, devices)
        self.sender = WebhookSender()
        self.kills: collections.Counter[str] = collections.Counter()
        self.stopped: collections.Counter[str] = collections.Counter()
        self.figures: collections.Counter[str] = collections.Counter()

    # -- the chores of the chaos ---------------------------------------------------------------

    def raise_alert(self, rng: random.Random) -> None:
        """Datto raises an alert (now and then a repeat) and posts its webhook: to either
        serve, once, twice, or never."""
        for alert in raise_alerts(self.w, 1, rng, repeats=int(rng.random() < 0.2)):
            deliveries = rng.choices((0, 1, 2), weights=(15, 60, 25))[0]
            self.figures[f"alerts with {deliveries} webhook deliveries"] += 1
            for _ in range(deliveries):
                self.post_rmm_webhook(rng, alert["alertUid"])

    def post_rmm_webhook(self, rng: random.Random, alert_uid: str) -> None:
        serve = rng.choice(self.serves)
        body = rng.choice(BODY_FORMS)({"alertUid": alert_uid})
        self.sender.post(f"{self.url_of[serve.name]}/hooks/rmm?token={SECRET}", body)

    def open_tickets_of_alerts(self) -> dict[str, dict]:
        """Raised alert uid -> its own ticket in ConnectWise (the one carrying its marker), if open."""
        with self.w.cw.db.lock:
            by_marker = {t.get("externalXRef"): dict(t) for t in self.w.cw.db.tickets.values()}
        tickets = {a["alertUid"]: by_marker.get(_marker(a["alertUid"])) for a in self.w.raised}
        return {uid: t for uid, t in tickets.items() if t and not t["closedFlag"]}

    def resolve_in_datto(self, rng: random.Random) -> None:
        """A problem is fixed: Datto resolves an alert whose ticket is open (and may say so)."""
        candidates = sorted(uid for uid in self.open_tickets_of_alerts()
                            if not self.w.datto.alerts[uid]["resolved"])
        if candidates:
            uid = rng.choice(candidates)
            self.w.datto.resolve_alert(uid)
            self.figures["alerts resolved in Datto"] += 1
            if rng.random() < 0.5:
                self.post_rmm_webhook(rng, uid)

    def close_in_connectwise(self, rng: random.Random) -> None:
        """A technician closes a ticket whose alert is open; its callback may reach a serve."""
        candidates = sorted((uid, ticket["id"]) for uid, ticket in self.open_tickets_of_alerts().items()
                            if not self.w.datto.alerts[uid]["resolved"])
        if candidates:
            _, ticket_id = rng.choice(candidates)
            technician_closes(self.w, str(ticket_id))
            if rng.random() < 0.5:
                body = {"MessageId": f"soak-{SEED}-{ticket_id}", "Type": "ticket",
                        "Action": "updated", "ID": ticket_id}
                serve = rng.choice(self.serves)
                self.sender.post(f"{self.url_of[serve.name]}/hooks/psa?token={SECRET}",
                                 json.dumps(body))

    def add_device(self, rng: random.Random) -> None:
        self.figures["devices added"] += 1
        self.w.datto.add_device(rng.choice(self.mapped_sites),
                                f"SOAK-{self.figures['devices added']:03d}",
                                rng.choice(("desktop", "laptop", "server")))

    def kill_one(self, rng: random.Random) -> None:
        """kill -9 a psabridge process; a service is started again at once."""
        command = self.admin.current
        victim = rng.choice([*self.services, *([command] if command and command.running() else [])])
        victim.kill()
        self.kills[victim.name] += 1
        if victim in self.services:
            victim.start()

    # -- the phases ------------------------------------------------------------------------------

    def start(self) -> None:
        for process in self.services:
            process.start()
        for serve in self.serves:
            wait_until_serving(serve, self.url_of[serve.name])
        self.w.inject(**SOAK_FAULTS)
        self.admin.start()

    def chaos(self, seconds: float) -> None:
        chores = [Chore("alerts", (1.0, 2.5), self.raise_alert),
                  Chore("resolves", (4.0, 8.0), self.resolve_in_datto),
                  Chore("closes", (6.0, 12.0), self.close_in_connectwise),
                  Chore("devices", (15.0, 30.0), self.add_device),
                  Chore("kills", (3.0, 8.0), self.kill_one)]
        ends = time.monotonic() + seconds
        while (now := time.monotonic()) < ends:
            for chore in chores:
                chore.run_if_due(now)
            time.sleep(max(0.0, min(chore.due for chore in chores) - time.monotonic()))

    def calm(self) -> None:
        """No more faults, kills or admin loop; the webhooks under way land; the admin's last
        round (map the new customers, map every device) is repeated until it goes through."""
        self.w.inject(**NO_FAULTS)
        self.admin.stop()
        self.sender.close()
        for args in (["companies", "map", *(f"{c}=new" for c in self.new_companies)],
                     ["devices", "map", "--all"]):
            for _ in range(3):
                if self.admin.run_command(args, timeout=45) == 0:
                    break

    def settle(self) -> bool | str:
        """Give the running processes time to finish on their own: every alert decided and a
        quiet pass of the watcher begun after the calm. True, or why not."""
        reports_before = len(pass_reports(self.watcher))
        try:
            wait_until(lambda: settled(self.w) and any(
                quiet_report(r) for r in pass_reports(self.watcher)[reports_before + 1:]),
                SETTLE_SECONDS, "the running processes settling once the faults stopped", every=1.0)
        except AssertionError as exc:
            return str(exc)
        return True

    def stop(self) -> None:
        for process in self.services:
            self.stopped[process.name] += process.running()
            process.stop()

    def interrupted_writes_allowed(self) -> int:
        """Each process killed or stopped may leave as many writes journalled without their
        outcome as it had in flight: one for a sync or an admin command, one per serve thread."""
        in_flight = {self.watcher.name: 1, "admin": 1,
                     **{serve.name: SERVE_THREADS for serve in self.serves}}
        ended = self.kills + self.stopped + collections.Counter(admin=self.admin.kills)
        return sum(in_flight[name] * n for name, n in ended.items())

    def summary(self) -> dict[str, object]:
        w = self.w
        faults = collections.Counter(w.cw.app.faults_served) + collections.Counter(
            w.datto.injector.faults_served)
        return {**self.figures, "alerts raised": len(w.raised),
                "tickets closed by a technician": len(w.closed_by_technician),
                "kills": dict(self.kills + collections.Counter(admin=self.admin.kills)),
                "webhook deliveries (answer)": dict(self.sender.outcomes),
                "admin commands": dict(self.admin.exits), "faults served": dict(faults),
                "requests to the simulators": sum(w.cw.counts.values()) + sum(w.datto.counts.values())}

    def abandon(self) -> None:
        """However the run ended, nothing of it outlives the test."""
        self.admin.stop()
        self.sender.close(wait=False)
        for process in self.services:
            process.kill()

    def print_tails(self) -> None:
        for process in [*self.services, Process("admin", [], self.env, self.log_dir),
                        Process("final-sync", [], self.env, self.log_dir)]:
            print(process.tails(60))


def census(w: World) -> dict[str, object]:
    """What the run left, counted without asserting: `check_invariants` stops at the first
    broken invariant, and the figures should show every one of them."""
    psa, rmm = w.bridge.pair
    tickets = w.cw.db.tickets
    markers = collections.Counter(t.get("externalXRef") for t in tickets.values()
                                  if (t.get("externalXRef") or "").startswith("psabridge"))
    links = collections.Counter(c.get("managementLink") for c in w.cw.db.configurations.values()
                                if c.get("managementLink"))
    site_names = collections.Counter(s["name"] for uid, s in w.datto.sites.items()
                                     if uid not in w.seeded_sites)
    rows = {a["alertUid"]: w.store.alert_ticket(psa, rmm, a["alertUid"]) for a in w.raised}
    resolved = {uid for uid in rows if w.datto.alerts[uid]["resolved"]}
    alerts_on = collections.defaultdict(set)
    for uid, row in rows.items():
        if row is not None and row.ticket_id:
            alerts_on[row.ticket_id].add(uid)
    journal = w.store.journal()
    return {
        "alerts with two tickets": sorted(m.rpartition(":")[2] for m, n in markers.items() if n > 1),
        "devices with two configurations": sum(n > 1 for n in links.values()),
        "companies with two new sites": sorted(name for name, n in site_names.items() if n > 1),
        "alerts without a ticket": {uid: row and row.state for uid, row in rows.items()
                                    if row is None or row.state in ("pending", "skipped")},
        "tickets open, all their alerts resolved": sorted(
            t for t, uids in alerts_on.items() if uids <= resolved
            and not tickets[int(t)]["closedFlag"]),
        "tickets closed by a technician, alerts still open": sorted(
            t for t in w.closed_by_technician if alerts_on[t] - resolved),
        "journal intents without outcome": sum(e.outcome == "intent" for e in journal)
        - sum(e.outcome in ("ok", "failed") for e in journal),
    }


def sync_until_quiet(w: World, env: dict, log_dir: Path) -> tuple[bool, list[dict]]:
    """`sync --once` until a pass does nothing and every alert is decided; a run refused by a
    dead process's lock, or a pass leaving an alert to a dead process's claim, waits it out."""
    final_sync = Process("final-sync", ["-v", "sync", "--json"], env, log_dir)
    runs = []
    deadline = time.monotonic() + FINAL_SYNC_SECONDS
    while time.monotonic() < deadline:
        code, printed = final_sync.run(timeout=FINAL_SYNC_SECONDS)
        lines = [line for line in printed.splitlines() if line.startswith("{")]
        report = json.loads(lines[-1]) if lines else {
            "exit": code, "stderr": tail(final_sync.stderr_path, 3)}
        runs.append(report)
        if code == 0 and quiet_report(report) and settled(w):
            return True, runs
        time.sleep(float(EXPIRY) / 2)  # what a dead process holds frees within EXPIRY
    return False, runs


@pytest.mark.slow
def test_soak_every_process_at_once_under_faults_kills_and_skew(tmp_path):
    started = time.monotonic()
    print(f"soak seed={SEED} chaos={CHAOS_SECONDS:g}s store={tmp_path / 'state.db'}")
    with world(tmp_path / "state.db", SEED, companies=COMPANIES, loopback=True) as w:
        new_companies = add_new_customers(w, NEW_COMPANIES)
        set_up(w, leave_unmapped=new_companies)
        converge(w, max_passes=8)  # devices mapped before the chaos, for the admin to unmap
        soak = Soak(w, tmp_path, new_companies)
        figures: dict[str, object] = {"seed": SEED}
        phases = figures["phases (s since start)"] = {}

        def phase_done(name: str) -> None:
            phases[name] = round(time.monotonic() - started)

        try:
            soak.start()
            soak.chaos(CHAOS_SECONDS)
            phase_done("chaos")
            soak.calm()
            figures["processes went quiet on their own"] = soak.settle()
            phase_done("settle")
            soak.stop()
            converged, final_runs = sync_until_quiet(w, soak.env, tmp_path)
            phase_done("final syncs")
            figures |= soak.summary() | {"final sync runs": len(final_runs),
                                         "final sync converged": converged, "left behind": census(w)}

            figures |= check_invariants(w, interrupted=soak.interrupted_writes_allowed())
            psa, rmm = w.bridge.pair
            site_of = {m.company_id: m for m in w.store.company_mappings(psa, rmm)}
            for company_id in new_companies:
                name = w.cw.db.companies[int(company_id)]["name"]
                site = site_of.get(company_id)
                assert site is not None, f"{name} ({company_id}) was never mapped to a new site"
                assert site.site_uid not in w.seeded_sites and site.site_name == name, (
                    f"{name} ({company_id}) is mapped to {site.site_name}, not a new site of its own")
            assert converged, f"sync --once never had a quiet pass; its last runs: {final_runs[-3:]}"
            assert soak.kills and figures["faults served"] and figures["tickets"], "no chaos happened"
        except BaseException:
            soak.print_tails()
            raise
        finally:
            soak.abandon()
            figures = soak.summary() | figures  # a run cut short still reports what it did
            figures["seconds"] = round(time.monotonic() - started)
            print("soak figures:", json.dumps(figures, indent=1, default=str))
