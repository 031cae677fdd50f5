"""TicketWebhooks in the Autotask simulator (API-NOTES §7): registered through the API, ready once
a field is subscribed, called back signed (checked here by an independent computation),
retried, logged when dropped, and deactivated after consecutive failures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time

import httpx
import pytest
from werkzeug.wrappers import Request, Response

from psabridge.plugins.autotask.simulator import AutotaskSimulator, FakeClock
from psabridge.simulation import CONTROL_PREFIX, start_server

SECRET = "hook-secret-0123456789"
RECEIVER = "https://receiver.example/autotask"
DEACTIVATED = "https://receiver.example/deactivated"


class Receiver:
    """An httpx transport standing for the webhook's receiver: records each POST and answers
    the next status of `statuses` (200 once they run out)."""

    def __init__(self, *statuses: int):
        self.statuses = list(statuses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.statuses.pop(0) if self.statuses else 200)

    def at(self, url: str) -> list[httpx.Request]:
        return [r for r in self.requests if str(r.url) == url]


def independent_signature(secret: str, body: bytes) -> str:
    return "sha1=" + base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha1).digest()).decode()


def n8n_escaped(value) -> str:
    """The serialisation n8n re-creates to check Autotask's signature: JSON with `& < > ' " \\ +`
    and non-ASCII inside strings written as \\uXXXX (written here without the simulator's code)."""
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=True)[1:-1]
        text = text.replace('\\"', '"').replace("\\\\", "\\")
        out = "".join(f"\\u{ord(c):04x}" if c in "&<>'\"\\+" else c for c in text.replace("\\u", "\0"))
        return '"' + out.replace("\0", "\\u") + '"'
    if isinstance(value, dict):
        return "{" + ",".join(f"{n8n_escaped(k)}:{n8n_escaped(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(n8n_escaped(v) for v in value) + "]"
    return json.dumps(value)


@pytest.fixture
def world():
    clock = FakeClock()
    receiver = Receiver()
    sim = AutotaskSimulator(seed=2, companies=4, clock=clock,
                            delivery_transport=httpx.MockTransport(receiver))
    with sim.client() as client:
        yield sim, client, receiver, clock


def field_ids(client) -> dict[str, int]:
    fields = client.get("TicketWebhookFields/entityInformation/fields").json()["fields"]
    (field_id,) = [f for f in fields if f["name"] == "fieldID"]
    return {v["label"]: int(v["value"]) for v in field_id["picklistValues"]}


def make_webhook(client, subscribe=("status",), always=("ticketNumber",), **changes) -> int:
    created = client.post("TicketWebhooks", json={
        "name": "psabridge", "webhookUrl": RECEIVER, "deactivationUrl": DEACTIVATED, "secretKey": SECRET,
        "isActive": True, "sendThresholdExceededNotification": False, "isSubscribedToCreateEvents": True,
        "isSubscribedToUpdateEvents": True, **changes})
    assert created.status_code == 200, created.text
    webhook_id = created.json()["itemId"]
    ids = field_ids(client)
    for name in subscribe:
        subscribed = {"fieldID": ids[name], "isSubscribedField": True, "isDisplayAlwaysField": False}
        assert client.post(f"TicketWebhooks/{webhook_id}/Fields", json=subscribed).status_code == 200
    for name in always:
        shown = {"fieldID": ids[name], "isSubscribedField": False, "isDisplayAlwaysField": True}
        assert client.post(f"TicketWebhooks/{webhook_id}/Fields", json=shown).status_code == 200
    return webhook_id


def new_ticket(sim, client, **changes) -> int:
    company = sim.companies()[1]
    answer = client.post("Tickets", json={"companyID": company["id"], "title": "Printer offline",
                                          "status": 1, "priority": 2, "queueID": 29682833, **changes})
    assert answer.status_code == 200, answer.text
    return answer.json()["itemId"]


def test_a_webhook_is_ready_once_a_field_is_subscribed(world):
    sim, client, receiver, clock = world
    webhook_id = make_webhook(client, subscribe=(), always=("ticketNumber",))
    webhook = client.get(f"TicketWebhooks/{webhook_id}").json()["item"]
    assert webhook["isReady"] is False and webhook["webhookGUID"]
    new_ticket(sim, client)
    assert sim.deliver_pending() == 0 and receiver.requests == []  # not ready: no callout
    field = client.post(f"TicketWebhooks/{webhook_id}/Fields", json={
        "fieldID": field_ids(client)["status"], "isSubscribedField": True, "isDisplayAlwaysField": False})
    assert client.get(f"TicketWebhooks/{webhook_id}").json()["item"]["isReady"] is True
    listed = client.get(f"TicketWebhooks/{webhook_id}/Fields").json()["items"]
    assert {f["id"] for f in listed} >= {field.json()["itemId"]}
    unknown = client.post(f"TicketWebhooks/{webhook_id}/Fields", json={
        "fieldID": 99999, "isSubscribedField": True, "isDisplayAlwaysField": False})
    assert unknown.status_code == 500 and "fieldID" in unknown.json()["errors"][0]
    missing = client.post("TicketWebhooks", json={"name": "x", "webhookUrl": RECEIVER})
    assert missing.status_code == 500 and "required" in missing.json()["errors"][0]
    assert client.delete(f"TicketWebhooks/{webhook_id}/Fields/{field.json()['itemId']}").status_code == 200
    assert client.get(f"TicketWebhooks/{webhook_id}").json()["item"]["isReady"] is False


