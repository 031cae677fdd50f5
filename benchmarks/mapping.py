"""Benchmark: the initial mapping of a large estate, then a no-change resync, through both
simulators (ConnectWise Manage and Datto RMM), in-process and/or over loopback HTTP.

    python benchmarks/mapping.py                                  # 1,000 companies, 20,000 devices
    python benchmarks/mapping.py --companies 50 --devices 1000 --mode both

The estate: N ConnectWise companies (with the simulator's seeded configurations), N Datto sites
named after them (blurred as real estates are), `--devices` devices spread evenly over the
sites, plus the handful of special devices the Datto generator always adds.

Each phase runs the mapping commands as the CLI does, one after the other on one bridge:

    companies map --suggested     plan_company_mappings(None): every unmapped company
    device-types map --suggested  load_device_types, then map_device_type for each suggestion
    devices map --all             plan_automatic_mapping
    deleted-devices check         plan_deleted_devices (what every sync pass does first)

and prints wall time, peak memory, requests per endpoint on each simulator, the theoretical
minimum number of requests for the estate (with its derivation) and the ratio actual/minimum.
The second phase runs the same commands again on a fresh bridge (a later run) and must make
no per-device request.

Datto RMM allows 600 requests a minute per account; at that pace 20,000 audits alone take over
half an hour. The benchmark measures requests, not Datto's quota, so it raises the simulator's
quotas and the client's limiter to 10**9 (faults off, latency 0) and says so in its output.
Peak memory is the process's maximum resident set size (resource.getrusage ru_maxrss), which
includes both simulators' state; `--mode both` runs each mode in its own child process so each
figure is its own.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx

from psabridge.core import logs, mapping
from psabridge.core.bridge import Bridge, open_bridge
from psabridge.core.plugins import configure_plugin, enable_plugin, make_plugin_manager
from psabridge.core.store import open_store
from psabridge.plugins.connectwise import conditions as cond
from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator, company_names
from psabridge.plugins.rmm_datto import wire
from psabridge.plugins.rmm_datto.client import ClientOptions, client_for
from psabridge.plugins.rmm_datto.simulator import DattoSimulator
from psabridge.plugins.rmm_datto.simulator.quota import Quotas
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


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# -- the estate ---------------------------------------------------------------------------------


def make_simulators(companies: int, devices: int, configurations_per_company: int):
    # No configurations recorded by hand: the Datto side's machines are sized here, not by the
    # simulated MSP, so the ones it would record are not these devices.
    cw = ConnectWiseSimulator(seed=SEED, companies=companies,
                              configurations_per_company=configurations_per_company,
                              known_machines=False)
    per_site = max(2, devices // companies)  # the generator puts a desktop and a server first
    datto = DattoSimulator(
        seed=SEED, company_names=company_names(SEED, companies), unmatched_sites=0,
        devices_per_site=(per_site, per_site), alerts=0,
        quotas=Quotas(reads=UNLIMITED, writes=UNLIMITED, operation=UNLIMITED, operations={}),
    )
    return cw, datto


def open_session(pm, store, transports) -> Bridge:
    """A bridge as one CLI run has it: fresh connections, the Datto limiter raised like the
    simulator's quotas (site-create's own 100/min bucket included)."""
    bridge = open_bridge(pm, store, transports)
    limits = Limits(reads=UNLIMITED, writes=UNLIMITED, operation=UNLIMITED, operations={})
    client_for(bridge.rmm.connection, ClientOptions(limits=limits))
    return bridge


# -- the commands -------------------------------------------------------------------------------


def progress_printer(label: str, total: int):
    step = max(1, total // 10)
    done = [0]

    def progress(change) -> None:
        done[0] += 1
        if done[0] % step == 0 or done[0] == total:
            log(f"  {label}: {done[0]}/{total}")
    return progress


def run_commands(bridge: Bridge, facts: dict) -> dict:
    """The mapping commands of one run; returns what they did (for the minimum)."""
    log("companies map --suggested")
    plan = mapping.plan_company_mappings(bridge, None)
    outcome = mapping.apply(bridge, plan, progress_printer("companies", len(plan.changes)))
    did = Counter(c.action for c in outcome.done)
    facts["mapped_sites"] = {m.site_uid for m in bridge.store.company_mappings(*bridge.pair)}
    facts["site_count_before_devices"] = None

    log("device-types map --suggested")
    for row in mapping.load_device_types(bridge):
        if not row.mapped and row.configuration_type and not row.flagged:
            mapping.map_device_type(bridge, row.device_type, row.configuration_type.id)

    log("devices map --all")
    facts["to_match"] = _devices_to_match(bridge, facts)
    plan = mapping.plan_automatic_mapping(bridge)
    outcome = mapping.apply(bridge, plan, progress_printer("devices", len(plan.changes)))
    did.update(c.action for c in outcome.done)
    did["failed"] += len(outcome.failed)
    did["skipped"] += len(plan.skipped)

    log("deleted-devices check")
    plan = mapping.plan_deleted_devices(bridge)
    outcome = mapping.apply(bridge, plan)
    did.update(c.action for c in outcome.done)
    return did


def _devices_to_match(bridge: Bridge, facts: dict) -> list:
    """Unmapped, audited, live devices of mapped sites: what devices map --all must look at.
    Read from the simulator's state directly (not through the API), so it costs no request."""
    datto: DattoSimulator = facts["datto"]
    mapped_devices = {m.device_uid for m in bridge.store.device_mappings(*bridge.pair)}
    rows = []
    for row in datto.devices.values():
        device = wire.device(row)
        if (not device.deleted and device.last_audit is not None and device.uid not in mapped_devices
                and device.site_uid in facts["mapped_sites"]):
            rows.append((device, row))
    return rows


