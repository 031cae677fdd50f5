"""The PSA hooks of psabridge's contract, implemented against Autotask PSA (REST API v1.0).

Each hook is a short story told with the client: which entity, which filter, what is checked
afterwards. Values from the RMM (names, serials, links) enter a query only as JSON values of a
condition, and every row a query returns is compared back exactly before it is used.

Picklist ids (statuses, priorities, queues, issue types...) are tenant data: they are read from
`entityInformation/fields` once per run and mapped by label. Only Complete = 5 (a ticket status)
is the same in every database.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator, Mapping, Sequence

import httpx

from psabridge.core import callbacks, logs
from psabridge.core.errors import InvalidCallback
from psabridge.core.hookspecs import hookimpl
from psabridge.core.models import (
    Choice,
    Company,
    CompanyFilters,
    Configuration,
    ConfigurationChanges,
    ConfigurationType,
    Connection,
    ConnectionReport,
    Device,
    RoutingField,
    Ticket,
    TicketCallback,
    TicketDraft,
    TicketOptions,
    TicketStatus,
)
from psabridge.plugins.autotask import convert, signature
from psabridge.plugins.autotask import query as q
from psabridge.plugins.autotask.client import PAGE_SIZE, AutotaskClient
from psabridge.plugins.autotask.convert import LinkField
from psabridge.plugins.autotask.errors import AutotaskError, NotFound, PermissionDenied, Refused

log = logs.get_logger(__name__)

OWN_COMPANY_ID = 0
STATUS_COMPLETE = "5"  # the one closed status every Autotask database has (API-NOTES §5)
CALLBACK_NAME = "psabridge ticket callback"
DEFAULT_DUE_HOURS = 24
# Devices per matching query: three `in` lists (link, serial number, name) of this many values
# stay under Autotask's 500 OR conditions.
MATCH_BATCH = 160
CONFIGURATION_FIELDS = ("companyID", "referenceTitle", "serialNumber", "configurationItemType",
                        "isActive", "referenceNumber", "warrantyExpirationDate")
TICKET_FIELDS = ("title", "companyID", "status", "externalID", "configurationItemID",
                 "lastActivityDate")

# Routing fields: (our name, label, Tickets field, scoped by).
ROUTING = (
    ("queue", "Queue", "queueID", None),
    ("issue_type", "Issue type", "issueType", None),
    ("sub_issue_type", "Sub-issue type", "subIssueType", "issue_type"),
    ("ticket_type", "Ticket type", "ticketType", None),
    ("ticket_category", "Ticket category", "ticketCategory", None),
)
# Sent explicitly on every ticket, the picklist's default when the admin chose nothing: whether
# Autotask applies a category's defaults to API tickets is not established (API-NOTES §12).
SENT_WITH_DEFAULTS = ("queueID", "status", "priority", "ticketType", "source", "ticketCategory")


def client_for(connection: Connection) -> AutotaskClient:
    return AutotaskClient.for_connection(connection)


def link_field(connection: Connection) -> LinkField:
    return LinkField.from_settings(connection.settings)


def _labels(client: AutotaskClient, entity: str, field: str) -> dict[str, str]:
    return {str(v.get("value")): str(v.get("label") or "") for v in client.picklist(entity, field)}


def _fold(value: str) -> str:
    return value.strip().casefold()


# -- connection --------------------------------------------------------------------------------

# (entity, what the connector does with it) the API user needs.
_NEEDS = (
    ("Companies", ("Query",)),
    ("ConfigurationItems", ("Query", "Create", "Update")),
    ("Tickets", ("Query", "Create", "Update")),
    ("TicketNotes", ("Create",)),
)


@hookimpl
def psa_check_connection(connection: Connection) -> ConnectionReport:
    try:
        client = client_for(connection)  # checks requests_per_hour
        link_field(connection)
        _due_hours(connection.settings)
        used, threshold = client.threshold()  # the first authenticated request
    except AutotaskError as exc:
        return ConnectionReport(ok=False, detail=str(exc))
    missing = []
    for entity, actions in _NEEDS:
        try:
            info = client.get_path(f"{entity}/entityInformation")
        except PermissionDenied:
            missing.append(f"{entity}: no access at all")
            continue
        info = info.get("info") if isinstance(info, dict) else None
        for action in actions:
            access = info.get(f"userAccessFor{action}") if isinstance(info, dict) else None
            if access is not None and str(access).strip().lower() in ("false", "none", "0", ""):
                missing.append(f"{entity}: {action}")
    detail = f"connected to Autotask at {client.base_url}"
    if threshold:
        detail += f"; {used} of the database's {threshold} requests used this hour"
    try:
        _check_link_field(client, link_field(connection))
        _check_closed_statuses(client, connection.settings)
    except AutotaskError as exc:
        return ConnectionReport(ok=False, detail=str(exc))
    try:
        product = _product(client, connection)
        detail += f"; new configuration items are instances of product {product[1]!r} (id {product[0]})"
    except AutotaskError as exc:
        if (connection.settings.get("product") or "").strip():
            return ConnectionReport(ok=False, detail=str(exc))  # a product named but not there
        detail += f"; {exc}"
    return ConnectionReport(ok=True, detail=detail, missing_permissions=tuple(missing))


def _check_link_field(client: AutotaskClient, link: LinkField) -> None:
    """A user-defined link field must exist: a query on it is refused when it does not."""
    if link.udf:
        next(iter(client.query("ConfigurationItems", [q.eq(link.name, "psabridge check", udf=True)],
                               fields=("id",), page_size=1)), None)


def _check_closed_statuses(client: AutotaskClient, settings: Mapping[str, str]) -> None:
    named = [s.strip() for s in (settings.get("closed_statuses") or "").split(",") if s.strip()]
    if not named:
        return
    known = client.picklist("Tickets", "status")
    names = {str(v.get("value")) for v in known} | {_fold(str(v.get("label") or "")) for v in known}
    unknown = [s for s in named if s not in names and _fold(s) not in names]
    if unknown:
        listed = ", ".join(str(v.get("label")) for v in known if v.get("label"))
        raise AutotaskError(f"closed_statuses names {', '.join(map(repr, unknown))}, which Autotask's "
                            f"ticket statuses do not include; they are {listed}")


# -- companies ---------------------------------------------------------------------------------


@hookimpl
def psa_list_companies(connection: Connection, filters: CompanyFilters) -> Iterator[Company]:
    client = client_for(connection)
    types = _labels(client, "Companies", "companyType")
    conditions: list[q.Condition | None] = []
    if filters.status and _fold(filters.status) in ("active", "inactive"):
        conditions.append(q.eq("isActive", _fold(filters.status) == "active"))
    if filters.type:
        ids = [int(v) for v, label in types.items() if _fold(label) == _fold(filters.type) and v.isdigit()]
        if not ids:
            return
        conditions.append(q.in_("companyType", ids))
    if filters.search:
        conditions.append(q.contains("companyName", filters.search))
    # Id 0 is the MSP's own organisation (API-NOTES §5): not a customer to map to a site.
    companies = [convert.company_from(r, types) for r in client.query("Companies", conditions)
                 if r.get("id") != OWN_COMPANY_ID]
    for company in sorted(companies, key=lambda c: (c.name.casefold(), c.id)):
        if _passes(company, filters):
            yield company


def _passes(company: Company, filters: CompanyFilters) -> bool:
    if filters.search and filters.search.casefold() not in company.name.casefold():
        return False
    if filters.status and company.status.casefold() != filters.status.casefold():
        return False
    return not filters.type or filters.type.casefold() in (t.casefold() for t in company.types)


# -- configuration types -----------------------------------------------------------------------


@hookimpl
def psa_list_configuration_types(connection: Connection) -> list[ConfigurationType]:
    client = client_for(connection)
    records = client.query("ConfigurationItemTypes", fields=("name", "isActive"))
    return sorted((ConfigurationType(id=str(r["id"]), name=str(r.get("name") or ""),
                                     inactive=r.get("isActive") is False) for r in records),
                  key=lambda t: (t.name.casefold(), t.id))


def _type_names(client: AutotaskClient, state: dict) -> dict[str, str]:
    key = "autotask.ci_type_names"
    if key not in state:
        state[key] = {str(r["id"]): str(r.get("name") or "")
                      for r in client.query("ConfigurationItemTypes", fields=("name",))}
    return state[key]


# -- configurations ----------------------------------------------------------------------------


def _configurations(connection: Connection, records) -> Iterator[Configuration]:
    client = client_for(connection)
    link = link_field(connection)
    names = _type_names(client, connection.state)
    for record in records:
        yield convert.configuration_from(record, link, names)


def _configuration_fields(link: LinkField) -> tuple[str, ...]:
    return CONFIGURATION_FIELDS if link.udf else tuple(dict.fromkeys((*CONFIGURATION_FIELDS, link.name)))


@hookimpl
def psa_match_configurations(connection: Connection, company_id: str, devices: Sequence[Device],
                             details: dict) -> dict[str, list[Configuration]]:
    """Configuration items of the company that share a link, serial number or name with a device.

    One query asks for all three at once (`link in (..) or serial in (..) or name in (..)`),
    MATCH_BATCH devices at a time; every returned row is compared back exactly.
    """
    candidates: dict[str, dict[str, Configuration]] = {d.uid: {} for d in devices}
    if not str(company_id).isdigit() or not devices:
        return {uid: [] for uid in candidates}
    client = client_for(connection)
    link = link_field(connection)
    by_value: dict[tuple[str, str], list[str]] = {}
    for device in devices:
        serial = getattr(details.get(device.uid), "serial_number", None)
        for kind, value in (("link", device.url), ("serial", serial), ("name", device.hostname)):
            if value:
                key = value if kind == "link" else _fold(value)
                by_value.setdefault((kind, key), []).append(device.uid)
    for start in range(0, len(devices), MATCH_BATCH):
        batch = devices[start:start + MATCH_BATCH]
        wanted = {"link": [], "serial": [], "name": []}
        for device in batch:
            serial = getattr(details.get(device.uid), "serial_number", None)
            for kind, value in (("link", device.url), ("serial", serial), ("name", device.hostname)):
                if value:
                    wanted[kind].append(value)
        either = q.any_of(
            q.in_(link.name, dict.fromkeys(wanted["link"]), udf=link.udf) if wanted["link"] else None,
            q.in_("serialNumber", dict.fromkeys(wanted["serial"])) if wanted["serial"] else None,
            q.in_("referenceTitle", dict.fromkeys(wanted["name"])) if wanted["name"] else None,
        )
        if either is None:
            continue
        records = client.query("ConfigurationItems", [q.eq("companyID", int(company_id)), either],
                               fields=_configuration_fields(link))
        for configuration in _configurations(connection, records):
            found = (("link", configuration.management_link or ""),
                     ("serial", _fold(configuration.serial_number or "")),
                     ("name", _fold(configuration.name)))
            for key in found:
                for uid in by_value.get(key, []):
                    candidates[uid][configuration.id] = configuration
    return {uid: list(found.values()) for uid, found in candidates.items()}


@hookimpl
def psa_configuration_listing_cost(connection: Connection) -> int | None:
    count = client_for(connection).count("ConfigurationItems")
    return None if count is None else max(1, -(-count // PAGE_SIZE))


@hookimpl
def psa_list_all_configurations(connection: Connection) -> Iterator[Configuration]:
    link = link_field(connection)
    records = client_for(connection).query("ConfigurationItems", fields=_configuration_fields(link))
    yield from _configurations(connection, records)


@hookimpl
def psa_list_configurations(connection: Connection, company_id: str) -> Iterator[Configuration]:
    if not str(company_id).isdigit():
        return  # Autotask ids are numbers: no company has this one
    records = client_for(connection).query("ConfigurationItems", [q.eq("companyID", int(company_id))])
    found = list(_configurations(connection, records))
    yield from sorted(found, key=lambda c: (c.name.casefold(), c.id))


@hookimpl
def psa_get_configurations(connection: Connection, ids: Sequence[str]) -> list[Configuration]:
    numbers = [int(i) for i in ids if str(i).isdigit()]
    if not numbers:
        return []
    records = client_for(connection).query_in("ConfigurationItems", "id", numbers)
    return list(_configurations(connection, records))


PRODUCT_KEY = "autotask.product"


def _product(client: AutotaskClient, connection: Connection) -> tuple[int, str]:
    """The Product new configuration items are instances of (Autotask requires one): the
    `product` setting (an id or a name), else the active product with the lowest id."""
    with connection.state.setdefault(PRODUCT_KEY + ".lock", threading.Lock()):
        if PRODUCT_KEY not in connection.state:
            connection.state[PRODUCT_KEY] = _find_product(client, connection.settings.get("product") or "")
        return connection.state[PRODUCT_KEY]


def _find_product(client: AutotaskClient, wanted: str) -> tuple[int, str]:
    wanted = wanted.strip()
    if wanted.isdigit():
        record = client.get("Products", int(wanted))
        if record is None or record.get("isActive") is False:
            raise AutotaskError(f"Autotask has no active product with id {wanted}: check the product setting")
        return record["id"], str(record.get("name") or "")
    conditions = [q.eq("isActive", True), q.eq("name", wanted) if wanted else None]
    products = [p for p in client.query("Products", conditions, fields=("name", "isActive"))
                if not wanted or _fold(str(p.get("name") or "")) == _fold(wanted)]
    if not products:
        raise AutotaskError(f"Autotask has no active product {'named ' + repr(wanted) if wanted else ''}"
                            " for new configuration items: set the product setting to a product's id "
                            "or name (Admin > Products)")
    chosen = min(products, key=lambda p: p["id"])
    return chosen["id"], str(chosen.get("name") or "")


@hookimpl
def psa_create_configuration(connection: Connection, configuration: Configuration) -> Configuration:
    client = client_for(connection)
    link = link_field(connection)
    product_id, _ = _product(client, connection)
    body: dict = {
        "companyID": int(configuration.company_id), "productID": product_id,
        "isActive": configuration.active,
        "referenceTitle": _fit(configuration.name, convert.MAX_REFERENCE_TITLE, "referenceTitle"),
        "serialNumber": _fit(configuration.serial_number, convert.MAX_SERIAL_NUMBER, "serialNumber"),
    }
    if configuration.type_id:
        body["configurationItemType"] = int(configuration.type_id)
    if configuration.expiration_date:
        body["warrantyExpirationDate"] = convert.datetime_text(configuration.expiration_date)
    if configuration.management_link:
        body.update(link.write(configuration.management_link))
    body = {k: v for k, v in body.items() if v is not None}
    new_id = client.create("ConfigurationItems", body)
    names = _type_names(client, connection.state)
    return convert.configuration_from({**body, "id": new_id}, link, names)


def _fit(value: str | None, limit: int, field: str) -> str | None:
    """Cut a value to Autotask's maximum length rather than fail the whole creation (logged)."""
    if value and len(value) > limit:
        log.warning("value cut to Autotask's maximum length", field=field, limit=limit)
        return value[:limit]
    return value


