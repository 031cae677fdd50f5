"""core.http.send: what is retried, how long it waits, and what is never retried."""

from __future__ import annotations

import httpx
import pytest

from psabridge.core.http import RetryPolicy, send

URL = "https://api.example.com/things"
FAST = RetryPolicy(attempts=4, base_delay=0.01)


@pytest.fixture
def slept():
    return []


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
