"""Fixtures for the ConnectWise connector: a seeded simulator, reached in-process or over loopback."""

from __future__ import annotations

import pytest

from psabridge.core.http import RetryPolicy
from psabridge.core.models import Connection
from psabridge.plugins.connectwise.client import ConnectWiseClient
from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator

# Retries happen, but nothing really waits: delays are recorded instead of slept.
FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


@pytest.fixture
def sim():
    return ConnectWiseSimulator(seed=3, companies=6, configurations_per_company=5)


@pytest.fixture
def slept():
    return []


def connect(settings, transport=None, slept=None) -> Connection:
    connection = Connection("connectwise", settings, transport=transport)
    ConnectWiseClient.for_connection(connection, policy=FAST,
                                     sleep=(slept.append if slept is not None else lambda s: None))
    return connection


@pytest.fixture(params=["in-process", "loopback"])
def connection(request, sim, slept):
    """A Connection to `sim`: through the in-process transport, or over real loopback HTTP."""
    if request.param == "in-process":
        yield connect(sim.settings("http://connectwise.test"), sim.transport(), slept)
        return
    with sim.serve() as server:
        connection = connect(sim.settings(server.url), None, slept)
        yield connection
        connection.state["connectwise.client"].close()
