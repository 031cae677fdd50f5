"""Several psabridge workers and `serve` replicas on one store, against simulators in processes
of their own: the harness of `test_fleet.py` and `benchmarks/replicas.py`.

* `SimulatorProcess`: one simulator (`simulator_host.py`), driven through its control actions
  (raise an alert, resolve it, close a ticket, switch faults) and inspected at the end: what it
  holds, every request it received, what its app processed.
* `configured_store`: a store (any URL: SQLite, PostgreSQL) with both plugins configured and
  enabled for those simulators, and a bridge on it in this process, for the admin's set-up and
  the checks.
* `snapshot_world`: what the simulators hold, as the `World` that `world.check_invariants`
  reads, so the same invariants are checked whichever process the simulators ran in.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import attrs
import httpx

from psabridge.core.bridge import Bridge, open_bridge
from psabridge.core.plugins import configure_plugin, enable_plugin, make_plugin_manager
from psabridge.core.store import Store, open_store
from psabridge.simulation import CONTROL_PREFIX
from tests.reliability.world import Reached, World, fast_clients

ROOT = Path(__file__).resolve().parents[2]


class SimulatorProcess:
    """`python -m tests.reliability.simulator_host PRODUCT ...`, started and ready."""

    def __init__(self, product: str, seed: int, companies: int, log: Path, **faults: float):
        self.product = product
        options = [f"--{name.replace('_', '-')}={value:g}" for name, value in faults.items()]
        self.log = log
        with log.open("w") as errors:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.reliability.simulator_host", product,
                 f"--seed={seed}", f"--companies={companies}", *options],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=errors, text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=10)
            raise AssertionError(f"the {product} simulator did not start: {log.read_text()[-2000:]}")
        started = json.loads(line)
        self.url, self.token, self.settings = started["url"], started["token"], started["settings"]
        self.http = httpx.Client(timeout=30, headers={"Authorization": f"Bearer {self.token}"})

    def control(self, action: str, check: bool = True, **body) -> dict | None:
        """Run a control action; with `check=False`, None when the simulator refused it (an
        alert resolved, or a ticket closed, by psabridge meanwhile)."""
        answer = self.http.post(f"{self.url}{CONTROL_PREFIX}{action}", json=body)
        if answer.status_code != 200 and not check:
            return None
        assert answer.status_code == 200, f"{self.product} {action}: {answer.text}"
        return answer.json()

    def inspect(self) -> dict:
        return self.control("inspect")

    def requests(self) -> int:
        """Every request the simulated API received so far, faulted ones included."""
        return sum(self.inspect()["counts"].values())

    def requests_by_endpoint(self) -> collections.Counter[str]:
        """Every request received so far, faulted ones included, per endpoint ("GET /path/{id}"),
        each prefixed with the product."""
        return collections.Counter({f"{self.product} {endpoint}": n
                                    for endpoint, n in self.inspect()["counts"].items()})

    def faults(self, **rates: float) -> None:
        self.control("faults", **rates)

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()


@contextlib.contextmanager
def simulators(seed: int, companies: int, log_dir: Path,
               **faults: float) -> Iterator[tuple[SimulatorProcess, SimulatorProcess]]:
    started = []
    try:
        for product in ("connectwise", "datto"):
            started.append(SimulatorProcess(product, seed, companies,
                                            log_dir / f"{product}-simulator.log", **faults))
        yield started[0], started[1]
    finally:
        for simulator in started:
            simulator.stop()


@attrs.define
class Configured:
    pm: object
    store: Store
    bridge: Bridge


@contextlib.contextmanager
def configured_store(store_url: str, cw: SimulatorProcess,
                     datto: SimulatorProcess) -> Iterator[Configured]:
    """The store at `store_url`, both plugins configured and enabled for the simulators, and a
    bridge on it in this process with the tests' quick retries."""
    pm = make_plugin_manager()
    store = open_store(pm, store_url)
    try:
        configure_plugin(pm, store, "connectwise", cw.settings)
        configure_plugin(pm, store, "datto", datto.settings)
        enable_plugin(pm, store, "connectwise")
        enable_plugin(pm, store, "datto")
        bridge = open_bridge(pm, store, {})
        fast_clients(bridge)
        yield Configured(pm, store, bridge)
    finally:
        store.close()


def difference_table(fleet: collections.Counter[str], single: collections.Counter[str]) -> str:
    """Requests per endpoint of two runs, and the difference, largest excess first: where a
    fleet's requests beyond one worker's go."""
    endpoints = sorted(set(fleet) | set(single), key=lambda e: (single[e] - fleet[e], e))
    width = max((len(e) for e in endpoints), default=8)
    lines = [f"{'endpoint':<{width}} {'fleet':>7} {'single':>7} {'extra':>7}"]
    lines += [f"{e:<{width}} {fleet[e]:>7} {single[e]:>7} {fleet[e] - single[e]:>+7}"
              for e in endpoints]
    total_fleet, total_single = sum(fleet.values()), sum(single.values())
    lines.append(f"{'total':<{width}} {total_fleet:>7} {total_single:>7} "
                 f"{total_fleet - total_single:>+7}")
    return "\n".join(lines)


def _reached(answers: list) -> Reached:
    reached = Reached(None, str)
    reached.answers = collections.Counter({(endpoint, status): n for endpoint, status, n in answers})
    return reached


def snapshot_world(configured: Configured, cw: SimulatorProcess, datto: SimulatorProcess,
                   seeded_configurations: set[int] = frozenset(),
                   seeded_sites: set[str] = frozenset()) -> World:
    """What the simulators hold now, in the shape `check_invariants` reads from a `World`."""
    held_cw, held_datto = cw.inspect(), datto.inspect()
    cw_view = SimpleNamespace(db=SimpleNamespace(
        tickets={t["id"]: t for t in held_cw["tickets"]},
        configurations={c["id"]: c for c in held_cw["configurations"]},
        companies={c["id"]: c for c in held_cw["companies"]}))
    datto_view = SimpleNamespace(alerts={a["alertUid"]: a for a in held_datto["alerts"]},
                                 sites={s["uid"]: s for s in held_datto["sites"]},
                                 devices={d["uid"]: d for d in held_datto["devices"]})
    return World(cw=cw_view, datto=datto_view, cw_reached=_reached(held_cw["answers"]),
                 datto_reached=_reached(held_datto["answers"]), faults=[], pm=configured.pm,
                 store=configured.store, bridge=configured.bridge, cw_url=cw.url,
                 datto_url=datto.url, transports={},
                 seeded_configurations=set(seeded_configurations), seeded_sites=set(seeded_sites))
