"""What every service simulator shares: serving, fault injection and request counting.

A simulator is a WSGI application (werkzeug). The same app is reached two ways:

* in-process, through `transport(app)`, an httpx transport: fast, for most tests;
* over loopback, through `serve(app)`, a threaded werkzeug server on 127.0.0.1: real sockets,
  real timeouts, real dropped connections.

`FaultInjector` wraps an app and, per request, may add latency, answer 5xx or 429 with
Retry-After, send a malformed body, or drop the connection, either at random rates (seeded, so a
run can be repeated) or from a script of faults aimed at a method and path, each served a given
number of times (or every time); a scripted fault may also hold one request, or its answer. It
also counts requests per endpoint, which is what the benchmarks report.

`ControlPanel` adds, beside the simulated API and outside it, the endpoints under `/_simulator/`
that `psabridge simulate raise-alert` and its siblings call: what a person would do in the
product's own interface.
"""

from __future__ import annotations

import collections
import hmac
import json
import math
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import attrs
import httpx
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

FaultKind = Literal["error", "throttle", "drop", "malformed", "slow", "delay"]


class DroppedConnection(Exception):
    """Raised inside the app to end the exchange without an HTTP answer."""


@attrs.define
class ScriptedFault:
    """A fault for the next requests matching `method` and `path` (a regex).

    `when="before"` fails the request without processing it; `when="after"` lets the app
    process it (the record is created) and then fails the answer: the case that tests
    exactly-once behaviour.

    Kinds: "error" (`status`), "throttle" (429 with Retry-After `seconds`), "drop" (the
    connection closed without an answer), "malformed" (200, not JSON), "slow" (`seconds`
    late, with a body that is not the app's: a timeout), and "delay": the app's own answer,
    `seconds` late. A delay `before` holds the request before the app processes it (a slow
    create: the record does not exist yet while it waits), `after` holds the answer back.

    `times` is how many matching requests it serves before it is used up (one by default);
    None serves every matching request for as long as it is in the script: a device whose
    audit always fails, an endpoint that throttles until the test removes the fault.
    `served` counts the requests it has answered so far, so a test can wait for the moment
    a fault struck.
    """

    kind: FaultKind
    method: str = "*"
    path: str = ".*"
    when: Literal["before", "after"] = "before"
    status: int = 503
    seconds: float = 0.0  # a throttle's Retry-After; how late a slow or delayed answer is
    times: int | None = 1
    served: int = attrs.field(default=0, init=False)

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and re.search(self.path, path) is not None

    @property
    def used_up(self) -> bool:
        return self.times is not None and self.served >= self.times


@attrs.define
class Faults:
    """Fault settings for one simulator run. Rates are probabilities per request."""

    latency: float = 0.0  # seconds added to every request
    error_rate: float = 0.0  # 5xx answers
    throttle_rate: float = 0.0  # 429 answers with Retry-After
    retry_after: float = 1.0
    # When set, each random throttle's Retry-After is drawn from [retry_after, retry_after_max]
    # (with the seeded generator), as a busy server's varying answers are.
    retry_after_max: float | None = None
    drop_rate: float = 0.0  # connection closed without an answer
    malformed_rate: float = 0.0  # 200 with a body that is not JSON
    spike_rate: float = 0.0  # latency spikes
    spike: float = 0.2
    seed: int = 0
    script: list[ScriptedFault] = attrs.field(factory=list)

    def add(self, fault: ScriptedFault) -> ScriptedFault:
        self.script.append(fault)
        return fault


