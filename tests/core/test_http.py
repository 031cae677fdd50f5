"""core.http.send: what is retried, how long it waits, and what is never retried."""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import socketserver
import threading
import time

import httpx
import pytest
import structlog

from psabridge.core import http
from psabridge.core.http import RetryPolicy, send
from psabridge.core.settings import seconds_from_environment
from tests.trickler import HANG_GUARD, Trickler

URL = "https://api.example.com/things"
FAST = RetryPolicy(attempts=4, base_delay=0.01)


@pytest.fixture
def slept():
    return []


@pytest.fixture
def debug_logs(monkeypatch):
    """Every structlog event, debug included; and no Retry-After value logged before."""
    monkeypatch.setattr(http, "_unreadable_logged", set())
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as events:
            yield events
    finally:
        structlog.configure(**saved)


def go(method, slept, policy=FAST, **kwargs):
    with httpx.Client() as client:
        return send(client, client.build_request(method, URL, **kwargs), policy, sleep=slept.append)


def test_429_waits_exactly_retry_after_then_succeeds(httpx_mock, slept):
    httpx_mock.add_response(status_code=429, headers={"Retry-After": "7"})
    httpx_mock.add_response(json={"ok": True})
    assert go("GET", slept).json() == {"ok": True}
    assert slept == [7.0]


def test_5xx_and_timeouts_are_retried_with_bounded_jittered_backoff(httpx_mock, slept):
    httpx_mock.add_response(status_code=503)
    httpx_mock.add_exception(httpx.ReadTimeout("slow"))
    httpx_mock.add_response(status_code=502)
    httpx_mock.add_response(json=[1])
    assert go("GET", slept).json() == [1]
    assert len(slept) == 3
    assert all(0 <= d <= FAST.base_delay * 2 ** i for i, d in enumerate(slept))


def test_attempts_are_bounded_and_the_last_answer_is_returned(httpx_mock, slept):
    for _ in range(FAST.attempts):
        httpx_mock.add_response(status_code=500)
    assert go("GET", slept).status_code == 500
    assert len(slept) == FAST.attempts - 1


def test_a_post_is_not_retried_after_the_server_may_have_acted(httpx_mock, slept):
    httpx_mock.add_exception(httpx.ReadTimeout("answer lost"))
    with pytest.raises(httpx.ReadTimeout):
        go("POST", slept, json={})
    httpx_mock.add_response(status_code=500)
    assert go("POST", slept, json={}).status_code == 500
    assert slept == []


def test_a_post_is_retried_when_the_server_surely_did_not_act(httpx_mock, slept):
    httpx_mock.add_exception(httpx.ConnectError("refused"))
    httpx_mock.add_response(status_code=429, headers={"Retry-After": "1"})
    httpx_mock.add_response(status_code=201, json={"id": 1})
    assert go("POST", slept, json={}).status_code == 201
    assert len(slept) == 2 and slept[1] == 1.0


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_never_retried(httpx_mock, slept, status):
    httpx_mock.add_response(status_code=status)
    assert go("GET", slept).status_code == status
    assert slept == []


def test_an_outage_sized_retry_after_is_returned_not_slept(httpx_mock, slept):
    httpx_mock.add_response(status_code=429, headers={"Retry-After": "3600"})
    assert go("GET", slept).status_code == 429
    assert slept == []


@pytest.mark.parametrize("value", ["soon", "in a minute", "Wed, 99 Foo 2015 07:28:00 GMT",
                                   "Wed, 21 Oct 99999 07:28:00 GMT", "1e3", "nan", "inf", "12 s",
                                   "-", "0x10", "\u0663".encode()])
def test_a_retry_after_that_cannot_be_read_falls_back_to_backoff_and_is_logged_once(
        httpx_mock, slept, debug_logs, value):
    httpx_mock.add_response(status_code=503, headers={"Retry-After": value})
    httpx_mock.add_response(status_code=429, headers={"Retry-After": value})
    httpx_mock.add_response(json={"ok": True})
    assert go("GET", slept).json() == {"ok": True}
    assert len(slept) == 2
    assert all(0 <= d <= FAST.base_delay * 2 ** i for i, d in enumerate(slept))
    ignored = [e for e in debug_logs if "Retry-After" in e["event"]]
    assert [e["log_level"] for e in ignored] == ["debug"]


