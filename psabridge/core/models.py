"""The domain objects that cross the hook boundary, as small frozen attrs classes.

Identifiers of remote records are opaque strings in core/: ConnectWise uses integers, Datto RMM uses
UUIDs, and core/ never does arithmetic on either. Each connector converts at its edge.

`converter` (cattrs) turns these objects into JSON-ready dicts and back; the store and the CLI's
`--json` output both go through it, so a datetime is written the same way everywhere.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs
import cattrs

PluginKind = Literal["psa", "rmm", "storage", "extension"]


# -- describing a connector -------------------------------------------------------------------


@attrs.frozen
class Setting:
    """One value an admin gives a connector (`psabridge configure NAME --<name> ...`).

    `kind="url"` applies the URL rules (protocol present, no `www.`); `kind="integer"` takes a
    whole number from `minimum` to `maximum` (None: unbounded). `check`, when given, is the
    connector's own test of a value that passed those: it returns what is wrong, in words, or
    None. `configure` refuses a value failing any of these (saving nothing), and so does enable.
    A `secret` setting is read from a hidden prompt or an environment variable, never echoed,
    and redacted from logs.
    """

    name: str
    label: str
    help: str = ""
    kind: Literal["text", "url", "integer"] = "text"
    secret: bool = False
    required: bool = True
    # What the connector uses when the admin gave no value: `configure` shows it, and a setting
    # with a default is never missing. Secrets have none.
    default: str | None = None
    minimum: int | None = None
    maximum: int | None = None
    check: Callable[[str], str | None] | None = attrs.field(default=None, eq=False)


@attrs.frozen
class ConnectorInfo:
    """What a PSA or RMM plugin says about itself through the `connector_info` hook."""

    kind: Literal["psa", "rmm"]
    title: str
    settings: tuple[Setting, ...] = ()
    # An RMM's alert priorities, when it has a fixed list: `ticketing set --priority` takes
    # only these. Empty when the RMM does not say (any name is then taken as given).
    alert_priorities: tuple[str, ...] = ()


@attrs.frozen
class Connection:
    """What every remote hook receives: which plugin, its settings, and how to reach it.

    `transport` lets tests and `psabridge demo` mount a simulator in-process (an httpx transport);
    `None` means real network. `state` is scratch space owned by the plugin for the life of one
    run (an httpx client, a resolved codebase, an OAuth token); core/ never reads it.
    `shared` (`psabridge.core.shared.SharedValues`) keeps what every process on the store may
    reuse (a token and its expiry, a codebase), sealed like a secret; None where there is no
    store (a connector's own unit tests), and then the plugin keeps such values in `state` alone.
    """

    plugin: str
    settings: Mapping[str, str] = attrs.field(repr=False)
    transport: Any = attrs.field(default=None, repr=False)
    state: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)
    shared: Any = attrs.field(default=None, repr=False, eq=False)


@attrs.frozen
class ConnectionReport:
    """Outcome of a connection test. `missing_permissions` lists what the API user lacks."""

    ok: bool
    detail: str = ""
    missing_permissions: tuple[str, ...] = ()


# -- PSA side ---------------------------------------------------------------------------------


@attrs.frozen
class Company:
    """A PSA company. `identifier` is its short name or number as people know it (ConnectWise's
    company identifier, Autotask's company number; the name again where the PSA has none):
    shown beside the name, and accepted wherever a command asks for a company. `types` lists
    every type of the company (a company of two types is one Company, not two)."""

    id: str
    identifier: str
    name: str
    status: str = ""
    types: tuple[str, ...] = ()
    deleted: bool = False


@attrs.frozen
class CompanyFilters:
    """Company filters a PSA can apply server-side. `None` means "any"."""

    type: str | None = None
    status: str | None = None
    search: str | None = None


@attrs.frozen
class ConfigurationType:
    """A type of configuration. `unusable` says, in words, why psabridge cannot create a
    configuration of this type through the API ("has required questions and cannot be used to
    create configurations"), "" when it can: core never suggests nor uses such a type."""

    id: str
    name: str
    unusable: str = ""
    inactive: bool = False


@attrs.frozen
class Configuration:
    """A PSA configuration (asset record). `id` is None for one not created yet (a draft)."""

    name: str
    company_id: str
    type_id: str | None = None
    type_name: str = ""
    id: str | None = None
    status: str = ""
    active: bool = True
    serial_number: str | None = None
    manufacturer: str | None = None
    model_number: str | None = None
    management_link: str | None = None  # The "Manage Device" link back to the RMM
    expiration_date: dt.date | None = None


@attrs.frozen
class ConfigurationChanges:
    """A partial update of a configuration; fields left as None are not touched."""

    management_link: str | None = None
    clear_management_link: bool = False
    active: bool | None = None
    expiration_date: dt.date | None = None


# -- tickets: where they go, and how they open and close ----------------------------------------
#
# Each PSA routes tickets its own way: ConnectWise by board, then type and subtype of that board;
# Autotask by queue, issue type and sub-issue type of that issue type. A connector describes its
# routing fields with `TicketOptions`, and core knows no field by name: it checks the admin's
# choices against what the connector declares (the scope of each choice, inactive and unusable
# choices, ambiguous names) and hands them back in `TicketDraft.routing`.


@attrs.frozen
class Choice:
    """One value a ticket field can take: a board, a queue, a type, a priority, a source...

    `scope_id` is the id of the choice of the scoping field this one belongs to (a type of
    board 12 has `scope_id="12"`); None when the field is not scoped or the value fits every
    scope. `unusable` says, in words, why a ticket cannot be created with this choice even
    though the PSA lists it ("it has no default team; set one on the board in ConnectWise"),
    "" when it can: core refuses settings that use it and shows the reason.
    """

    id: str
    name: str
    scope_id: str | None = None
    inactive: bool = False
    unusable: str = ""
    default: bool = False  # the PSA's own default (what a ticket gets when none is chosen)


@attrs.frozen
class RoutingField:
    """A field that says where a ticket goes: "board", "type", "queue", "issue_type"...

    `name` is the field's key in `TicketDraft.routing` and in the admin's settings (lower
    case, no spaces: `ticketing set --route NAME=VALUE`); `label` is how people call it.
    A `required` field must be set for tickets to be created. `scoped_by` names the routing
    field whose choice decides which of this field's choices are valid (ConnectWise types are
    scoped by "board", Autotask sub-issue types by "issue_type"); None: global.
    """

    name: str
    label: str
    choices: tuple[Choice, ...] = ()
    required: bool = False
    scoped_by: str | None = None


@attrs.frozen
class TicketStatus:
    """A ticket status. `scope_id` is the id of the choice of `TicketOptions.status_scope` it
    belongs to (ConnectWise: its board), None for a PSA whose statuses are global (Autotask).
    `default` marks the status a new ticket gets when none is given."""

    id: str
    name: str
    scope_id: str | None = None
    closed: bool = False
    default: bool = False
    inactive: bool = False


@attrs.frozen
class TicketOptions:
    """What the PSA offers for tickets, from `psa_ticket_options`.

    `routing` lists the PSA's routing fields, scoping fields before the fields they scope.
    `status_scope` names the routing field statuses belong to (None: statuses are global).
    Status ids must be unique within their scope; priority and source ids unique. Priorities
    are required on a ticket only if `priority_required`; sources are always optional.
    `summary_max` is the longest summary the PSA takes (core shortens longer ones with "…");
    None: no limit core needs to know.
    """

    routing: tuple[RoutingField, ...] = ()
    statuses: tuple[TicketStatus, ...] = ()
    status_scope: str | None = None
    priorities: tuple[Choice, ...] = ()
    sources: tuple[Choice, ...] = ()
    priority_required: bool = False
    summary_max: int | None = None

    def field(self, name: str) -> RoutingField | None:
        return next((f for f in self.routing if f.name == name), None)


@attrs.frozen
class TicketDraft:
    """A ticket to create.

    `marker` is unique per alert, so a ticket whose creation answer was lost can be found
    again. `routing` maps routing field names (as `TicketOptions.routing` declares them) to
    choice ids; fields the admin left unset are absent, and the PSA's defaults apply. Status,
    priority and source are ids from `TicketOptions`, or None for the PSA's default.

    `description` is core's text about the alert, without links: the connector puts
    `device_url` ("RMM Device") and `alert_url` ("RMM Alert") on the ticket, in fields of their
    own where the PSA has them, else as lines at the end of the description.
    """

    summary: str
    description: str
    company_id: str
    marker: str
    routing: Mapping[str, str] = attrs.field(factory=dict)
    status_id: str | None = None
    priority_id: str | None = None
    source_id: str | None = None
    configuration_id: str | None = None
    device_url: str | None = None
    alert_url: str | None = None


@attrs.frozen
class Ticket:
    """A ticket as the PSA holds it. `closed` is whether its status is a closed one."""

    id: str
    summary: str
    company_id: str
    status_id: str | None = None
    status_name: str = ""
    closed: bool = False
    marker: str | None = None
    configuration_ids: tuple[str, ...] = ()
    last_updated: dt.datetime | None = None


# -- push updates: what a PSA callback or an RMM webhook says -------------------------------


@attrs.frozen
class TicketCallback:
    """What one PSA ticket callback says, from `psa_parse_ticket_callback`.

    `ticket_id`: the ticket that changed (core re-reads it with `psa_get_ticket`, so the body
    is only a hint). `event_id`: what makes two deliveries the same event, for refusing
    replays (the PSA's message id, or its webhook's sequence number); None when the PSA sends
    none: core then takes the body's hash.
    """

    ticket_id: str
    event_id: str | None = None


@attrs.frozen
class AlertWebhook:
    """What one RMM alert webhook says, from `rmm_parse_alert_webhook`.

    `alert_uid`: the alert (core re-reads it with `rmm_get_alert`). `state`: "raised" or
    "resolved" if the body says which, else None (core takes the alert's state as re-read).
    `event_id`: what makes two deliveries the same event, when the RMM says; None: core takes
    the alert and its state, so that a raise and a resolve whose bodies are byte-identical
    are two events.
    """

    alert_uid: str
    state: Literal["raised", "resolved"] | None = None
    event_id: str | None = None


# -- RMM side ---------------------------------------------------------------------------------


@attrs.frozen
class Site:
    uid: str
    name: str
    id: str | None = None
    url: str | None = None  # Link to the site in the RMM
    system: bool = False  # e.g. Datto's "Deleted Devices" site: never offered for mapping


@attrs.frozen
class Device:
    uid: str
    hostname: str
    site_uid: str
    device_type: str = ""
    id: str | None = None
    url: str | None = None
    last_audit: dt.datetime | None = None  # None: not audited yet, cannot be mapped
    deleted: bool = False
    warranty_date: dt.date | None = None  # becomes an empty expiration date


@attrs.frozen
class DeviceDetails:
    """Hardware identity read from the RMM's audit."""

    serial_number: str | None = None
    manufacturer: str | None = None
    model: str | None = None


@attrs.frozen
class Alert:
    uid: str
    priority: str
    device_uid: str
    site_uid: str
    monitor: str  # stable identity of the monitor that raised it
    message: str = ""
    diagnostics: str = ""
    raised_at: dt.datetime | None = None
    resolved: bool = False
    resolved_at: dt.datetime | None = None
    creates_ticket: bool = True  # The monitor's own "New Ticket" switch
    device_name: str = ""
    site_name: str = ""


# -- what the store keeps ---------------------------------------------------------------------


@attrs.frozen
class PluginState:
    name: str
    enabled: bool = False
    settings: Mapping[str, str] = attrs.field(factory=dict, repr=False)


@attrs.frozen
class CompanySiteMapping:
    psa: str
    rmm: str
    company_id: str
    company_name: str
    site_uid: str
    site_name: str
    company_type: str = ""


@attrs.frozen
class DeviceTypeMapping:
    psa: str
    rmm: str
    device_type: str
    configuration_type_id: str
    configuration_type_name: str = ""


@attrs.frozen
class DeviceMapping:
    psa: str
    rmm: str
    device_uid: str
    configuration_id: str
    company_id: str
    site_uid: str


AlertTicketState = Literal["pending", "open", "closed", "resolved", "skipped"]


@attrs.frozen
class AlertTicket:
    """What became of one alert: the ticket it opened or joined, and where the round trip is.

    `pending` is written before the PSA is asked to create the ticket, so that a run that died
    before it could record the answer looks the ticket up by `marker` instead of creating it
    again. `open`: the ticket exists and the alert is active. `closed`: the alert was resolved
    in the RMM and the ticket closed. `resolved`: the ticket was closed in the PSA and the alert
    resolved. `skipped`: no ticket, on purpose (ticketing off, monitor excluded, ...).
    """

    psa: str
    rmm: str
    alert_uid: str
    state: AlertTicketState
    marker: str = ""
    monitor: str = ""
    device_uid: str = ""
    origin: str = "alert"
    ticket_id: str | None = None
    opened_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    note: str = ""


@attrs.frozen
class StoredWarning:
    plugin: str
    subject: str
    message: str
    id: int | None = None
    created_at: dt.datetime | None = None


@attrs.frozen
class JournalEntry:
    """One change made on a remote system: what, where, and how it ended."""

    plugin: str
    action: str
    target: str
    outcome: Literal["ok", "failed", "intent"]
    detail: Mapping[str, Any] = attrs.field(factory=dict)
    id: int | None = None
    at: dt.datetime | None = None


@attrs.frozen
class Lease:
    """A grant of a named lease to one holder (see docs/architecture.md, "Leases").

    `token` is the fencing token: a number the store never hands out twice. The store refuses a
    commit made under a lease whose token is no longer the lease's current one.
    """

    name: str
    owner: str
    token: int
    ttl: float


@attrs.frozen
class LeaseHolder:
    """Who holds a lease now, as the store sees it; `expires_in` is by the store's clock.
    `released`: its holder gave it up or stopped renewing it, and it is kept only while a
    write sent under it may still be acted on (`coordination.mark_in_flight`)."""

    name: str
    owner: str
    token: int
    expires_in: float
    released: bool = False


@attrs.frozen
class OutboxItem:
    """A follow-up write waiting to be made on a remote system (see docs/architecture.md).

    `key` names the change it makes (a later item with the same key replaces a waiting one:
    the latest wish wins); `payload` holds what the action needs.
    """

    key: str
    plugin: str
    action: str
    target: str
    payload: Mapping[str, Any] = attrs.field(factory=dict)
    id: int | None = None
    attempts: int = 0
    last_error: str = ""


# -- (de)serialisation ------------------------------------------------------------------------

converter = cattrs.Converter()
converter.register_unstructure_hook(dt.datetime, lambda v: v.isoformat())
converter.register_structure_hook(dt.datetime, lambda v, _: dt.datetime.fromisoformat(v))
converter.register_unstructure_hook(dt.date, lambda v: v.isoformat())
converter.register_structure_hook(dt.date, lambda v, _: dt.date.fromisoformat(v))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