@hookimpl
def psa_update_configuration(connection: Connection, configuration_id: str,
                             changes: ConfigurationChanges) -> Configuration:
    client = client_for(connection)
    link = link_field(connection)
    body: dict = {"id": int(configuration_id)}
    if changes.clear_management_link:
        body.update(link.write(None))
    elif changes.management_link is not None:
        body.update(link.write(changes.management_link))
    if changes.active is not None:
        body["isActive"] = changes.active  # Autotask cannot delete a configuration item
    if changes.expiration_date is not None:
        body["warrantyExpirationDate"] = convert.datetime_text(changes.expiration_date)
    if len(body) > 1:
        client.update("ConfigurationItems", body)
    record = client.get("ConfigurationItems", int(configuration_id))
    if record is None:
        raise NotFound(f"Autotask has no configuration item {configuration_id}", status=404)
    stored = next(_configurations(connection, [record]))
    _verify_applied(stored, changes, configuration_id)
    return stored


def _verify_applied(stored: Configuration, changes: ConfigurationChanges, configuration_id: str) -> None:
    """An update that answered 200 but did not stick (a read-only field, a protected UDF) is
    reported, not taken as done."""
    wrong = []
    if changes.clear_management_link and stored.management_link:
        wrong.append("the device link")
    elif changes.management_link is not None and not changes.clear_management_link \
            and stored.management_link != changes.management_link:
        wrong.append("the device link")
    if changes.active is not None and stored.active != changes.active:
        wrong.append("isActive")
    if wrong:
        raise AutotaskError(f"Autotask accepted the change to {' and '.join(wrong)} of configuration "
                            f"item {configuration_id} but did not apply it; check the API user's "
                            "access to configuration items and the device_link_field setting")


