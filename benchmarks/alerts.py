"""How fast alerts become tickets, and whether that depends on the estate's size and history.

    python benchmarks/alerts.py                      # estates of 100 and 20,000 mapped devices
    python benchmarks/alerts.py --alerts 200         # a quick run
    python benchmarks/alerts.py --devices 100 --messages 1000 --alerts 100
    python benchmarks/alerts.py --loopback           # also on loopback: 20 ms per simulator request,
                                                     # webhooks served by waitress to 4 senders

For each estate size (`--devices`, default 100 and 20000) it builds, over fresh simulators and a
fresh SQLite store: the Datto RMM simulator with that many devices, every company mapped to its
site through the engine, every device mapped to a configuration, and `--messages` (default
100,000) webhook messages remembered as processed. The device mappings and the messages are
written in bulk by the benchmark-only helpers `map_devices_in_bulk` and
`remember_messages_in_bulk` (the store's own methods, in one transaction each; the configurations
are added straight into the ConnectWise simulator's database), so that a 20k estate takes seconds
to build instead of a full initial mapping.

Then, in-process (simulators mounted as httpx transports):

* polling: N alerts are raised in the Datto RMM simulator, then one `sync.run_pass` makes their
  tickets; engine CPU per alert is given for the whole pass and for the pass less an empty one
  (the pass's fixed work: reading the estate for the mapping step);
* webhook: N more alerts, each POSTed Datto-style to the WebhookApp (as `serve` builds it, with
  its LiveBridge) on the benchmark's thread: latency from the request to the answer, which comes
  once the ticket exists; and the SQL statements and commits each webhook made on the store
  (sqlite3's trace callback on the thread's connection).

With `--loopback` the same runs again with the simulators served on loopback, each request
delayed `--latency`, and the webhooks POSTed to waitress by `--webhook-clients` senders.

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
from werkzeug.test import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from psabridge import simulation  # noqa: E402
from psabridge.core import logs, mapping, sync, ticketing  # noqa: E402
from psabridge.core.bridge import open_bridge  # noqa: E402
from psabridge.core.models import DeviceMapping  # noqa: E402
from psabridge.core.plugins import configure_plugin, enable_plugin, make_plugin_manager  # noqa: E402
from psabridge.core.store import open_store  # noqa: E402
from psabridge.core.webhooks import LiveBridge, WebhookApp  # noqa: E402
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


class StatementCounter:
    """SQL statements and commits made on the calling thread's store connection."""

    def __init__(self, store):
        self.statements = 0
        self.commits = 0
        self.conn = store.db.conn
        self.conn.set_trace_callback(self._saw)

    def _saw(self, statement: str) -> None:
        self.statements += 1
        if statement.lstrip().upper().startswith("COMMIT"):
            self.commits += 1

    def read(self) -> tuple[int, int]:
        return self.statements, self.commits

    def stop(self) -> None:
        self.conn.set_trace_callback(None)


