"""`psabridge simulate datto`: serve the Datto RMM simulator on loopback until Ctrl-C."""

from __future__ import annotations

import time

import click

from psabridge.plugins.rmm_datto import SETTINGS
from psabridge.simulation import Faults
from psabridge.simulator_commands import configure_command, stopping_on_terminate


@click.command("datto")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8601, show_default=True, type=int, help="Port (0 picks a free one).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the generated data.")
@click.option("--sites", default=12, show_default=True, type=int,
              help="Sites derived from MSP client company names.")
@click.option("--error-rate", default=0.0, show_default=True, type=float,
              help="Share of requests answered with a 5xx.")
@click.option("--latency", default=0.0, show_default=True, type=float,
              help="Seconds added to every request.")
def simulate_datto(host: str, port: int, seed: int, sites: int, error_rate: float, latency: float):
    """Run a simulated Datto RMM API (v2) with generated sites, devices and alerts."""
    from psabridge.plugins.rmm_datto.simulator import DattoSimulator

    simulator = DattoSimulator(seed=seed, faults=Faults(error_rate=error_rate, latency=latency,
                                                        seed=seed), companies=sites)
    secrets = [setting.name for setting in SETTINGS if setting.secret]
    with stopping_on_terminate(), simulator.serve(host, port) as server, \
            configure_command("datto", simulator.settings(server.url), secrets) as command:
        try:  # a stop that comes as soon as the lines below are read is a clean stop too
            click.echo(f"Datto RMM simulator listening on {server.url} (Ctrl-C to stop)")
            click.echo(f"{len(simulator.sites)} sites, {len(simulator.devices)} devices, "
                       f"{len(simulator.alerts)} alerts")
            click.echo("Configure the connector with:")
            click.echo(f"  {command}")
            click.echo("  (the API secret key waits in that file until the simulator stops)")
            _wait_for_interrupt()
        except KeyboardInterrupt:
            pass
    click.echo("Stopped.")


def _wait_for_interrupt(sleep=time.sleep) -> None:
    try:
        while True:
            sleep(3600)
    except KeyboardInterrupt:
        pass
