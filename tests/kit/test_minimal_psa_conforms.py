"""The worked example of docs/writing-a-connector.md passes the conformance kit."""

from __future__ import annotations

import pathlib
import sys

import httpx
import pytest

from psabridge.testing import PsaConformance, PsaUnderTest, TicketSetup

sys.path.insert(0, str(pathlib.Path(__file__).parents[2] / "docs" / "examples"))

import minimal_psa  # noqa: E402 - lives in docs/examples, put on the path just above
from minimal_psa.toy_psa import PAGE_SIZE, ToyPsa  # noqa: E402


class TestMinimalPsaConforms(PsaConformance):
    @pytest.fixture
    def psa_under_test(self):
        toy = ToyPsa()

        def add_tickets(setup: TicketSetup, n: int) -> list[str]:
            return [toy.add_ticket(setup.company_id, f"ticket {i}")["id"] for i in range(n)]

        return PsaUnderTest(
            plugin=minimal_psa, name="toypsa",
            settings={"url": "http://toypsa.test", "api_key": toy.api_key},
            transport=httpx.WSGITransport(app=toy), page_size=PAGE_SIZE,
            add_companies=lambda n: [toy.add_company(f"Kit {i}")["id"] for i in range(n)],
            add_tickets=add_tickets,
            ticket_callbacks=lambda ticket_id: [(headers, body) for _, headers, body
                                                in toy.callbacks_for(ticket_id)],
            signs_callbacks=True,
        )
