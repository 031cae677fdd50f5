"""One simulator in a process of its own, for tests whose psabridge processes must not share a
process (nor a GIL) with the services they call:

    python -m tests.reliability.simulator_host connectwise|datto --seed N --companies N \\
        [--error-rate R --throttle-rate R --drop-rate R --latency S]

The fault options are the `psabridge simulate` commands' own (`fault_options`). It prints one
JSON line, {"url", "token", "settings"}: where it listens, its control token, and the plugin
settings that reach it, then serves until SIGTERM. Besides the simulator's own control actions
(raise-alert, resolve-alert, add-device; close-ticket), under /_simulator/:

* `inspect`: what the simulated product holds (tickets, configurations; sites, devices,
  alerts), every request it received (`counts`, faults included), and what its app processed
  and answered (`answers`, counted behind the fault injector, as `world.Reached` does);
* `faults`: change the fault rates while it runs ({"error_rate": 0, ...}).
"""

from __future__ import annotations

import json
import sys
import threading

import click

from psabridge import simulation
from psabridge.simulator_commands import fault_options, stopping_on_terminate
from tests.reliability.world import ROOMY_QUOTAS, Reached

RATES = ("latency", "error_rate", "throttle_rate", "drop_rate", "retry_after")


def _connectwise(seed: int, companies: int, faults: simulation.Faults):
    from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator, controls
    from psabridge.plugins.connectwise.simulator.app import endpoint_template

    sim = ConnectWiseSimulator(seed=seed, companies=companies, faults=faults)
    reached = Reached(sim.app.app, endpoint_template)
    sim.app.app = reached

    def state() -> dict:
        with sim.db.lock:
            return {"tickets": list(sim.db.tickets.values()),
                    "configurations": list(sim.db.configurations.values()),
                    "companies": list(sim.db.companies.values())}

    return sim, sim.app, reached, controls.actions(sim), state, sim.settings


def _datto(seed: int, companies: int, faults: simulation.Faults):
    from psabridge.plugins.connectwise.simulator import company_names
    from psabridge.plugins.rmm_datto.simulator import DattoSimulator, controls

    sim = DattoSimulator(seed=seed, company_names=company_names(seed, companies), faults=faults,
                         quotas=ROOMY_QUOTAS)
    reached = Reached(sim.injector.app, sim.endpoint_of)
    sim.injector.app = reached

    def state() -> dict:
        with sim._lock:
            return {"alerts": list(sim.alerts.values()), "sites": list(sim.sites.values()),
                    "devices": list(sim.devices.values())}

    def settings(url: str) -> dict:
        # The client's own quota is not what is under test: as `world.world` sets it.
        return {**sim.settings(url), "requests_per_minute": "1000000"}

    return sim, sim.injector, reached, controls.actions(sim), state, settings


@click.command()
@click.argument("product", type=click.Choice(["connectwise", "datto"]))
@click.option("--seed", type=int, default=0)
@click.option("--companies", type=int, default=6)
@fault_options
def main(product, seed, companies, latency, error_rate, throttle_rate, drop_rate):
    faults = simulation.Faults(seed=seed + (product == "datto"), latency=latency,
                               error_rate=error_rate, throttle_rate=throttle_rate,
                               drop_rate=drop_rate)
    build = _connectwise if product == "connectwise" else _datto
    sim, injector, reached, actions, state, settings = build(seed, companies, faults)

    def inspect(body: dict) -> dict:
        with reached._lock:
            answers = [[endpoint, status, n] for (endpoint, status), n in reached.answers.items()]
        return {**state(), "answers": answers, "counts": dict(injector.counts),
                "faults_served": dict(injector.faults_served)}

    def set_faults(body: dict) -> dict:
        for name, value in body.items():
            if name not in RATES or not isinstance(value, int | float):
                raise simulation.ControlError(400, f"{name} is not a fault rate: {', '.join(RATES)}")
            setattr(faults, name, float(value))
        return {name: getattr(faults, name) for name in RATES}

    token = simulation.control_token()
    app = simulation.ControlPanel(injector, token, {**actions, "inspect": inspect,
                                                    "faults": set_faults})
    server = simulation.start_server(app, name=f"{product}-simulator")
    print(json.dumps({"url": server.url, "token": token, "settings": settings(server.url)}),
          flush=True)
    with stopping_on_terminate():
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