def test_deliveries_are_signed_over_the_escaped_serialisation(world):
    sim, client, receiver, clock = world
    webhook_id = make_webhook(client, always=("ticketNumber", "title"))
    title = "Disk C: <10 % & \"falling\" + 'fast' \\ café"
    ticket_id = new_ticket(sim, client, title=title)
    assert sim.deliver_pending() == 1
    (request,) = receiver.requests
    body = request.content
    assert request.headers["X-Hook-Signature"] == independent_signature(SECRET, body)
    assert request.headers["Content-Type"] == "application/json"
    payload = json.loads(body)
    webhook = sim.db.get("TicketWebhooks", webhook_id)
    assert payload["Action"] == "Create" and payload["EntityType"] == "Ticket" and payload["Id"] == ticket_id
    assert payload["Guid"] == webhook["webhookGUID"] and payload["SequenceNumber"] == 1
    assert payload["PersonID"] == sim.db.api_resource()["id"]
    assert payload["Fields"] == {"Status": 1, "TicketNumber": sim.ticket(ticket_id)["ticketNumber"],
                                 "Title": title}
    assert payload["EventTime"].endswith("Z")
    # the body is the escaped form: a raw-body check and n8n's re-escaping agree
    for raw in (b"&", b"<", b">", b"'", b"+", "é".encode()):
        assert raw not in body
    assert "\\u0026" in body.decode() and "\\u00e9" in body.decode()
    assert n8n_escaped(payload).encode() == body


def test_updates_call_back_for_subscribed_fields_only_and_not_for_excluded_resources(world):
    sim, client, receiver, clock = world
    webhook_id = make_webhook(client)
    ticket_id = new_ticket(sim, client)
    sim.deliver_pending()
    client.patch("Tickets", json={"id": ticket_id, "title": "renamed"})  # not a subscribed field
    assert sim.deliver_pending() == 0
    client.patch("Tickets", json={"id": ticket_id, "status": 8})
    sim.deliver_pending()
    update = json.loads(receiver.requests[-1].content)
    assert update["Action"] == "Update" and update["Fields"] == {
        "Status": 8, "TicketNumber": sim.ticket(ticket_id)["ticketNumber"]}
    assert update["SequenceNumber"] == 2
    # excluding the API user's resource: its own changes no longer call back, a technician's do
    excluded = client.post(f"TicketWebhooks/{webhook_id}/ExcludedResources",
                           json={"resourceID": sim.db.api_resource()["id"]})
    assert excluded.status_code == 200
    client.patch("Tickets", json={"id": ticket_id, "status": 1})
    assert sim.deliver_pending() == 0
    closed = sim.close_ticket(ticket_id)
    assert closed["status"] == "Complete" and closed["closed"]
    assert sim.deliver_pending() == 1
    technician = json.loads(receiver.requests[-1].content)
    assert technician["Fields"]["Status"] == 5 and technician["PersonID"] == sim.db.technicians()[0]["id"]
    assert sim.ticket(ticket_id)["completedDate"]


def test_failed_deliveries_are_retried_then_logged_and_later_events_wait_in_order(world):
    sim, client, receiver, clock = world
    make_webhook(client)
    receiver.statuses = [500, 503, 500, 500, 500]  # the first event fails all five times
    first = new_ticket(sim, client)
    second = new_ticket(sim, client)
    assert sim.deliver_pending() == 1  # the first event only: the second waits behind it
    assert sim.deliver_pending() == 0  # the retry is not due yet
    for attempt in range(2, 6):
        clock.advance(29)
        assert sim.deliver_pending() == 0
        clock.advance(1)
        made = sim.deliver_pending()
        assert made == (1 if attempt < 5 else 2)  # the fifth failure drops it; the second goes
    ids = [json.loads(r.content)["Id"] for r in receiver.requests]
    assert ids == [first] * 5 + [second]
    logs = client.post("WebhookEventErrorLogs/query", json={"filter": [{"op": "exist", "field": "id"}]})
    (log,) = logs.json()["items"]
    assert json.loads(log["payload"])["Id"] == first and log["sequenceNumber"] == 1
    assert "failed 5 times" in log["errorMessage"] and "HTTP 500" in log["errorMessage"]
    assert client.delete(f"WebhookEventErrorLogs/{log['id']}").status_code == 200


