"""The PSA hooks of psabridge's contract, implemented against ConnectWise Manage.

Each hook is a short story told with the client: which endpoint, which conditions, what is
checked afterwards. Values from the RMM (names, serials, URLs) only ever enter a query through
:mod:`.conditions`, and every row a query returns is compared exactly before it is used, so no
name can widen a match.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator, Sequence
from urllib.parse import quote

from psabridge.core import logs
from psabridge.core.callbacks import identifier, json_object, positive_id
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
from psabridge.plugins.connectwise import conditions as cond
from psabridge.plugins.connectwise import convert, permissions
from psabridge.plugins.connectwise.client import PAGE_SIZE, ConnectWiseClient
from psabridge.plugins.connectwise.errors import ConnectWiseError, NotFound, PermissionDenied

log = logs.get_logger(__name__)

CALLBACK_DESCRIPTION = "psabridge ticket callback"
# A configuration type with required questions cannot be used: psabridge has no answers to give.
REQUIRED_QUESTIONS = "has required questions and cannot be used to create configurations"
INACTIVE_STATUS = "Inactive"  # The configuration status a deleted device's record gets
CHANGED_TICKETS_PAGE = 1000


def client_for(connection: Connection) -> ConnectWiseClient:
    return ConnectWiseClient.for_connection(connection)


# -- connection --------------------------------------------------------------------------------


@hookimpl
def psa_check_connection(connection: Connection) -> ConnectionReport:
    client = client_for(connection)
    try:
        client.get("system/info")  # resolves the codebase first
    except ConnectWiseError as exc:
        return ConnectionReport(ok=False, detail=str(exc))
    missing, how = missing_permissions(client, connection.settings.get("api_member"))
    detail = f"connected to ConnectWise (company {client.company}); permissions {how}"
    if not connection.settings.get("client_id"):
        detail += "; no client_id set: ConnectWise's cloud requires one"
    return ConnectionReport(ok=True, detail=detail, missing_permissions=tuple(missing))


def missing_permissions(client: ConnectWiseClient, api_member: str | None) -> tuple[list[str], str]:
    """The seed's role lines the API member lacks, and how we found out.

    CW has no "who am I" endpoint (no /system/members/me in 2025.1). We read the role of the
    member named by the `api_member` setting, or of the only active API member (licenseClass A)
    when there is just one; reading members and roles needs rights the seed's role does not
    grant, so when that is refused we fall back to probing what a GET can prove (inquire levels).
    """
    try:
        member = _find_api_member(client, api_member)
        if member is not None:
            role_id = member["securityRole"]["id"]
            settings = list(client.iter_list(f"system/securityRoles/{role_id}/settings"))
            return permissions.missing_from(settings), f"read from security role " \
                   f"{member['securityRole'].get('name', role_id)!r} of member {member['identifier']!r}"
    except (PermissionDenied, NotFound):
        pass
    return _probe_inquire_levels(client), ("probed with read requests only (set api_member and allow "
                                           "reading System > Members for a full check)")


def _find_api_member(client: ConnectWiseClient, identifier: str | None) -> dict | None:
    if identifier:
        wanted = cond.eq("identifier", identifier)
    else:
        wanted = cond.all_of(cond.eq("licenseClass", "A"), cond.eq("inactiveFlag", False))
    members = list(client.iter_list("system/members", wanted, fields="id,identifier,securityRole"))
    return members[0] if len(members) == 1 else None


_PROBES = (
    ("company/companies", "Companies > Company Maintenance: Inquire level All"),
    ("company/configurations", "Companies > Configurations: Inquire level All"),
    ("service/tickets", "Service Desk > Service Tickets: Inquire level All"),
    ("service/boards", "System > Table Setup: Inquire level All"),
)


def _probe_inquire_levels(client: ConnectWiseClient) -> list[str]:
    missing = []
    for path, line in _PROBES:
        try:
            client.get(path, {"pageSize": 1, "fields": "id"})
        except PermissionDenied:
            missing.append(line)
    return missing


# -- companies ---------------------------------------------------------------------------------


@hookimpl
def psa_list_companies(connection: Connection, filters: CompanyFilters) -> Iterator[Company]:
    client = client_for(connection)
    conditions = cond.all_of(
        cond.eq("deletedFlag", False),
        cond.eq("status/name", filters.status) if filters.status else None,
        cond.contains("name", filters.search) if filters.search else None,
    )
    # `types` is an array: CW filters on its members with childConditions (API-NOTES §2).
    child = cond.eq("types/name", filters.type) if filters.type else None
    for record in client.iter_list("company/companies", conditions, child_conditions=child,
                                   order_by="name asc"):
        company = convert.company_from(record)
        if _passes(company, filters):
            yield company


def _passes(company: Company, filters: CompanyFilters) -> bool:
    """Re-check the server's filtering exactly (`contains` may treat `*` as a wildcard)."""
    if filters.search and filters.search.casefold() not in company.name.casefold():
        return False
    if filters.status and company.status.casefold() != filters.status.casefold():
        return False
    return not filters.type or filters.type.casefold() in (t.casefold() for t in company.types)


