"""Benchmark: the initial mapping of a large estate, then a no-change resync, through both
simulators (ConnectWise Manage and Datto RMM), each in a process of its own, over loopback HTTP.

    python benchmarks/mapping.py                                  # 1,000 companies, 20,000 devices
    python benchmarks/mapping.py --companies 100 --devices 2000 --latency 0.15 --real-quotas

The estate: N ConnectWise companies (with the simulator's seeded configurations), N Datto sites
named after them (blurred as real estates are), `--devices` devices spread evenly over the
sites, plus the handful of special devices the Datto generator always adds.

Each phase is one run of the mapping commands, as the CLI has them, on one bridge:

    companies map --suggested     plan_company_mappings(None): every unmapped company
    device-types map --suggested  load_device_types, then map_device_type for each suggestion
    devices map --all             plan_automatic_mapping
    deleted-devices check         plan_deleted_devices (what every sync pass does first)

and prints wall time, psabridge's own CPU time and peak memory (this process: the simulators
run in their own, whose figures are printed apart), requests per endpoint on each simulator,
the theoretical minimum number of requests for the estate (with its derivation) and the ratio
actual/minimum. The second phase runs the same commands again on a fresh bridge (a later run)
and must make no per-device request.

By default the simulators answer at once and the quotas are raised to 10**9 (the benchmark
counts requests). `--latency S` holds every answer S seconds (150 ms is a real service's
typical answer); `--real-quotas` keeps Datto's real quotas on the simulator (600 reads a
minute, answers held 1 s past 90 % of it, 429 past 100 %) and the clients' real pace (Datto's
600/min, ConnectWise's 900/min). Then it also prints the rate-limit bound, the least wall time
those paces allow for the requests made, with its derivation, and how many requests Datto
refused (429).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import multiprocessing
import resource
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx

from psabridge.core import logs, mapping, pacing
from psabridge.core.bridge import Bridge, open_bridge
from psabridge.core.pacing import RequestPace
from psabridge.core.plugins import configure_plugin, enable_plugin, make_plugin_manager
from psabridge.core.store import open_store
from psabridge.plugins.connectwise import conditions as cond
from psabridge.plugins.connectwise.client import DEFAULT_REQUESTS_PER_MINUTE, ConnectWiseClient
from psabridge.plugins.rmm_datto.client import ClientOptions, client_for
from psabridge.plugins.rmm_datto.throttle import Limits

SEED = 7
CW_PAGE = 1000  # ConnectWise's largest pageSize
DATTO_PAGE = 250  # Datto RMM's largest page
UNLIMITED = 10**9
AUDITED_CLASSES = ("device", "printer", "esxihost")  # Datto's audit endpoints
# Endpoints whose count grows with the number of devices or companies to match (a no-change
# resync must make none of them).
PER_DEVICE = (
    "datto GET /api/v2/audit/{kind}/{uid}", "datto GET /api/v2/device/{uid}",
    "cw POST /company/configurations", "cw PATCH /company/configurations/{id}",
    "cw GET /company/configurations/{id}", "cw GET /company/configurations",
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def usage() -> tuple[float, float]:
    """This process's CPU seconds (user + system) and peak RSS in MiB."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime, used.ru_maxrss / 1024  # KiB on Linux


def bytes_written() -> int | None:
    """Bytes this process has caused to be written to disk (Linux /proc/self/io): the store's."""
    try:
        with open("/proc/self/io") as io:
            return next(int(line.split()[1]) for line in io if line.startswith("write_bytes:"))
    except (OSError, StopIteration, ValueError):
        return None


# -- the simulators, each in its own process ----------------------------------------------------


def _make_cw(companies: int, configurations: int, latency: float, real_quotas: bool):
    from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator, Faults
    # No configurations recorded by hand: the Datto side's machines are sized here, not by the
    # simulated MSP, so the ones it would record are not these devices.
    return ConnectWiseSimulator(seed=SEED, companies=companies,
                                configurations_per_company=configurations, known_machines=False,
                                faults=Faults(seed=SEED, latency=latency))


