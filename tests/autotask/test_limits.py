"""Autotask's thread limit and hourly threshold, as the simulator enforces them, met by the
connector's pacing and retries."""

from __future__ import annotations

import pytest

from psabridge.core.models import Configuration, TicketDraft
from psabridge.core.pacing import concurrently
from psabridge.plugins.autotask import errors, hooks
from psabridge.plugins.autotask.client import STATE_KEY
from psabridge.plugins.autotask.simulator import AutotaskSimulator, FakeClock, Options
from psabridge.simulation import Faults

from .conftest import connect


def customer(sim) -> str:
    return str(next(c for c in sim.companies() if c["id"] != 0)["id"])


def test_sixteen_workers_never_exceed_three_requests_in_flight_per_entity():
    sim = AutotaskSimulator(seed=1, companies=2)
    with sim.serve(deliver_webhooks=False) as server:  # real threads, real sockets
        connection = connect(sim.settings(server.url))
        company_id = customer(sim)
        done = concurrently(lambda i: hooks.psa_create_configuration(connection, Configuration(
            name=f"PAR-{i:02d}", company_id=company_id)), list(range(40)), workers=16)
        connection.state[STATE_KEY].close()
    assert [d.error for d in done if d.error] == []
    assert sim.limits.refused["threads"] == 0
    assert max(sim.limits.most_in_flight.values()) <= 3


@pytest.mark.parametrize("limit_status", [429, 500])
def test_refusals_by_the_limits_are_retried_even_for_creates(limit_status, slept):
    """The simulator refuses a fifth of the requests as throttled: every ticket is still created
    exactly once."""
    sim = AutotaskSimulator(seed=1, companies=2, options=Options(limit_status=limit_status),
                            faults=Faults(throttle_rate=0.2, seed=4))
    connection = connect(sim.settings(), sim.transport(), slept)
    for i in range(10):
        hooks.psa_create_ticket(connection, TicketDraft(summary=f"T{i}", description="x",
                                                        company_id=customer(sim), marker=f"m-{i}"))
    assert sorted(t["externalID"] for t in sim.tickets()) == sorted(f"m-{i}" for i in range(10))
    assert slept, "some requests were refused and retried"


def test_over_the_hourly_threshold_the_error_is_transient_and_says_so(slept):
    clock = FakeClock()
    sim = AutotaskSimulator(seed=1, companies=2, clock=clock,
                            options=Options(request_threshold=5, limit_status=500))
    connection = connect(sim.settings(), sim.transport(), slept)
    with pytest.raises(errors.RateLimited) as refused:
        for _ in range(10):
            hooks.psa_get_ticket(connection, "7000")
    assert refused.value.transient and "request limits" in str(refused.value)
    clock.advance(3601)  # the rolling hour has passed
    assert hooks.psa_get_ticket(connection, "7000") is None
