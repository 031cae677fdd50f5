"""Datto RMM connector: the rmm_* hooks (hooks.py) over an httpx client (client.py), and a
simulator of the API (simulator/) served by `psabridge simulate datto`, and driven by
`psabridge simulate raise-alert`, `resolve-alert` and `add-device`."""

from __future__ import annotations

import click

from psabridge.core.hookspecs import hookimpl
from psabridge.core.models import ConnectorInfo, Setting
from psabridge.plugins.rmm_datto.hooks import (  # noqa: F401 - pluggy finds hooks on this module
    rmm_alert_url,
    rmm_check_connection,
    rmm_create_site,
    rmm_device_details,
    rmm_device_url,
    rmm_get_alert,
    rmm_list_alerts,
    rmm_list_devices,
    rmm_list_sites,
    rmm_parse_alert_webhook,
    rmm_resolve_alert,
    rmm_site_url,
)

# The priorities Datto RMM gives alerts ("Unknown" when an alert has none).
ALERT_PRIORITIES = ("Critical", "High", "Moderate", "Low", "Information", "Unknown")

SETTINGS = (
    Setting("api_url", "API URL", kind="url",
            help="Your platform's API URL, e.g. https://merlot-api.centrastage.net"),
    Setting("api_key", "API key", help="Setup > Users > Generate API Keys: the API key"),
    Setting("api_secret", "API secret key", secret=True, help="The API secret key"),
    Setting("portal_url", "Web portal URL", kind="url", required=False,
            help="Base of links to devices, alerts and sites; derived from the API URL when "
                 "empty, e.g. https://merlot.rmm.datto.com"),
    Setting("requests_per_minute", "Requests per minute", required=False,
            help="Share of the account's 600 requests/min psabridge may use (default 600); "
                 "lower it when other integrations use the same account"),
)


@hookimpl
def connector_info():
    return ConnectorInfo(kind="rmm", title="Datto RMM", settings=SETTINGS,
                         alert_priorities=ALERT_PRIORITIES)


@hookimpl
def register_commands(cli):
    from psabridge.plugins.rmm_datto.simulator.command import COMMANDS

    simulate = cli.commands.get("simulate")
    if isinstance(simulate, click.Group):
        for command in COMMANDS:
            simulate.add_command(command)
