"""The hook contract: what a PSA, RMM or storage plugin implements.

A plugin is a module (or object) whose functions carry `@hookimpl` and share a name with a
function below. It is registered through the `psabridge` entry-point group::

    [options.entry_points]
    psabridge =
        mypsa = mypsa_plugin

and becomes the plugin named `mypsa`. Implement only the hooks you need; core/ reports a clear
"does not support" error when it needs one you left out. The behaviour the hooks serve (the
matching cascade, repeating alerts, the round trip, ...) is described in docs/behaviour.md.

Remote hooks receive a :class:`~psabridge.core.models.Connection` carrying the plugin's settings and
an optional httpx transport (tests mount a simulator there). They are called on one plugin at a
time, the one the admin enabled, so a hook never needs to check whether it is "the" PSA.
Return iterators for lists that can be long: core/ streams them.

Errors: raise :class:`psabridge.core.errors.RemoteError` (or a subclass) for anything the remote
side refused; its message is shown to the admin as is, so say what to fix. Never put a secret in
a message.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

import pluggy

from psabridge.core.models import (
    Alert,
    Company,
    CompanyFilters,
    Configuration,
    ConfigurationChanges,
    ConfigurationType,
    Connection,
    ConnectionReport,
    ConnectorInfo,
    Device,
    DeviceDetails,
    Site,
    Ticket,
    TicketDraft,
    TicketOptions,
)

hookspec = pluggy.HookspecMarker("psabridge")
hookimpl = pluggy.HookimplMarker("psabridge")


# -- every connector -------------------------------------------------------------------------


@hookspec(firstresult=True)
def connector_info() -> ConnectorInfo:
    """Say what kind of connector this is ("psa" or "rmm"), its title, and its settings.

    The settings drive `psabridge configure NAME`, their validation when the plugin is enabled
    (required fields, the URL rules) and the redaction of secrets from every log line.
    """


@hookspec
def register_commands(cli):
    """Add click commands or groups to the `psabridge` CLI (e.g. `cli.add_command(simulate)`)."""


# -- storage ---------------------------------------------------------------------------------


@hookspec(firstresult=True)
def storage_open(url: str):
    """Return a store for `url` if this plugin understands its scheme, else None.

    The object must provide the methods of :class:`psabridge.core.store.Store`. The SQLite plugin
    answers `sqlite:///path`, the PostgreSQL plugin `postgresql://...`.
    """


# -- PSA connectors --------------------------------------------------------------------------


@hookspec(firstresult=True)
def psa_check_connection(connection: Connection) -> ConnectionReport:
    """Test the settings against the PSA and report missing API permissions.

    Return `ok=False` with a `detail` naming the setting at fault when the PSA cannot be reached
    or refuses the credentials; list every missing permission in `missing_permissions`.
    """


@hookspec(firstresult=True)
def psa_list_companies(connection: Connection, filters: CompanyFilters) -> Iterator[Company]:
    """Yield the PSA's companies that pass `filters` (type, status, search), with all types.

    Filter on the server where the API can; core/ re-checks, so an approximate filter is safe.
    """


@hookspec(firstresult=True)
def psa_list_configuration_types(connection: Connection) -> list[ConfigurationType]:
    """Return every configuration type, flagging those with required questions."""


@hookspec(firstresult=True)
def psa_match_configurations(
    connection: Connection, company_id: str, devices: Sequence[Device], details: dict
) -> dict[str, list[Configuration]]:
    """Find the configurations of `company_id` that could be each device's.

    `details` maps device uid to its :class:`DeviceDetails`. Return, for each device uid, every
    configuration of the company whose management link equals the device's URL, or whose serial
    number or name equals the device's. The cascade that narrows these candidates lives in core/
    (`psabridge.core.matching`); this hook only fetches them, and should batch: matching N devices
    must cost about N / batch-size requests, not N.
    """


@hookspec(firstresult=True)
def psa_list_configurations(connection: Connection, company_id: str) -> Iterator[Configuration]:
    """Yield every configuration of `company_id`, active or not, ordered by name.

    Optional: only the look-up `psabridge psa configurations --company ID` calls it, for an
    admin choosing a configuration id by hand; without it that look-up says it is unsupported.
    """


@hookspec(firstresult=True)
def psa_configuration_listing_cost(connection: Connection) -> int | None:
    """How many requests `psa_list_all_configurations` would take now (None: unknown).

    Optional, with `psa_list_all_configurations`: core compares it with the requests of
    `psa_match_configurations` (at least one per company with devices to match) and lists every
    configuration instead when that is cheaper, as on a first mapping of a large estate.
    """


@hookspec(firstresult=True)
def psa_list_all_configurations(connection: Connection) -> Iterator[Configuration]:
    """Yield every configuration of every company, active or not, in the fewest pages.

    Optional, with `psa_configuration_listing_cost`. Core finds each device's candidates in the
    listing by the rule of `psa_match_configurations` (the same link, serial number or name).
    """


@hookspec(firstresult=True)
def psa_get_configurations(connection: Connection, ids: Sequence[str]) -> list[Configuration]:
    """Return the configurations with these ids; ids that no longer exist are left out."""


@hookspec(firstresult=True)
def psa_create_configuration(connection: Connection, configuration: Configuration) -> Configuration:
    """Create `configuration` (its `id` is None) and return it as stored, with its new id."""


@hookspec(firstresult=True)
def psa_update_configuration(
    connection: Connection, configuration_id: str, changes: ConfigurationChanges
) -> Configuration:
    """Apply `changes` to one configuration and return it as stored: the device link, the
    expiration date from the warranty, or Inactive for a device deleted in the RMM."""


@hookspec(firstresult=True)
def psa_unmap_configurations(connection: Connection, configuration_ids: Sequence[str]) -> None:
    """Remove the RMM's link from these configurations, leaving them Active.

    Called by unmap and by `plugins remove`. Ids that no longer exist must be skipped, not fail:
    a configuration deleted in the PSA is still mapped until unmapped.
    """


@hookspec(firstresult=True)
def psa_ticket_options(connection: Connection) -> TicketOptions:
    """Return boards (with default team and status), statuses, types, subtypes, priorities
    and sources, for validating ticket settings."""


@hookspec(firstresult=True)
def psa_create_ticket(connection: Connection, draft: TicketDraft) -> Ticket:
    """Create a ticket with the configuration attached and the RMM links on it.

    Store `draft.marker` on the ticket where `psa_find_ticket` can search for it: if the answer
    to this call is lost, core/ looks for the marker before creating again (exactly once).
    """


@hookspec(firstresult=True)
def psa_find_ticket(connection: Connection, marker: str) -> Ticket | None:
    """Return the ticket created with `marker`, or None if there is none."""


@hookspec(firstresult=True)
def psa_attach_configuration(connection: Connection, ticket_id: str, configuration_id: str) -> None:
    """Attach a configuration to a ticket; attaching one already attached changes nothing.

    Optional. Core calls it when it adopts a ticket found by its marker: a create whose answer
    was lost may have stopped before attaching the configuration."""


@hookspec(firstresult=True)
def psa_get_ticket(connection: Connection, ticket_id: str) -> Ticket | None:
    """Return one ticket, or None if it was deleted."""


@hookspec(firstresult=True)
def psa_add_ticket_note(connection: Connection, ticket_id: str, text: str) -> None:
    """Add a note to a ticket (a repeating alert)."""


@hookspec(firstresult=True)
def psa_close_ticket(connection: Connection, ticket_id: str, closed_status_id: str) -> Ticket:
    """Close a ticket by moving it to `closed_status_id`, a closed status of its board."""


@hookspec(firstresult=True)
def psa_changed_tickets(connection: Connection, since: dt.datetime | None) -> Iterator[Ticket]:
    """Yield tickets changed after `since` (all of them when None), oldest change first."""


@hookspec(firstresult=True)
def psa_ticket_url(connection: Connection, ticket_id: str) -> str:
    """Return the URL of the ticket's page in the PSA (optional; the web console links to it)."""


