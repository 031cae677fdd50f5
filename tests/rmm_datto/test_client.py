"""The Datto client against pytest-httpx: token grant and renewal, pages, and throttling."""

from __future__ import annotations

import base64
import re
import threading
from urllib.parse import parse_qs, urlsplit

import attrs
import httpx
import pytest

from psabridge.core import logs
from psabridge.core.http import RetryPolicy
from psabridge.plugins.rmm_datto.client import (
    DattoAuthError,
    DattoClient,
    DattoError,
    DattoForbidden,
    DattoNotFound,
    DattoTooSlow,
)
from psabridge.plugins.rmm_datto.throttle import Limits
from tests.trickler import Trickler

API = "https://merlot-api.centrastage.net"
TOKEN_URL = f"{API}/auth/oauth/token"
KEY, SECRET = "KEY-1234567890", "SECRET-0123456789abcdef"


def token_response(httpx_mock, token="tok-aaaaaaaa", expires_in=360000):
    httpx_mock.add_response(url=TOKEN_URL, method="POST",
                            json={"access_token": token, "token_type": "bearer",
                                  "expires_in": expires_in, "scope": "default", "jti": "j"})


@pytest.fixture
def client(options):
    client = DattoClient(API, KEY, SECRET, options)
    yield client
    client.close()


def api_requests(httpx_mock):
    return [r for r in httpx_mock.get_requests() if "/api/" in r.url.path]


# -- token ---------------------------------------------------------------------------------------


def test_the_token_is_a_password_grant_with_the_public_client_outside_api(httpx_mock, client):
    token_response(httpx_mock)
    httpx_mock.add_response(url=f"{API}/api/v2/account", json={"name": "MSP"}, is_reusable=True)
    assert client.get("/v2/account") == {"name": "MSP"}
    assert client.get("/v2/account") == {"name": "MSP"}

    grant, *calls = httpx_mock.get_requests()
    assert grant.url == TOKEN_URL
    assert grant.headers["Authorization"] == "Basic " + base64.b64encode(b"public-client:public").decode()
    assert parse_qs(grant.content.decode()) == {
        "grant_type": ["password"], "username": [KEY], "password": [SECRET]}
    assert len(calls) == 2 and client.tokens.grants == 1  # cached, not granted per request
    assert all(call.headers["Authorization"] == "Bearer tok-aaaaaaaa" for call in calls)


def test_the_token_is_renewed_before_it_expires(httpx_mock, client, fake_time):
    token_response(httpx_mock, "tok-first-1", expires_in=3600)
    token_response(httpx_mock, "tok-second-2", expires_in=3600)
    httpx_mock.add_response(url=f"{API}/api/v2/account", json={}, is_reusable=True)
    client.get("/v2/account")
    fake_time.now += 3600 - 600 - 1  # renewal is due 10 min (<= 25 % of the life) early
    client.get("/v2/account")
    fake_time.now += 2
    client.get("/v2/account")
    used = [r.headers["Authorization"] for r in api_requests(httpx_mock)]
    assert used == ["Bearer tok-first-1", "Bearer tok-first-1", "Bearer tok-second-2"]


def test_a_401_drops_the_token_grants_a_new_one_and_retries_once(httpx_mock, client):
    token_response(httpx_mock, "tok-revoked-1")
    token_response(httpx_mock, "tok-fresh-22")
    httpx_mock.add_response(url=f"{API}/api/v2/account", status_code=401)
    httpx_mock.add_response(url=f"{API}/api/v2/account", json={"name": "MSP"})
    assert client.get("/v2/account") == {"name": "MSP"}
    used = [r.headers["Authorization"] for r in api_requests(httpx_mock)]
    assert used == ["Bearer tok-revoked-1", "Bearer tok-fresh-22"]


