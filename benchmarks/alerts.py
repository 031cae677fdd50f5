"""How fast alerts become tickets: the engine, the real connectors and both simulators.

    python benchmarks/alerts.py                  # 10,000 alerts: in-process, then loopback 20 ms
    python benchmarks/alerts.py --alerts 200     # a quick run
    python benchmarks/alerts.py --skip-loopback  # in-process only
    python benchmarks/alerts.py --skip-in-process --loopback-alerts 5000

Each mode runs two paths over fresh simulators and a fresh SQLite store:

* polling: N alerts are raised in the Datto RMM simulator, then one `sync.run_pass` makes
  their tickets in the ConnectWise simulator;
* webhook: N more alerts, each POSTed Datto-style to the WebhookApp (waitress on loopback,
  `--webhook-clients` concurrent senders); latency is from sending the POST to its answer,
  which the app gives once the ticket exists (the script checks that it does).

Not a test: it asserts only that every alert got exactly one ticket, and prints figures.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import logging
import os
import queue
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import waitress
from waitress import wasyncore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from psabridge import simulation  # noqa: E402
from psabridge.core import logs, mapping, sync, ticketing  # noqa: E402
from psabridge.core.bridge import open_bridge  # noqa: E402
from psabridge.core.plugins import configure_plugin, enable_plugin, make_plugin_manager  # noqa: E402
from psabridge.core.store import open_store  # noqa: E402
from psabridge.core.webhooks import WebhookApp  # noqa: E402
from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator, company_names  # noqa: E402
from psabridge.plugins.rmm_datto.simulator import DattoSimulator  # noqa: E402
from psabridge.plugins.rmm_datto.simulator.quota import Quotas  # noqa: E402

SECRET = "benchmark-webhook-secret-0123456789"
UNLIMITED = 10**9
PRIORITIES = ("Critical", "High", "Moderate", "Low", "Information")
CONTEXTS = (
    {"@class": "perf_disk_usage_ctx", "diskName": "C:", "freeSpace": 1.5, "totalVolume": 237.9,
     "unitOfMeasure": "GB"},
    {"@class": "srvc_status_ctx", "serviceName": "Spooler", "status": "STOPPED"},
    {"@class": "online_offline_status_ctx", "status": "OFFLINE"},
    {"@class": "perf_resource_usage_ctx", "type": "CPU", "percentage": 97.0},
)


class ThreadCpu:
    """WSGI middleware: CPU time spent inside the wrapped app, on the calling thread. Wraps the
    simulators (in-process) and the webhook app (the engine's handler threads).

    In-process, the simulator runs on the engine's own thread (httpx's WSGI transport calls it
    directly), so its CPU time is measured here with `time.thread_time()` and subtracted from
    the engine thread's CPU time. On loopback the simulators run on their servers' threads and
    the engine threads' CPU time is the engine's (plus its HTTP client) alone.
    """

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.seconds = 0.0

    def __call__(self, environ, start_response):
        started = time.thread_time()
        try:
            return list(self.app(environ, start_response))
        finally:
            spent = time.thread_time() - started
            with self.lock:
                self.seconds += spent


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux: the process's peak resident set, simulators included.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Run:
    """Fresh simulators, store and bridge, everything mapped and ticketing enabled."""

    def __init__(self, mode: str, latency: float, seed: int, companies: int, tmp: Path):
        faults = simulation.Faults(latency=latency)
        self.cw = ConnectWiseSimulator(seed=seed, companies=companies, faults=faults)
        self.datto = DattoSimulator(
            seed=seed, company_names=company_names(seed, companies),
            faults=simulation.Faults(latency=latency),
            quotas=Quotas(reads=UNLIMITED, writes=UNLIMITED, operation=UNLIMITED, cutoff_ratio=1.0))
        self.stack = contextlib.ExitStack()
        self.cw_cpu, self.datto_cpu = ThreadCpu(self.cw.app), ThreadCpu(self.datto.app)
        if mode == "in-process":
            transports = {"connectwise": simulation.transport(self.cw_cpu),
                          "datto": simulation.transport(self.datto_cpu)}
            cw_url, datto_url = "http://connectwise.simulator", "http://datto.simulator"
        else:
            transports = {}
            cw_url = self.stack.enter_context(simulation.serve(self.cw_cpu)).url
            datto_url = self.stack.enter_context(simulation.serve(self.datto_cpu)).url
        self.pm = make_plugin_manager()
        self.store = open_store(self.pm, f"sqlite://{tmp / f'{mode}.db'}")
        configure_plugin(self.pm, self.store, "connectwise", self.cw.settings(cw_url))
        datto_settings = {**self.datto.settings(datto_url), "requests_per_minute": str(UNLIMITED)}
        configure_plugin(self.pm, self.store, "datto", datto_settings)
        enable_plugin(self.pm, self.store, "connectwise", transport=transports.get("connectwise"))
        enable_plugin(self.pm, self.store, "datto", transport=transports.get("datto"))
        self.bridge = open_bridge(self.pm, self.store, transports)
        self._map_and_enable()

    def _map_and_enable(self) -> None:
        bridge = self.bridge
        companies = mapping.load_companies(bridge)
        mapping.apply(bridge, mapping.plan_company_mappings(bridge, {r.company.id: None for r in companies}))
        for row in mapping.load_device_types(bridge):
            if row.configuration_type and not row.flagged:
                mapping.map_device_type(bridge, row.device_type, row.configuration_type.id)
        mapping.apply(bridge, mapping.plan_automatic_mapping(bridge))
        options = bridge.psa.call("psa_ticket_options")
        board = next(b for b in options.boards if b.name == "RMM Alerts")
        status = {s.name: s.id for s in options.statuses if s.board_id == board.id}
        kind = next(t.id for t in options.types if t.board_id == board.id and t.name == "Alert")
        priority = {p.name[:10]: p.id for p in options.priorities}
        ticketing.save_ticket_settings(bridge, ticketing.TicketSettings(
            source_id=next(s.id for s in options.sources if s.name == "Monitoring"),
            priorities={rmm: priority[f"Priority {n}"] for n, rmm in enumerate(PRIORITIES[:4], start=1)},
            attributes={"alert": ticketing.TicketAttributes(
                board_id=board.id, type_id=kind, open_status_id=status["New (Alert)"],
                closed_status_id=status["Resolved"])}))
        ticketing.set_ticketing_enabled(bridge, True, now=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        # Alerts come from devices the integration maps (others would be skipped, not ticketed).
        self.device_uids = [m.device_uid for m in self.store.device_mappings(*bridge.pair)]
        self.sync_once()  # settle the seeded alerts (raised before enabling: skipped)

    def sync_once(self) -> sync.PassReport:
        return sync.run_pass(self.bridge)

    def raise_alerts(self, count: int) -> list[str]:
        uids = []
        for n in range(count):
            alert = self.datto.raise_alert(self.device_uids[n % len(self.device_uids)],
                                           CONTEXTS[n % len(CONTEXTS)], PRIORITIES[n % len(PRIORITIES)])
            uids.append(alert["alertUid"])
        return uids

    def reset_counts(self) -> None:
        self.cw.app.reset_counts()
        self.datto.app.reset_counts()
        self.cw_cpu.seconds = self.datto_cpu.seconds = 0.0

    def counts(self) -> dict[str, int]:
        return {**{f"CW    {k}": v for k, v in self.cw.counts.items()},
                **{f"Datto {k}": v for k, v in self.datto.counts.items()}}

    def tickets_by_marker(self) -> collections.Counter:
        return collections.Counter(t.get("externalXRef") for t in self.cw.db.tickets.values())

    def close(self) -> None:
        self.stack.close()
        self.store.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def print_requests(counts: dict[str, int], alerts: int) -> None:
    print(f"    requests per alert by endpoint ({sum(counts.values())} requests / {alerts} alerts):")
    for endpoint, count in sorted(counts.items(), key=lambda item: -item[1]):
        if "oauth/token" in endpoint or "companyinfo" in endpoint:
            note = "  (once per run)"
        else:
            note = ""
        print(f"      {count / alerts:8.4f}  {endpoint}{note}")
    print(f"      {sum(counts.values()) / alerts:8.4f}  total")


def check_one_each(run: Run, uids: list[str]) -> None:
    markers = run.tickets_by_marker()
    counts = [markers.get(ticketing.alert_marker(run.bridge, uid), 0) for uid in uids]
    wrong = [c for c in counts if c != 1]
    if wrong:
        raise SystemExit(f"FAILED: {len(wrong)} alerts do not have exactly one ticket")


def polling(run: Run, alerts: int) -> None:
    uids = run.raise_alerts(alerts)
    run.reset_counts()
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    report = run.sync_once()
    wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
    sim_cpu = run.cw_cpu.seconds + run.datto_cpu.seconds if run.bridge.psa.connection.transport else 0.0
    check_one_each(run, uids)
    assert report.tickets_created == alerts and not report.errors, report
    print(f"  polling: {alerts} alerts, one sync pass")
    print(f"    {alerts / wall:10.1f} alerts/s   ({wall:.2f} s wall)")
    print(f"    {(cpu - sim_cpu) / alerts * 1000:10.3f} ms engine CPU per alert   "
          f"(engine thread {cpu:.2f} s - in-simulator {sim_cpu:.2f} s)")
    print_requests(run.counts(), alerts)


def webhook(run: Run, alerts: int, clients: int) -> None:
    engine = ThreadCpu(WebhookApp(lambda: run.bridge, SECRET))
    server = waitress.create_server(engine, host="127.0.0.1", port=0, threads=clients,
                                    max_request_body_size=engine.app.max_body,
                                    asyncore_loop_timeout=0.05, connection_limit=clients * 4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.effective_port}/hooks/rmm?token={SECRET}"
    uids = run.raise_alerts(alerts)
    run.reset_counts()
    work: queue.Queue = queue.Queue()
    for uid in uids:
        work.put(uid)
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def sender() -> None:
        with httpx.Client(timeout=60) as http:
            while True:
                try:
                    uid = work.get_nowait()
                except queue.Empty:
                    return
                started = time.perf_counter()
                answer = http.post(url, json={"alertUid": uid})
                elapsed = time.perf_counter() - started
                with lock:
                    if answer.status_code == 200 and answer.json().get("state") == "open":
                        latencies.append(elapsed)
                    else:
                        failures.append(f"{answer.status_code} {answer.text[:100]}")

    wall0 = time.perf_counter()
    senders = [threading.Thread(target=sender) for _ in range(clients)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    wall = time.perf_counter() - wall0
    server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
    thread.join(timeout=5)
    server.task_dispatcher.shutdown()
    if failures:
        raise SystemExit(f"FAILED: {len(failures)} webhook posts, e.g. {failures[0]}")
    check_one_each(run, uids)
    in_process = run.bridge.psa.connection.transport is not None
    sim_cpu = run.cw_cpu.seconds + run.datto_cpu.seconds if in_process else 0.0
    print(f"  webhook: {alerts} alerts POSTed to /hooks/rmm by {clients} concurrent senders "
          f"(waitress, {clients} threads)")
    print(f"    {alerts / wall:10.1f} alerts/s   ({wall:.2f} s wall)")
    print(f"    {(engine.seconds - sim_cpu) / alerts * 1000:10.3f} ms engine CPU per alert   "
          f"(handler threads {engine.seconds:.2f} s - in-simulator {sim_cpu:.2f} s)")
    print(f"    alert->ticket latency  p50 {percentile(latencies, 50) * 1000:8.1f} ms   "
          f"p99 {percentile(latencies, 99) * 1000:8.1f} ms   max {max(latencies) * 1000:8.1f} ms")
    print_requests(run.counts(), alerts)


def mode_run(mode: str, latency: float, alerts: int, args, tmp: Path) -> None:
    print(f"\n== {mode}, {latency * 1000:.0f} ms added to every simulator request ==")
    started = time.perf_counter()
    run = Run(mode, latency, args.seed, args.companies, tmp)
    print(f"  setup (map {len(run.device_uids)} devices, enable ticketing): "
          f"{time.perf_counter() - started:.1f} s")
    try:
        polling(run, alerts)
        print(f"    peak RSS so far {peak_rss_mb():.0f} MB")
        webhook(run, alerts, args.webhook_clients)
        print(f"    peak RSS so far {peak_rss_mb():.0f} MB")
        final = run.sync_once()  # both paths' alerts seen once more by polling: nothing to do
        assert final.tickets_created == 0 and not final.errors, final
    finally:
        run.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=10_000, help="alerts per path (default 10000)")
    parser.add_argument("--loopback-alerts", type=int, default=None,
                        help="alerts per path on loopback (default: --alerts)")
    parser.add_argument("--latency", type=float, default=0.02,
                        help="seconds added to each simulator request on loopback (default 0.02)")
    parser.add_argument("--webhook-clients", type=int, default=4)
    parser.add_argument("--companies", type=int, default=10)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--skip-loopback", action="store_true")
    parser.add_argument("--skip-in-process", action="store_true")
    args = parser.parse_args(argv)
    logs.configure_logging(0, stream=sys.stderr)  # warnings only
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the loopback servers' access log
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "task queue depth" notes
    print("psabridge alerts benchmark: Datto RMM simulator -> engine -> ConnectWise simulator")
    print(f"  python {sys.version.split()[0]}, {os.cpu_count()} CPUs, SQLite store in a temp dir")
    print("  Datto simulator quotas raised to 10^9 requests/min (reads, writes, per operation; no "
          "90 % slow-down), and the Datto client's limiter too (requests_per_minute=10^9); the "
          "per-operation client bucket (alert-resolve, 100/min) is not used here")
    print("  engine CPU: thread CPU time (time.thread_time) of the threads running the engine "
          "(the sync thread; the webhook handler threads), minus the CPU time measured inside the "
          "simulators' WSGI apps on those same threads (in-process only; on loopback the "
          "simulators run on their own server threads)")
    print("  peak memory: peak resident set size of the whole process (getrusage ru_maxrss), "
          "simulators, their data and the store's cache included")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_in_process:
            mode_run("in-process", 0.0, args.alerts, args, Path(tmp))
        if not args.skip_loopback:
            mode_run("loopback", args.latency, args.loopback_alerts or args.alerts, args, Path(tmp))
    print(f"\npeak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
