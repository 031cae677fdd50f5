"""The shared simulator kit: faults behave the same in-process and over loopback."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest
from werkzeug.wrappers import Request, Response

from psabridge.simulation import FaultInjector, Faults, ScriptedFault, serve, transport


class Counter:
    """A tiny stateful app: POST /things adds one, GET /things tells how many."""

    def __init__(self):
        self.things = 0

    def __call__(self, environ, start_response):
        request = Request(environ)
        if request.method == "POST":
            self.things += 1
        return Response(f'{{"things": {self.things}}}', content_type="application/json")(
            environ, start_response)


@pytest.fixture(params=["in-process", "loopback"])
def client_for(request):
    servers = []

    def make(app):
        if request.param == "in-process":
            return httpx.Client(transport=transport(app), base_url="http://sim")
        server = serve(app)
        servers.append(server)
        return httpx.Client(base_url=server.__enter__().url)

    yield make
    for server in servers:
        server.__exit__(None, None, None)


def test_a_fault_after_processing_keeps_the_change_and_loses_the_answer(client_for):
    app = Counter()
    faults = Faults()
    injector = FaultInjector(app, faults)
    client = client_for(injector)
    faults.add(ScriptedFault("drop", method="POST", path="^/things$", when="after"))
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/things")
    assert app.things == 1
    assert client.get("/things").json() == {"things": 1}
    assert injector.counts == {"POST /things": 1, "GET /things": 1}


def test_a_fault_before_processing_changes_nothing(client_for):
    app = Counter()
    faults = Faults(script=[ScriptedFault("throttle", seconds=2), ScriptedFault("error", status=502)])
    client = client_for(FaultInjector(app, faults))
    throttled = client.post("/things")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "2"
    assert client.post("/things").status_code == 502
    assert app.things == 0
    assert client.post("/things").json() == {"things": 1}


def test_random_faults_follow_their_rates_and_seed():
    injector = FaultInjector(Counter(), Faults(error_rate=0.3, seed=7))
    client = httpx.Client(transport=transport(injector), base_url="http://sim")
    statuses = [client.get("/things").status_code for _ in range(400)]
    errors = sum(s >= 500 for s in statuses)
    assert 80 < errors < 160
    assert injector.faults_served["error"] == errors


def test_a_fault_serves_as_many_matching_requests_as_its_times(client_for):
    app = Counter()
    faults = Faults()
    client = client_for(FaultInjector(app, faults))
    errors = faults.add(ScriptedFault("error", method="POST", path="^/things$", status=500, times=3))
    assert client.get("/things").status_code == 200  # not matching: served normally, not counted
    assert [client.post("/things").status_code for _ in range(4)] == [500, 500, 500, 200]
    assert errors.served == 3 and errors.used_up and faults.script == []
    assert app.things == 1


def test_a_fault_without_times_answers_every_matching_request_until_removed(client_for):
    app = Counter()
    faults = Faults()
    client = client_for(FaultInjector(app, faults))
    broken = faults.add(ScriptedFault("error", method="GET", path="^/things/broken$", status=500,
                                      times=None))
    assert [client.get("/things/broken").status_code for _ in range(5)] == [500] * 5
    assert client.get("/things/fine").status_code == 200
    assert broken.served == 5 and not broken.used_up and faults.script == [broken]
    faults.script.remove(broken)
    assert client.get("/things/broken").status_code == 200


def test_a_path_is_throttled_with_its_own_retry_after_then_answers(client_for):
    app = Counter()
    faults = Faults()
    client = client_for(FaultInjector(app, faults))
    faults.add(ScriptedFault("throttle", method="POST", path="^/things$", seconds=3.0, times=3))
    faults.add(ScriptedFault("throttle", method="GET", path="^/slow$", seconds=1.5))
    for _ in range(3):
        throttled = client.post("/things")
        assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "3"
    assert client.get("/things").status_code == 200  # another method on the same path
    assert client.get("/slow").headers["Retry-After"] == "1.5"  # a fraction is not truncated
    assert client.post("/things").json() == {"things": 1}


def test_a_simulator_keeps_its_own_429_body_for_a_scripted_throttle():
    from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator

    sim = ConnectWiseSimulator(seed=1, companies=2)
    sim.faults.add(ScriptedFault("throttle", method="GET", path="system/info", seconds=2.5, times=2))
    client = httpx.Client(transport=sim.transport(), base_url="http://sim")
    for _ in range(2):
        throttled = client.get("/v4_6_release/apis/3.0/system/info")
        assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "2.5"
        assert throttled.json() == {"error": "ConnectWiseAPI",
                                    "message": "Too many requests. Please try again in 2.5 seconds."}
    assert sim.faults.script == []


def retry_afters(seed: int, **faults) -> list[float]:
    """The Retry-After of every throttle among 300 requests to a simulator with these faults."""
    client = httpx.Client(transport=transport(FaultInjector(Counter(), Faults(seed=seed, **faults))),
                          base_url="http://sim")
    answers = [client.get("/things") for _ in range(300)]
    return [float(a.headers["Retry-After"]) for a in answers if a.status_code == 429]


def test_random_throttles_draw_retry_after_from_the_range_by_seed():
    drawn = retry_afters(seed=5, throttle_rate=0.3, retry_after=0.5, retry_after_max=4.0)
    assert len(drawn) > 50
    assert all(0.5 <= seconds <= 4.0 for seconds in drawn)
    assert min(drawn) < 1.5 and max(drawn) > 3.0  # spread over the range, not one value
    assert retry_afters(seed=5, throttle_rate=0.3, retry_after=0.5, retry_after_max=4.0) == drawn
    assert set(retry_afters(seed=5, throttle_rate=0.3, retry_after=2.0)) == {2.0}  # no range: fixed


def test_a_delay_before_holds_the_request_and_the_app_then_answers(client_for):
    app = Counter()
    faults = Faults()
    client = client_for(FaultInjector(app, faults))
    faults.add(ScriptedFault("delay", method="POST", path="^/things$", seconds=0.3))
    asked = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        sent = pool.submit(client.post, "/things")
        time.sleep(0.15)  # halfway through the delay
        assert app.things == 0  # held: nothing created yet
        assert sent.result().json() == {"things": 1}
    assert time.monotonic() - asked >= 0.3


def test_a_delay_after_creates_at_once_and_answers_late_with_the_apps_answer(client_for):
    app = Counter()
    faults = Faults(script=[ScriptedFault("delay", method="POST", when="after", seconds=0.3)])
    client = client_for(FaultInjector(app, faults))
    asked = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        sent = pool.submit(client.post, "/things")
        deadline = asked + 5
        while app.things == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.things == 1 and not sent.done()  # created, its answer not sent yet
        assert sent.result().json() == {"things": 1}
    assert time.monotonic() - asked >= 0.3