@hookimpl
def psa_unmap_configurations(connection: Connection, configuration_ids: Sequence[str]) -> None:
    client = client_for(connection)
    link = link_field(connection)
    numbers = [int(i) for i in configuration_ids if str(i).isdigit()]
    # Autotask refuses a PATCH of a missing id with a 500: only existing items are emptied.
    existing = {r["id"] for r in client.query_in("ConfigurationItems", "id", numbers, fields=("id",))}
    for number in numbers:
        if number not in existing:
            log.info("configuration_already_gone", configuration_id=str(number))
            continue
        client.update("ConfigurationItems", {"id": number, **link.write(None)})


# -- ticket options ----------------------------------------------------------------------------


def _closed_ids(client: AutotaskClient, settings: Mapping[str, str]) -> frozenset[str]:
    """Complete, and the statuses the `closed_statuses` setting names (labels or ids)."""
    extra = {_fold(s) for s in (settings.get("closed_statuses") or "").split(",") if s.strip()}
    ids = {STATUS_COMPLETE}
    for value in client.picklist("Tickets", "status"):
        if str(value.get("value")) in extra or _fold(str(value.get("label") or "")) in extra:
            ids.add(str(value.get("value")))
    return frozenset(ids)


def _choices(values: list[dict], scoped: bool = False) -> tuple[Choice, ...]:
    ordered = sorted(values, key=lambda v: (v.get("sortOrder") or 0, str(v.get("label") or "")))
    return tuple(Choice(id=str(v.get("value")), name=str(v.get("label") or ""),
                        scope_id=(str(v["parentValue"]) if scoped and v.get("parentValue") not in (None, "")
                                  else None),
                        inactive=v.get("isActive") is False,
                        default=bool(v.get("isDefaultValue"))) for v in ordered)


