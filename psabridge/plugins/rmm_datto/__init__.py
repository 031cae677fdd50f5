"""Datto RMM connector."""

from __future__ import annotations

from psabridge.core.hookspecs import hookimpl
from psabridge.core.models import ConnectorInfo, Setting

SETTINGS = (
    Setting("api_url", "API URL", kind="url",
            help="Your platform's API URL, e.g. https://merlot-api.centrastage.net"),
    Setting("api_key", "API key", help="Setup > Users > Generate API Keys: the API key"),
    Setting("api_secret", "API secret key", secret=True, help="The API secret key"),
)


@hookimpl
def connector_info():
    return ConnectorInfo(kind="rmm", title="Datto RMM", settings=SETTINGS)
