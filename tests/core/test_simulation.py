"""The shared simulator kit: faults behave the same in-process and over loopback."""

from __future__ import annotations

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
