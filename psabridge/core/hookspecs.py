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
from collections.abc import Callable, Iterator, Mapping, Sequence

import pluggy

from psabridge.core.models import (
    Alert,
    AlertWebhook,
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
    TicketCallback,
    TicketDraft,
    TicketOptions,
)

hookspec = pluggy.HookspecMarker("psabridge")
hookimpl = pluggy.HookimplMarker("psabridge")

# Hook name -> the connector kinds that must implement it ("psa", "rmm").
REQUIRED_HOOKS: dict[str, frozenset[str]] = {}


def required(*kinds: str) -> Callable:
    """Mark a hookspec as one every connector of `kinds` must implement."""
    def mark(spec: Callable) -> Callable:
        REQUIRED_HOOKS[spec.__name__] = frozenset(kinds)
        return spec
    return mark


def required_hooks(kind: str) -> tuple[str, ...]:
    """The hooks a connector of `kind` ("psa" or "rmm") must implement, in contract order."""
    return tuple(name for name, kinds in REQUIRED_HOOKS.items() if kind in kinds)


# -- every connector -------------------------------------------------------------------------


@required("psa", "rmm")
@hookspec(firstresult=True)
def connector_info() -> ConnectorInfo:
    """Say what kind of connector this is ("psa" or "rmm"), its title, and its settings.

    The settings drive `psabridge configure NAME`, their validation when a value is configured
    and again when the plugin is enabled (required fields, the URL rules, `kind="integer"` with
    `minimum`/`maximum`, and the connector's own `Setting.check`), and the redaction of secrets
    from every log line. What needs the remote system (a field that must exist there) is the
    connection check's to refuse, naming the setting.
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


@required("psa")
@hookspec(firstresult=True)
def psa_list_companies(connection: Connection, filters: CompanyFilters) -> Iterator[Company]:
    """Yield the PSA's companies that pass `filters` (type, status, search), with all types.

    Filter on the server where the API can; core/ re-checks, so an approximate filter is safe.
    """


@required("psa")
@hookspec(firstresult=True)
def psa_list_configuration_types(connection: Connection) -> list[ConfigurationType]:
    """Return every configuration type, with `unusable` saying why one cannot be used to create
    a configuration through the API (ConnectWise: a type with required questions)."""


@required("psa")
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


@required("psa")
@hookspec(firstresult=True)
def psa_get_configurations(connection: Connection, ids: Sequence[str]) -> list[Configuration]:
    """Return the configurations with these ids; ids that no longer exist are left out."""


@required("psa")
@hookspec(firstresult=True)
def psa_create_configuration(connection: Connection, configuration: Configuration) -> Configuration:
    """Create `configuration` (its `id` is None) and return it as stored, with its new id."""


@required("psa")
@hookspec(firstresult=True)
def psa_update_configuration(
    connection: Connection, configuration_id: str, changes: ConfigurationChanges
) -> Configuration:
    """Apply `changes` to one configuration and return it as stored: the device link, the
    expiration date from the warranty, or Inactive for a device deleted in the RMM."""


@required("psa")
@hookspec(firstresult=True)
def psa_unmap_configurations(connection: Connection, configuration_ids: Sequence[str]) -> None:
    """Remove the RMM's link from these configurations, leaving them Active.

    Called by unmap and by `plugins remove`. Ids that no longer exist must be skipped, not fail:
    a configuration deleted in the PSA is still mapped until unmapped.
    """


@required("psa")
@hookspec(firstresult=True)
def psa_ticket_options(connection: Connection) -> TicketOptions:
    """Describe how the PSA routes, opens and closes tickets: its routing fields with their
    choices, its statuses, priorities and sources, and its limits (see `TicketOptions`).

    Core validates the admin's ticket settings against this, resolves names to ids with it,
    and knows no field by name, so declare what your PSA needs: a field tickets cannot be
    created without is `required`; a choice the PSA lists but refuses tickets with (a
    ConnectWise board without a default team) carries the reason in `unusable`; a field whose
    valid choices depend on another's names it in `scoped_by`. Every id is a string. Status
    ids are unique within their scope, and a scope's statuses have distinct names.
    """


@required("psa")
@hookspec(firstresult=True)
def psa_create_ticket(connection: Connection, draft: TicketDraft) -> Ticket:
    """Create a ticket from `draft` and return it as stored.

    Set every routing field in `draft.routing` (keys are your `RoutingField` names, values
    choice ids), the status, priority and source when given (None: the PSA's default), and
    attach `draft.configuration_id` when given. The RMM links are yours to place: core's
    `description` carries none, so put `draft.device_url` ("RMM Device") and `draft.alert_url`
    ("RMM Alert") on the ticket, in fields of their own or as lines ending the description.
    Keep the summary within your `TicketOptions.summary_max` (core does, when you declare it).

    Store `draft.marker` on the ticket where `psa_find_ticket` can search for it: if the answer
    to this call is lost, core/ looks for the marker before creating again (exactly once).
    """


@required("psa")
@hookspec(firstresult=True)
def psa_find_ticket(connection: Connection, marker: str) -> Ticket | None:
    """Return the ticket created with `marker`, or None if there is none."""


@hookspec(firstresult=True)
def psa_attach_configuration(connection: Connection, ticket_id: str, configuration_id: str) -> None:
    """Attach the configuration `configuration_id` to the ticket `ticket_id`; attaching one
    already attached changes nothing.

    Optional, but implement it if your create attaches the configuration in a second request:
    core calls it when it adopts a ticket found by its marker, since a create whose answer was
    lost may have stopped before attaching. The ticket's `configuration_ids` must then hold it."""


@required("psa")
@hookspec(firstresult=True)
def psa_get_ticket(connection: Connection, ticket_id: str) -> Ticket | None:
    """Return one ticket, or None if it was deleted."""


@required("psa")
@hookspec(firstresult=True)
def psa_add_ticket_note(connection: Connection, ticket_id: str, text: str) -> None:
    """Add a note to a ticket (a repeating alert)."""


@required("psa")
@hookspec(firstresult=True)
def psa_close_ticket(connection: Connection, ticket_id: str, closed_status_id: str) -> Ticket:
    """Close the ticket `ticket_id` by moving it to `closed_status_id`, a closed status (of the
    ticket's scope, where statuses are scoped); return it, `closed=True`, with that status."""


@required("psa")
@hookspec(firstresult=True)
def psa_changed_tickets(connection: Connection, since: dt.datetime | None) -> Iterator[Ticket]:
    """Yield tickets changed after `since` (all of them when None), oldest change first."""


@hookspec(firstresult=True)
def psa_ticket_url(connection: Connection, ticket_id: str) -> str:
    """Return the URL of the ticket's page in the PSA (optional; the web console links to it)."""


@hookspec(firstresult=True)
def psa_register_ticket_callback(connection: Connection, url: str, signing_secret: str) -> str:
    """Ask the PSA to POST ticket changes to `url`; return the registration's id. Idempotent:
    registering a URL again keeps one registration (and revives it if the PSA disabled it).

    Optional, with `psa_parse_ticket_callback` (`serve --public-url` registers). `url` is
    psabridge's endpoint with its token in the query (`https://host/hooks/psa?token=...`); add
    to it what your PSA needs (ConnectWise appends the record id to a URL ending in
    `recordId=`), the same way every time, since unregistering is given the same `url`.
    `signing_secret` (64 hex characters, the same for as long as the webhook secret is) is for
    a PSA that signs its callbacks with a secret it is given (Autotask's `secretKey`): give it
    to the PSA, and `psa_parse_ticket_callback` receives it to verify the signature.
    """


@hookspec(firstresult=True)
def psa_unregister_ticket_callback(connection: Connection, url: str) -> None:
    """Remove the registration made for `url` (as `psa_register_ticket_callback` received it),
    if there is one."""


@hookspec(firstresult=True)
def psa_parse_ticket_callback(
    connection: Connection, headers: Mapping[str, str], body: bytes, signing_secret: str
) -> TicketCallback | None:
    """Read one callback the PSA POSTed to psabridge: which ticket changed, and the event's
    identity. Return None for a callback that is not about a ticket (answered 202, ignored).

    Optional, with `psa_register_ticket_callback`. Core has already checked psabridge's token
    and bounded the body (64 KiB, JSON nesting 32 deep); `headers` has lower-case names. Raise
    `psabridge.core.errors.InvalidCallback(reason)` for a body your PSA does not send, or whose
    signature does not hold with `signing_secret`: core answers 400 with the reason and changes
    nothing. Make no request here: core re-reads the ticket with `psa_get_ticket`.
    `psabridge.core.callbacks` has helpers for JSON bodies and identifiers.
    """


# -- RMM connectors --------------------------------------------------------------------------


@hookspec(firstresult=True)
def rmm_check_connection(connection: Connection) -> ConnectionReport:
    """Test the settings against the RMM, as `psa_check_connection` does for the PSA."""


@required("rmm")
@hookspec(firstresult=True)
def rmm_list_sites(connection: Connection) -> Iterator[Site]:
    """Yield every site, marking system sites (e.g. "Deleted Devices") with `system=True`."""


@required("rmm")
@hookspec(firstresult=True)
def rmm_create_site(connection: Connection, name: str) -> Site:
    """Create a site called `name` and return it ("Create New")."""


@required("rmm")
@hookspec(firstresult=True)
def rmm_list_devices(connection: Connection, site_uid: str | None) -> Iterator[Device]:
    """Yield the devices of one site, or of the whole account when `site_uid` is None.

    Include deleted devices with `deleted=True` where the API shows them, and the last
    audit time so core/ can tell unaudited devices and skip unchanged audits.
    """


@required("rmm")
@hookspec(firstresult=True)
def rmm_device_details(connection: Connection, device: Device) -> DeviceDetails:
    """Read serial number, manufacturer and model from the device's audit.

    core/ calls this only for devices whose `last_audit` changed since it last asked.
    """


@required("rmm")
@hookspec(firstresult=True)
def rmm_list_alerts(
    connection: Connection, resolved: bool, since: dt.datetime | None
) -> Iterator[Alert]:
    """Yield open (`resolved=False`) or resolved alerts raised or resolved after `since`."""


@required("rmm")
@hookspec(firstresult=True)
def rmm_get_alert(connection: Connection, alert_uid: str) -> Alert | None:
    """Return one alert, or None if the RMM no longer knows it."""


@required("rmm")
@hookspec(firstresult=True)
def rmm_resolve_alert(connection: Connection, alert_uid: str) -> None:
    """Resolve an alert. Resolving an already resolved alert must not fail."""


@required("rmm")
@hookspec(firstresult=True)
def rmm_device_url(connection: Connection, device: Device) -> str:
    """Return the URL of the device's page in the RMM ("Manage Device", "RMM Device")."""


@required("rmm")
@hookspec(firstresult=True)
def rmm_alert_url(connection: Connection, alert: Alert) -> str:
    """Return the URL of the alert's page in the RMM ("RMM Alert")."""


@required("rmm")
@hookspec(firstresult=True)
def rmm_site_url(connection: Connection, site: Site) -> str:
    """Return the URL of the site's page in the RMM."""


@hookspec(firstresult=True)
def rmm_parse_alert_webhook(
    connection: Connection, headers: Mapping[str, str], body: bytes
) -> AlertWebhook | None:
    """Read one alert webhook the RMM POSTed to psabridge: which alert, and whether it was
    raised or resolved if the body says. Return None for a webhook that is not about an alert.

    Optional: without it, `serve` refuses RMM webhooks (400), saying the connector cannot
    read them. The same rules as `psa_parse_ticket_callback`: the token was checked and the body
    bounded; raise `InvalidCallback(reason)` for a body the RMM does not send; make no request
    (core re-reads the alert with `rmm_get_alert`).
    """


# -- events the engine fires; any plugin may listen ------------------------------------------
#
# Every plugin implementing one of these is called (not only the enabled connectors), after the
# change was made and recorded, on the thread that made it. Keep a listener quick; an exception
# it raises is logged and does not undo or stop the engine's work. docs/examples/event_log is
# a listener that writes each event as one JSON line.


@hookspec
def on_site_mapped(psa: str, rmm: str, company: Company, site: Site) -> None:
    """The RMM site `site` was mapped to the PSA company `company` (`psa`, `rmm`: the plugins)."""


@hookspec
def on_configuration_created(psa: str, device: Device, configuration: Configuration) -> None:
    """The configuration `configuration` was created in the PSA `psa` for the RMM device `device`."""


@hookspec
def on_alert_raised(rmm: str, alert: Alert) -> None:
    """A new open alert `alert` of the RMM `rmm` is being handled (before its ticket is decided)."""


@hookspec
def on_ticket_created(psa: str, alert: Alert | None, ticket: Ticket) -> None:
    """The ticket `ticket` was created in the PSA `psa`, for `alert` (None for a manual ticket)."""