def _make_datto(companies: int, devices: int, latency: float, real_quotas: bool):
    from psabridge.plugins.connectwise.simulator import company_names
    from psabridge.plugins.rmm_datto.simulator import DattoSimulator
    from psabridge.plugins.rmm_datto.simulator.quota import Quotas
    from psabridge.simulation import Faults
    per_site = max(2, devices // companies)  # the generator puts a desktop and a server first
    quotas = Quotas() if real_quotas else Quotas(reads=UNLIMITED, writes=UNLIMITED,
                                                  operation=UNLIMITED, operations={})
    return DattoSimulator(
        seed=SEED, company_names=company_names(SEED, companies), unmatched_sites=0,
        devices_per_site=(per_site, per_site), alerts=0, quotas=quotas,
        faults=Faults(seed=SEED, latency=latency))


def _serve(make, arguments, connection) -> None:
    """The child: make the simulator, serve it on loopback, answer the parent's questions."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    sim = make(*arguments)
    with sim.serve() as server:
        connection.send(server.url)
        while True:
            question, args = connection.recv()
            if question == "stop":
                connection.send(usage())
                return
            connection.send(QUESTIONS[question](sim, *args))


class Simulator:
    """A simulator in a child process, and the questions the benchmark asks it."""

    def __init__(self, make, *arguments):
        context = multiprocessing.get_context("fork")  # before any thread of ours exists
        self._pipe, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(make, arguments, child), daemon=True)
        self.process.start()
        self.url = self._pipe.recv()

    def ask(self, question: str, *args):
        self._pipe.send((question, args))
        return self._pipe.recv()

    def stop(self) -> tuple[float, float]:
        figures = self.ask("stop")
        self.process.join(10)
        return figures


def _cw_facts(cw) -> dict:
    return {"companies": sum(1 for c in cw.db.companies.values() if not c["deletedFlag"]),
            "types": len(cw.db.configuration_types),
            "configurations": len(cw.db.configurations),
            "manufacturers": {m["name"].casefold() for m in cw.db.manufacturers.values()},
            "company_id": cw.options.company_id}


def _datto_facts(datto) -> dict:
    return {"sites": len(datto.sites), "devices": list(datto.devices),
            "refused": datto.quota.refused, "most_in_flight": datto.injector.most_in_flight}


def _forget_quota(datto) -> None:
    """As if the admin had enabled the plugins more than a minute before mapping: the request
    that checked the connection leaves Datto's window."""
    from psabridge.plugins.rmm_datto.simulator.quota import QuotaKeeper
    datto.quota = QuotaKeeper(datto.quota.quotas, datto.clock)


def _datto_to_match(datto, mapped_devices: set, mapped_sites: set, portal: str) -> list[tuple]:
    """Unmapped, audited, live devices of mapped sites, what devices map --all must look at:
    (uid, site uid, device class, link, serial, hostname), read from the simulator's state."""
    from psabridge.plugins.rmm_datto import wire
    rows = []
    for row in datto.devices.values():
        device = wire.device(row)
        if (device.deleted or device.last_audit is None or device.uid in mapped_devices
                or device.site_uid not in mapped_sites):
            continue
        # Network devices have no audit endpoint: nothing is known of their serial.
        audited = row.get("deviceClass") in AUDITED_CLASSES
        details = wire.device_details(datto.audits[device.uid] if audited else {}, "")
        # The API gives every device but network devices a portalUrl (their Manage Device link).
        url = None if row.get("deviceClass") == "rmmnetworkdevice" else f"{portal}/device/{device.id}"
        rows.append((device.uid, device.site_uid, row.get("deviceClass"), url,
                     details.serial_number, device.hostname))
    return rows


QUESTIONS = {
    "counts": lambda sim: dict(sim.counts),
    "settings": lambda sim, url: sim.settings(url),
    "cw_facts": _cw_facts,
    "datto_facts": _datto_facts,
    "to_match": _datto_to_match,
    "forget_quota": _forget_quota,
}


def open_session(pm, store, real_quotas: bool) -> Bridge:
    """A bridge as one CLI run has it: fresh connections, each client at its real pace, or
    raised like the simulators' quotas (site-create's own 100/min bucket included)."""
    bridge = open_bridge(pm, store)
    if not real_quotas:
        limits = Limits(reads=UNLIMITED, writes=UNLIMITED, operation=UNLIMITED, operations={})
        client_for(bridge.rmm.connection, ClientOptions(limits=limits))
        ConnectWiseClient.for_connection(bridge.psa.connection,
                                         limits=RequestPace(UNLIMITED))
    return bridge


# -- the commands -------------------------------------------------------------------------------


def progress_printer(label: str, total: int):
    step = max(1, total // 10)  # a line every `step` changes
    done = [0]

    def progress(change) -> None:
        done[0] += 1
        if done[0] % step == 0 or done[0] == total:
            log(f"  {label}: {done[0]}/{total}")
    return progress


def run_commands(bridge: Bridge, facts: dict) -> Counter:
    """The mapping commands of one run; returns what they did (for the minimum)."""
    log("companies map --suggested")
    plan = mapping.plan_company_mappings(bridge, None)
    outcome = mapping.apply(bridge, plan, progress_printer("companies", len(plan.changes)))
    did = Counter(c.action for c in outcome.done)

    log("device-types map --suggested")
    for row in mapping.load_device_types(bridge):
        if not row.mapped and row.configuration_type and not row.flagged:
            mapping.map_device_type(bridge, row.device_type, row.configuration_type.id)

    log("devices map --all")
    psa, rmm = bridge.pair
    facts["to_match"] = facts["datto"].ask(
        "to_match", {m.device_uid for m in bridge.store.device_mappings(psa, rmm)},
        {m.site_uid for m in bridge.store.company_mappings(psa, rmm)}, facts["datto_portal"])
    plan, outcome = mapping.map_automatically(
        bridge, progress=progress_printer("devices", len(facts["to_match"])))
    did.update(c.action for c in outcome.done)
    did["failed"] += len(outcome.failed)
    did["skipped"] += len(plan.skipped)

    log("deleted-devices check")
    plan = mapping.plan_deleted_devices(bridge)
    outcome = mapping.apply(bridge, plan)
    did.update(c.action for c in outcome.done)
    return did


# -- the theoretical minimum ----------------------------------------------------------------------


def candidate_queries_minimum(facts: dict, bridge: Bridge) -> int:
    """Fewest URL-sized requests that can ask ConnectWise for every device's candidates.

    Per company (the hook's unit), all devices' link, serial and name must travel in a
    `conditions` URL parameter no longer than CW's safe URL length; splitting repeats the
    company scope, so ceil(total length / room per request) is a lower bound."""
    site_company = {m.site_uid: m.company_id for m in bridge.store.company_mappings(*bridge.pair)}
    by_company: dict[str, list] = defaultdict(list)
    for _uid, site_uid, _kind, url, serial, hostname in facts["to_match"]:
        by_company[site_company[site_uid]].append((url, serial, hostname))
    base = f"{facts['cw_base']}company/configurations"
    total = 0
    for company_id, keys in by_company.items():
        scope = cond.eq("company/id", int(company_id))
        parts = []
        for index, field in enumerate(("managementLink", "serialNumber", "name")):
            values = list(dict.fromkeys(k[index] for k in keys if k[index]))
            if values:
                parts.append(cond.in_(field, values))
        whole = len(str(httpx.URL(base, params={"conditions": cond.all_of(scope, cond.any_of(*parts)),
                                                "pageSize": CW_PAGE, "page": 1})))
        fixed = len(str(httpx.URL(base, params={"conditions": cond.all_of(scope, "()"),
                                                "pageSize": CW_PAGE, "page": 1})))
        room = cond.SAFE_URL_LENGTH - fixed
        total += max(1, math.ceil((whole - fixed) / room))
    return total


def minimum(facts: dict, did: Counter, bridge: Bridge) -> list[tuple[str, int, str]]:
    """(what, requests, why) lines whose sum is the fewest requests the commands can make."""
    cw, before = facts["cw_before"], facts["datto_before"]
    listed = len(before["devices"])  # /account/devices lists deleted devices too
    lines = [
        ("datto token", 1, "one grant per run"),
        ("cw codebase lookup", 1, "one /login/companyinfo per run"),
        ("cw companies", math.ceil(cw["companies"] / CW_PAGE),
         f"ceil({cw['companies']} companies / {CW_PAGE})"),
        ("datto sites", math.ceil(before["sites"] / DATTO_PAGE),
         f"one read per run: ceil({before['sites']} sites / {DATTO_PAGE})"),
        ("datto site creations", did["create site"], "one PUT per company with no site close enough"),
        ("cw configuration types", math.ceil(cw["types"] / CW_PAGE) + cw["types"],
         f"ceil({cw['types']} types / {CW_PAGE}) + one required-questions query per type "
         f"({cw['types']})"),
        ("datto device pages", math.ceil(listed / DATTO_PAGE),
         f"one read per run: ceil({listed} devices / {DATTO_PAGE})"),
    ]
    to_match = facts["to_match"]
    audits = sum(1 for uid, _site, kind, *_ in to_match
                 if uid not in facts["details_cached"] and kind in AUDITED_CLASSES)
    lines.append(("datto audits", audits, "one per audited device to match whose audit was not "
                                          "read before (network devices have no audit endpoint)"))
    companies = len({site for _uid, site, *_ in to_match})
    if to_match:
        queries = candidate_queries_minimum(facts, bridge)
        listing = 1 + math.ceil(cw["configurations"] / CW_PAGE)
        if listing < queries:
            lines.append(("cw configuration listing", listing,
                          f"1 count + ceil({cw['configurations']} configurations / {CW_PAGE}), "
                          f"cheaper than {queries} candidate queries for {companies} companies"))
        else:
            lines.append(("cw candidate queries", queries,
                          f"per company with devices to match ({companies}): ceil(URL length of "
                          f"all its devices' link/serial/name / room in a "
                          f"{cond.SAFE_URL_LENGTH}-char URL)"))
    created = did["create configuration"]
    if created:
        known, new = cw["manufacturers"], facts["new_manufacturers"]
        lines.append(("cw manufacturers", math.ceil(len(known) / CW_PAGE) + len(new),
                      f"read the list once (ceil({len(known)} / {CW_PAGE})) + one POST per "
                      f"manufacturer CW lacks ({len(new)})"))
    lines.append(("cw configuration creations", created, "one POST per device with no match"))
    lines.append(("cw configuration links", did["map device"],
                  "one PATCH per existing configuration matched (its Manage Device link)"))
    lines.append(("deleted devices", 2 * did["deactivate configuration"],
                  "per mapped device deleted: read its configuration, PATCH it Inactive"))
    return lines


def rate_limit_bound(used: Counter, latency: float) -> list[tuple[str, float, str]]:
    """The least wall time the clients' paces allow for the requests made, per remote.

    In a sliding window of W seconds holding at most L requests, the n-th request cannot leave
    before floor((n - 1) / L) * W seconds; its answer comes one latency later. The remotes are
    paced independently, so the bound of the run is the larger of the two."""
    datto_reads = sum(n for endpoint, n in used.items()
                      if endpoint.startswith("datto GET ") and "/auth/" not in endpoint)
    site_creations = used["datto PUT /api/v2/site"]
    cw_requests = sum(n for endpoint, n in used.items() if endpoint.startswith("cw "))
    cw_limit = DEFAULT_REQUESTS_PER_MINUTE
    bounds = []
    for what, n, limit in (("datto reads", datto_reads, 600), ("datto site-create", site_creations, 100),
                           ("cw requests", cw_requests, cw_limit)):
        if n:
            seconds = math.floor((n - 1) / limit) * 60 + latency
            bounds.append((what, seconds, f"floor(({n} - 1) / {limit}) x 60 s + {latency:g} s"))
    return bounds


# -- one phase ------------------------------------------------------------------------------------


def snapshot(facts: dict) -> Counter:
    counts = Counter({f"cw {k}": v for k, v in facts["cw"].ask("counts").items()})
    counts.update({f"datto {k}": v for k, v in facts["datto"].ask("counts").items()})
    return counts


def run_phase(name: str, pm, store, facts: dict, real_quotas: bool) -> dict:
    facts["cw_before"] = facts["cw"].ask("cw_facts")
    facts["datto_before"] = facts["datto"].ask("datto_facts")
    facts["details_cached"] = {uid for uid in facts["datto_before"]["devices"]
                               if store.device_details("datto", uid) is not None}
    before = snapshot(facts)
    cpu_before, _ = usage()
    written_before = bytes_written()
    started = time.perf_counter()
    bridge = open_session(pm, store, real_quotas)
    with bridge.one_run():
        did = run_commands(bridge, facts)
    wall = time.perf_counter() - started
    cpu, rss = usage()
    written = bytes_written()
    used = snapshot(facts) - before
    after = facts["datto"].ask("datto_facts")
    facts["new_manufacturers"] = facts["cw"].ask("cw_facts")["manufacturers"] \
        - facts["cw_before"]["manufacturers"]
    return {"name": name, "wall": wall, "cpu": cpu - cpu_before, "rss": rss, "used": used,
            "written": None if written is None or written_before is None
            else written - written_before,
            "did": did, "workers": bridge.workers, "minimum": minimum(facts, did, bridge),
            "refused": after["refused"] - facts["datto_before"]["refused"],
            "most_in_flight": after["most_in_flight"]}


def report(phase: dict, latency: float, real_quotas: bool) -> None:
    used, lines = phase["used"], phase["minimum"]
    actual, least = sum(used.values()), sum(n for _, n, _ in lines)
    print(f"\n== {phase['name']} ==")
    print(f"wall time        {phase['wall']:.1f} s")
    print(f"psabridge        {phase['cpu']:.1f} s CPU, peak RSS {phase['rss']:.0f} MiB "
          f"(this process only; {phase['workers']} workers per remote)")
    if phase["written"] is not None:
        print(f"store writes     {phase['written'] / 2**20:.1f} MiB to disk (this process)")
    print(f"what was done    {dict(sorted(phase['did'].items()))}")
    print("requests by endpoint:")
    for endpoint, count in sorted(used.items()):
        print(f"  {count:>7}  {endpoint}")
    print(f"  {actual:>7}  total")
    print("theoretical minimum:")
    for what, count, why in lines:
        print(f"  {count:>7}  {what}: {why}")
    print(f"  {least:>7}  total")
    ratio = actual / least if least else float("nan")
    print(f"ratio actual/minimum  {ratio:.3f}")
    per_device = sum(used[e] for e in PER_DEVICE)
    print(f"per-device requests   {per_device}  (sum of: {', '.join(PER_DEVICE)})")
    print(f"datto 429s            {phase['refused']}  (most requests in flight at Datto: "
          f"{phase['most_in_flight']})")
    if real_quotas:
        bounds = rate_limit_bound(used, latency)
        print("rate-limit bound (the clients' paces, per remote):")
        for what, seconds, why in bounds:
            print(f"  {seconds:>7.1f} s  {what}: {why}")
        bound = max((seconds for _, seconds, _ in bounds), default=0.0)
        print(f"  {bound:>7.1f} s  bound: the larger (the remotes are paced independently)")
        if bound > latency:
            print(f"wall time / bound     {phase['wall'] / bound:.2f}")
        else:  # every remote's requests fit in one window: latency, not the quota, decides
            print("wall time / bound     - (the quotas do not bind: every remote's requests fit "
                  "in one window)")


def run(companies: int, devices: int, configurations: int, latency: float,
        real_quotas: bool) -> None:
    log(f"generating {companies} companies, {companies} sites, ~{devices} devices "
        "(each simulator in its own process)")
    cw = Simulator(_make_cw, companies, configurations, latency, real_quotas)
    datto = Simulator(_make_datto, companies, devices, latency, real_quotas)
    pm = make_plugin_manager()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        store = open_store(pm, f"sqlite://{Path(tmp) / 'bench.db'}")
        stack.callback(store.close)
        configure_plugin(pm, store, "connectwise", cw.ask("settings", cw.url))
        configure_plugin(pm, store, "datto", datto.ask("settings", datto.url))
        enable_plugin(pm, store, "connectwise")
        enable_plugin(pm, store, "datto")
        datto.ask("forget_quota")
        cw_facts, datto_facts = cw.ask("cw_facts"), datto.ask("datto_facts")
        facts = {"cw": cw, "datto": datto, "datto_portal": f"{datto.url.rstrip('/')}/portal"}
        codebase = httpx.get(f"{cw.url}/login/companyinfo/{cw_facts['company_id']}").json()["Codebase"]
        facts["cw_base"] = f"{cw.url.rstrip('/')}/{codebase}apis/3.0/"
        print(f"#### {cw_facts['companies']} companies, {datto_facts['sites']} sites, "
              f"{len(datto_facts['devices'])} devices, {cw_facts['configurations']} "
              f"configurations in CW; latency {latency * 1000:g} ms per request; workers per "
              f"remote {pacing.concurrency_from_environment()}")
        if real_quotas:
            print("Real quotas: Datto's 600 reads/min on the simulator (answers held 1 s past 90 %, "
                  "429 past 100 %) and on the client; ConnectWise's client at "
                  f"{DEFAULT_REQUESTS_PER_MINUTE}/min.")
        else:
            print("Quotas raised to 10**9 requests/min on the Datto simulator and both clients: "
                  "this run counts requests.")
        for name in ("initial mapping", "no-change resync"):
            log(name)
            report(run_phase(name, pm, store, facts, real_quotas), latency, real_quotas)
    for label, sim in (("ConnectWise simulator", cw), ("Datto simulator", datto)):
        cpu, rss = sim.stop()
        print(f"{label:<22} {cpu:.1f} s CPU, peak RSS {rss:.0f} MiB (its own process)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--companies", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=20000)
    parser.add_argument("--configurations-per-company", type=int, default=6,
                        help="seeded CW configurations per company (default 6)")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds every simulated answer takes (a real service: 0.15)")
    parser.add_argument("--real-quotas", action="store_true",
                        help="Datto's real quotas on its simulator, and both clients' real pace")
    args = parser.parse_args(argv)
    logs.configure_logging(0, "console")  # warnings only, to stderr
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per loopback request
    run(args.companies, args.devices, args.configurations_per_company, args.latency,
        args.real_quotas)
    return 0


if __name__ == "__main__":
    sys.exit(main())