@hookimpl
def psa_ticket_options(connection: Connection) -> TicketOptions:
    client = client_for(connection)
    closed = _closed_ids(client, connection.settings)
    routing = tuple(
        RoutingField(name=name, label=label, choices=_choices(client.picklist("Tickets", field),
                                                              scoped=scope is not None),
                     required=_must_choose(client, field), scoped_by=scope)
        for name, label, field, scope in ROUTING if client.picklist("Tickets", field)
    )
    statuses = tuple(TicketStatus(id=c.id, name=c.name, closed=c.id in closed, inactive=c.inactive,
                                  default=c.id == _default(client, "status"))
                     for c in _choices(client.picklist("Tickets", "status")))
    return TicketOptions(
        routing=routing, statuses=statuses, status_scope=None,
        priorities=_choices(client.picklist("Tickets", "priority")),
        sources=_choices(client.picklist("Tickets", "source")),
        priority_required=not _default(client, "priority"),
        summary_max=convert.MAX_TITLE,
    )


def _must_choose(client: AutotaskClient, field: str) -> bool:
    """Whether the admin must choose a value: Autotask requires the field (tenant rules often
    require the queue, API-NOTES §5) and its picklist has no default the connector could send."""
    info = client.field_info("Tickets").get(field.lower()) or {}
    return (bool(info.get("isRequired")) or field == "queueID") and not _default(client, field)


