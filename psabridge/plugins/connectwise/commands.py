"""`psabridge simulate connectwise`: serve the simulator on loopback until Ctrl-C."""

from __future__ import annotations

import threading

import click

from psabridge.simulation import Faults


@click.command("connectwise")
@click.option("--port", default=8089, show_default=True, help="Loopback port (0 picks a free one).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--seed", default=0, show_default=True, help="Seed of the generated data.")
@click.option("--companies", default=12, show_default=True, help="How many companies to generate.")
@click.option("--configurations", default=6, show_default=True, help="Configurations per company.")
@click.option("--latency", default=0.0, help="Seconds added to every request.")
@click.option("--error-rate", default=0.0, help="Share of requests answered 5xx.")
@click.option("--throttle-rate", default=0.0, help="Share of requests answered 429 with Retry-After.")
@click.option("--drop-rate", default=0.0, help="Share of connections dropped without an answer.")
def simulate_connectwise(port, host, seed, companies, configurations, latency, error_rate,
                         throttle_rate, drop_rate):
    """Serve a simulated ConnectWise Manage API with generated MSP data."""
    from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator

    faults = Faults(latency=latency, error_rate=error_rate, throttle_rate=throttle_rate,
                    drop_rate=drop_rate, seed=seed)
    sim = ConnectWiseSimulator(seed=seed, companies=companies, configurations_per_company=configurations,
                               faults=faults)
    with sim.serve(host, port) as server:
        click.echo(f"ConnectWise Manage simulator at {server.url}")
        click.echo("Configure the connector with:")
        settings = sim.settings(server.url)
        click.echo("  psabridge configure connectwise " + " ".join(
            f"--{key.replace('_', '-')} {value}" for key, value in settings.items()
            if key != "private_key"))
        click.echo(f"  and the private key (prompted, or PSABRIDGE_CONNECTWISE_PRIVATE_KEY): "
                   f"{settings['private_key']}  (a simulator key, not a secret)")
        click.echo("Press Ctrl-C to stop.")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            click.echo("Stopped.")