def test_a_webhook_is_deactivated_after_25_dropped_events_in_a_row(world):
    sim, client, receiver, clock = world
    webhook_id = make_webhook(client)
    receiver.statuses = [500] * (25 * 5)
    ticket_id = new_ticket(sim, client)
    for status in range(24):
        client.patch("Tickets", json={"id": ticket_id, "status": (8, 1)[status % 2]})
    while sim.webhooks.pending():
        sim.deliver_pending()
        clock.advance(30)
    webhook = client.get(f"TicketWebhooks/{webhook_id}").json()["item"]
    assert webhook["isActive"] is False
    assert len(receiver.at(RECEIVER)) == 125
    (notice,) = receiver.at(DEACTIVATED)
    assert json.loads(notice.content)["Action"] == "Deactivated"
    assert notice.headers["X-Hook-Signature"] == independent_signature(SECRET, notice.content)
    client.patch("Tickets", json={"id": ticket_id, "status": 8})
    assert sim.webhooks.pending() == 0  # an inactive webhook is not called


def test_a_success_resets_the_run_of_failures(world):
    sim, client, receiver, clock = world
    webhook_id = make_webhook(client)
    receiver.statuses = [500] * 5 + [200] + [500] * 5
    ticket_id = new_ticket(sim, client)
    for status in (8, 1):
        client.patch("Tickets", json={"id": ticket_id, "status": status})
    while sim.webhooks.pending():
        sim.deliver_pending()
        clock.advance(30)
    assert sim.webhooks.failed_in_a_row[webhook_id] == 1
    assert client.get("WebhookEventErrorLogs/query/count", params={
        "search": json.dumps({"filter": [{"op": "exist", "field": "id"}]})}).json() == {"queryCount": 2}


def test_deleting_a_webhook_calls_its_deactivation_url(world):
    sim, client, receiver, clock = world
    webhook_id = make_webhook(client)
    assert client.delete(f"TicketWebhooks/{webhook_id}").json() == {"itemId": webhook_id}
    assert len(receiver.at(DEACTIVATED)) == 1
    assert client.get(f"TicketWebhooks/{webhook_id}/Fields").status_code == 500  # gone with it
    assert sim.db.table("TicketWebhookFields") == {}


def test_over_loopback_a_technician_closing_a_ticket_is_called_back_in_the_background():
    received: list[tuple[bytes, str]] = []
    arrived = threading.Event()

    def receiver_app(environ, start_response):
        request = Request(environ)
        received.append((request.get_data(), request.headers.get("X-Hook-Signature", "")))
        arrived.set()
        return Response("", 200)(environ, start_response)

    receiver = start_server(receiver_app, name="hook-receiver")
    sim = AutotaskSimulator(seed=2, companies=3)
    try:
        with sim.serve(control_token="tok") as server, sim.client(server.url) as client:
            make_webhook(client, webhookUrl=f"{receiver.url}/hook", deactivationUrl=f"{receiver.url}/off")
            ticket_id = new_ticket(sim, client)
            assert arrived.wait(10)
            arrived.clear()
            control = httpx.post(f"{server.url}{CONTROL_PREFIX}close-ticket", json={"ticket": ticket_id},
                                 headers={"Authorization": "Bearer tok"})
            assert control.status_code == 200 and control.json()["status"] == "Complete"
            deadline = time.monotonic() + 10
            while len(received) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            again = httpx.post(f"{server.url}{CONTROL_PREFIX}close-ticket", json={"ticket": ticket_id},
                               headers={"Authorization": "Bearer tok"})
            assert again.status_code == 409 and "already complete" in again.json()["error"]
            missing = httpx.post(f"{server.url}{CONTROL_PREFIX}close-ticket", json={"ticket": 1},
                                 headers={"Authorization": "Bearer tok"})
            assert missing.status_code == 404
            wrong = httpx.post(f"{server.url}{CONTROL_PREFIX}close-ticket",
                               json={"ticket": ticket_id, "status": "In Progress"},
                               headers={"Authorization": "Bearer tok"})
            assert wrong.status_code == 400 and "Complete" in wrong.json()["error"]
    finally:
        receiver.shutdown()
    actions = [json.loads(body)["Action"] for body, _ in received]
    assert actions[:2] == ["Create", "Update"]
    assert json.loads(received[1][0])["Fields"]["Status"] == 5
    assert all(signature == independent_signature(SECRET, body) for body, signature in received)


def test_an_impersonated_write_is_attributed_to_that_resource(world):
    sim, client, receiver, clock = world
    webhook_id = make_webhook(client)
    technician = sim.db.technicians()[1]["id"]
    client.post(f"TicketWebhooks/{webhook_id}/ExcludedResources", json={"resourceID": technician})
    ticket_id = new_ticket(sim, client)
    sim.deliver_pending()
    as_technician = {"ImpersonationResourceId": str(technician)}
    changed = client.patch("Tickets", json={"id": ticket_id, "status": 8}, headers=as_technician)
    assert changed.status_code == 200
    assert sim.ticket(ticket_id)["lastActivityResourceID"] == technician
    assert sim.deliver_pending() == 0  # the technician is excluded from this webhook
    refused = client.patch("Tickets", json={"id": ticket_id, "status": 1},
                           headers={"ImpersonationResourceId": str(sim.db.api_resource()["id"])})
    assert refused.status_code == 500 and "cannot be impersonated" in refused.json()["errors"][0]
    assert [json.loads(r.content)["PersonID"] for r in receiver.requests] == [sim.db.api_resource()["id"]]