def _default(client: AutotaskClient, field: str) -> str | None:
    """The picklist's default value for `field`, if it has an active one."""
    for value in client.picklist("Tickets", field):
        if value.get("isDefaultValue") and value.get("isActive") is not False:
            return str(value.get("value"))
    return None


# -- tickets -----------------------------------------------------------------------------------


def _ticket_from(connection: Connection, record: dict, additional: bool = False) -> Ticket:
    client = client_for(connection)
    return convert.ticket_from(record, _labels(client, "Tickets", "status"),
                               _closed_ids(client, connection.settings),
                               _configuration_ids(client, record, additional))


def _configuration_ids(client: AutotaskClient, record: dict, additional: bool = False) -> tuple[str, ...]:
    """The ticket's primary configuration item, and with `additional` (one request more) the
    items added under it."""
    primary = record.get("configurationItemID")
    ids = [str(primary)] if primary not in (None, "") else []
    if additional and ids:  # a ticket without a primary item has no additional ones from us
        ids += [i for i in _additional_ids(client, record["id"]) if i not in ids]
    return tuple(ids)


def _additional_ids(client: AutotaskClient, ticket_id: int) -> list[str]:
    try:
        listed = client.get_path(f"Tickets/{int(ticket_id)}/AdditionalConfigurationItems")
    except NotFound:
        return []
    rows = listed.get("items") if isinstance(listed, dict) else None
    return [str(r["configurationItemID"]) for r in rows or ()
            if isinstance(r, dict) and r.get("configurationItemID") is not None]