class Run:
    """Fresh simulators and store, an estate of `devices` mapped devices, `messages` remembered
    webhook messages, and ticketing enabled."""

    def __init__(self, mode: str, latency: float, seed: int, companies: int, devices: int,
                 messages: int, tmp: Path):
        faults = simulation.Faults(latency=latency)
        per_site = max(2, devices // companies)  # the generator puts a desktop and a server first
        self.cw = ConnectWiseSimulator(seed=seed, companies=companies, faults=faults)
        self.datto = DattoSimulator(
            seed=seed, company_names=company_names(seed, companies), unmatched_sites=0,
            devices_per_site=(per_site, per_site), faults=simulation.Faults(latency=latency),
            quotas=Quotas(reads=UNLIMITED, writes=UNLIMITED, operation=UNLIMITED, cutoff_ratio=1.0))
        self.stack = contextlib.ExitStack()
        self.cw_cpu, self.datto_cpu = ThreadCpu(self.cw.app), ThreadCpu(self.datto.app)
        if mode == "in-process":
            self.transports = {"connectwise": simulation.transport(self.cw_cpu),
                               "datto": simulation.transport(self.datto_cpu)}
            cw_url, datto_url = "http://connectwise.simulator", "http://datto.simulator"
        else:
            self.transports = {}
            cw_url = self.stack.enter_context(simulation.serve(self.cw_cpu)).url
            datto_url = self.stack.enter_context(simulation.serve(self.datto_cpu)).url
        self.pm = make_plugin_manager()
        self.store = open_store(self.pm, f"sqlite://{tmp / f'{mode}-{devices}.db'}")
        configure_plugin(self.pm, self.store, "connectwise", self.cw.settings(cw_url))
        datto_settings = {**self.datto.settings(datto_url), "requests_per_minute": str(UNLIMITED)}
        configure_plugin(self.pm, self.store, "datto", datto_settings)
        enable_plugin(self.pm, self.store, "connectwise", transport=self.transports.get("connectwise"))
        enable_plugin(self.pm, self.store, "datto", transport=self.transports.get("datto"))
        self.bridge = open_bridge(self.pm, self.store, self.transports)
        self._map_and_enable()
        remember_messages_in_bulk(self.store, messages)

    def _map_and_enable(self) -> None:
        bridge = self.bridge
        companies = mapping.load_companies(bridge)
        mapping.apply(bridge, mapping.plan_company_mappings(bridge, {r.company.id: None for r in companies}))
        self.device_uids = map_devices_in_bulk(self)
        options = bridge.psa.ticket_options()
        board = next(b for b in options.field("board").choices if b.name == "RMM Alerts")
        status = {s.name: s.id for s in options.statuses if s.scope_id == board.id}
        kind = next(t.id for t in options.field("type").choices
                    if t.scope_id == board.id and t.name == "Alert")
        priority = {p.name[:10]: p.id for p in options.priorities}
        ticketing.save_ticket_settings(bridge, ticketing.TicketSettings(
            source_id=next(s.id for s in options.sources if s.name == "Monitoring"),
            priorities={rmm: priority[f"Priority {n}"] for n, rmm in enumerate(PRIORITIES[:4], start=1)},
            attributes={"alert": ticketing.TicketAttributes(
                routing={"board": board.id, "type": kind}, open_status_id=status["New (Alert)"],
                closed_status_id=status["Resolved"])}))
        ticketing.set_ticketing_enabled(bridge, True, now=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
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

    def simulator_cpu(self) -> float:
        """CPU spent inside the simulators on the engine's threads (in-process only)."""
        in_process = self.bridge.psa.connection.transport is not None
        return self.cw_cpu.seconds + self.datto_cpu.seconds if in_process else 0.0

    def counts(self) -> dict[str, int]:
        return {**{f"CW    {k}": v for k, v in self.cw.counts.items()},
                **{f"Datto {k}": v for k, v in self.datto.counts.items()}}

    def tickets_by_marker(self) -> collections.Counter:
        return collections.Counter(t.get("externalXRef") for t in self.cw.db.tickets.values())

    def close(self) -> None:
        self.stack.close()
        self.store.close()


def map_devices_in_bulk(run: Run) -> list[str]:
    """Benchmark-only: map every device of a mapped site to a configuration of its own, without
    the engine's per-device mapping (audits, candidate queries, configuration POSTs), which is
    `benchmarks/mapping.py`'s subject. The configurations go straight into the ConnectWise
    simulator's database; the mappings are saved by the store's own method, in one transaction.
    Returns the mapped devices' uids."""
    psa, rmm = run.bridge.pair
    store = run.store
    company_of_site = {m.site_uid: m.company_id for m in store.company_mappings(psa, rmm)}
    uids = []
    with store.transaction():
        for device in run.datto.devices.values():
            company_id = company_of_site.get(device["siteUid"])
            if company_id is None:
                continue
            configuration = run.cw.db.add_configuration(run.cw.db.companies[int(company_id)],
                                                        device["hostname"], "Managed Workstation")
            store.save_device_mapping(DeviceMapping(psa, rmm, device["uid"], str(configuration["id"]),
                                                    company_id, device["siteUid"]))
            uids.append(device["uid"])
    return uids


def remember_messages_in_bulk(store, count: int) -> None:
    """Benchmark-only: `count` webhook messages remembered as processed (the replay check's
    history), by the store's own method, in one transaction."""
    with store.transaction():
        for n in range(count):
            store.remember_message(f"rmm:history-{n:08d}:raised")


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


def engine_pass(run: Run) -> tuple[sync.PassReport, float, float, tuple[int, int]]:
    """One sync pass: its report, wall seconds, engine CPU seconds, (statements, commits)."""
    run.reset_counts()
    counter = StatementCounter(run.store)
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    report = run.sync_once()
    wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
    counter.stop()
    return report, wall, cpu - run.simulator_cpu(), counter.read()


def polling(run: Run, alerts: int, figures: dict) -> None:
    _, _, empty_cpu, (empty_statements, empty_commits) = engine_pass(run)
    uids = run.raise_alerts(alerts)
    report, wall, cpu, (statements, commits) = engine_pass(run)
    counts = run.counts()
    check_one_each(run, uids)
    assert report.tickets_created == alerts and not report.errors, report
    per_alert = (cpu - empty_cpu) / alerts
    figures.update(polling_cpu=cpu / alerts, polling_cpu_less_empty=per_alert,
                   polling_statements=(statements - empty_statements) / alerts,
                   polling_commits=(commits - empty_commits) / alerts)
    print(f"  polling: {alerts} alerts, one sync pass")
    print(f"    {alerts / wall:10.1f} alerts/s   ({wall:.2f} s wall)")
    print(f"    {cpu / alerts * 1000:10.3f} ms engine CPU per alert, whole pass "
          f"(engine {cpu:.2f} s, simulators' CPU already taken off)")
    print(f"    {per_alert * 1000:10.3f} ms engine CPU per alert, less an empty pass "
          f"({empty_cpu * 1000:.0f} ms: the mapping step reading the estate)")
    print(f"    {(statements - empty_statements) / alerts:10.1f} SQL statements and "
          f"{(commits - empty_commits) / alerts:.1f} commits per alert (less an empty pass's "
          f"{empty_statements} and {empty_commits})")
    print_requests(counts, alerts)


def webhook_in_process(run: Run, alerts: int, figures: dict) -> None:
    """Each alert's webhook handled on this thread, as one of `serve`'s handler threads does."""
    client = Client(WebhookApp(LiveBridge(run.bridge, run.transports), SECRET))
    url = f"/hooks/rmm?token={SECRET}"
    client.post(url, json={"alertUid": "warm-up"})  # the thread's store connection, once
    uids = run.raise_alerts(alerts)
    run.reset_counts()
    latencies, cpu, statements, commits = [], 0.0, [], []
    for uid in uids:
        counter = StatementCounter(run.store)
        started, cpu0 = time.perf_counter(), time.thread_time()
        answer = client.post(url, json={"alertUid": uid})
        latencies.append(time.perf_counter() - started)
        cpu += time.thread_time() - cpu0
        counter.stop()
        statements.append(counter.statements)
        commits.append(counter.commits)
        if answer.status_code != 200 or answer.json.get("state") != "open":
            raise SystemExit(f"FAILED: webhook answered {answer.status_code} {answer.text[:100]}")
    counts = run.counts()
    check_one_each(run, uids)
    engine = cpu - run.simulator_cpu()
    figures.update(webhook_p50=percentile(latencies, 50), webhook_p99=percentile(latencies, 99),
                   webhook_cpu=engine / alerts, webhook_statements=max(set(statements), key=statements.count),
                   webhook_commits=max(set(commits), key=commits.count))
    print(f"  webhook: {alerts} alerts POSTed to /hooks/rmm one after another, in-process "
          "(the WebhookApp with serve's LiveBridge, on this thread)")
    print(f"    latency  p50 {percentile(latencies, 50) * 1000:8.2f} ms   "
          f"p99 {percentile(latencies, 99) * 1000:8.2f} ms   max {max(latencies) * 1000:8.2f} ms "
          "(simulators included)")
    print(f"    {engine / alerts * 1000:10.3f} ms engine CPU per webhook")
    print(f"    SQL per webhook: {figures['webhook_statements']} statements, "
          f"{figures['webhook_commits']} commits (most common; range {min(statements)}-{max(statements)}"
          f" statements, {min(commits)}-{max(commits)} commits)")
    print_requests(counts, alerts)


def webhook_served(run: Run, alerts: int, clients: int) -> None:
    engine = ThreadCpu(WebhookApp(LiveBridge(run.bridge, run.transports), SECRET))
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
    sim_cpu = run.simulator_cpu()
    print(f"  webhook: {alerts} alerts POSTed to /hooks/rmm by {clients} concurrent senders "
          f"(waitress, {clients} threads)")
    print(f"    {alerts / wall:10.1f} alerts/s   ({wall:.2f} s wall)")
    print(f"    {(engine.seconds - sim_cpu) / alerts * 1000:10.3f} ms engine CPU per alert   "
          f"(handler threads {engine.seconds:.2f} s - in-simulator {sim_cpu:.2f} s)")
    print(f"    alert->ticket latency  p50 {percentile(latencies, 50) * 1000:8.1f} ms   "
          f"p99 {percentile(latencies, 99) * 1000:8.1f} ms   max {max(latencies) * 1000:8.1f} ms")
    print_requests(run.counts(), alerts)


def estate_run(mode: str, latency: float, devices: int, alerts: int, args, tmp: Path) -> dict:
    print(f"\n== {mode}, about {devices:,} mapped devices, {args.messages:,} stored webhook messages, "
          f"{latency * 1000:.0f} ms added to every simulator request ==")
    started = time.perf_counter()
    run = Run(mode, latency, args.seed, args.companies, devices, args.messages, tmp)
    figures = {"devices": len(run.device_uids), "messages": args.messages}
    print(f"  setup ({len(run.device_uids):,} devices mapped, {args.messages:,} messages stored, "
          f"ticketing enabled): {time.perf_counter() - started:.1f} s")
    try:
        polling(run, alerts, figures)
        if mode == "in-process":
            webhook_in_process(run, alerts, figures)
        else:
            webhook_served(run, alerts, args.webhook_clients)
        print(f"    peak RSS so far {peak_rss_mb():.0f} MB")
        final = run.sync_once()  # both paths' alerts seen once more by polling: nothing to do
        assert final.tickets_created == 0 and not final.errors, final
    finally:
        run.close()
    return figures


def print_summary(rows: list[dict]) -> None:
    print("\n== summary (in-process) ==")
    print("  | mapped devices | stored messages | polling: engine CPU per alert (whole pass / "
          "less an empty pass) | webhook p50 | webhook p99 | engine CPU per webhook | "
          "SQL statements / commits per webhook |")
    for r in rows:
        print(f"  | {r['devices']:,} | {r['messages']:,} | {r['polling_cpu'] * 1000:.3f} ms / "
              f"{r['polling_cpu_less_empty'] * 1000:.3f} ms | {r['webhook_p50'] * 1000:.1f} ms | "
              f"{r['webhook_p99'] * 1000:.1f} ms | {r['webhook_cpu'] * 1000:.2f} ms | "
              f"{r['webhook_statements']} / {r['webhook_commits']} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=1000, help="alerts per path (default 1000)")
    parser.add_argument("--devices", default="100,20000",
                        help="estate sizes, mapped devices, comma-separated (default 100,20000)")
    parser.add_argument("--messages", type=int, default=100_000,
                        help="webhook messages stored as processed before the runs (default 100000)")
    parser.add_argument("--loopback", action="store_true",
                        help="also run with the simulators on loopback and webhooks under waitress")
    parser.add_argument("--latency", type=float, default=0.02,
                        help="seconds added to each simulator request on loopback (default 0.02)")
    parser.add_argument("--webhook-clients", type=int, default=4)
    parser.add_argument("--companies", type=int, default=10)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.devices.split(",")]
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
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for devices in sizes:
            rows.append(estate_run("in-process", 0.0, devices, args.alerts, args, Path(tmp)))
        if args.loopback:
            for devices in sizes:
                estate_run("loopback", args.latency, devices, args.alerts, args, Path(tmp))
    print_summary(rows)
    print(f"\npeak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