# -- the theoretical minimum ----------------------------------------------------------------------


def candidate_queries_minimum(facts: dict, bridge: Bridge) -> int:
    """Fewest URL-sized requests that can ask ConnectWise for every device's candidates.

    Per company (the hook's unit), all devices' link, serial and name must travel in a
    `conditions` URL parameter no longer than CW's safe URL length; splitting repeats the
    company scope, so ceil(total length / room per request) is a lower bound."""
    datto: DattoSimulator = facts["datto"]
    site_company = {m.site_uid: m.company_id for m in bridge.store.company_mappings(*bridge.pair)}
    by_company: dict[str, list] = defaultdict(list)
    for device, row in facts["to_match"]:
        # Network devices have no audit endpoint: nothing is known of their serial.
        audited = row.get("deviceClass") in AUDITED_CLASSES
        details = wire.device_details(datto.audits[device.uid] if audited else {}, "")
        # The API gives every device but network devices a portalUrl (their Manage Device link).
        url = None if row.get("deviceClass") == "rmmnetworkdevice" else \
            f"{facts['datto_portal']}/device/{device.id}"
        by_company[site_company[device.site_uid]].append((url, details.serial_number, device.hostname))
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


def minimum(phase: str, facts: dict, did: Counter, bridge: Bridge) -> list[tuple[str, int, str]]:
    """(what, requests, why) lines whose sum is the fewest requests the commands can make."""
    cw: ConnectWiseSimulator = facts["cw"]
    companies = sum(1 for c in cw.db.companies.values() if not c["deletedFlag"])
    types = len(cw.db.configuration_types)
    sites_before = facts["sites_before"]
    listed = facts["devices_listed"]  # /account/devices lists deleted devices too
    device_pages = math.ceil(listed / DATTO_PAGE)
    created_sites = did["create site"]
    lines = [
        ("datto token", 1, "one grant per run"),
        ("cw codebase lookup", 1, "one /login/companyinfo per run"),
        ("cw companies", math.ceil(companies / CW_PAGE), f"ceil({companies} companies / {CW_PAGE})"),
        ("datto sites", math.ceil(sites_before / DATTO_PAGE), f"ceil({sites_before} sites / {DATTO_PAGE})"),
        ("datto site creations", created_sites, "one PUT per company with no site close enough"),
        ("cw configuration types", math.ceil(types / CW_PAGE) + types,
         f"ceil({types} types / {CW_PAGE}) + one required-questions query per type ({types})"),
        ("datto device pages", 3 * device_pages,
         f"3 commands (device-types, devices, deleted check) x ceil({listed} devices / {DATTO_PAGE})"),
    ]
    to_match = facts["to_match"]
    audits = sum(1 for device, row in to_match if device.uid not in facts["details_cached"]
                 and row.get("deviceClass") in AUDITED_CLASSES)
    lines.append(("datto audits", audits, "one per audited device to match whose audit was not "
                                          "read before (network devices have no audit endpoint)"))
    candidates = candidate_queries_minimum(facts, bridge) if to_match else 0
    lines.append(("cw candidate queries", candidates,
                  f"per company with devices to match ({len({d.site_uid for d, _ in to_match})}): "
                  f"ceil(URL length of all its devices' link/serial/name / room in a "
                  f"{cond.SAFE_URL_LENGTH}-char URL)"))
    created = did["create configuration"]
    if created:
        known = facts["manufacturers_before"]
        new = facts["new_manufacturers"]
        lines.append(("cw manufacturers", math.ceil(len(known) / CW_PAGE) + len(new),
                      f"read the list once (ceil({len(known)} / {CW_PAGE})) + one POST per "
                      f"manufacturer CW lacks ({len(new)})"))
    lines.append(("cw configuration creations", created, "one POST per device with no match"))
    lines.append(("cw configuration links", did["map device"],
                  "one PATCH per existing configuration matched (its Manage Device link)"))
    lines.append(("deleted devices", 2 * did["deactivate configuration"],
                  "per mapped device deleted: read its configuration, PATCH it Inactive"))
    return lines


