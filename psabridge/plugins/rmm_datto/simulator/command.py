"""`psabridge simulate datto`: serve the Datto RMM simulator on loopback until Ctrl-C; and
`psabridge simulate raise-alert`, `resolve-alert`, `add-device`: what a monitor or a technician
does in Datto RMM, in the running simulator."""

from __future__ import annotations

import time

import click

from psabridge.plugins.rmm_datto import SETTINGS
from psabridge.plugins.rmm_datto.simulator.controls import ALERT_KINDS, ALERT_PRIORITIES, DEVICE_KINDS
from psabridge.simulation import Faults, control_token
from psabridge.simulator_commands import (
    call_simulator,
    configure_command,
    control_file_written,
    control_options,
    echo_result,
    fault_options,
    stopping_on_terminate,
)

TITLE = "Datto RMM"


@click.command("datto")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8601, show_default=True, type=int, help="Port (0 picks a free one).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the generated MSP; `simulate connectwise` with the same seed and "
                   "--companies describes the same customers.")
@click.option("--companies", "--sites", "companies", default=12, show_default=True,
              type=click.IntRange(min=1),
              help="How many client companies the MSP has: a site each, plus sites of its own.")
@fault_options
@click.option("--requests-per-minute", default=600, show_default=True, type=click.IntRange(min=1),
              help="The account's quota of reads, and of writes, per minute; over it: 429, then "
                   "a 403 block of 5 minutes, as Datto RMM does.")
@click.option("--token-ttl", default=100 * 3600, show_default=True, type=click.IntRange(min=1),
              help="Seconds an access token lasts before it is refused as expired.")
def simulate_datto(host: str, port: int, seed: int, companies: int, latency: float, error_rate: float,
                   throttle_rate: float, drop_rate: float, requests_per_minute: int, token_ttl: int):
    """Run a simulated Datto RMM API (v2) with generated sites, devices and alerts.

    While it runs, `psabridge simulate raise-alert`, `resolve-alert` and `add-device` act in it
    as a monitor or a technician would."""
    from psabridge.plugins.rmm_datto.simulator import DattoSimulator, Quotas, SimOptions

    faults = Faults(latency=latency, error_rate=error_rate, throttle_rate=throttle_rate,
                    drop_rate=drop_rate, seed=seed)
    simulator = DattoSimulator(seed=seed, faults=faults, companies=companies,
                               quotas=Quotas(reads=requests_per_minute, writes=requests_per_minute),
                               options=SimOptions(token_ttl=token_ttl))
    secrets = [setting.name for setting in SETTINGS if setting.secret]
    token = control_token()
    with stopping_on_terminate(), simulator.serve(host, port, control_token=token) as server, \
            configure_command("datto", simulator.settings(server.url), secrets) as command, \
            control_file_written("datto", server.url, token):
        try:  # a stop that comes as soon as the lines below are read is a clean stop too
            click.echo(f"Datto RMM simulator listening on {server.url} (Ctrl-C to stop)")
            click.echo(f"{len(simulator.sites)} sites, {len(simulator.devices)} devices, "
                       f"{len(simulator.alerts)} alerts")
            click.echo("Configure the connector with:")
            click.echo(f"  {command}")
            click.echo("  (the API secret key waits in that file until the simulator stops)")
            click.echo("Act in it with: psabridge simulate raise-alert --device HOSTNAME, "
                       "resolve-alert UID, add-device --site NAME --hostname H")
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


def _alert_line(verb: str, result: dict) -> str:
    return (f"{verb} alert {result['alert_uid']} ({result['priority']}, {result['monitor']}) on "
            f"{result['hostname']} ({result['device_uid']}) in site {result['site_name']}")


@click.command("raise-alert")
@click.option("--device", required=True, metavar="HOSTNAME_OR_UID", help="The device the alert is on.")
@click.option("--priority", default="High", show_default=True,
              type=click.Choice(ALERT_PRIORITIES, case_sensitive=False))
@click.option("--kind", default="disk", show_default=True,
              type=click.Choice(sorted(ALERT_KINDS), case_sensitive=False),
              help="Which monitor fires (disk space, offline, event log, ...).")
@control_options
def simulate_raise_alert(device, priority, kind, url, as_json):
    """Raise an alert on a device in the running Datto RMM simulator, as a monitor would.

    The next `psabridge sync` makes a ticket for it, once ticketing is enabled and the device
    is mapped."""
    result = call_simulator("datto", TITLE, "raise-alert",
                            {"device": device, "priority": priority, "kind": kind}, url)
    echo_result(result, as_json, _alert_line("Raised", result))


@click.command("resolve-alert")
@click.argument("alert_uid")
@control_options
def simulate_resolve_alert(alert_uid, url, as_json):
    """Resolve alert ALERT_UID in the running Datto RMM simulator, as a technician would.

    The next `psabridge sync` closes the alert's ticket."""
    result = call_simulator("datto", TITLE, "resolve-alert", {"alert": alert_uid}, url)
    echo_result(result, as_json, _alert_line("Resolved", result))


@click.command("add-device")
@click.option("--site", required=True, metavar="NAME_OR_UID", help="The site the device joins.")
@click.option("--hostname", required=True)
@click.option("--kind", default="desktop", show_default=True,
              type=click.Choice(DEVICE_KINDS, case_sensitive=False))
@click.option("--serial", default=None, help="Its serial number (default: a generated one).")
@control_options
def simulate_add_device(site, hostname, kind, serial, url, as_json):
    """Add a device to a site of the running Datto RMM simulator, as installing an agent would.

    The next `psabridge devices load` proposes it; with `devices auto on`, `sync` maps it."""
    payload = {"site": site, "hostname": hostname, "kind": kind} | ({"serial": serial} if serial else {})
    result = call_simulator("datto", TITLE, "add-device", payload, url)
    echo_result(result, as_json, f"Added {result['kind']} {result['hostname']} ({result['device_uid']}, "
                                 f"serial {result['serial_number']}) to site {result['site_name']}.")


COMMANDS = (simulate_datto, simulate_raise_alert, simulate_resolve_alert, simulate_add_device)