# -- configuration types -----------------------------------------------------------------------


@hookimpl
def psa_list_configuration_types(connection: Connection) -> list[ConfigurationType]:
    client = client_for(connection)
    required = cond.all_of(cond.eq("requiredFlag", True), cond.eq("inactiveFlag", False))
    types = []
    for record in client.iter_list("company/configurations/types", order_by="name asc"):
        questions = client.get(f"company/configurations/types/{record['id']}/questions",
                               {"conditions": required, "fields": "id", "pageSize": 1})
        types.append(ConfigurationType(id=str(record["id"]), name=record["name"],
                                       unusable=REQUIRED_QUESTIONS if questions else "",
                                       inactive=bool(record.get("inactiveFlag"))))
    return types


# -- configurations ----------------------------------------------------------------------------


@hookimpl
def psa_match_configurations(connection: Connection, company_id: str, devices: Sequence[Device],
                             details: dict) -> dict[str, list[Configuration]]:
    """Configurations of the company that share a link, serial number or name with a device.

    One request asks for all three at once (`link in (..) or serial in (..) or name in (..)`),
    as many devices per request as fit in a URL; every returned row is compared back exactly.
    """
    client = client_for(connection)
    company = cond.eq("company/id", int(company_id))
    # What each device can be found by, and how a returned value is compared back.
    normals = {"managementLink": lambda v: v, "serialNumber": _fold, "name": _fold}
    keys: list[dict[str, str]] = []
    for device in devices:
        serial = getattr(details.get(device.uid), "serial_number", None)
        values = {"managementLink": device.url, "serialNumber": serial, "name": device.hostname}
        keys.append({field: value for field, value in values.items() if value})
    uids_by_value: dict[tuple[str, str], list[str]] = {}
    for device, wanted in zip(devices, keys, strict=True):
        for field, value in wanted.items():
            uids_by_value.setdefault((field, normals[field](value)), []).append(device.uid)

    candidates: dict[str, dict[str, Configuration]] = {d.uid: {} for d in devices}
    path = "company/configurations"
    for condition in _batched_any_in(client, path, company, [k for k in keys if k]):
        for record in client.iter_list(path, condition):
            for field, normal in normals.items():
                for uid in uids_by_value.get((field, normal(record.get(field) or "")), []):
                    candidates[uid][str(record["id"])] = convert.configuration_from(record)
    return {uid: list(found.values()) for uid, found in candidates.items()}


def _batched_any_in(client: ConnectWiseClient, path: str, scope: str,
                    keys: list[dict[str, str]], max_batch: int = 200) -> Iterator[str]:
    """`scope and (f1 in (..) or f2 in (..) ...)` conditions over `keys` (one dict of field ->
    value per device), as many devices per condition as fit in a safe URL."""
    def condition(batch: list[dict[str, str]]) -> str:
        parts = []
        for field in dict.fromkeys(f for k in batch for f in k):
            parts.append(cond.in_(field, dict.fromkeys(k[field] for k in batch if field in k)))
        return cond.all_of(scope, cond.any_of(*parts))

    def fits(text: str) -> bool:
        return client.url_fits(path, {"conditions": text, "pageSize": 1000, "page": 1})

    batch: list[dict[str, str]] = []
    for key in keys:
        candidate = [*batch, key]
        if batch and (len(candidate) > max_batch or not fits(condition(candidate))):
            yield condition(batch)
            batch = [key]
        else:
            batch = candidate
    if batch:
        yield condition(batch)