@hookspec(firstresult=True)
def psa_register_ticket_callback(connection: Connection, url: str) -> str:
    """Ask the PSA to POST ticket changes to `url`; return the registration's id. Idempotent."""


@hookspec(firstresult=True)
def psa_unregister_ticket_callback(connection: Connection, url: str) -> None:
    """Remove the registration for `url`, if any."""


# -- RMM connectors --------------------------------------------------------------------------


@hookspec(firstresult=True)
def rmm_check_connection(connection: Connection) -> ConnectionReport:
    """Test the settings against the RMM, as `psa_check_connection` does for the PSA."""


@hookspec(firstresult=True)
def rmm_list_sites(connection: Connection) -> Iterator[Site]:
    """Yield every site, marking system sites (e.g. "Deleted Devices") with `system=True`."""


@hookspec(firstresult=True)
def rmm_create_site(connection: Connection, name: str) -> Site:
    """Create a site called `name` and return it ("Create New")."""


@hookspec(firstresult=True)
def rmm_list_devices(connection: Connection, site_uid: str | None) -> Iterator[Device]:
    """Yield the devices of one site, or of the whole account when `site_uid` is None.

    Include deleted devices with `deleted=True` where the API shows them, and the last
    audit time so core/ can tell unaudited devices and skip unchanged audits.
    """


@hookspec(firstresult=True)
def rmm_device_details(connection: Connection, device: Device) -> DeviceDetails:
    """Read serial number, manufacturer and model from the device's audit.

    core/ calls this only for devices whose `last_audit` changed since it last asked.
    """


@hookspec(firstresult=True)
def rmm_list_alerts(
    connection: Connection, resolved: bool, since: dt.datetime | None
) -> Iterator[Alert]:
    """Yield open (`resolved=False`) or resolved alerts raised or resolved after `since`."""


@hookspec(firstresult=True)
def rmm_get_alert(connection: Connection, alert_uid: str) -> Alert | None:
    """Return one alert, or None if the RMM no longer knows it."""


@hookspec(firstresult=True)
def rmm_resolve_alert(connection: Connection, alert_uid: str) -> None:
    """Resolve an alert. Resolving an already resolved alert must not fail."""


@hookspec(firstresult=True)
def rmm_device_url(connection: Connection, device: Device) -> str:
    """Return the URL of the device's page in the RMM ("Manage Device", "RMM Device")."""


@hookspec(firstresult=True)
def rmm_alert_url(connection: Connection, alert: Alert) -> str:
    """Return the URL of the alert's page in the RMM ("RMM Alert")."""


@hookspec(firstresult=True)
def rmm_site_url(connection: Connection, site: Site) -> str:
    """Return the URL of the site's page in the RMM."""


# -- events the engine fires; any plugin may listen ------------------------------------------


@hookspec
def on_site_mapped(psa: str, rmm: str, company: Company, site: Site) -> None:
    """A site was mapped to a company."""


@hookspec
def on_configuration_created(psa: str, device: Device, configuration: Configuration) -> None:
    """A configuration was created in the PSA for a device."""


@hookspec
def on_alert_raised(rmm: str, alert: Alert) -> None:
    """A new alert was seen in the RMM."""


@hookspec
def on_ticket_created(psa: str, alert: Alert | None, ticket: Ticket) -> None:
    """A ticket was created in the PSA."""