def _due_hours(settings: Mapping[str, str]) -> int:
    raw = (settings.get("due_hours") or "").strip()
    if not raw:
        return DEFAULT_DUE_HOURS
    if not raw.isdigit() or int(raw) < 1:
        raise AutotaskError(f"due_hours must be a whole number of hours above 0, not {raw[:20]!r}")
    return int(raw)


@hookimpl
def psa_create_ticket(connection: Connection, draft: TicketDraft) -> Ticket:
    client = client_for(connection)
    fields = {field: draft.routing.get(name) for name, _, field, _ in ROUTING}
    fields.update({"status": draft.status_id, "priority": draft.priority_id, "source": draft.source_id})
    for field in SENT_WITH_DEFAULTS:
        if not fields.get(field):
            fields[field] = _default(client, field)
    for field, setting in (("status", "the status"), ("priority", "the priority")):
        if not fields.get(field):
            raise Refused(f"Autotask needs {setting} of a ticket and has no default {field}: choose "
                          f"one in the ticket settings (psabridge ticketing set)")
    due = dt.datetime.now(dt.UTC) + dt.timedelta(hours=_due_hours(connection.settings))
    body: dict = {
        "companyID": int(draft.company_id),
        "title": _fit(draft.summary, convert.MAX_TITLE, "title"),
        "description": convert.ticket_description(draft.description, draft.device_url, draft.alert_url),
        "externalID": convert.stored_marker(draft.marker),
        "dueDateTime": convert.datetime_text(due),
        **{field: int(value) for field, value in fields.items() if value},
    }
    if draft.configuration_id and str(draft.configuration_id).isdigit():
        body["configurationItemID"] = int(draft.configuration_id)
    new_id = client.create("Tickets", body)
    record = client.get("Tickets", new_id) or {**body, "id": new_id}
    return _ticket_from(connection, record)


@hookimpl
def psa_attach_configuration(connection: Connection, ticket_id: str, configuration_id: str) -> None:
    """The configuration becomes the ticket's primary one when it has none; a ticket whose
    primary item is another gets it among its additional configuration items."""
    client = client_for(connection)
    ticket = client.get("Tickets", int(ticket_id))
    if ticket is None:
        raise NotFound(f"Autotask has no ticket {ticket_id}", status=404)
    current = ticket.get("configurationItemID")
    if str(current) == str(configuration_id):
        return
    if current in (None, ""):
        client.update("Tickets", {"id": int(ticket_id), "configurationItemID": int(configuration_id)})
        return
    # Additional items are children of the ticket, created under it (API-NOTES §4, §5).
    path = f"Tickets/{int(ticket_id)}/AdditionalConfigurationItems"
    if str(configuration_id) in _additional_ids(client, int(ticket_id)):
        return
    client.create(path, {"ticketID": int(ticket_id), "configurationItemID": int(configuration_id)})


@hookimpl
def psa_find_ticket(connection: Connection, marker: str) -> Ticket | None:
    client = client_for(connection)
    stored = convert.stored_marker(marker)
    for record in client.query("Tickets", [q.eq("externalID", stored)]):
        if record.get("externalID") == stored:  # exact, whatever the server's collation
            return _ticket_from(connection, record, additional=True)
    return None


@hookimpl
def psa_get_ticket(connection: Connection, ticket_id: str) -> Ticket | None:
    if not str(ticket_id).isdigit():
        return None
    record = client_for(connection).get("Tickets", int(ticket_id))
    return None if record is None else _ticket_from(connection, record, additional=True)


