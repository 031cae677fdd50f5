"""The Autotask httpx client against recorded answers (pytest-httpx): one test per behaviour."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from psabridge.core import logs
from psabridge.core.http import RetryPolicy
from psabridge.core.models import Connection
from psabridge.plugins.autotask import client as client_module
from psabridge.plugins.autotask import errors
from psabridge.plugins.autotask import query as q
from psabridge.plugins.autotask.client import DISCOVERY_URL, AutotaskClient, api_base, forget_zones

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, statuses=frozenset({502, 503, 504}))
ZONE = "https://webservices14.autotask.net/ATServicesRest/"
BASE = ZONE + "V1.0/"
SECRET = "s3cret-Value-never-shown"
SETTINGS = {"username": "api@acme.example", "integration_code": "TRACKINGIDENTIFIER0000000001",
            "secret": SECRET}
ZONE_LOOKUP = httpx.URL(DISCOVERY_URL + "V1.0/zoneInformation", params={"user": "api@acme.example"})


@pytest.fixture(autouse=True)
def fresh_zones():
    forget_zones()
    yield
    forget_zones()


@pytest.fixture
def slept():
    return []


def make(settings=SETTINGS, slept=None, **options) -> AutotaskClient:
    connection = Connection("autotask", settings)
    return AutotaskClient.for_connection(connection, policy=FAST,
                                         sleep=(slept.append if slept is not None else lambda s: None),
                                         **options)


def zone_answer(httpx_mock, url=ZONE, **options):
    httpx_mock.add_response(url=ZONE_LOOKUP, json={"zoneName": "AE02", "url": url,
                                                   "webUrl": "https://ww14.autotask.net/", "ci": 7},
                            **options)


def test_api_base_accepts_a_host_or_any_part_of_the_rest_root():
    for given in ("https://webservices14.autotask.net", "https://webservices14.autotask.net/",
                  "https://webservices14.autotask.net/ATServicesRest/",
                  "https://webservices14.autotask.net/atservicesrest/v1.0/"):
        assert api_base(given).lower() == BASE.lower()


def test_zone_is_discovered_once_per_user_and_every_call_carries_the_three_headers(httpx_mock):
    zone_answer(httpx_mock)
    httpx_mock.add_response(url=BASE + "Companies/0", json={"item": {"id": 0}}, is_reusable=True)
    first, second = make(), make()  # two connections of the same user share the zone
    assert first.get("Companies", 0) == {"id": 0}
    assert second.get("Companies", 0) == {"id": 0}
    lookups = [r for r in httpx_mock.get_requests() if "zoneInformation" in r.url.path]
    assert len(lookups) == 1 and "Secret" not in lookups[0].headers  # the look-up needs no auth
    call = httpx_mock.get_requests()[-1]
    assert call.headers["ApiIntegrationCode"] == SETTINGS["integration_code"]
    assert call.headers["UserName"] == SETTINGS["username"]
    assert call.headers["Secret"] == SECRET


def test_api_url_setting_skips_discovery(httpx_mock):
    httpx_mock.add_response(url=BASE + "Tickets/5", json={"item": {"id": 5}})
    client = make({**SETTINGS, "api_url": "https://webservices14.autotask.net"})
    assert client.get("Tickets", 5) == {"id": 5}
    assert all("zoneInformation" not in r.url.path for r in httpx_mock.get_requests())


def test_a_401_finds_the_zone_again_once_and_retries_where_the_database_moved(httpx_mock):
    moved = "https://webservices15.autotask.net/ATServicesRest/"
    zone_answer(httpx_mock)
    zone_answer(httpx_mock, url=moved)
    httpx_mock.add_response(url=BASE + "Tickets/5", status_code=401)
    httpx_mock.add_response(url=moved + "V1.0/Tickets/5", json={"item": {"id": 5}})
    assert make().get("Tickets", 5) == {"id": 5}


def test_a_401_in_the_same_zone_names_the_settings_and_never_the_secret(httpx_mock):
    zone_answer(httpx_mock, is_reusable=True)
    httpx_mock.add_response(url=BASE + "Tickets/5", status_code=401, text="", is_reusable=True)
    with pytest.raises(errors.AuthenticationFailed) as caught:
        make().get("Tickets", 5)
    message = str(caught.value)
    assert "username and secret settings" in message and SECRET not in message
    # The zone is asked again; it has not moved, so the request is not sent twice.
    assert len([r for r in httpx_mock.get_requests() if "zoneInformation" in r.url.path]) == 2
    assert len([r for r in httpx_mock.get_requests() if r.url.path.endswith("Tickets/5")]) == 1


def test_an_unknown_user_is_reported_as_the_username_setting(httpx_mock):
    httpx_mock.add_response(url=ZONE_LOOKUP, status_code=500,
                            json={"errors": ["Zone information could not be determined"]})
    with pytest.raises(errors.AuthenticationFailed, match="username") as caught:
        make().get("Tickets", 5)
    # Zone discovery asks by user name alone: the secret cannot be the cause, so it is not named.
    assert "secret" not in str(caught.value)


def test_a_bad_integration_code_names_its_setting(httpx_mock):
    zone_answer(httpx_mock)
    httpx_mock.add_response(url=BASE + "Tickets/5", status_code=500,
                            json={"errors": ["IntegrationCode is invalid."]})
    with pytest.raises(errors.AuthenticationFailed, match="integration_code") as caught:
        make().get("Tickets", 5)
    assert ".." not in str(caught.value)


def test_a_zone_outside_autotask_is_refused_before_any_secret_is_sent(httpx_mock):
    zone_answer(httpx_mock, url="https://evil.example.com/ATServicesRest/")
    with pytest.raises(errors.UnexpectedAnswer, match="evil.example.com.*api_url"):
        make().get("Tickets", 5)
    assert all("evil" not in str(r.url) for r in httpx_mock.get_requests())


def test_queries_page_by_posting_the_same_body_to_next_page_url_and_dedupe_by_id(httpx_mock):
    zone_answer(httpx_mock)
    next_url = BASE + 'Tickets/query/next?paging={"pageSize":2,"nextIds":[3]}'
    httpx_mock.add_response(method="POST", url=BASE + "Tickets/query", json={
        "items": [{"id": 1}, {"id": 2}],
        "pageDetails": {"count": 2, "requestCount": 2, "prevPageUrl": None, "nextPageUrl": next_url}})
    httpx_mock.add_response(method="POST", url=httpx.URL(next_url), json={
        "items": [{"id": 2}, {"id": 3}], "pageDetails": {"count": 2, "nextPageUrl": None}})
    rows = make().query("Tickets", [q.eq("status", 1)], fields=["title"], page_size=2)
    assert next(rows) == {"id": 1}  # a generator: page 2 is not fetched yet
    assert [r["id"] for r in rows] == [2, 3]
    bodies = [json.loads(r.content) for r in httpx_mock.get_requests() if r.method == "POST"]
    assert bodies[0] == bodies[1] == {"filter": [{"op": "eq", "field": "status", "value": 1}],
                                      "MaxRecords": 2, "IncludeFields": ["id", "title"]}


def test_a_query_without_conditions_asks_for_every_id(httpx_mock):
    zone_answer(httpx_mock)
    httpx_mock.add_response(method="POST", url=BASE + "Companies/query",
                            json={"items": [], "pageDetails": {"nextPageUrl": None}})
    assert list(make().query("Companies")) == []
    body = json.loads(httpx_mock.get_requests()[-1].content)
    assert body["filter"] == [{"op": "gte", "field": "id", "value": 0}]


def test_a_next_page_on_another_host_is_not_followed(httpx_mock):
    zone_answer(httpx_mock)
    httpx_mock.add_response(method="POST", url=BASE + "Tickets/query", json={
        "items": [{"id": 1}], "pageDetails": {"nextPageUrl": "https://elsewhere.example/q"}})
    with pytest.raises(errors.UnexpectedAnswer, match="another host"):
        list(make().query("Tickets"))


def test_in_lists_are_cut_at_500_values(httpx_mock):
    zone_answer(httpx_mock)
    httpx_mock.add_response(method="POST", url=BASE + "ConfigurationItems/query",
                            json={"items": [], "pageDetails": {}}, is_reusable=True)
    list(make().query_in("ConfigurationItems", "serialNumber", [f"S{i}" for i in range(1201)]))
    sizes = [len(json.loads(r.content)["filter"][0]["value"]) for r in httpx_mock.get_requests()
             if r.method == "POST"]
    assert sizes == [500, 500, 201]
    with pytest.raises(ValueError):
        q.in_("id", range(501))


def test_a_missing_record_is_none_whether_404_or_null_item(httpx_mock):
    zone_answer(httpx_mock)
    httpx_mock.add_response(url=BASE + "Tickets/1", status_code=404, json={"errors": ["not found"]})
    httpx_mock.add_response(url=BASE + "Tickets/2", json={"item": None})
    client = make()
    assert client.get("Tickets", 1) is None and client.get("Tickets", 2) is None


def test_writes_return_the_item_id_and_a_patch_may_answer_empty(httpx_mock):
    zone_answer(httpx_mock)
    httpx_mock.add_response(method="POST", url=BASE + "Tickets/7/Notes", json={"itemId": 70})
    httpx_mock.add_response(method="PATCH", url=BASE + "Tickets", text="")
    client = make()
    assert client.create("Tickets/7/Notes", {"description": "x"}) == 70
    assert client.update("Tickets", {"id": 7, "status": 5}) is None


def test_a_validation_500_is_a_refusal_quoting_autotask_and_is_not_retried(httpx_mock):
    zone_answer(httpx_mock)
    text = ("When assigning a Resource, you must assign both a assignedResourceID and "
            "assignedResourceRoleID.")
    httpx_mock.add_response(method="POST", url=BASE + "Tickets", status_code=500, json={"errors": [text]})
    with pytest.raises(errors.Refused, match="assignedResourceRoleID") as caught:
        make().create("Tickets", {"title": "x"})
    assert not caught.value.transient
    assert len([r for r in httpx_mock.get_requests() if r.method == "POST"]) == 1


def test_thread_limit_refusals_are_retried_even_for_a_post(httpx_mock, slept):
    zone_answer(httpx_mock)
    httpx_mock.add_response(method="POST", url=BASE + "Tickets", status_code=500, json={"errors": [
        "Itgenatr005 Thread Threshold Exceeded - The Autotask API thread threshold of 3 threads "
        "has been exceeded."]})
    httpx_mock.add_response(method="POST", url=BASE + "Tickets", status_code=429, json={"errors": ["x"]},
                            headers={"Retry-After": "2"})
    httpx_mock.add_response(method="POST", url=BASE + "Tickets", json={"itemId": 9})
    assert make(slept=slept).create("Tickets", {"title": "x"}) == 9
    assert len(slept) == 2 and slept[1] == 2.0


def test_still_throttled_after_every_attempt_is_a_transient_rate_limit(httpx_mock):
    zone_answer(httpx_mock)
    httpx_mock.add_response(url=BASE + "Tickets/1", status_code=429, is_reusable=True)
    with pytest.raises(errors.RateLimited) as caught:
        make().get("Tickets", 1)
    assert caught.value.transient
    assert len([r for r in httpx_mock.get_requests() if "Tickets" in r.url.path]) == FAST.attempts


def test_near_the_hourly_threshold_the_client_waits_then_gives_up(httpx_mock, slept, monkeypatch):
    monkeypatch.setattr(client_module, "THRESHOLD_CHECK_EVERY", 2)
    zone_answer(httpx_mock)
    httpx_mock.add_response(url=BASE + "Tickets/1", json={"item": {"id": 1}})
    httpx_mock.add_response(url=BASE + "ThresholdInformation", is_reusable=True, json={
        "externalRequestThreshold": 10000, "requestThresholdTimeframe": 60,
        "currentTimeframeRequestCount": 9500})
    client = make(slept=slept)
    client.get("Tickets", 1)  # the first request: no look yet
    with pytest.raises(errors.RateLimited, match="9500 of its 10000"):
        client.get("Tickets", 1)
    assert sum(slept) >= client_module.THRESHOLD_MAX_WAIT


def test_requests_per_hour_is_validated_with_the_setting_named():
    with pytest.raises(errors.AutotaskError, match="requests_per_hour"):
        make({**SETTINGS, "requests_per_hour": "lots"})
    assert make({**SETTINGS, "requests_per_hour": "100"}).limiter.limits.requests == 100


def test_at_most_three_requests_in_flight_per_endpoint(httpx_mock):
    zone_answer(httpx_mock)
    in_flight, peak, lock = [0], [0], threading.Lock()

    def slow(request):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        return httpx.Response(200, json={"item": {"id": 1}})

    httpx_mock.add_callback(slow, url=BASE + "Tickets/1", is_reusable=True)
    client = make()
    assert client.base_url == BASE  # discovered before the threads start
    threads = [threading.Thread(target=client.get, args=("Tickets", 1)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] == client_module.THREADS_PER_ENDPOINT


def test_the_secret_is_redacted_from_errors_that_quote_it(httpx_mock):
    zone_answer(httpx_mock)
    make()  # registers the secret
    httpx_mock.add_response(method="POST", url=BASE + "Tickets", status_code=500,
                            json={"errors": [f"bad value {SECRET}"]})
    with pytest.raises(errors.Refused) as caught:
        make().create("Tickets", {"title": "x"})
    assert SECRET not in str(caught.value)
    assert SECRET not in logs.redact_text(f"x {SECRET}")
