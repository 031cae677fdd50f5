"""`psabridge simulate connectwise`: serve the simulator on loopback until Ctrl-C. While it
runs, `psabridge simulate close-ticket` (psabridge.simulator_commands) closes a ticket in it."""

from __future__ import annotations

import threading

import click

from psabridge.plugins.connectwise import SETTINGS
from psabridge.simulation import Faults, control_token
from psabridge.simulator_commands import (
    configure_command,
    control_file_written,
    fault_options,
    stopping_on_terminate,
)

TITLE = "ConnectWise Manage"


@click.command("connectwise")
@click.option("--port", default=8089, show_default=True, help="Loopback port (0 picks a free one).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--seed", default=0, show_default=True,
              help="Seed of the generated MSP; `simulate datto` with the same seed and --companies "
                   "describes the same customers.")
@click.option("--companies", default=12, show_default=True, help="How many companies to generate.")
@click.option("--configurations", default=6, show_default=True,
              help="Configurations per company, besides the machines the MSP already recorded.")
@fault_options
def simulate_connectwise(port, host, seed, companies, configurations, latency, error_rate,
                         throttle_rate, drop_rate):
    """Serve a simulated ConnectWise Manage API with generated MSP data.

    While it runs, `psabridge simulate close-ticket ID` closes a ticket in it, as a technician
    would."""
    from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator

    faults = Faults(latency=latency, error_rate=error_rate, throttle_rate=throttle_rate,
                    drop_rate=drop_rate, seed=seed)
    sim = ConnectWiseSimulator(seed=seed, companies=companies, configurations_per_company=configurations,
                               faults=faults)
    secrets = [setting.name for setting in SETTINGS if setting.secret]
    token = control_token()
    with stopping_on_terminate(), sim.serve(host, port, control_token=token) as server, \
            configure_command("connectwise", sim.settings(server.url), secrets) as command, \
            control_file_written("connectwise", server.url, token):
        try:  # a stop that comes as soon as the lines below are read is a clean stop too
            click.echo(f"ConnectWise Manage simulator at {server.url}")
            click.echo("Configure the connector with:")
            click.echo(f"  {command}")
            click.echo("  (the private key waits in that file until the simulator stops)")
            click.echo("Close a ticket as a technician would: psabridge simulate close-ticket ID")
            click.echo("Press Ctrl-C to stop.")
            threading.Event().wait()
        except KeyboardInterrupt:
            click.echo("Stopped.")

