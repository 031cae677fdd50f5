"""Autotask PSA connector (REST API v1.0).

The hooks live in :mod:`.hooks` and are re-exported here, because pluggy registers this module.
`psabridge simulate autotask` (added through `register_commands`) serves the simulator.
"""

from __future__ import annotations

from psabridge.core.hookspecs import hookimpl
from psabridge.core.models import ConnectorInfo, Setting

SETTINGS = (
    Setting("api_url", "Zone URL", kind="url", required=False,
            help="Your zone's web services address, e.g. https://webservices14.autotask.net; "
                 "empty: found from the user name (Autotask's zone look-up)"),
    Setting("username", "API user name", help="The user name of an API-only (API User) resource"),
    Setting("integration_code", "Tracking identifier",
            help="The API tracking identifier of the API user's integration (ApiIntegrationCode)"),
    Setting("secret", "Secret", secret=True, help="The API user's secret (its password)"),
    Setting("requests_per_hour", "Requests per hour", required=False,
            help="Most requests psabridge sends in any hour (default 5000, half of the 10,000 "
                 "Autotask allows a database for all integrations together)"),
)


@hookimpl
def connector_info():
    return ConnectorInfo(kind="psa", title="Autotask PSA", settings=SETTINGS)
