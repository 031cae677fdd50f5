"""The ConnectWise connector passes the conformance kit, against its simulator in-process and on loopback."""

from __future__ import annotations

import json

import pytest

import psabridge.plugins.connectwise as connectwise
from psabridge.core.http import RetryPolicy
from psabridge.core.models import Connection
from psabridge.plugins.connectwise.client import PAGE_SIZE, ConnectWiseClient
from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator
from psabridge.testing import PsaConformance, PsaUnderTest, TicketSetup

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01)


def connect(settings, transport) -> Connection:
    connection = Connection("connectwise", dict(settings), transport=transport)
    ConnectWiseClient.for_connection(connection, policy=FAST, sleep=lambda seconds: None)
    return connection


def under_test(sim: ConnectWiseSimulator, url: str, transport) -> PsaUnderTest:
    db = sim.db

    def add_companies(n: int) -> list[str]:
        return [str(db.add_company(f"Kit Company {i:04d}")["id"]) for i in range(n)]

    def add_tickets(setup: TicketSetup, n: int) -> list[str]:
        company = db.companies[int(setup.company_id)]
        board = db.boards[int(setup.routing["board"])]
        return [str(db.add_ticket(company, f"Kit ticket {i}", board)["id"]) for i in range(n)]

    def ticket_callbacks(ticket_id: str) -> list[tuple[dict, bytes]]:
        return [({"Content-Type": "application/json"}, json.dumps(d["payload"]).encode())
                for d in sim.api.wait_for_deliveries() if str(d["payload"]["ID"]) == ticket_id]

    return PsaUnderTest(
        plugin=connectwise, name="connectwise", entry_point="connectwise",
        settings=sim.settings(url), connect=lambda settings: connect(settings, transport),
        page_size=PAGE_SIZE, add_companies=add_companies, add_tickets=add_tickets,
        # Nothing listens there: the simulator's delivery fails at once and is recorded.
        callback_url="http://127.0.0.1:9/hooks/psa?token=kit", ticket_callbacks=ticket_callbacks,
    )


class TestConnectWiseInProcess(PsaConformance):
    @pytest.fixture
    def psa_under_test(self):
        sim = ConnectWiseSimulator(seed=5, companies=3, configurations_per_company=2)
        return under_test(sim, "http://connectwise.kit", sim.transport())


class TestConnectWiseOnLoopback(PsaConformance):
    @pytest.fixture
    def psa_under_test(self):
        sim = ConnectWiseSimulator(seed=5, companies=3, configurations_per_company=2)
        with sim.serve() as server:
            yield under_test(sim, server.url, None)