class FaultInjector:
    """WSGI middleware applying `Faults` and counting requests by "METHOD /path-template"."""

    def __init__(self, app, faults: Faults | None = None,
                 endpoint_of: Callable[[str, str], str] | None = None,
                 throttle_body: Callable[[float], Response] | None = None):
        self.app = app
        self.faults = faults or Faults()
        self.endpoint_of = endpoint_of or (lambda method, path: f"{method} {path}")
        self.throttle_body = throttle_body or (
            lambda seconds: Response('{"message":"Too many requests"}', 429,
                                     {"Retry-After": retry_after_text(seconds)},
                                     content_type="application/json"))
        self.counts: collections.Counter[str] = collections.Counter()
        self.faults_served: collections.Counter[str] = collections.Counter()
        self.in_flight = 0
        self.most_in_flight = 0
        self._random = random.Random(self.faults.seed)
        self._lock = threading.Lock()

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.faults_served.clear()
            self.most_in_flight = self.in_flight

    def _roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return self._random.random() < rate

    def _take_scripted(self, method: str, path: str, when: str) -> ScriptedFault | None:
        with self._lock:
            for fault in self.faults.script:
                if fault.when == when and fault.matches(method, path):
                    fault.served += 1
                    if fault.used_up:
                        self.faults.script.remove(fault)
                    return fault
        return None

    def __call__(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        with self._lock:
            self.counts[self.endpoint_of(method, path)] += 1
            # How many requests the server was answering at once: what shows that a client's
            # workers really overlap, whatever the machine's speed.
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return self._answer(method, path, environ, start_response)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _answer(self, method, path, environ, start_response):
        f = self.faults
        if f.latency:
            time.sleep(f.latency)
        if self._roll(f.spike_rate):
            time.sleep(f.spike)
        fault = self._take_scripted(method, path, "before") or self._random_fault()
        if fault is not None and fault.kind == "delay":
            self._count_served(fault)
            time.sleep(fault.seconds)  # then the app processes the request as usual
        elif fault is not None:
            return self._serve_fault(fault, environ, start_response)
        after = self._take_scripted(method, path, "after")
        if after is None:
            return self.app(environ, start_response)
        if after.kind == "delay":
            return self._answer_late(after, environ, start_response)
        # Let the app do its work (and discard its answer), then fail the exchange.
        body = b"".join(self.app(environ, lambda *a, **k: None))
        del body
        return self._serve_fault(after, environ, start_response)

    def _answer_late(self, fault: ScriptedFault, environ, start_response):
        """The app processes the request at once; its answer leaves `fault.seconds` later."""
        answer = {}

        def hold(status, headers, exc_info=None):
            answer.update(status=status, headers=headers)
            return lambda data: None

        body = b"".join(self.app(environ, hold))
        self._count_served(fault)
        time.sleep(fault.seconds)
        start_response(answer["status"], answer["headers"])
        return [body]

    def _count_served(self, fault: ScriptedFault) -> None:
        with self._lock:
            self.faults_served[fault.kind] += 1

    def _random_fault(self) -> ScriptedFault | None:
        f = self.faults
        if self._roll(f.drop_rate):
            return ScriptedFault("drop")
        if self._roll(f.throttle_rate):
            return ScriptedFault("throttle", seconds=self._retry_after())
        if self._roll(f.error_rate):
            return ScriptedFault("error", status=self._random.choice([500, 502, 503, 504]))
        if self._roll(f.malformed_rate):
            return ScriptedFault("malformed")
        return None

    def _retry_after(self) -> float:
        f = self.faults
        if f.retry_after_max is None:
            return f.retry_after
        with self._lock:
            return self._random.uniform(f.retry_after, f.retry_after_max)

    def _serve_fault(self, fault: ScriptedFault, environ, start_response):
        self._count_served(fault)
        if fault.kind == "slow":
            time.sleep(fault.seconds)
            return Response('{"message":"late"}', 200, content_type="application/json")(
                environ, start_response)
        if fault.kind == "drop":
            sock = environ.get("werkzeug.socket")
            if sock is None:  # in-process: the transport turns this into an httpx error
                raise DroppedConnection()
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
            return []
        if fault.kind == "throttle":
            return self.throttle_body(fault.seconds)(environ, start_response)
        if fault.kind == "malformed":
            return Response('{"truncated": [1, 2', 200, content_type="application/json")(
                environ, start_response)
        return Response('{"message":"simulated server error"}', fault.status,
                        content_type="application/json")(environ, start_response)


def retry_after_text(seconds: float) -> str:
    """Retry-After as a simulator sends it: whole seconds as an integer ("3"), a fraction as
    a decimal ("1.5", "0.02"), never truncated, so a client waits what the fault said."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") if seconds % 1 else str(int(seconds))


class _InProcessTransport(httpx.WSGITransport):
    """httpx.WSGITransport that reports a dropped connection as httpx does for a real one."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return super().handle_request(request)
        except DroppedConnection:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            ) from None


def transport(app) -> httpx.BaseTransport:
    """An httpx transport that calls `app` in-process."""
    return _InProcessTransport(app=app)


@attrs.define
class RunningServer:
    url: str
    port: int
    _server: object
    _thread: threading.Thread

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _QuietRequestHandler(WSGIRequestHandler):
    """No access-log line per request: the injector's counters say what was asked, and the
    lines would bury the demo's output and the tests' logs."""

    def log_request(self, code="-", size="-") -> None:
        pass