def test_a_401_to_a_fresh_token_is_an_error_not_a_loop(httpx_mock, client):
    token_response(httpx_mock, "tok-one-111")
    token_response(httpx_mock, "tok-two-222")
    httpx_mock.add_response(url=f"{API}/api/v2/account", status_code=401, is_reusable=True)
    with pytest.raises(DattoAuthError, match="freshly granted token"):
        client.get("/v2/account")
    assert len(api_requests(httpx_mock)) == 2 and client.tokens.grants == 2


def test_refused_credentials_say_what_to_check_and_never_show_the_secret(httpx_mock, client):
    httpx_mock.add_response(url=TOKEN_URL, status_code=400,
                            json={"error": "invalid_grant", "error_description": "Bad credentials"})
    with pytest.raises(DattoAuthError) as caught:
        client.get("/v2/account")
    message = str(caught.value)
    assert "api_key and api_secret" in message and SECRET not in message
    assert api_requests(httpx_mock) == []


def test_received_tokens_are_masked_in_logs(httpx_mock, client):
    token_response(httpx_mock, "tok-must-not-leak-42")
    httpx_mock.add_response(url=f"{API}/api/v2/account", json={})
    client.get("/v2/account")
    assert logs.redact_text("Bearer tok-must-not-leak-42") == "Bearer ***"
    assert logs.redact_text(f"secret={SECRET}") == "secret=***"


