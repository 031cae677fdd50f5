"""ConnectWise Manage (PSA) connector."""

from __future__ import annotations

from psabridge.core.hookspecs import hookimpl
from psabridge.core.models import ConnectorInfo, Setting

SETTINGS = (
    Setting("url", "ConnectWise URL", kind="url",
            help="Site URL with protocol and without www, e.g. https://na.myconnectwise.net"),
    Setting("company", "Company", help="The company id you log in to ConnectWise Manage with"),
    Setting("public_key", "Public key", help="The API member's public key"),
    Setting("private_key", "Private key", secret=True, help="The API member's private key"),
    Setting("client_id", "Client id", required=False,
            help="clientId GUID registered at developer.connectwise.com"),
)


@hookimpl
def connector_info():
    return ConnectorInfo(kind="psa", title="ConnectWise Manage", settings=SETTINGS)
