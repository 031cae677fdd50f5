"""The Autotask simulator's limits (API-NOTES §6): requests per rolling hour for the database,
told by ThresholdInformation, and three requests in flight per integration code and entity
(Itgenatr005), refused with a configurable status (429 by default)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

from psabridge.plugins.autotask.simulator import AutotaskSimulator, FakeClock, Options

ALL = {"filter": [{"op": "gte", "field": "id", "value": 0}]}


@contextmanager
def client_for(sim: AutotaskSimulator, mode: str):
    if mode == "in-process":
        with sim.client() as client:
            yield client
        return
    with sim.serve(deliver_webhooks=False) as server, sim.client(server.url) as client:
        yield client


@pytest.mark.parametrize("mode", ["in-process", "loopback"])
@pytest.mark.parametrize("status", [429, 500])
def test_the_rolling_hour_threshold_refuses_then_recovers(mode, status):
    clock = FakeClock()
    sim = AutotaskSimulator(seed=1, companies=3, clock=clock,
                            options=Options(request_threshold=5, limit_status=status))
    with client_for(sim, mode) as client:
        for _ in range(4):
            assert client.get("Companies/174").status_code == 200
            clock.advance(60)
        told = client.get("ThresholdInformation").json()  # the fifth request: it counts too
        assert told == {"externalRequestThreshold": 5, "requestThresholdTimeframe": 60,
                        "currentTimeframeRequestCount": 5}
        refused = client.post("Companies/query", json=ALL)
        assert refused.status_code == status
        assert "threshold of 5 requests per 60 minutes" in refused.json()["errors"][0]
        assert client.get("ThresholdInformation").status_code == status
        # zone discovery is exempt
        zone = client.get("zoneInformation", params={"user": sim.options.username})
        assert zone.status_code == 200
        clock.advance(3600 - 4 * 60 + 1)  # the first request leaves the window
        assert client.get("Companies/174").status_code == 200
        assert client.get("Companies/174").status_code == status
        clock.advance(3600)
        assert client.get("ThresholdInformation").json()["currentTimeframeRequestCount"] == 1
    assert sim.limits.refused["threshold"] == 3


@pytest.mark.parametrize("mode", ["in-process", "loopback"])
def test_three_requests_in_flight_per_entity_then_itgenatr005(mode):
    sim = AutotaskSimulator(seed=1, companies=3)
    with client_for(sim, mode) as client, ThreadPoolExecutor(4) as pool, sim.holding("Tickets") as gate:
        held = [pool.submit(client.post, "Tickets/query", json=ALL) for _ in range(3)]
        deadline = time.monotonic() + 10
        while sum(sim.limits.in_flight.values()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sim.limits.in_flight[(sim.options.integration_code.casefold(), "tickets")] == 3
        fourth = client.get("Tickets/7000")
        assert fourth.status_code == 429
        assert fourth.json()["errors"][0].startswith("Itgenatr005: Thread Threshold Exceeded")
        assert "threshold of 3 threads" in fourth.json()["errors"][0]
        other_entity = client.get("Companies/174")  # its own endpoint, its own threads
        assert other_entity.status_code == 200
        gate.set()
        assert [f.result().status_code for f in held] == [200, 200, 200]
        assert client.get("Tickets/query", params={"search": '{"filter":[{"op":"exist","field":"id"}]}'}) \
            .status_code == 200
    assert sim.limits.refused["threads"] == 1
    assert sim.limits.in_flight == {}


def test_the_thread_refusal_status_is_configurable():
    sim = AutotaskSimulator(seed=1, companies=2, options=Options(thread_limit=1, limit_status=500))
    with sim.client() as client, ThreadPoolExecutor(1) as pool, sim.holding("Companies") as gate:
        held = pool.submit(client.get, "Companies/174")
        while not sim.limits.in_flight:
            time.sleep(0.01)
        refused = client.get("Companies/175")
        gate.set()
        assert held.result().status_code == 200
    assert refused.status_code == 500 and "Itgenatr005" in refused.json()["errors"][0]


def test_optional_latency_near_the_threshold():
    slept = []
    sim = AutotaskSimulator(seed=1, companies=2, options=Options(request_threshold=8, latency_tiers=True))
    sim.limits.sleep = slept.append
    with sim.client() as client:
        for _ in range(7):
            client.get("Companies/174")
    assert slept == [0.5, 0.5, 1.0, 1.0]  # from the 4th request (50 %), 1 s from the 6th (75 %)


def test_random_throttle_faults_answer_429_with_retry_after():
    from psabridge.simulation import Faults

    sim = AutotaskSimulator(seed=1, companies=2, faults=Faults(throttle_rate=1.0, retry_after=2))
    with sim.client() as client:
        answer = client.get("Companies/174")
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "2"
    assert answer.json()["errors"]


def test_threads_are_per_integration_code_and_the_threshold_is_the_databases():
    sim = AutotaskSimulator(seed=1, companies=2, options=Options(thread_limit=1, request_threshold=4))
    vendor = {**sim.headers(), "ApiIntegrationCode": sim.options.other_integration_codes[0]}
    with sim.client() as client, ThreadPoolExecutor(2) as pool, sim.holding("Companies") as gate:
        held = pool.submit(client.get, "Companies/174")
        while not sim.limits.in_flight:
            time.sleep(0.01)
        assert client.get("Companies/175").status_code == 429  # ours: its one thread is taken
        vendor_held = pool.submit(client.get, "Companies/175", headers=vendor)  # the vendor's own
        while len(sim.limits.in_flight) < 2:
            time.sleep(0.01)
        gate.set()
        assert held.result().status_code == 200 and vendor_held.result().status_code == 200
        assert client.get("Companies/175", headers=vendor).status_code == 200
        # the refused request was not counted; the fourth reaches the database's threshold,
        # after which either integration is refused
        told = client.get("ThresholdInformation").json()
        assert told["currentTimeframeRequestCount"] == 4
        assert client.get("Companies/175").status_code == 429
        assert client.get("Companies/175", headers=vendor).status_code == 429