def _fold(value: str) -> str:
    return value.strip().casefold()


def _records_where_in(client: ConnectWiseClient, path: str, field: str, values: list,
                      scope: str | None = None) -> Iterator[dict]:
    """Rows whose `field` is one of `values`, in as few URL-sized `in (...)` requests as fit."""
    def fits(condition: str) -> bool:
        return client.url_fits(path, {"conditions": cond.all_of(scope, condition), "pageSize": 1000,
                                      "page": 1})
    for _, condition in cond.batched_in(field, values, fits):
        yield from client.iter_list(path, cond.all_of(scope, condition))


@hookimpl
def psa_configuration_listing_cost(connection: Connection) -> int | None:
    client = client_for(connection)
    counted = client.get("company/configurations/count")
    count = counted.get("count") if isinstance(counted, dict) else None
    if not isinstance(count, int) or count < 0:
        return None
    return max(1, -(-count // PAGE_SIZE))


@hookimpl
def psa_list_all_configurations(connection: Connection) -> Iterator[Configuration]:
    client = client_for(connection)
    # Forward-only paging stays fast however deep the listing goes (API-NOTES §2).
    for record in client.iter_list("company/configurations", forward_only=True):
        yield convert.configuration_from(record)


@hookimpl
def psa_list_configurations(connection: Connection, company_id: str) -> Iterator[Configuration]:
    if not str(company_id).isdigit():
        return  # ConnectWise ids are numbers: no company has this one
    client = client_for(connection)
    for record in client.iter_list("company/configurations", cond.eq("company/id", int(company_id)),
                                   order_by="name asc"):
        yield convert.configuration_from(record)


@hookimpl
def psa_get_configurations(connection: Connection, ids: Sequence[str]) -> list[Configuration]:
    client = client_for(connection)
    records = _records_where_in(client, "company/configurations", "id", [int(i) for i in ids])
    return [convert.configuration_from(r) for r in records]


@hookimpl
def psa_create_configuration(connection: Connection, configuration: Configuration) -> Configuration:
    client = client_for(connection)
    body: dict = {
        "name": _fit(configuration.name, convert.MAX_CONFIGURATION_NAME, "name"),
        "type": {"id": int(configuration.type_id)} if configuration.type_id else None,
        "company": {"id": int(configuration.company_id)},
        "activeFlag": configuration.active,
        "serialNumber": _fit(configuration.serial_number, convert.MAX_SERIAL_NUMBER, "serialNumber"),
        "modelNumber": _fit(configuration.model_number, convert.MAX_MODEL_NUMBER, "modelNumber"),
        "managementLink": configuration.management_link,
    }
    if configuration.status:
        body["status"] = {"id": _configuration_status_id(client, configuration.status)}
    if configuration.manufacturer:
        body["manufacturer"] = {"id": _manufacturer_id(client, connection.state,
                                                        configuration.manufacturer)}
    if configuration.expiration_date:
        body["warrantyExpirationDate"] = convert.datetime_text(configuration.expiration_date)
    created = client.post("company/configurations", {k: v for k, v in body.items() if v is not None})
    return convert.configuration_from(created)


def _fit(value: str | None, limit: int, field: str) -> str | None:
    """Cut a value to CW's maximum length rather than fail the whole creation (logged)."""
    if value and len(value) > limit:
        log.warning("value cut to ConnectWise's maximum length", field=field, limit=limit)
        return value[:limit]
    return value


def _configuration_status_id(client: ConnectWiseClient, description: str) -> int:
    statuses = list(client.iter_list("company/configurations/statuses",
                                     cond.eq("description", description)))
    exact = [s for s in statuses if _fold(s["description"]) == _fold(description)]
    if not exact:
        raise ConnectWiseError(f"ConnectWise has no configuration status {description!r}: add it in "
                               "System > Setup Tables > Configuration Status")
    return exact[0]["id"]


MANUFACTURERS_KEY = "connectwise.manufacturers"  # folded name -> id, read once per connection


def _manufacturer_id(client: ConnectWiseClient, state: dict, name: str) -> int:
    """The manufacturer's id, creating it when CW does not know it yet (Table Setup: Add).

    The list is read once per connection (one page holds them all in practice), not once per
    configuration created: creating 20,000 configurations must not cost 20,000 lookups.
    """
    # Workers creating configurations at once must not each read the list, nor each create
    # the same new manufacturer: one at a time per connection (dict.setdefault is atomic).
    with state.setdefault(MANUFACTURERS_KEY + ".lock", threading.Lock()):
        return _manufacturer_id_held(client, state, name[:50])


def _manufacturer_id_held(client: ConnectWiseClient, state: dict, name: str) -> int:
    known = state.get(MANUFACTURERS_KEY)
    if known is None:
        known = {_fold(r["name"]): r["id"]
                 for r in client.iter_list("procurement/manufacturers", fields="id,name")}
        state[MANUFACTURERS_KEY] = known
    if _fold(name) not in known:
        try:
            known[_fold(name)] = client.post("procurement/manufacturers", {"name": name})["id"]
        except ConnectWiseError as exc:
            if not exc.has_error_code("ObjectExists"):
                raise
            # Added by someone else since the list was read: look that one up.
            for record in client.iter_list("procurement/manufacturers", cond.eq("name", name)):
                if _fold(record["name"]) == _fold(name):
                    known[_fold(name)] = record["id"]
            if _fold(name) not in known:
                raise
    return known[_fold(name)]


@hookimpl
def psa_update_configuration(connection: Connection, configuration_id: str,
                             changes: ConfigurationChanges) -> Configuration:
    client = client_for(connection)
    operations, expected = _configuration_patch(client, changes)
    path = f"company/configurations/{int(configuration_id)}"
    record = client.patch(path, operations) if operations else client.get(path)
    _verify_applied(record, expected, f"configuration {configuration_id}")
    return convert.configuration_from(record)


def _configuration_patch(client: ConnectWiseClient, changes: ConfigurationChanges) -> tuple[list, dict]:
    operations: list[dict] = []
    expected: dict = {}

    def replace(field: str, value) -> None:
        operations.append({"op": "replace", "path": field, "value": value})
        expected[field] = value

    if changes.clear_management_link:
        replace("managementLink", "")
    elif changes.management_link is not None:
        replace("managementLink", changes.management_link)
    if changes.active is not None:
        replace("activeFlag", changes.active)
        status = INACTIVE_STATUS if not changes.active else _default_configuration_status(client)
        operations.append({"op": "replace", "path": "status",
                           "value": {"id": _configuration_status_id(client, status)}})
    if changes.expiration_date is not None:
        replace("warrantyExpirationDate", convert.datetime_text(changes.expiration_date))
    return operations, expected


def _default_configuration_status(client: ConnectWiseClient) -> str:
    statuses = list(client.iter_list("company/configurations/statuses", cond.eq("defaultFlag", True)))
    return statuses[0]["description"] if statuses else "Active"


def _verify_applied(record: dict, expected: dict, what: str) -> None:
    """CW can answer a PATCH 200 without applying it (API-NOTES §3): check the answer."""
    for field, value in expected.items():
        have = record.get(field)
        if field == "warrantyExpirationDate":
            have, value = (have or "")[:10], value[:10]
        if (have or "") != (value or "") and have != value:
            raise ConnectWiseError(f"ConnectWise accepted the change to {field} of {what} but did not "
                                   "apply it; check the API member's Configurations: Edit level")


@hookimpl
def psa_unmap_configurations(connection: Connection, configuration_ids: Sequence[str]) -> None:
    client = client_for(connection)
    clear = [{"op": "replace", "path": "managementLink", "value": ""}]
    for configuration_id in configuration_ids:
        try:
            client.patch(f"company/configurations/{int(configuration_id)}", clear)
        except NotFound:  # deleted in the PSA: nothing left to unmap
            log.info("configuration_already_gone", configuration_id=configuration_id)


# -- ticket options ----------------------------------------------------------------------------


# Ticket routing on ConnectWise: a board, then a type and a subtype of that board. Statuses are
# the board's own. The draft's routing keys are these field names.
ROUTING_FIELDS = {"board": "board", "type": "type", "subtype": "subType"}


@hookimpl
def psa_ticket_options(connection: Connection) -> TicketOptions:
    client = client_for(connection)
    boards, statuses, types, subtypes = [], [], [], []
    for record in client.iter_list("service/boards", order_by="name asc"):
        board_id = str(record["id"])
        base = f"service/boards/{board_id}"
        board_statuses = [_board_status(s, board_id) for s in client.iter_list(f"{base}/statuses")]
        teams = list(client.iter_list(f"{base}/teams", cond.eq("defaultFlag", True)))
        has_team = any(t.get("defaultFlag") for t in teams)
        has_status = any(s.default and not s.inactive for s in board_statuses)
        boards.append(Choice(id=board_id, name=record["name"],
                             inactive=bool(record.get("inactiveFlag")),
                             unusable=_why_board_is_unusable(has_team, has_status)))
        statuses += board_statuses
        types += [_choice(t, board_id) for t in client.iter_list(f"{base}/types")]
        subtypes += [_choice(t, board_id) for t in client.iter_list(f"{base}/subtypes")]
    return TicketOptions(
        routing=(
            RoutingField("board", "Board", tuple(boards), required=True),
            RoutingField("type", "Type", tuple(types), scoped_by="board"),
            RoutingField("subtype", "Subtype", tuple(subtypes), scoped_by="board"),
        ),
        statuses=tuple(statuses), status_scope="board",
        priorities=tuple(_choice(p) for p in client.iter_list("service/priorities",
                                                              order_by="sortOrder asc")),
        sources=tuple(_choice(s) for s in client.iter_list("service/sources", order_by="name asc")),
        summary_max=convert.MAX_SUMMARY,
    )


def _why_board_is_unusable(has_team: bool, has_status: bool) -> str:
    """ConnectWise refuses a ticket on a board without a default team or default status."""
    missing = [what for what, present in (("default team", has_team),
                                          ("default status", has_status)) if not present]
    if not missing:
        return ""
    return (f"it has no {' and no '.join(missing)}, so ConnectWise refuses tickets on it; set one "
            "on the board in ConnectWise")


def _board_status(record: dict, board_id: str) -> TicketStatus:
    return TicketStatus(id=str(record["id"]), scope_id=board_id, name=record["name"],
                        closed=bool(record.get("closedStatus")),
                        default=bool(record.get("defaultFlag")),
                        inactive=bool(record.get("inactive")))


def _choice(record: dict, board_id: str | None = None) -> Choice:
    return Choice(id=str(record["id"]), name=record["name"], scope_id=board_id,
                  inactive=bool(record.get("inactiveFlag") or record.get("inactive")),
                  default=bool(record.get("defaultFlag")))


# -- tickets -----------------------------------------------------------------------------------


@hookimpl
def psa_create_ticket(connection: Connection, draft: TicketDraft) -> Ticket:
    client = client_for(connection)
    body = {
        "summary": _fit(draft.summary, convert.MAX_SUMMARY, "summary"),
        "company": {"id": int(draft.company_id)},
        "initialDescription": convert.ticket_description(draft.description, draft.device_url,
                                                         draft.alert_url),
        "externalXRef": convert.stored_marker(draft.marker),
    }
    unknown = sorted(set(draft.routing) - set(ROUTING_FIELDS))
    if unknown:
        raise ConnectWiseError(f"ConnectWise has no ticket field {', '.join(unknown)}; its routing "
                               f"fields are {', '.join(ROUTING_FIELDS)}")
    fields = [(ROUTING_FIELDS[name], value) for name, value in draft.routing.items()]
    fields += [("status", draft.status_id), ("priority", draft.priority_id),
               ("source", draft.source_id)]
    for field, value in fields:
        if value:
            body[field] = {"id": int(value)}
    record = client.post("service/tickets", body)
    attached: tuple[str, ...] = ()
    if draft.configuration_id and _attach(client, record["id"], draft.configuration_id):
        attached = (draft.configuration_id,)
    return convert.ticket_from(record, attached)


def _attach(client: ConnectWiseClient, ticket_id: int, configuration_id: str) -> bool:
    try:
        client.post(f"service/tickets/{ticket_id}/configurations", {"id": int(configuration_id)})
    except NotFound:  # the configuration was deleted in the PSA: the ticket still counts
        log.warning("configuration not attached: it no longer exists", ticket=ticket_id,
                    configuration_id=configuration_id)
        return False
    return True


@hookimpl
def psa_attach_configuration(connection: Connection, ticket_id: str, configuration_id: str) -> None:
    _attach(client_for(connection), int(ticket_id), configuration_id)


@hookimpl
def psa_find_ticket(connection: Connection, marker: str) -> Ticket | None:
    client = client_for(connection)
    stored = convert.stored_marker(marker)
    for record in client.iter_list("service/tickets", cond.eq("externalXRef", stored)):
        if record.get("externalXRef") == stored:  # exact, whatever the server's collation
            return convert.ticket_from(record, _ticket_configuration_ids(client, record["id"]))
    return None


@hookimpl
def psa_get_ticket(connection: Connection, ticket_id: str) -> Ticket | None:
    client = client_for(connection)
    record = client.get_or_none(f"service/tickets/{int(ticket_id)}")
    if record is None:
        return None
    return convert.ticket_from(record, _ticket_configuration_ids(client, record["id"]))


def _ticket_configuration_ids(client: ConnectWiseClient, ticket_id: int) -> tuple[str, ...]:
    return tuple(str(r["id"]) for r in client.iter_list(f"service/tickets/{ticket_id}/configurations"))


@hookimpl
def psa_add_ticket_note(connection: Connection, ticket_id: str, text: str) -> None:
    client_for(connection).post(f"service/tickets/{int(ticket_id)}/notes", {
        "text": text, "detailDescriptionFlag": True, "internalAnalysisFlag": False, "resolutionFlag": False,
    })


@hookimpl
def psa_close_ticket(connection: Connection, ticket_id: str, closed_status_id: str) -> Ticket:
    """Move the ticket to a closed status of its own board, then read it back to be sure.

    Patching `closedFlag` is not used: CW may answer 200 and leave the ticket open.
    """
    client = client_for(connection)
    path = f"service/tickets/{int(ticket_id)}"
    ticket = client.get(path)
    board_id = ticket["board"]["id"]
    status = client.get_or_none(f"service/boards/{board_id}/statuses/{int(closed_status_id)}")
    if status is None or not status.get("closedStatus"):
        board = ticket["board"].get("name", board_id)
        raise ConnectWiseError(
            f"status {closed_status_id} is not a closed status of board {board} (ticket {ticket_id}): "
            "choose a closed status of that board in the ticket settings")
    if not (ticket.get("closedFlag") and ticket["status"]["id"] == status["id"]):
        client.patch(path, [{"op": "replace", "path": "status", "value": {"id": status["id"]}}])
    closed = client.get(path)
    if not closed.get("closedFlag"):
        raise ConnectWiseError(f"ConnectWise kept ticket {ticket_id} open after moving it to status "
                               f"{status['name']!r}; check the API member's Close Service Tickets level")
    return convert.ticket_from(closed, _ticket_configuration_ids(client, closed["id"]))


@hookimpl
def psa_changed_tickets(connection: Connection, since: dt.datetime | None) -> Iterator[Ticket]:
    """Tickets with `lastUpdated >= since`, oldest change first.

    CW keeps `lastUpdated` to the second, so the bound is inclusive (a ticket changed in the
    same second as `since` is not lost; one may be seen twice). Pages are cut by a keyset
    (lastUpdated, id) rather than page numbers, so tickets changing while we read cannot shift
    others out of view.
    """
    client = client_for(connection)
    cursor: tuple[str, int] | None = None
    page_size = CHANGED_TICKETS_PAGE
    while True:
        conditions = cond.all_of(
            cond.compare("lastUpdated", ">=", since) if since else None,
            _after(cursor) if cursor else None,
        )
        page = client.first_page("service/tickets", conditions, order_by="_info/lastUpdated asc, id asc",
                                 page_size=page_size)
        yield from (convert.ticket_from(r) for r in page)
        if len(page) < page_size:
            return
        last = page[-1]
        cursor = (last["_info"]["lastUpdated"], last["id"])


def _after(cursor: tuple[str, int]) -> str:
    stamp = convert.parse_datetime(cursor[0])
    same_second_later_id = cond.all_of(cond.compare("lastUpdated", "=", stamp),
                                       cond.compare("id", ">", cursor[1]))
    return cond.any_of(cond.compare("lastUpdated", ">", stamp), same_second_later_id)


# -- callbacks ---------------------------------------------------------------------------------


@hookimpl
def psa_ticket_url(connection: Connection, ticket_id: str) -> str:
    """The ticket's page in Manage's web client, which opens a ticket by its record id."""
    site = connection.settings["url"].rstrip("/")
    company = quote(connection.settings.get("company", ""), safe="")
    return (f"{site}/v4_6_release/services/system_io/Service/fv_sr100_request.rsp"
            f"?service_recid={quote(str(ticket_id), safe='')}&companyName={company}")


def _callback_url(url: str) -> str:
    """ConnectWise appends the record's id to a callback URL ending in `=`: `recordId=` comes
    last, so that it never lands in psabridge's token."""
    return url if url.endswith("recordId=") else f"{url}{'&' if '?' in url else '?'}recordId="


@hookimpl
def psa_register_ticket_callback(connection: Connection, url: str, signing_secret: str) -> str:
    # ConnectWise signs with a key of its own (fetched per callback from a URL in the body), not
    # with one we give it: `signing_secret` has no use here.
    client = client_for(connection)
    url = _callback_url(url)
    for entry in _ticket_callbacks(client, url):
        if entry.get("inactiveFlag"):  # CW disables callbacks that failed for days: revive it
            client.patch(f"system/callbacks/{entry['id']}",
                         [{"op": "replace", "path": "inactiveFlag", "value": False}])
        return str(entry["id"])
    body = {"url": url, "objectId": 1, "type": "ticket", "level": "owner",
            "description": CALLBACK_DESCRIPTION, "inactiveFlag": False}
    try:
        return str(client.post("system/callbacks", body)["id"])
    except ConnectWiseError as exc:
        if not exc.has_error_code("ObjectExists"):
            raise
        # Registered by a concurrent run (or our lost answer): use that one.
        return next(str(e["id"]) for e in _ticket_callbacks(client, url))


@hookimpl
def psa_unregister_ticket_callback(connection: Connection, url: str) -> None:
    client = client_for(connection)
    url = _callback_url(url)
    for entry in list(_ticket_callbacks(client, url)):
        try:
            client.delete(f"system/callbacks/{entry['id']}")
        except NotFound:
            pass


def _ticket_callbacks(client: ConnectWiseClient, url: str) -> Iterator[dict]:
    conditions = cond.all_of(cond.eq("url", url), cond.eq("type", "ticket"), cond.eq("level", "owner"))
    for entry in client.iter_list("system/callbacks", conditions):
        if entry.get("url") == url:
            yield entry



@hookimpl
def psa_parse_ticket_callback(connection: Connection, headers, body: bytes,
                              signing_secret: str) -> TicketCallback | None:
    """A ConnectWise callback: {"MessageId": "...", "Type": "ticket", "Action": "updated",
    "ID": 123, ...}. The event is its MessageId (None without one: core hashes the body).

    ConnectWise signs callbacks (`x-content-signature`: HMAC-SHA256 of the body keyed with a
    key fetched, per callback, from a `key_url` inside the body); checking that would take a
    request to a URL the body names, so it is not checked: the body is only a hint, re-read
    through the API, and psabridge's token authenticates the sender."""
    payload = json_object(body)
    kind = payload.get("Type")
    if not isinstance(kind, str):
        raise InvalidCallback('Type must be a string, e.g. "ticket"')
    if kind.lower() != "ticket":
        return None
    ticket_id = positive_id(payload.get("ID"), "ID")
    message_id = payload.get("MessageId")
    if message_id in (None, ""):
        return TicketCallback(ticket_id)
    return TicketCallback(ticket_id, identifier(message_id, "MessageId"))
