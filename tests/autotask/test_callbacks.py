"""Ticket callbacks: a TicketWebhook registered in the simulator, its signed callouts parsed and
verified by the connector."""

from __future__ import annotations

import json

import httpx
import pytest

from psabridge.core.errors import InvalidCallback
from psabridge.core.models import TicketDraft
from psabridge.plugins.autotask import hooks, signature
from psabridge.plugins.autotask.simulator import AutotaskSimulator, escaped_json
from psabridge.plugins.autotask.simulator import signature as simulator_signature

from .conftest import connect

URL = "https://psabridge.example.com/hooks/psa?token=abc"
SECRET = "5f" * 32  # 64 hex characters, as core gives


@pytest.fixture
def received():
    return []


@pytest.fixture
def sim(received):
    def receive(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(200)

    return AutotaskSimulator(seed=4, companies=2, delivery_transport=httpx.MockTransport(receive))


@pytest.fixture
def connection(sim):
    return connect(sim.settings(), sim.transport())


def new_ticket(connection, sim) -> str:
    company = next(c for c in sim.companies() if c["id"] != 0)
    return hooks.psa_create_ticket(connection, TicketDraft(
        summary="Offline", description="Agent offline", company_id=str(company["id"]),
        marker="psabridge:test:callback")).id


def test_registering_twice_gives_one_ready_webhook_with_the_secret(connection, sim):
    first = hooks.psa_register_ticket_callback(connection, URL, SECRET)
    assert hooks.psa_register_ticket_callback(connection, URL, SECRET) == first
    [webhook] = sim.db.table("TicketWebhooks").values()
    assert webhook["webhookUrl"] == URL and webhook["secretKey"] == SECRET
    assert webhook["isActive"] and webhook["isReady"]
    assert webhook["isSubscribedToCreateEvents"] and webhook["isSubscribedToUpdateEvents"]
    assert len(sim.db.by("TicketWebhookFields", webhookID=webhook["id"])) == 2  # status, externalID


def test_registering_revives_a_disabled_webhook_and_takes_a_new_secret(connection, sim):
    webhook_id = int(hooks.psa_register_ticket_callback(connection, URL, SECRET))
    sim.db.table("TicketWebhooks")[webhook_id]["isActive"] = False
    assert hooks.psa_register_ticket_callback(connection, URL, "a1" * 32) == str(webhook_id)
    webhook = sim.db.table("TicketWebhooks")[webhook_id]
    assert webhook["isActive"] and webhook["secretKey"] == "a1" * 32


def test_unregistering_deletes_it_and_twice_does_not_fail(connection, sim):
    hooks.psa_register_ticket_callback(connection, URL, SECRET)
    hooks.psa_unregister_ticket_callback(connection, URL)
    hooks.psa_unregister_ticket_callback(connection, URL)
    assert sim.db.table("TicketWebhooks") == {}


def test_a_technician_closing_the_ticket_calls_back_with_a_verifiable_signature(connection, sim, received):
    hooks.psa_register_ticket_callback(connection, URL, SECRET)
    ticket_id = new_ticket(connection, sim)
    sim.close_ticket(int(ticket_id))
    sim.deliver_pending()
    created, request = received  # the new ticket, then its change of status
    headers = {k.lower(): v for k, v in request.headers.items()}
    parsed = hooks.psa_parse_ticket_callback(connection, headers, request.content, SECRET)
    assert parsed.ticket_id == ticket_id and parsed.event_id
    with pytest.raises(InvalidCallback, match="does not match"):
        hooks.psa_parse_ticket_callback(connection, headers, request.content, "00" * 32)


def payload(**fields) -> dict:
    return {"Action": "Update", "Guid": "6b6c3c1e-8f7e-4a8e-9a51-2f5a1c7e9d10", "EntityType": "Ticket",
            "Id": 7001, "Fields": {"Status": 5}, "EventTime": "2026-11-30T10:00:00Z",
            "SequenceNumber": 3, "PersonID": 29682886, **fields}


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"x-hook-signature": signature.sign(secret, body), "content-type": "application/json"}


def test_the_raw_body_signature_is_accepted(connection):
    body = json.dumps(payload()).encode()
    parsed = hooks.psa_parse_ticket_callback(connection, signed(body), body, SECRET)
    assert parsed.ticket_id == "7001"
    assert parsed.event_id == "6b6c3c1e-8f7e-4a8e-9a51-2f5a1c7e9d10:3"


def test_a_signature_over_the_escaped_serialisation_is_accepted(connection):
    """Autotask may sign `& < > ' " \\ +` and non-ASCII characters escaped while sending them plain."""
    value = payload(Fields={"Title": "Disk <C:> & \"D:\" + 'E:' \\ naïve ✓ 🙂"})
    sent = json.dumps(value, ensure_ascii=False).encode()
    signed_over = escaped_json(value).encode()
    assert signature.escaped_form(sent) == signed_over
    headers = {"x-hook-signature": simulator_signature(SECRET, signed_over)}
    assert hooks.psa_parse_ticket_callback(connection, headers, sent, SECRET).ticket_id == "7001"


@pytest.mark.parametrize("headers, reason", [
    ({}, "not signed"),
    ({"x-hook-signature": "md5=abc"}, "sha1="),
    ({"x-hook-signature": "sha1=AAAA"}, "does not match"),
])
def test_unsigned_or_wrongly_signed_callouts_are_refused(connection, headers, reason):
    body = json.dumps(payload()).encode()
    with pytest.raises(InvalidCallback, match=reason):
        hooks.psa_parse_ticket_callback(connection, headers, body, SECRET)


def test_a_tampered_body_is_refused(connection):
    body = json.dumps(payload()).encode()
    headers = signed(body)
    with pytest.raises(InvalidCallback, match="does not match"):
        hooks.psa_parse_ticket_callback(connection, headers, body.replace(b"7001", b"7002"), SECRET)


@pytest.mark.parametrize("fields", [{"Action": "Deactivated"}, {"EntityType": "TicketNote"}])
def test_deactivation_notices_and_other_entities_are_not_about_a_ticket(connection, fields):
    body = json.dumps(payload(**fields)).encode()
    assert hooks.psa_parse_ticket_callback(connection, signed(body), body, SECRET) is None


def test_keys_are_read_without_case_and_a_bad_id_is_refused(connection):
    body = json.dumps({"action": "Update", "entityType": "ticket", "id": "42"}).encode()
    parsed = hooks.psa_parse_ticket_callback(connection, signed(body), body, SECRET)
    assert parsed.ticket_id == "42" and parsed.event_id is None
    bad = json.dumps(payload(Id="../7")).encode()
    with pytest.raises(InvalidCallback, match="Id"):
        hooks.psa_parse_ticket_callback(connection, signed(bad), bad, SECRET)
