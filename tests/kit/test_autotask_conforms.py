"""The Autotask connector passes the conformance kit, against its simulator in-process and on loopback."""

from __future__ import annotations

import httpx
import pytest

import psabridge.plugins.autotask as autotask
from psabridge.core.http import RetryPolicy
from psabridge.core.models import Connection
from psabridge.plugins.autotask.client import PAGE_SIZE, AutotaskClient, forget_zones
from psabridge.plugins.autotask.simulator import AutotaskSimulator
from psabridge.plugins.autotask.simulator.data import STATUS_NEW, now_text
from psabridge.testing import PsaConformance, PsaUnderTest, TicketSetup

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01, statuses=frozenset({502, 503, 504}))


def connect(settings, transport) -> Connection:
    connection = Connection("autotask", dict(settings), transport=transport)
    AutotaskClient.for_connection(connection, policy=FAST, sleep=lambda seconds: None)
    return connection


class Outbox:
    """What the simulator's webhooks POSTed, as (headers, body), kept instead of sent."""

    def __init__(self):
        self.sent: list[httpx.Request] = []

    def transport(self) -> httpx.MockTransport:
        def keep(request: httpx.Request) -> httpx.Response:
            self.sent.append(request)
            return httpx.Response(200)
        return httpx.MockTransport(keep)


def under_test(sim: AutotaskSimulator, outbox: Outbox, url: str, transport) -> PsaUnderTest:
    def add_companies(n: int) -> list[str]:
        owner = sim.db.technicians()[0]["id"]
        return [str(sim.db.insert("Companies", {
            "companyName": f"Kit Company {i:04d}", "companyType": 1, "phone": "555-0101",
            "ownerResourceID": owner, "isActive": True})["id"]) for i in range(n)]

    def add_tickets(setup: TicketSetup, n: int) -> list[str]:
        return [str(sim.db.insert("Tickets", {
            "companyID": int(setup.company_id), "title": f"Kit ticket {i}", "status": STATUS_NEW,
            "priority": 2, "ticketNumber": sim.db.ticket_number(),
            "createDate": now_text(sim.clock()), "lastActivityDate": now_text(sim.clock())})["id"])
            for i in range(n)]

    def ticket_callbacks(ticket_id: str) -> list[tuple[dict, bytes]]:
        sim.deliver_pending()
        return [(dict(r.headers), r.content) for r in outbox.sent
                if f'"Id":{ticket_id},'.encode() in r.content]

    return PsaUnderTest(
        plugin=autotask, name="autotask", entry_point="autotask",
        settings=sim.settings(url), connect=lambda settings: connect(settings, transport),
        page_size=PAGE_SIZE, add_companies=add_companies, add_tickets=add_tickets,
        ticket_callbacks=ticket_callbacks, signs_callbacks=True,
    )


@pytest.fixture(autouse=True)
def fresh_zones():
    forget_zones()
    yield
    forget_zones()


class TestAutotaskInProcess(PsaConformance):
    @pytest.fixture
    def psa_under_test(self):
        outbox = Outbox()
        sim = AutotaskSimulator(seed=5, companies=3, delivery_transport=outbox.transport())
        return under_test(sim, outbox, "http://autotask.simulator", sim.transport())


class TestAutotaskOnLoopback(PsaConformance):
    @pytest.fixture
    def psa_under_test(self):
        outbox = Outbox()
        sim = AutotaskSimulator(seed=5, companies=3, delivery_transport=outbox.transport())
        with sim.serve(deliver_webhooks=False) as server:
            yield under_test(sim, outbox, server.url, None)
