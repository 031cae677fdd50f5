"""The httpx client against recorded CW answers (pytest-httpx): one test per behaviour."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from psabridge.core import logs
from psabridge.core.http import RetryPolicy
from psabridge.core.models import Connection
from psabridge.plugins.connectwise import conditions as cond
from psabridge.plugins.connectwise import errors
from psabridge.plugins.connectwise.client import ACCEPT, ConnectWiseClient, api_root
from tests.trickler import Trickler

from .conftest import FAST

SITE = "https://cw.example.com"
BASE = f"{SITE}/v2025_1/apis/3.0/"
SETTINGS = {"url": SITE, "company": "acme", "public_key": "pubKey123",
            "private_key": "privKey-very-secret-42", "client_id": "client-guid-1"}


@pytest.fixture
def slept():
    return []


@pytest.fixture
def client(httpx_mock, slept):
    httpx_mock.add_response(url=f"{SITE}/login/companyinfo/acme", json={"Codebase": "v2025_1/"},
                            is_optional=True)
    connection = Connection("connectwise", SETTINGS)
    return ConnectWiseClient.for_connection(connection, policy=FAST, sleep=slept.append)


def test_cloud_sites_use_their_api_host():
    assert api_root("https://na.myconnectwise.net/") == "https://api-na.myconnectwise.net"
    assert api_root("https://cw.example.com") == "https://cw.example.com"


def test_codebase_lookup_once_then_authenticated_versioned_requests(httpx_mock, client):
    httpx_mock.add_response(url=f"{BASE}system/info", json={"version": "v2025.1"}, is_reusable=True)
    client.get("system/info")
    client.get("system/info")
    lookups = [r for r in httpx_mock.get_requests() if "companyinfo" in r.url.path]
    assert len(lookups) == 1 and "Authorization" not in lookups[0].headers
    request = httpx_mock.get_requests()[-1]
    expected = base64.b64encode(b"acme+pubKey123:privKey-very-secret-42").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert request.headers["clientId"] == "client-guid-1"
    assert request.headers["Accept"] == ACCEPT


def test_an_unknown_company_id_is_reported_as_such(httpx_mock):
    httpx_mock.add_response(url=f"{SITE}/login/companyinfo/acme", json=None)
    client = ConnectWiseClient(SETTINGS, policy=FAST)
    with pytest.raises(errors.NotFound, match="no company id 'acme'.*company setting"):
        client.get("system/info")


def test_pages_follow_link_next_and_resend_our_own_conditions(httpx_mock, client):
    conditions = 'name = "A"'
    link = f'<{BASE}company/companies?page=2&pageSize=2>; rel="next", <{BASE}x?page=2>; rel="last"'
    httpx_mock.add_response(url=httpx.URL(f"{BASE}company/companies", params={
        "conditions": conditions, "pageSize": 2, "page": 1}), json=[{"id": 1}, {"id": 2}],
        headers={"Link": link})
    httpx_mock.add_response(url=httpx.URL(f"{BASE}company/companies", params={
        "conditions": conditions, "pageSize": 2, "page": 2}), json=[{"id": 3}],
        headers={"Link": f'<{BASE}x?page=1>; rel="first"'})
    rows = client.iter_list("company/companies", conditions, page_size=2)
    assert next(rows) == {"id": 1}  # a generator: page 2 is not fetched yet
    assert len([r for r in httpx_mock.get_requests() if "companies" in r.url.path]) == 1
    assert [r["id"] for r in rows] == [2, 3]


def test_forward_only_paging_sends_the_header_and_follows_page_id(httpx_mock, client):
    url = f"{BASE}company/configurations"
    httpx_mock.add_response(url=httpx.URL(url, params={"pageSize": 2}), json=[{"id": 4}, {"id": 9}],
                            headers={"Link": f'<{url}?pageSize=2&pageId=9>; rel="next"'})
    httpx_mock.add_response(url=httpx.URL(url, params={"pageSize": 2, "pageId": 9}), json=[{"id": 12}],
                            headers={"Link": ""})
    assert [r["id"] for r in client.iter_list("company/configurations", page_size=2, forward_only=True)] == [
        4, 9, 12]
    assert all(r.headers["pagination-type"] == "forward-only" for r in httpx_mock.get_requests()[1:])


def test_a_condition_too_long_for_a_url_goes_by_post_search(httpx_mock, client):
    long_condition = "id in (" + ", ".join(str(n) for n in range(600)) + ")"
    httpx_mock.add_response(method="POST", url=httpx.URL(f"{BASE}service/tickets/search",
                                                         params={"page": 1, "pageSize": 1000}),
                            json=[{"id": 5}])
    assert list(client.iter_list("service/tickets", long_condition)) == [{"id": 5}]
    assert json.loads(httpx_mock.get_requests()[-1].content) == {"conditions": long_condition}


def test_5xx_and_dropped_connections_are_retried_with_backoff(httpx_mock, client, slept):
    url = f"{BASE}system/info"
    httpx_mock.add_response(url=url, status_code=503)
    httpx_mock.add_exception(httpx.RemoteProtocolError("dropped"), url=url)
    httpx_mock.add_response(url=url, json={"version": "x"})
    assert client.get("system/info") == {"version": "x"}
    assert len(slept) == 2 and all(0 <= s <= FAST.max_delay for s in slept)


def test_429_waits_for_retry_after(httpx_mock, client, slept):
    url = f"{BASE}system/info"
    httpx_mock.add_response(url=url, status_code=429, headers={"Retry-After": "3"},
                            json={"error": "ConnectWiseAPI", "message": "Too many requests."})
    httpx_mock.add_response(url=url, json={"version": "x"})
    assert client.get("system/info") == {"version": "x"}
    assert slept == [3.0]


def test_persistent_429_becomes_rate_limited_with_cws_error_field(httpx_mock, client):
    httpx_mock.add_response(url=f"{BASE}system/info", status_code=429, headers={"Retry-After": "0"},
                            json={"error": "ConnectWiseAPI", "message": "Too many requests."},
                            is_reusable=True)
    with pytest.raises(errors.RateLimited) as caught:
        client.get("system/info")
    assert caught.value.code == "ConnectWiseAPI"


@pytest.mark.parametrize(("status", "kind", "words"), [
    (401, errors.AuthenticationFailed, "company id, the public key and the private key"),
    (403, errors.PermissionDenied, "Companies > Configurations: Inquire level All"),
])
def test_401_and_403_are_not_retried_and_say_what_to_fix(httpx_mock, client, slept, status, kind, words):
    httpx_mock.add_response(url=httpx.URL(f"{BASE}company/configurations", params={"pageSize": 1000,
                                                                                  "page": 1}),
                            status_code=status, json={"code": "Unauthorized", "message": "nope"})
    with pytest.raises(kind) as caught:
        list(client.iter_list("company/configurations"))
    assert words in str(caught.value) and slept == []
    assert SETTINGS["private_key"] not in str(caught.value)
    assert base64.b64encode(b"acme+pubKey123:privKey-very-secret-42").decode() not in str(caught.value)


def test_400_carries_cws_code_message_and_errors(httpx_mock, client):
    body = {"code": "InvalidObject", "message": "callbackEntry object is invalid",
            "errors": [{"code": "ObjectExists", "message": "A matching callback entry already exists",
                        "resource": "callbackEntry", "field": "objectId"}]}
    httpx_mock.add_response(method="POST", url=f"{BASE}system/callbacks", status_code=400, json=body)
    with pytest.raises(errors.BadRequest) as caught:
        client.post("system/callbacks", {"url": "https://x"})
    error = caught.value
    assert (error.status, error.code, error.errors) == (400, "InvalidObject", body["errors"])
    assert error.has_error_code("ObjectExists")
    assert "callbackEntry.objectId: A matching callback entry already exists" in str(error)


def test_a_bad_value_refused_by_the_simulator_reads_as_one_line_naming_the_field(connection, sim):
    client = ConnectWiseClient.for_connection(connection)
    company = next(iter(sim.db.companies))
    with pytest.raises(errors.BadRequest) as caught:
        client.post("service/tickets", {"summary": "x", "company": {"id": [company]}})
    assert str(caught.value).endswith(
        "InvalidObject - ticket object is invalid (ticket.company: The company id must be a whole "
        "number, not a list.)")
    assert "\n" not in str(caught.value) and caught.value.errors[0]["field"] == "company"


def test_an_error_body_of_any_shape_is_quoted_on_one_line_without_control_characters(
        httpx_mock, client):
    body = {"code": ["Invalid"], "message": "bad\n\x1b[2JERROR: all tickets deleted\r\n",
            "errors": [{"resource": 5, "field": ["summary"], "message": {"text": "no"}}, "junk",
                       {"code": "InvalidField\u202e", "field": "summary"}]}
    httpx_mock.add_response(method="POST", url=f"{BASE}service/tickets", status_code=400, json=body)
    with pytest.raises(errors.BadRequest) as caught:
        client.post("service/tickets", {"summary": "x"})
    text = str(caught.value)
    assert text.isprintable() and "bad [2JERROR: all tickets deleted" in text
    assert "summary: InvalidField" in text
    httpx_mock.add_response(method="POST", url=f"{BASE}service/tickets", status_code=400,
                            json={"errors": "not a list"})
    with pytest.raises(errors.BadRequest) as caught:
        client.post("service/tickets", {"summary": "x"})
    assert caught.value.errors == []
    httpx_mock.add_response(method="POST", url=f"{BASE}service/tickets", status_code=502,
                            text="<html>\n" + "<p>Bad gateway</p>\n" * 500)
    with pytest.raises(errors.ServerError) as caught:
        client.post("service/tickets", {"summary": "x"})
    assert str(caught.value).isprintable() and len(str(caught.value)) < 400


def test_a_post_whose_answer_is_lost_is_not_resent(httpx_mock, client):
    httpx_mock.add_exception(httpx.ReadTimeout("lost"), method="POST", url=f"{BASE}service/tickets")
    with pytest.raises(errors.ConnectionFailed, match="may or may not have been applied"):
        client.post("service/tickets", {"summary": "x"})
    assert len([r for r in httpx_mock.get_requests() if r.method == "POST"]) == 1


def test_patch_sends_a_json_patch_array(httpx_mock, client):
    httpx_mock.add_response(method="PATCH", url=f"{BASE}company/configurations/7", json={"id": 7})
    operations = [{"op": "replace", "path": "managementLink", "value": ""}]
    client.patch("company/configurations/7", operations)
    assert json.loads(httpx_mock.get_requests()[-1].content) == operations


def test_the_private_key_is_registered_for_redaction(client):
    assert logs.redact_text("key=privKey-very-secret-42") == f"key={logs.MASK}"


def test_a_non_json_answer_is_an_unexpected_answer_not_a_crash(httpx_mock, client):
    httpx_mock.add_response(url=f"{BASE}system/info", text='{"truncated": [1')
    with pytest.raises(errors.UnexpectedAnswer):
        client.get("system/info")


def test_values_reach_the_wire_escaped_and_url_encoded(httpx_mock, client):
    nasty = 'Bob\'s "PC" \\ *x and y'
    sent = 'name = "Bob\'s \\"PC\\" \\\\ *x and y"'
    httpx_mock.add_response(url=httpx.URL(f"{BASE}company/configurations", params={
        "conditions": sent, "pageSize": 1000, "page": 1}), json=[])
    assert list(client.iter_list("company/configurations", cond.eq("name", nasty))) == []
    raw_query = httpx_mock.get_requests()[-1].url.query.decode()
    assert "%22Bob%27s+%5C%22PC%5C%22+%5C%5C+%2Ax+and+y%22" in raw_query


def test_forward_only_without_any_link_header_continues_by_id(httpx_mock, client):
    url = f"{BASE}company/configurations"
    httpx_mock.add_response(url=httpx.URL(url, params={"pageSize": 2}), json=[{"id": 3}, {"id": 8}])
    httpx_mock.add_response(url=httpx.URL(url, params={"conditions": "id > 8", "orderBy": "id asc",
                                                       "pageSize": 2, "page": 1}), json=[{"id": 11}])
    rows = client.iter_list("company/configurations", page_size=2, forward_only=True)
    assert [r["id"] for r in rows] == [3, 8, 11]


def test_an_answer_that_never_finishes_is_a_clear_transient_error():
    with Trickler(mode="headers") as server:
        connection = Connection("connectwise", {**SETTINGS, "url": server.url})
        client = ConnectWiseClient.for_connection(
            connection, policy=RetryPolicy(attempts=1, deadline=1.0), sleep=lambda s: None)
        with pytest.raises(errors.TooSlow) as raised:
            client.get("company/companies")
    assert raised.value.transient and "\n" not in str(raised.value)
    assert str(raised.value).startswith(
        "ConnectWise did not finish answering GET /company/companies within 1 s; ")