def test_retry_after_as_an_http_date_waits_until_then(httpx_mock, slept):
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    httpx_mock.add_response(status_code=503,
                            headers={"Retry-After": email.utils.format_datetime(soon, usegmt=True)})
    httpx_mock.add_response(status_code=503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    httpx_mock.add_response(json=[])
    go("GET", slept)
    assert 27 <= slept[0] <= 30 and slept[1] == 0  # a date in the past: no wait


@pytest.mark.parametrize(("value", "wait"), [("-5", 0.0), (" 2 ", 2.0), ("0.25", 0.25)])
def test_retry_after_in_seconds_is_read_leniently_and_never_negative(httpx_mock, slept, value, wait):
    httpx_mock.add_response(status_code=429, headers={"Retry-After": value})
    httpx_mock.add_response(json=[])
    go("GET", slept)
    assert slept == [wait]


@pytest.mark.parametrize("value", ["121", "9" * 400, "Fri, 01 Jan 9999 00:00:00 GMT"])
def test_a_huge_retry_after_is_an_outage_returned_not_slept(httpx_mock, slept, value):
    httpx_mock.add_response(status_code=503, headers={"Retry-After": value})
    assert go("GET", slept, policy=RetryPolicy(attempts=3, max_retry_after=120)).status_code == 503
    assert slept == []


# -- the deadline of an attempt, against a real server that trickles its answer ---------------------


@pytest.fixture(params=["body", "headers"])
def trickler(request):
    with Trickler(mode=request.param) as server:
        yield server


def test_a_trickling_server_cannot_hold_a_call_past_its_deadline(trickler):
    started = time.monotonic()
    with http.new_client() as client:
        with pytest.raises(http.DeadlineExceeded) as raised:
            send(client, client.build_request("GET", trickler.url + "/things"),
                 RetryPolicy(attempts=1, deadline=1.0))
    assert time.monotonic() - started < HANG_GUARD
    assert raised.value.seconds == 1.0 and raised.value.connected
    assert raised.value.explain("Example", "GET /things").startswith(
        "Example did not finish answering GET /things within 1 s; ")


def test_each_retry_gets_a_deadline_of_its_own_and_a_post_is_not_sent_twice(trickler):
    with http.new_client() as client:
        policy = RetryPolicy(attempts=2, base_delay=0, deadline=0.5)
        with pytest.raises(http.DeadlineExceeded):
            send(client, client.build_request("GET", trickler.url + "/things"), policy)
        assert len(trickler.requests) == 2  # a read is tried again, with a fresh deadline
        with pytest.raises(http.DeadlineExceeded) as raised:
            send(client, client.build_request("POST", trickler.url + "/things", json={}), policy)
        assert len(trickler.requests) == 3  # the server may have acted on it: never resent
    assert "may or may not have been applied" in raised.value.explain("Example", "POST /things")


def test_time_before_the_first_byte_is_sent_is_not_held_against_the_server():
    """A connector waiting for room in its quota (a request hook) does not use up the
    deadline: it runs from the attempt's first socket operation."""
    with socketserver.TCPServer(("127.0.0.1", 0), _QuickHandler) as server:
        threading.Thread(target=server.handle_request, daemon=True).start()
        hooks = {"request": [lambda request: time.sleep(0.6)]}
        with http.new_client(event_hooks=hooks) as client:
            url = f"http://127.0.0.1:{server.server_address[1]}/"
            response = send(client, client.build_request("GET", url), RetryPolicy(deadline=0.5))
    assert response.json() == {"ok": True}


class _QuickHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while self.rfile.readline() not in (b"\r\n", b""):
            pass
        self.wfile.write(b'HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\n'
                         b'{"ok": true}')


@pytest.mark.parametrize(("value", "seconds"), [("", 60.0), ("15", 15.0), (" 2.5 ", 2.5),
                                                ("soon", 60.0), ("0", 60.0), ("-3", 60.0),
                                                ("inf", 60.0), ("nan", 60.0)])
def test_the_deadline_setting_takes_positive_seconds_and_ignores_the_rest(monkeypatch, value, seconds):
    monkeypatch.setenv(http.DEADLINE_ENV, value)
    assert seconds_from_environment(http.DEADLINE_ENV, 60.0) == seconds


def test_remote_words_are_quoted_as_one_printable_line_of_bounded_length():
    quoted = http.remote_text("line one\r\nline\ttwo \x1b[31mred\x00 \u202eright-to-left\u2028" + "x" * 500)
    assert quoted.isprintable() and len(quoted) == 200 and quoted.endswith("...")
    assert quoted.startswith("line one line two [31mred right-to-left xxx")
    assert http.remote_text(["not", "text"]) == "['not', 'text']"


def test_a_retry_is_logged_with_its_reason_and_wait(httpx_mock, slept, debug_logs):
    httpx_mock.add_response(status_code=503, headers={"Retry-After": "2"})
    httpx_mock.add_response(json=[1])
    assert go("GET", slept).json() == [1]
    retries = [e for e in debug_logs if e["event"] == "retrying_request"]
    assert [(e["reason"], e["attempt"], e["delay"]) for e in retries] == [("HTTP 503", 1, 2.0)]
    assert slept == [2.0]


def test_a_cookie_the_server_sets_is_sent_back_by_a_connectors_client():
    """Answers are only searched for cookies when they set one; one that does is honoured."""
    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Cookie"))
        headers = {"Set-Cookie": "node=b7; Path=/"} if len(seen) == 1 else {}
        return httpx.Response(200, headers=headers, json={})

    with http.new_client(transport=httpx.MockTransport(answer)) as client:
        for _ in range(3):
            send(client, client.build_request("GET", URL))
    assert seen == [None, "node=b7", "node=b7"]
