"""core.http.send: what is retried, how long it waits, and what is never retried."""

from __future__ import annotations

import datetime as dt
import email.utils
import logging

import httpx
import pytest
import structlog

from psabridge.core import http
from psabridge.core.http import RetryPolicy, send

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
