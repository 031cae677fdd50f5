"""`psabridge simulate autotask`: serve the Autotask PSA simulator on loopback until Ctrl-C.

While it runs, the control endpoints (`close-ticket`, `reopen-ticket`) act in it as a
technician would; `psabridge simulate close-ticket` reaches them through the control file this
command writes (plugin name "autotask"). The connector's plugin registers this command through
its `register_commands` hook: `register(cli)` adds it to the `simulate` group.
"""

from __future__ import annotations

import threading

import click

from psabridge.simulation import Faults, control_token
from psabridge.simulator_commands import (
    configure_command,
    control_file_written,
    fault_options,
    stopping_on_terminate,
)

TITLE = "Autotask PSA"
SECRET_SETTINGS = ("secret",)


@click.command("autotask")
@click.option("--port", default=8091, show_default=True, type=int, help="Loopback port (0 picks a free one).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the generated MSP; `simulate datto` with the same seed and --companies "
                   "describes the same customers.")
@click.option("--companies", default=12, show_default=True, type=click.IntRange(min=1),
              help="How many client companies to generate.")
@click.option("--configurations", default=2, show_default=True, type=click.IntRange(min=0),
              help="Configuration items per company, besides the machines the MSP already recorded.")
@fault_options
@click.option("--requests-per-hour", default=10_000, show_default=True, type=click.IntRange(min=1),
              help="The database's request threshold per rolling hour (ThresholdInformation).")
@click.option("--threads", default=3, show_default=True, type=click.IntRange(min=1),
              help="Requests in flight allowed per integration code and entity.")
@click.option("--limit-status", default=429, show_default=True, type=click.Choice(["429", "500"]),
              help="The status of a refusal over either limit (Autotask does not document it).")
def simulate_autotask(port, host, seed, companies, configurations, latency, error_rate, throttle_rate,
                      drop_rate, requests_per_hour, threads, limit_status):
    """Serve a simulated Autotask PSA REST API (v1.0) with generated MSP data.

    Zone discovery answers at /ATServicesRest/V1.0/zoneInformation; TicketWebhooks created in
    it are called back as Autotask does (signed, retried)."""
    from psabridge.plugins.autotask.simulator import AutotaskSimulator, Options

    faults = Faults(latency=latency, error_rate=error_rate, throttle_rate=throttle_rate,
                    drop_rate=drop_rate, seed=seed)
    options = Options(request_threshold=requests_per_hour, thread_limit=threads,
                      limit_status=int(limit_status))
    sim = AutotaskSimulator(seed=seed, companies=companies, configurations_per_company=configurations,
                            faults=faults, options=options)
    token = control_token()
    with stopping_on_terminate(), sim.serve(host, port, control_token=token) as server, \
            configure_command("autotask", sim.settings(server.url), SECRET_SETTINGS) as command, \
            control_file_written("autotask", server.url, token):
        try:  # a stop that comes as soon as the lines below are read is a clean stop too
            click.echo(f"Autotask PSA simulator at {server.url} "
                       f"(zone discovery: {server.url}/ATServicesRest/V1.0/zoneInformation?user=...)")
            click.echo(f"{len(sim.companies()) - 1} companies, "
                       f"{len(sim.configurations())} configuration items")
            click.echo("Configure the connector with:")
            click.echo(f"  {command}")
            click.echo("  (the API secret waits in that file until the simulator stops)")
            click.echo("Press Ctrl-C to stop.")
            _wait_for_interrupt()
        except KeyboardInterrupt:
            pass
    click.echo("Stopped.")


def _wait_for_interrupt() -> None:
    threading.Event().wait()


COMMANDS = (simulate_autotask,)


def register(cli: click.Group) -> None:
    """Add `simulate autotask` to `cli`'s `simulate` group."""
    simulate = cli.commands.get("simulate") if isinstance(cli, click.Group) else None
    if isinstance(simulate, click.Group):
        for command in COMMANDS:
            simulate.add_command(command)