def _note_value(client: AutotaskClient, field: str, preferred: str) -> int | None:
    """A TicketNotes picklist value: the one labelled `preferred`, else the default."""
    values = client.picklist("TicketNotes", field)
    for value in values:
        if _fold(str(value.get("label") or "")) == _fold(preferred) and value.get("isActive") is not False:
            return int(value["value"])
    for value in values:
        if value.get("isDefaultValue"):
            return int(value["value"])
    return int(values[0]["value"]) if values else None


@hookimpl
def psa_add_ticket_note(connection: Connection, ticket_id: str, text: str) -> None:
    client = client_for(connection)
    first_line = (text.strip().splitlines() or ["psabridge"])[0]
    body = {"ticketID": int(ticket_id), "title": _fit(first_line, convert.MAX_NOTE_TITLE, "title"),
            "description": _fit(text, convert.MAX_NOTE, "description"),
            "noteType": _note_value(client, "noteType", "Task Notes"),
            "publish": _note_value(client, "publish", "All Autotask Users")}
    client.create(f"Tickets/{int(ticket_id)}/Notes", {k: v for k, v in body.items() if v is not None})


@hookimpl
def psa_close_ticket(connection: Connection, ticket_id: str, closed_status_id: str) -> Ticket:
    """Move the ticket to `closed_status_id` (Complete unless the admin chose another closed
    status), then read it back to be sure."""
    client = client_for(connection)
    closed = _closed_ids(client, connection.settings)
    if str(closed_status_id) not in closed:
        raise AutotaskError(f"status {closed_status_id} is not a closed status in Autotask: choose "
                            "Complete (5) or a status named in the closed_statuses setting")
    ticket = client.get("Tickets", int(ticket_id))
    if ticket is None:
        raise NotFound(f"Autotask has no ticket {ticket_id}", status=404)
    if str(ticket.get("status")) != str(closed_status_id):
        client.update("Tickets", {"id": int(ticket_id), "status": int(closed_status_id)})
        ticket = client.get("Tickets", int(ticket_id)) or ticket
    result = _ticket_from(connection, ticket)
    if result.status_id != str(closed_status_id):
        now = result.status_name or result.status_id
        raise AutotaskError(f"Autotask kept ticket {ticket_id} in status {now} "
                            f"after it was moved to status {closed_status_id}; check the API user's "
                            "access to tickets")
    return result


@hookimpl
def psa_changed_tickets(connection: Connection, since: dt.datetime | None) -> Iterator[Ticket]:
    """Tickets with `lastActivityDate >= since`, oldest change first.

    The bound is inclusive (a ticket changed in the same instant as `since` is not lost; one may
    be seen twice). Autotask promises no order, so the page rows are sorted here.
    """
    client = client_for(connection)
    conditions = [q.gte("lastActivityDate", convert.datetime_text(since))] if since else []
    records = list(client.query("Tickets", conditions, fields=TICKET_FIELDS))
    tickets = [_ticket_from(connection, r) for r in records]
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    yield from sorted(tickets, key=lambda t: (t.last_updated or epoch, int(t.id)))


# -- callbacks ---------------------------------------------------------------------------------


@hookimpl
def psa_ticket_url(connection: Connection, ticket_id: str) -> str:
    """The ticket's page in Autotask's web interface (Autotask Extend's OpenTicketDetail)."""
    client = client_for(connection)
    web = _web_root(client.base_url)
    return (f"{web}/Autotask/AutotaskExtend/ExecuteCommand.aspx?Code=OpenTicketDetail"
            f"&TicketID={int(ticket_id)}")


def _web_root(base_url: str) -> str:
    """`https://webservices14.autotask.net/...` -> `https://ww14.autotask.net`; any other host
    (a simulator, a proxy) is kept."""
    url = httpx.URL(base_url)
    host = url.host
    if host.startswith("webservices") and host.endswith(".autotask.net"):
        host = "ww" + host[len("webservices"):]
    return str(url.copy_with(host=host, path="/", query=None)).rstrip("/")


