"""A minimal PSA connector for ToyPSA (see toy_psa.py): every hook core/ calls, and nothing more.

It is the worked example of docs/writing-a-connector.md, and a test fixture:
tests/kit/test_minimal_psa_conforms.py runs the conformance kit against it in CI.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterator

import httpx

from psabridge.core import http, logs
from psabridge.core.callbacks import identifier, json_object, positive_id
from psabridge.core.errors import InvalidCallback, RemoteError
from psabridge.core.hookspecs import hookimpl
from psabridge.core.models import (
    Choice,
    Company,
    Configuration,
    ConfigurationType,
    ConnectionReport,
    ConnectorInfo,
    RoutingField,
    Setting,
    Ticket,
    TicketCallback,
    TicketOptions,
    TicketStatus,
)

SUMMARY_MAX = 200  # ToyPSA refuses longer summaries

# -- what the connector is -----------------------------------------------------------------


@hookimpl
def connector_info():
    return ConnectorInfo(kind="psa", title="ToyPSA", settings=(
        Setting("url", "ToyPSA URL", kind="url", help="e.g. https://toypsa.example.com"),
        Setting("api_key", "API key", secret=True, help="Settings > API keys in ToyPSA"),
    ))


# -- talking to ToyPSA ---------------------------------------------------------------------


class ToyPsaError(RemoteError):
    """ToyPSA refused a request. The message says what to fix and never holds the key."""


class NotFound(ToyPsaError):
    pass


def client(connection) -> httpx.Client:
    """One httpx client per connection, kept in `connection.state` for the run."""
    if "toypsa.client" not in connection.state:
        api_key = connection.settings["api_key"]
        logs.register_secret(api_key)  # masked wherever it might show up in a log line
        connection.state["toypsa.client"] = http.new_client(
            base_url=connection.settings["url"], transport=connection.transport, timeout=30,
            headers={"Authorization": f"Bearer {api_key}"})
    return connection.state["toypsa.client"]


def request(connection, method: str, path: str, **kwargs):
    # core.http.send retries what is safe to retry and keeps to psabridge's leases.
    toypsa = client(connection)
    try:
        response = http.send(toypsa, toypsa.build_request(method, path, **kwargs))
    except httpx.TransportError as exc:
        raise ToyPsaError(f"cannot reach ToyPSA at the configured url: {type(exc).__name__}") from None
    if response.status_code == 401:
        raise ToyPsaError("ToyPSA refused the API key: check api_key")
    if response.status_code == 404:
        raise NotFound(f"ToyPSA has no {path}")
    if response.is_error:
        raise ToyPsaError(f"ToyPSA answered HTTP {response.status_code} to {method} {path}")
    return response.json()


def pages(connection, path: str, **params) -> Iterator[dict]:
    """Every item of a paged list: follow `next` until there is none."""
    page = 1
    while page:
        body = request(connection, "GET", path, params={**params, "page": page})
        yield from body["items"]
        page = body["next"]


# -- converting ----------------------------------------------------------------------------


def _configuration(record: dict) -> Configuration:
    return Configuration(
        id=record["id"], name=record["name"], company_id=record["company_id"],
        type_id=record.get("type_id"), active=record.get("active", True),
        status="Active" if record.get("active", True) else "Inactive",
        serial_number=record.get("serial_number"), manufacturer=record.get("manufacturer"),
        model_number=record.get("model_number"), management_link=record.get("management_link"))


def _ticket(record: dict) -> Ticket:
    return Ticket(
        id=record["id"], summary=record["summary"], company_id=record["company_id"],
        status_id=record.get("status_id"), closed=record["closed"],
        marker=record.get("reference"), configuration_ids=tuple(record.get("configuration_ids", ())),
        last_updated=dt.datetime.fromisoformat(record["updated"]))


# -- connection ----------------------------------------------------------------------------


@hookimpl
def psa_check_connection(connection):
    try:
        request(connection, "GET", "/companies", params={"page": 1})
    except ToyPsaError as exc:
        return ConnectionReport(ok=False, detail=str(exc))
    return ConnectionReport(ok=True, detail="connected to ToyPSA")


# -- companies and configurations ----------------------------------------------------------


@hookimpl
def psa_list_companies(connection, filters):
    # ToyPSA cannot filter; core/ re-checks the filters, so yielding everything is correct.
    for record in pages(connection, "/companies"):
        yield Company(id=record["id"], identifier=record["identifier"], name=record["name"],
                      status="Active")


@hookimpl
def psa_list_configuration_types(connection):
    return [ConfigurationType(id=t["id"], name=t["name"]) for t in request(connection, "GET", "/types")]


@hookimpl
def psa_match_configurations(connection, company_id, devices, details):
    # One listing of the company's configurations serves every device: N devices, not N requests.
    configurations = [_configuration(r) for r in pages(connection, "/configurations", company_id=company_id)]
    found = {}
    for device in devices:
        serial = details[device.uid].serial_number if device.uid in details else None
        found[device.uid] = [
            c for c in configurations
            if (device.url and c.management_link == device.url)
            or (serial and c.serial_number == serial)
            or c.name.casefold() == device.hostname.casefold()
        ]
    return found


@hookimpl
def psa_get_configurations(connection, ids):
    found = []
    for configuration_id in ids:
        try:
            found.append(_configuration(request(connection, "GET", f"/configurations/{configuration_id}")))
        except NotFound:  # deleted in the PSA: left out, as the contract says
            pass
    return found


@hookimpl
def psa_create_configuration(connection, configuration):
    body = {"name": configuration.name, "company_id": configuration.company_id,
            "type_id": configuration.type_id, "active": configuration.active,
            "serial_number": configuration.serial_number, "manufacturer": configuration.manufacturer,
            "model_number": configuration.model_number, "management_link": configuration.management_link}
    return _configuration(request(connection, "POST", "/configurations", json=body))


@hookimpl
def psa_update_configuration(connection, configuration_id, changes):
    body = {}
    if changes.clear_management_link:
        body["management_link"] = None
    elif changes.management_link is not None:
        body["management_link"] = changes.management_link
    if changes.active is not None:
        body["active"] = changes.active
    if changes.expiration_date is not None:
        body["warranty_expires"] = changes.expiration_date.isoformat()
    return _configuration(request(connection, "PATCH", f"/configurations/{configuration_id}", json=body))


@hookimpl
def psa_unmap_configurations(connection, configuration_ids):
    for configuration_id in configuration_ids:
        try:
            request(connection, "PATCH", f"/configurations/{configuration_id}",
                    json={"management_link": None})
        except NotFound:  # already deleted in the PSA: nothing to unmap
            pass


# -- tickets -------------------------------------------------------------------------------


@hookimpl
def psa_ticket_options(connection):
    # ToyPSA routes a ticket to a queue; its statuses are the same for every queue.
    options = request(connection, "GET", "/ticket-options")
    return TicketOptions(
        routing=(RoutingField("queue", "Queue", required=True, choices=tuple(
            Choice(id=q["id"], name=q["name"]) for q in options["queues"])),),
        statuses=tuple(TicketStatus(id=s["id"], name=s["name"], closed=s["closed"],
                                    default=s["default"]) for s in options["statuses"]),
        priorities=tuple(Choice(id=p["id"], name=p["name"]) for p in options["priorities"]),
        summary_max=SUMMARY_MAX)


@hookimpl
def psa_create_ticket(connection, draft):
    links = [f"RMM Device: {draft.device_url}" if draft.device_url else "",
             f"RMM Alert: {draft.alert_url}" if draft.alert_url else ""]
    body = {"summary": draft.summary, "company_id": draft.company_id,
            "queue_id": draft.routing.get("queue"), "status_id": draft.status_id,
            "priority_id": draft.priority_id, "reference": draft.marker,
            "description": "\n".join(filter(None, (draft.description, *links))),
            "configuration_ids": [draft.configuration_id] if draft.configuration_id else []}
    return _ticket(request(connection, "POST", "/tickets", json=body))


@hookimpl
def psa_find_ticket(connection, marker):
    found = request(connection, "GET", "/tickets", params={"reference": marker})
    return _ticket(found[0]) if found else None


@hookimpl
def psa_get_ticket(connection, ticket_id):
    try:
        return _ticket(request(connection, "GET", f"/tickets/{ticket_id}"))
    except NotFound:
        return None


@hookimpl
def psa_add_ticket_note(connection, ticket_id, text):
    request(connection, "POST", f"/tickets/{ticket_id}/notes", json={"text": text})


@hookimpl
def psa_close_ticket(connection, ticket_id, closed_status_id):
    ticket = _ticket(request(connection, "PATCH", f"/tickets/{ticket_id}",
                             json={"status_id": closed_status_id}))
    if not ticket.closed:
        raise ToyPsaError(f"status {closed_status_id} did not close ticket {ticket_id}: "
                          "choose a closed status")
    return ticket


@hookimpl
def psa_changed_tickets(connection, since):
    after = since.astimezone(dt.UTC).isoformat() if since else ""
    for record in pages(connection, "/tickets", changed_after=after):
        yield _ticket(record)


# -- push updates ----------------------------------------------------------------------------


@hookimpl
def psa_register_ticket_callback(connection, url, signing_secret):
    for webhook in request(connection, "GET", "/webhooks"):
        if webhook["url"] == url:
            return webhook["id"]
    return request(connection, "POST", "/webhooks", json={"url": url, "secret": signing_secret})["id"]


@hookimpl
def psa_unregister_ticket_callback(connection, url):
    for webhook in request(connection, "GET", "/webhooks"):
        if webhook["url"] == url:
            request(connection, "DELETE", f"/webhooks/{webhook['id']}")


@hookimpl
def psa_parse_ticket_callback(connection, headers, body, signing_secret):
    # ToyPSA signs each callback with the secret it was registered with.
    expected = hmac.new(signing_secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(headers.get("x-toy-signature", ""), expected):
        raise InvalidCallback("the X-Toy-Signature header does not match the body")
    payload = json_object(body)
    return TicketCallback(ticket_id=positive_id(payload.get("ticket_id"), "ticket_id"),
                          event_id=identifier(payload.get("event_id"), "event_id"))
