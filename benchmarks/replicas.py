"""Alerts per second through the webhook path, with one and with two `psabridge serve` replicas,
on SQLite and on PostgreSQL, in one run.

    python benchmarks/replicas.py                   # 200 alerts per case, 8 senders
    python benchmarks/replicas.py --alerts 50       # a quick look
    python benchmarks/replicas.py --stores sqlite   # without PostgreSQL

For each store and each number of replicas, from scratch: both simulators in processes of their
own (`tests/reliability/simulator_host.py`, no faults), a fresh store (a SQLite file; a new
database on a throwaway PostgreSQL server, `psabridge.testing.postgres`), the admin's set-up
(companies, device types and devices mapped, ticketing on), and the replicas: real
`python -m psabridge serve` processes on loopback ports. No `sync` runs: tickets are made by the
webhooks alone.

Then `--alerts` alerts are raised in the Datto simulator (not timed), each replica is sent one
webhook of its own first (not timed: its connectors log in on their first call), and `--senders` threads
POST one Datto alert webhook each ({"alertUid": ...}, as Datto sends them) to the replicas in
turn, as a round-robin load balancer would. `serve` answers once the alert's ticket exists, so
the clock stops when the last answer is in; the ConnectWise simulator is then asked how many
tickets carry the alerts' markers (exactly one each, or the run says so and exits non-zero).

Printed: per case, the alerts, the seconds, alerts/s, the answers by status; and the command.
Figures depend on the machine: on a shared 2-core host, replicas compete with the simulators,
the store and the senders for the same two cores.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from psabridge.plugins.connectwise.convert import stored_marker  # noqa: E402
from psabridge.plugins.rmm_datto.simulator.controls import ALERT_KINDS  # noqa: E402
from tests.reliability.fleet import configured_store, simulators, snapshot_world  # noqa: E402
from tests.reliability.soak_processes import (  # noqa: E402
    PLUGINS,
    Process,
    free_port,
    psabridge_env,
    wait_until_serving,
)
from tests.reliability.world import converge, set_up  # noqa: E402

SECRET = "benchmark-webhook-secret-0123456789"
SEED = 2026
COMPANIES = 6


@contextlib.contextmanager
def fresh_store(kind: str, folder: Path, server_url: str | None):
    if kind == "sqlite":
        yield f"sqlite://{folder / 'state.db'}"
        return
    from psabridge.testing.postgres import fresh_database

    with fresh_database(server_url) as url:
        yield url


def run_case(kind: str, replicas: int, alerts: int, senders: int, server_url: str | None) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"psabridge-replicas-{kind}-{replicas}-"))
    try:
        with simulators(SEED, COMPANIES, folder) as (cw, datto), \
                fresh_store(kind, folder, server_url) as store_url, \
                configured_store(store_url, cw, datto) as configured:
            view = snapshot_world(configured, cw, datto)
            set_up(view)
            converge(view, max_passes=8)
            env = psabridge_env(store_url, PSABRIDGE_LOAD_PLUGINS=f"{PLUGINS},postgres",
                                PSABRIDGE_WEBHOOK_SECRET=SECRET)
            urls, processes = [], []
            try:
                for n in range(replicas):
                    port = free_port()
                    processes.append(Process(f"serve-{n + 1}", ["serve", "--port", str(port)],
                                             env, folder).start())
                    urls.append(f"http://127.0.0.1:{port}")
                for process, url in zip(processes, urls, strict=True):
                    wait_until_serving(process, url, timeout=60)
                psa, rmm = configured.bridge.pair
                mapped = {m.device_uid for m in configured.store.device_mappings(psa, rmm)}
                # A device and a monitor of its own for each alert: a repeat would join the
                # first alert's ticket rather than make one.
                pairs = list(itertools.product(sorted(ALERT_KINDS), sorted(mapped)))
                if len(pairs) < alerts + replicas:
                    raise SystemExit(f"error: --alerts {alerts} is more than this estate's "
                                     f"{len(pairs) - replicas} distinct alerts")
                uids = [datto.control("raise-alert", device=device, kind=kind)["alert_uid"]
                        for kind, device in pairs[:alerts + replicas]]
                # One alert per replica first, not timed: its connectors log in and look up
                # what they keep (a token, ConnectWise's codebase) on their first webhook.
                for url, uid in zip(urls, uids[alerts:], strict=True):
                    httpx.post(f"{url}/hooks/rmm", params={"token": SECRET},
                               json={"alertUid": uid}, timeout=120).raise_for_status()
                uids = uids[:alerts]
                answers: collections.Counter[str] = collections.Counter()
                lock = threading.Lock()
                local = threading.local()

                def post(index: int) -> None:
                    client = getattr(local, "client", None) or httpx.Client(timeout=120)
                    local.client = client
                    try:
                        status = str(client.post(f"{urls[index % len(urls)]}/hooks/rmm",
                                                 params={"token": SECRET},
                                                 json={"alertUid": uids[index]}).status_code)
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    with lock:
                        answers[status] += 1

                started = time.perf_counter()
                with ThreadPoolExecutor(senders) as pool:
                    list(pool.map(post, range(alerts)))
                seconds = time.perf_counter() - started
                markers = collections.Counter(t.get("externalXRef") for t in cw.inspect()["tickets"])
                tickets = [markers[stored_marker(f"psabridge:datto:{uid}")] for uid in uids]
                return {"store": kind, "replicas": replicas, "alerts": alerts,
                        "seconds": round(seconds, 2), "alerts/s": round(alerts / seconds, 1),
                        "answers": dict(answers),
                        "alerts with one ticket": sum(n == 1 for n in tickets),
                        "alerts with two or more": sum(n > 1 for n in tickets)}
            finally:
                for process in processes:
                    process.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=200, help="alerts per case (default 200)")
    parser.add_argument("--senders", type=int, default=8, help="concurrent senders (default 8)")
    parser.add_argument("--stores", default="sqlite,postgres",
                        help="which stores, comma-separated (default sqlite,postgres)")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.stores.split(",") if k.strip()]
    unknown = set(kinds) - {"sqlite", "postgres"}
    if unknown or not kinds:
        parser.error(f"--stores takes sqlite and/or postgres, not {', '.join(sorted(unknown)) or 'nothing'}")
    if args.alerts < 1 or args.senders < 1:
        parser.error("--alerts and --senders must be at least 1")
    command = " ".join(["python", "benchmarks/replicas.py", *sys.argv[1:]])
    results = []
    with contextlib.ExitStack() as stack:
        server_url = None
        if "postgres" in kinds:
            from psabridge.testing.postgres import PostgresUnavailable, throwaway_postgres

            try:
                server_url = stack.enter_context(throwaway_postgres())
            except PostgresUnavailable as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        for kind in kinds:
            for replicas in (1, 2):
                print(f"... {kind}, {replicas} replica(s)", file=sys.stderr, flush=True)
                results.append(run_case(kind, replicas, args.alerts, args.senders, server_url))
    print("| store | serve replicas | alerts | seconds | alerts/s | answers | command |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        answers = ", ".join(f"{n} x {status}" for status, n in sorted(r["answers"].items()))
        print(f"| {r['store']} | {r['replicas']} | {r['alerts']} | {r['seconds']} | "
              f"{r['alerts/s']} | {answers} | `{command}` |")
    wrong = [r for r in results if r["alerts with one ticket"] != r["alerts"]]
    for r in wrong:
        print(f"error: {r['store']} with {r['replicas']} replica(s): "
              f"{r['alerts'] - r['alerts with one ticket']} alerts without exactly one ticket "
              f"({r['alerts with two or more']} with two or more)", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