def start_server(app, host: str = "127.0.0.1", port: int = 0, name: str = "simulator") -> RunningServer:
    """Serve `app` on loopback in a background thread (threaded: one thread per request).

    The server checks for shutdown every 50 ms rather than socketserver's 500 ms, so a test
    that starts and stops its own server does not wait half a second each time.
    """
    server = make_server(host, port, app, threaded=True, request_handler=_QuietRequestHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"{name}:{server.port}", daemon=True)
    thread.start()
    return RunningServer(url=f"http://{host}:{server.port}", port=server.port, server=server,
                         thread=thread)


@contextmanager
def serve(app, host: str = "127.0.0.1", port: int = 0) -> Iterator[RunningServer]:
    running = start_server(app, host, port)
    try:
        yield running
    finally:
        running.shutdown()


# -- request bodies, read as a cautious server reads them ---------------------------------------

# Neither API documents its limits; these keep a hostile or broken client from making a
# simulator hold arbitrary memory or recurse without end, and are far above any real body.
MAX_BODY = 1024 * 1024  # bytes
MAX_JSON_DEPTH = 64  # arrays and objects within each other: Json.NET's default maximum depth


class BoundedRequest(Request):
    """A werkzeug Request that refuses (413) a body over MAX_BODY, however it is sent."""

    max_content_length = MAX_BODY


class UnreadableJson(ValueError):
    """A body that is not strict JSON, or nests deeper than MAX_JSON_DEPTH; `str()` says which."""


def parse_json(data: bytes | str) -> Any:
    """`data` as strict JSON: no NaN or Infinity (not JSON, though Python's parser takes them),
    no number too big for a double, at most MAX_JSON_DEPTH levels deep."""
    try:
        value = json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:  # the C parser's own limit, far deeper than ours
        raise UnreadableJson(f"it is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError as exc:
        raise UnreadableJson(str(exc) if isinstance(exc, UnreadableJson) else "it is not valid JSON") \
            from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise UnreadableJson(f"it is nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def _refuse_constant(name: str) -> Any:
    raise UnreadableJson(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UnreadableJson(f"the number {text[:20]} is too large")
    return value


def _depth(value: Any) -> int:
    """How many arrays and objects deep `value` goes, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


# -- control endpoints: what a person (or a test) does in the simulated product ------------------

# No real API has this prefix. Requests under it never reach the simulated API, so they are not
# faulted, counted, throttled or authenticated as API calls: the API enforces what it did before.
CONTROL_PREFIX = "/_simulator/"


class ControlError(Exception):
    """A control action that cannot be done: answered `status` with `{"error": message}`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


ControlAction = Callable[[dict], dict]


class ControlPanel:
    """WSGI: `POST /_simulator/ACTION` with `Authorization: Bearer TOKEN` and a JSON object runs
    `actions[ACTION]` and answers its result as JSON; every other request goes to `app`.

    The actions stand in for what a technician does in the product's own interface (raise an
    alert on a device, close a ticket), which the simulated API has no call for."""

    def __init__(self, app, token: str, actions: dict[str, ControlAction]):
        self.app, self.token, self.actions = app, token, actions

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if not path.startswith(CONTROL_PREFIX):
            return self.app(environ, start_response)
        request = BoundedRequest(environ)
        try:
            result = self._run(request, path[len(CONTROL_PREFIX):].strip("/"))
            response = Response(json.dumps(result), 200, content_type="application/json")
        except ControlError as exc:
            response = Response(json.dumps({"error": exc.message}), exc.status,
                                content_type="application/json")
        return response(environ, start_response)

    def _run(self, request: Request, name: str) -> dict:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            raise ControlError(401, "the control token is missing or wrong")
        action = self.actions.get(name)
        if action is None:
            raise ControlError(404, f"no control action {name!r}; there are: "
                                    f"{', '.join(sorted(self.actions))}")
        if request.method != "POST":
            raise ControlError(405, f"{name} takes POST")
        try:
            body = parse_json(request.get_data() or b"{}")
        except UnreadableJson as exc:
            raise ControlError(400, f"the request body cannot be read: {exc}") from None
        if not isinstance(body, dict):
            raise ControlError(400, "the request body must be a JSON object")
        return action(body)


def control_token() -> str:
    return secrets.token_urlsafe(32)