def _ticket_webhooks(client: AutotaskClient, url: str) -> list[dict]:
    return [w for w in client.query("TicketWebhooks", [q.eq("webhookUrl", url)])
            if w.get("webhookUrl") == url]


@hookimpl
def psa_register_ticket_callback(connection: Connection, url: str, signing_secret: str) -> str:
    """A TicketWebhook posting new tickets and changes of a ticket's status to `url`, signed with
    `signing_secret`; psabridge's marker is in every payload (display-always `externalID`)."""
    client = client_for(connection)
    for webhook in _ticket_webhooks(client, url):
        changes = {}
        if webhook.get("isActive") is False:  # Autotask disables a callout after 25 failures
            changes["isActive"] = True
        if webhook.get("secretKey") not in (None, signing_secret):
            changes["secretKey"] = signing_secret
        if changes:
            client.update("TicketWebhooks", {"id": webhook["id"], **changes})
        _subscribe_fields(client, webhook["id"])
        return str(webhook["id"])
    webhook_id = client.create("TicketWebhooks", {
        "name": CALLBACK_NAME, "webhookUrl": url, "deactivationUrl": url, "secretKey": signing_secret,
        "isActive": True, "isSubscribedToCreateEvents": True, "isSubscribedToUpdateEvents": True,
        "isSubscribedToDeleteEvents": False, "sendThresholdExceededNotification": False,
    })
    _subscribe_fields(client, webhook_id)
    return str(webhook_id)


def _subscribe_fields(client: AutotaskClient, webhook_id: int) -> None:
    """Subscribe to `status`, show `externalID` always: a webhook without a subscribed field
    never becomes ready."""
    ids = {_fold(str(v.get("label") or "")): int(v["value"])
           for v in client.picklist("TicketWebhookFields", "fieldID")}
    wanted = {"status": (True, False), "externalid": (False, True)}
    # Child records are listed through their parent's URL, not queried (API-NOTES §3).
    listed = client.get_path(f"TicketWebhooks/{int(webhook_id)}/Fields")
    rows = listed.get("items") if isinstance(listed, dict) else None
    have = {f.get("fieldID") for f in rows or () if isinstance(f, dict)}
    for name, (subscribed, always) in wanted.items():
        if name not in ids:
            if subscribed:
                raise AutotaskError("Autotask offers no ticket webhook field 'status'; ticket callbacks "
                                    "cannot be registered")
            continue
        if ids[name] in have:
            continue
        client.create(f"TicketWebhooks/{webhook_id}/Fields", {
            "webhookID": webhook_id, "fieldID": ids[name], "isSubscribedField": subscribed,
            "isDisplayAlwaysField": always})


@hookimpl
def psa_unregister_ticket_callback(connection: Connection, url: str) -> None:
    client = client_for(connection)
    for webhook in _ticket_webhooks(client, url):
        try:
            client.delete(f"TicketWebhooks/{int(webhook['id'])}")
        except NotFound:
            pass


@hookimpl
def psa_parse_ticket_callback(connection: Connection, headers: Mapping[str, str], body: bytes,
                              signing_secret: str) -> TicketCallback | None:
    """Check the callout's X-Hook-Signature, then read which ticket changed.

    Keys are read without case (`PersonID` and `PersonId` are both seen, API-NOTES §12). A
    deactivation notice, or a callout about another entity, is not about a ticket: None.
    """
    problem = signature.verify({k.lower(): v for k, v in headers.items()}, body, signing_secret)
    if problem:
        raise InvalidCallback(problem)
    payload = {str(k).lower(): v for k, v in callbacks.json_object(body).items()}
    action = str(payload.get("action") or "")
    entity = str(payload.get("entitytype") or "")
    if _fold(action) == "deactivated" or _fold(entity) != "ticket":
        return None
    ticket_id = callbacks.positive_id(payload.get("id"), "Id")
    guid, sequence = payload.get("guid"), payload.get("sequencenumber")
    event_id = None
    if sequence is not None:
        event_id = f"{callbacks.identifier(str(guid), 'Guid') if guid else 'webhook'}:" \
                   f"{callbacks.positive_id(sequence, 'SequenceNumber')}"
    return TicketCallback(ticket_id=ticket_id, event_id=event_id)
