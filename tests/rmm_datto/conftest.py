"""Fixtures for the Datto RMM connector: a fake clock, fast client options, the simulator
reached in-process or over loopback, and a Connection wired to it."""

from __future__ import annotations

import pytest

from psabridge.core.http import RetryPolicy
from psabridge.core.models import Connection
from psabridge.plugins.rmm_datto.client import ClientOptions, client_for
from psabridge.plugins.rmm_datto.simulator import DattoSimulator, ManualClock
from psabridge.simulation import serve


class FakeTime:
    """A monotonic clock and a sleep that advances it instantly, remembering every wait."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time():
    return FakeTime()


@pytest.fixture
def options(fake_time):
    """Client options that never really sleep: waits advance the fake clock instead."""
    return ClientOptions(retry=RetryPolicy(attempts=3, base_delay=0.001, max_retry_after=180.0),
                         clock=fake_time.clock, sleep=fake_time.sleep)


@pytest.fixture
def sim_clock():
    return ManualClock()


@pytest.fixture
def sim(sim_clock):
    return DattoSimulator(seed=0, clock=sim_clock)


class Switchboard:
    """A WSGI app passing every request to whichever simulator the current test plugged in.

    One loopback server serves the whole session: stopping a werkzeug server takes half a
    second (its poll interval), which per test would make the suite slow.
    """

    def __init__(self):
        self.app = None

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


@pytest.fixture(scope="session")
def loopback():
    switchboard = Switchboard()
    with serve(switchboard) as server:
        yield switchboard, server.url


@pytest.fixture(params=["in-process", "loopback"])
def reach(request):
    """How a test reaches a simulator: `reach(sim)` gives (base URL, httpx transport or None)."""
    if request.param == "in-process":
        return lambda simulator: ("http://datto.sim", simulator.transport())
    switchboard, url = request.getfixturevalue("loopback")

    def plug(simulator: DattoSimulator):
        switchboard.app = simulator.app
        return url, None

    return plug


def connect(simulator: DattoSimulator, url: str, transport, options: ClientOptions) -> Connection:
    connection = Connection("datto", simulator.settings(url), transport=transport)
    client_for(connection, options)
    return connection


@pytest.fixture
def connection(sim, reach, options):
    """A Connection to the `sim` simulator, in-process and over loopback (parametrized)."""
    url, transport = reach(sim)
    connection = connect(sim, url, transport, options)
    yield connection
    connection.state["datto.client"].close()
