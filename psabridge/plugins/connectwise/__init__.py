"""ConnectWise Manage (PSA) connector.

The hooks live in :mod:`.hooks` and are re-exported here, because pluggy registers this module.
`psabridge simulate connectwise` (added through `register_commands`) serves the simulator, and
`psabridge simulate close-ticket` closes a ticket in it (as in any PSA simulator).
"""

from __future__ import annotations

from psabridge.core.hookspecs import hookimpl
from psabridge.core.models import ConnectorInfo, Setting
from psabridge.plugins.connectwise.hooks import (  # noqa: F401 - registered with pluggy from here
    psa_add_ticket_note,
    psa_attach_configuration,
    psa_changed_tickets,
    psa_check_connection,
    psa_close_ticket,
    psa_configuration_listing_cost,
    psa_create_configuration,
    psa_create_ticket,
    psa_find_ticket,
    psa_get_configurations,
    psa_get_ticket,
    psa_list_all_configurations,
    psa_list_companies,
    psa_list_configuration_types,
    psa_list_configurations,
    psa_match_configurations,
    psa_parse_ticket_callback,
    psa_register_ticket_callback,
    psa_ticket_options,
    psa_ticket_url,
    psa_unmap_configurations,
    psa_unregister_ticket_callback,
    psa_update_configuration,
)

SETTINGS = (
    Setting("url", "ConnectWise URL", kind="url",
            help="Site URL with protocol and without www, e.g. https://na.myconnectwise.net"),
    Setting("company", "Company", help="The company id you log in to ConnectWise Manage with"),
    Setting("public_key", "Public key", help="The API member's public key"),
    Setting("private_key", "Private key", secret=True, help="The API member's private key"),
    Setting("client_id", "Client id", required=False,
            help="clientId GUID registered at developer.connectwise.com"),
    Setting("api_member", "API member", required=False,
            help="Identifier of the API member the keys belong to, for the security-role check"),
    Setting("requests_per_minute", "Requests per minute", required=False,
            help="Most requests psabridge sends in any minute (default 900, below the 1,000 "
                 "ConnectWise says is likely to be limited); lower it when other integrations "
                 "use the same instance"),
)


@hookimpl
def connector_info():
    return ConnectorInfo(kind="psa", title="ConnectWise Manage", settings=SETTINGS)


@hookimpl
def register_commands(cli):
    from psabridge.plugins.connectwise.commands import simulate_connectwise

    simulate = cli.commands.get("simulate")
    if simulate is not None:
        simulate.add_command(simulate_connectwise)
