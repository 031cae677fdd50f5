"""Autotask PSA connector (REST API v1.0).

The hooks live in :mod:`.hooks` and are re-exported here, because pluggy registers this module.
`psabridge simulate autotask` (added through `register_commands`) serves the simulator.
"""

from __future__ import annotations

from psabridge.core.hookspecs import hookimpl
from psabridge.core.models import ConnectorInfo, Setting
from psabridge.plugins.autotask.convert import link_field_problem
from psabridge.plugins.autotask.hooks import (  # noqa: F401 - registered with pluggy from here
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
    Setting("api_url", "Zone URL", kind="url", required=False,
            help="Your zone's web services address, e.g. https://webservices14.autotask.net; "
                 "empty: found from the user name by Autotask's zone look-up"),
    Setting("username", "API user name", help="The user name of an API-only (API User) resource"),
    Setting("integration_code", "Tracking identifier",
            help="The API tracking identifier of the API user's integration (ApiIntegrationCode)"),
    Setting("secret", "Secret", secret=True, help="The API user's secret (its password)"),
    Setting("device_link_field", "Device link field", required=False, default="referenceNumber",
            check=link_field_problem,
            help="Where a configuration item keeps its RMM device link: referenceNumber, or "
                 "udf:NAME for a text user-defined field"),
    Setting("product", "Product", required=False,
            help="Id or name of the Product new configuration items are instances of (default: "
                 "the active product with the lowest id)"),
    Setting("closed_statuses", "Closed statuses", required=False,
            help="Ticket statuses (names or ids, comma-separated) that count as closed besides "
                 "Complete"),
    Setting("due_hours", "Due in hours", required=False, default="24", kind="integer",
            minimum=1, maximum=24 * 366,
            help="Hours from creation to a new ticket's due date (Autotask's default is unknown, "
                 "so psabridge always sends one)"),
    Setting("requests_per_hour", "Requests per hour", required=False, default="5000",
            kind="integer", minimum=1, maximum=10000,
            help="Most requests psabridge sends in any hour (default 5000, half of the 10,000 "
                 "Autotask allows a database for all integrations together)"),
)


@hookimpl
def connector_info():
    return ConnectorInfo(kind="psa", title="Autotask PSA", settings=SETTINGS)


@hookimpl
def register_commands(cli):
    from psabridge.plugins.autotask.simulator.command import register

    register(cli)