def test_concurrent_requests_share_one_grant(httpx_mock, client):
    token_response(httpx_mock)
    httpx_mock.add_response(url=f"{API}/api/v2/account", json={}, is_reusable=True)
    threads = [threading.Thread(target=client.get, args=("/v2/account",)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.tokens.grants == 1 and len(api_requests(httpx_mock)) == 8


# -- pages ---------------------------------------------------------------------------------------


def page(key, items, next_url):
    return {"pageDetails": {"count": len(items), "totalCount": 5, "prevPageUrl": None,
                            "nextPageUrl": next_url}, key: items}


def test_pages_follow_next_page_url_and_restore_dropped_filters(httpx_mock, client):
    token_response(httpx_mock)
    base = f"{API}/api/v2/account/sites"
    # The server's nextPageUrl keeps page and max but drops siteName (ts-core saw this).
    httpx_mock.add_response(url=f"{base}?siteName=Acme&max=250&page=0",
                            json=page("sites", [{"n": 1}, {"n": 2}], f"{base}?max=250&page=1"))
    httpx_mock.add_response(url=f"{base}?max=250&page=1&siteName=Acme",
                            json=page("sites", [{"n": 3}], None))
    items = list(client.pages("/v2/account/sites", "sites", {"siteName": "Acme"}))
    assert items == [{"n": 1}, {"n": 2}, {"n": 3}]
    second = api_requests(httpx_mock)[1]
    assert parse_qs(urlsplit(str(second.url)).query)["siteName"] == ["Acme"]


def test_a_next_page_on_another_host_is_refused_before_the_token_leaves(httpx_mock, client):
    token_response(httpx_mock)
    httpx_mock.add_response(url=f"{API}/api/v2/account/devices?max=250&page=0",
                            json=page("devices", [{"n": 1}], "https://evil.example/api/v2/x?page=1"))
    with pytest.raises(DattoError, match="another host"):
        list(client.pages("/v2/account/devices", "devices"))
    assert all(r.url.host != "evil.example" for r in httpx_mock.get_requests())


def test_an_empty_page_ends_the_list_even_with_a_next_url(httpx_mock, client):
    token_response(httpx_mock)
    base = f"{API}/api/v2/account/alerts/open"
    httpx_mock.add_response(url=f"{base}?max=250&page=0",
                            json={"pageDetails": {"count": 0, "nextPageUrl": f"{base}?page=1"},
                                  "alerts": []})
    assert list(client.pages("/v2/account/alerts/open", "alerts")) == []
    assert len(api_requests(httpx_mock)) == 1


def test_a_404_is_reported_as_not_found(httpx_mock, client):
    token_response(httpx_mock)
    httpx_mock.add_response(url=f"{API}/api/v2/device/nope", status_code=404,
                            json={"message": "Device was not found"})
    with pytest.raises(DattoNotFound, match="Device was not found"):
        client.get("/v2/device/nope")


# -- throttling ----------------------------------------------------------------------------------


def test_the_limiter_waits_rather_than_exceed_the_read_quota(httpx_mock, options, fake_time):
    slow = attrs.evolve(options, limits=Limits(reads=3, window=60))
    client = DattoClient(API, KEY, SECRET, slow)
    token_response(httpx_mock)
    sent_at: list[float] = []

    def answer(request):
        sent_at.append(fake_time.now)
        return httpx.Response(200, json={})

    httpx_mock.add_callback(answer, url=f"{API}/api/v2/account", is_reusable=True)
    for _ in range(7):
        client.get("/v2/account")
    assert len(sent_at) == 7
    assert all(sum(start <= t < start + 60 for t in sent_at) <= 3 for start in sent_at)
    assert fake_time.slept == [60.0, 60.0]


def test_writes_wait_for_their_operation_quota_while_reads_go_on(httpx_mock, options, fake_time):
    client = DattoClient(API, KEY, SECRET, attrs.evolve(options, limits=Limits(operation=2)))
    token_response(httpx_mock)
    httpx_mock.add_response(method="POST", url=re.compile(r".*/resolve$"), is_reusable=True)
    httpx_mock.add_response(url=f"{API}/api/v2/account", json={}, is_reusable=True)
    for n in range(2):
        client.request("POST", f"/v2/alert/a{n}/resolve", operation="alert-resolve")
    client.get("/v2/account")
    assert fake_time.slept == []  # reads have their own quota
    client.request("POST", "/v2/alert/a3/resolve", operation="alert-resolve")
    assert fake_time.slept == [60.0]
    assert client.limiter.used("alert-resolve") == 1


def test_a_429_without_retry_after_is_waited_out_for_60_to_120_seconds(httpx_mock, client, fake_time):
    token_response(httpx_mock)
    httpx_mock.add_response(url=f"{API}/api/v2/account", status_code=429)
    httpx_mock.add_response(url=f"{API}/api/v2/account", json={"name": "MSP"})
    assert client.get("/v2/account") == {"name": "MSP"}
    assert len(fake_time.slept) == 1 and 60 <= fake_time.slept[0] <= 120


def test_a_429_whose_retry_after_cannot_be_read_is_waited_out_like_none(httpx_mock, client, fake_time):
    token_response(httpx_mock)
    httpx_mock.add_response(url=f"{API}/api/v2/account", status_code=429, headers={"Retry-After": "soon"})
    httpx_mock.add_response(url=f"{API}/api/v2/account", json={"name": "MSP"})
    assert client.get("/v2/account") == {"name": "MSP"}
    assert len(fake_time.slept) == 1 and 60 <= fake_time.slept[0] <= 120


def test_a_429_with_retry_after_waits_what_it_says(httpx_mock, client, fake_time):
    token_response(httpx_mock)
    httpx_mock.add_response(url=f"{API}/api/v2/account", status_code=429, headers={"Retry-After": "7"})
    httpx_mock.add_response(url=f"{API}/api/v2/account", json={})
    client.get("/v2/account")
    assert fake_time.slept == [7.0]


def test_a_403_is_never_retried(httpx_mock, client, fake_time):
    token_response(httpx_mock)
    httpx_mock.add_response(url=f"{API}/api/v2/site/s1", status_code=403)
    with pytest.raises(DattoForbidden, match="may lack access"):
        client.get("/v2/site/s1")
    assert len(api_requests(httpx_mock)) == 1 and fake_time.slept == []


def test_a_403_after_429s_is_the_ip_block_and_stops_all_requests_until_it_ends(
        httpx_mock, client, fake_time):
    token_response(httpx_mock)
    httpx_mock.add_response(url=f"{API}/api/v2/account", status_code=429)
    httpx_mock.add_response(url=f"{API}/api/v2/account", status_code=403)
    with pytest.raises(DattoForbidden, match="blocked this address"):
        client.get("/v2/account")
    with pytest.raises(DattoForbidden, match="sends nothing"):
        client.get("/v2/account")
    assert len(api_requests(httpx_mock)) == 2  # the second call never left the process

    fake_time.now += 301
    httpx_mock.add_response(url=f"{API}/api/v2/account", json={"name": "MSP"})
    assert client.get("/v2/account") == {"name": "MSP"}


def test_a_body_that_is_not_json_is_a_clear_error(httpx_mock, client):
    token_response(httpx_mock)
    httpx_mock.add_response(url=f"{API}/api/v2/account", text='{"truncated": [1, 2')
    with pytest.raises(DattoError, match="not JSON"):
        client.get("/v2/account")


def test_requests_per_minute_sets_both_quotas_and_rejects_nonsense():
    from psabridge.plugins.rmm_datto.client import ClientOptions

    options = ClientOptions.from_settings({"requests_per_minute": "300"})
    assert (options.limits.reads, options.limits.writes, options.limits.operation) == (300, 300, 100)
    assert ClientOptions.from_settings({}).limits.reads == 600
    with pytest.raises(DattoError, match="whole number"):
        ClientOptions.from_settings({"requests_per_minute": "lots"})


def test_retries_of_a_failed_request_wait_for_the_quota_too(httpx_mock, options, fake_time):
    client = DattoClient(API, KEY, SECRET, attrs.evolve(options, limits=Limits(reads=2)))
    token_response(httpx_mock)
    httpx_mock.add_response(url=f"{API}/api/v2/account", status_code=503)
    httpx_mock.add_response(url=f"{API}/api/v2/account", status_code=503)
    httpx_mock.add_response(url=f"{API}/api/v2/account", json={})
    client.get("/v2/account")
    assert len(api_requests(httpx_mock)) == 3
    assert max(fake_time.slept) >= 59  # the third attempt waited for the first to age out


def test_a_token_answer_without_a_token_is_a_clear_error(httpx_mock, client):
    httpx_mock.add_response(url=TOKEN_URL, html="<html>login page</html>")
    with pytest.raises(DattoError, match="without an access_token"):
        client.get("/v2/account")


def test_an_answer_that_never_finishes_is_a_clear_transient_error(options):
    with Trickler(mode="body") as server:
        client = DattoClient(server.url, KEY, SECRET,
                             attrs.evolve(options, retry=RetryPolicy(attempts=1, deadline=1.0)))
        with pytest.raises(DattoTooSlow) as raised:
            client.get("/v2/account")
        client.close()
    assert raised.value.transient and "\n" not in str(raised.value)
    assert str(raised.value).startswith(
        "Datto RMM did not finish answering GET /api/v2/account within 1 s; ")


def test_a_bad_value_refused_by_the_simulator_reads_as_one_line_naming_the_field(connection):
    from psabridge.plugins.rmm_datto.client import client_for

    with pytest.raises(DattoError) as caught:
        client_for(connection).request("PUT", "/v2/site", json={"name": 5}, operation="site-create")
    assert str(caught.value) == ("Datto RMM answered HTTP 400 to PUT /api/v2/site: Invalid value for "
                                 "field 'name': expected text")


def test_an_error_message_is_quoted_on_one_line_without_control_characters(httpx_mock, client):
    token_response(httpx_mock)
    httpx_mock.add_response(url=f"{API}/api/v2/site/s1", status_code=400,
                            json={"message": "no\n\x1b[2Jsuch site\r\n" + "!" * 500})
    with pytest.raises(DattoError) as caught:
        client.get("/v2/site/s1")
    assert str(caught.value).isprintable() and ": no [2Jsuch site !!!" in str(caught.value)
    assert len(str(caught.value)) < 300