# -- one phase, and one mode -----------------------------------------------------------------------


def snapshot(cw, datto) -> Counter:
    counts = Counter({f"cw {k}": v for k, v in cw.counts.items()})
    counts.update({f"datto {k}": v for k, v in datto.counts.items()})
    return counts


def run_phase(name: str, pm, store, transports, facts: dict) -> dict:
    cw, datto = facts["cw"], facts["datto"]
    facts["sites_before"] = len(datto.sites)
    facts["devices_listed"] = len(datto.devices)
    facts["details_cached"] = {uid for uid in datto.devices
                               if store.device_details(facts["rmm"], uid) is not None}
    facts["manufacturers_before"] = {m["name"].casefold() for m in cw.db.manufacturers.values()}
    before = snapshot(cw, datto)
    started = time.perf_counter()
    bridge = open_session(pm, store, transports)
    did = run_commands(bridge, facts)
    wall = time.perf_counter() - started
    used = snapshot(cw, datto) - before
    facts["new_manufacturers"] = {m["name"].casefold() for m in cw.db.manufacturers.values()} \
        - facts["manufacturers_before"]
    return {"name": name, "wall": wall, "used": used, "did": did,
            "minimum": minimum(name, facts, did, bridge)}


def report(mode: str, phase: dict) -> None:
    used, lines = phase["used"], phase["minimum"]
    actual, least = sum(used.values()), sum(n for _, n, _ in lines)
    print(f"\n== {mode}: {phase['name']} ==")
    print(f"wall time        {phase['wall']:.1f} s")
    print(f"peak memory      {peak_rss_mib():.0f} MiB (max RSS of this process, simulators included)")
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


def run_mode(mode: str, companies: int, devices: int, configurations: int) -> None:
    log(f"{mode}: generating {companies} companies, {companies} sites, ~{devices} devices")
    cw, datto = make_simulators(companies, devices, configurations)
    log(f"{mode}: {len(cw.db.companies)} companies, {len(cw.db.configurations)} configurations, "
        f"{len(datto.sites)} sites, {len(datto.devices)} devices")
    pm = make_plugin_manager()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        store = open_store(pm, f"sqlite://{Path(tmp) / 'bench.db'}")
        stack.callback(store.close)
        if mode == "inprocess":
            cw_url, datto_url = "http://connectwise.simulator", "http://datto.simulator"
            transports = {"connectwise": cw.transport(), "datto": datto.transport()}
        else:
            cw_url = stack.enter_context(cw.serve()).url
            datto_url = stack.enter_context(datto.serve()).url
            transports = {}
        configure_plugin(pm, store, "connectwise", cw.settings(cw_url))
        configure_plugin(pm, store, "datto", datto.settings(datto_url))
        enable_plugin(pm, store, "connectwise", transport=transports.get("connectwise"))
        enable_plugin(pm, store, "datto", transport=transports.get("datto"))
        facts = {"cw": cw, "datto": datto, "rmm": "datto",
                 "datto_portal": f"{datto_url.rstrip('/')}/portal"}
        with httpx.Client(transport=transports.get("connectwise")) as http:
            codebase = http.get(f"{cw_url}/login/companyinfo/{cw.options.company_id}").json()["Codebase"]
        facts["cw_base"] = f"{cw_url.rstrip('/')}/{codebase}apis/3.0/"
        print(f"\n#### mode: {mode} | {len(cw.db.companies)} companies, {len(datto.sites)} sites, "
              f"{len(datto.devices)} devices, {len(cw.db.configurations)} configurations in CW")
        print("Datto quotas raised to 10**9 requests/min on the simulator and the client: the "
              "benchmark counts requests, and Datto's real 600/min would make it about an hour of "
              "waiting. Faults off, latency 0.")
        for name in ("initial mapping", "no-change resync"):
            log(f"{mode}: {name}")
            report(mode, run_phase(name, pm, store, transports, facts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--companies", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=20000)
    parser.add_argument("--configurations-per-company", type=int, default=6,
                        help="seeded CW configurations per company (default 6)")
    parser.add_argument("--mode", choices=("inprocess", "loopback", "both"), default="inprocess")
    args = parser.parse_args(argv)
    logs.configure_logging(0, "console")  # warnings only, to stderr
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per loopback request
    if args.mode == "both":  # one child process per mode: each peak-memory figure is its own
        for mode in ("inprocess", "loopback"):
            command = [sys.executable, __file__, "--mode", mode, "--companies", str(args.companies),
                       "--devices", str(args.devices), "--configurations-per-company",
                       str(args.configurations_per_company)]
            if subprocess.run(command).returncode:
                return 1
        return 0
    run_mode(args.mode, args.companies, args.devices, args.configurations_per_company)
    return 0


if __name__ == "__main__":
    sys.exit(main())
