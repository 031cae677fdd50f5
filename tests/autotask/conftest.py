"""Fixtures for the Autotask connector: a seeded simulator, reached in-process or over loopback."""

from __future__ import annotations

import pytest

from psabridge.core.http import RetryPolicy
from psabridge.core.models import Connection
from psabridge.plugins.autotask.client import STATE_KEY, AutotaskClient, forget_zones
from psabridge.plugins.autotask.simulator import AutotaskSimulator

# Retries happen, but nothing really waits: delays are recorded instead of slept.
FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, statuses=frozenset({502, 503, 504}))


@pytest.fixture(autouse=True)
def fresh_zones():
    forget_zones()
    yield
    forget_zones()


@pytest.fixture
def sim():
    return AutotaskSimulator(seed=3, companies=5, configurations_per_company=3)


@pytest.fixture
def slept():
    return []


def connect(settings, transport=None, slept=None, **options) -> Connection:
    connection = Connection("autotask", dict(settings), transport=transport)
    AutotaskClient.for_connection(connection, policy=FAST,
                                  sleep=(slept.append if slept is not None else lambda s: None),
                                  **options)
    return connection


@pytest.fixture(params=["in-process", "loopback"])
def connection(request, sim, slept):
    """A Connection to `sim`: through the in-process transport, or over real loopback HTTP."""
    if request.param == "in-process":
        yield connect(sim.settings(), sim.transport(), slept)
        return
    with sim.serve(deliver_webhooks=False) as server:
        connection = connect(sim.settings(server.url), None, slept)
        yield connection
        connection.state[STATE_KEY].close()
