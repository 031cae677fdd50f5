"""The simulator against API-NOTES §9's fidelity checklist, spoken to with plain httpx."""

from __future__ import annotations

import base64
import uuid

import httpx
import pytest

from psabridge.plugins.rmm_datto.simulator import DattoSimulator, Quotas, SimOptions
from psabridge.plugins.rmm_datto.simulator.data import UDF_COUNT, UNKNOWN_CONTEXT_CLASS
from psabridge.simulation import Faults, ScriptedFault

BASIC = "Basic " + base64.b64encode(b"public-client:public").decode()


@pytest.fixture
def http(sim, reach):
    url, transport = reach(sim)
    with httpx.Client(base_url=url, transport=transport) as client:
        yield client


def grant(http, sim, **overrides) -> httpx.Response:
    form = {"grant_type": "password", "username": sim.api_key, "password": sim.api_secret}
    headers = {"Authorization": overrides.pop("authorization", BASIC)}
    return http.post(overrides.pop("path", "/auth/oauth/token"), data={**form, **overrides},
                     headers=headers)


def bearer(http, sim) -> dict:
    return {"Authorization": "Bearer " + grant(http, sim).json()["access_token"]}


# -- 1, 2: auth and expiry -------------------------------------------------------------------------


def test_the_token_endpoint_wants_the_public_client_and_a_password_grant(http, sim):
    answer = grant(http, sim)
    assert answer.status_code == 200
    assert set(answer.json()) == {"access_token", "token_type", "expires_in", "scope", "jti"}
    assert answer.json()["expires_in"] == 100 * 3600
    assert grant(http, sim, authorization="Basic " + base64.b64encode(b"x:y").decode()).status_code == 401
    assert grant(http, sim, grant_type="client_credentials").status_code == 400
    assert grant(http, sim, password="wrong-secret").status_code == 400
    assert grant(http, sim, path="/api/auth/oauth/token").status_code == 404  # it is outside /api


def test_every_api_call_but_status_needs_a_valid_bearer(http, sim):
    assert http.get("/api/v2/system/status").status_code == 200
    assert http.get("/api/v2/account").status_code == 401
    assert http.get("/api/v2/account", headers={"Authorization": "Bearer made-up"}).status_code == 401
    assert http.get("/api/v2/account", headers=bearer(http, sim)).status_code == 200


def test_tokens_expire_on_the_simulator_clock(sim_clock, reach):
    sim = DattoSimulator(seed=1, clock=sim_clock, options=SimOptions(token_ttl=3600))
    url, transport = reach(sim)
    with httpx.Client(base_url=url, transport=transport) as http:
        auth = bearer(http, sim)
        sim_clock.advance(3599)
        assert http.get("/api/v2/account", headers=auth).status_code == 200
        sim_clock.advance(1)
        assert http.get("/api/v2/account", headers=auth).status_code == 401
        assert http.get("/api/v2/account", headers=bearer(http, sim)).status_code == 200
        auth = bearer(http, sim)
        sim.expire_tokens()
        assert http.get("/api/v2/account", headers=auth).status_code == 401


def test_resetting_the_api_keys_revokes_the_old_keys_and_their_tokens(http, sim):
    old_key, auth = sim.api_key, bearer(http, sim)
    keys = http.post("/api/v2/user/resetApiKeys", headers=auth).json()
    assert keys["apiAccessKey"] == sim.api_key != old_key
    assert http.get("/api/v2/account", headers=auth).status_code == 401
    assert grant(http, sim, username=old_key).status_code == 400


# -- 3: paging -------------------------------------------------------------------------------------


def test_pages_are_0_based_capped_at_250_with_absolute_next_urls(sim_clock, reach):
    sim = DattoSimulator(seed=2, clock=sim_clock, companies=60, devices_per_site=(5, 6))
    url, transport = reach(sim)
    with httpx.Client(base_url=url, transport=transport) as http:
        auth = bearer(http, sim)
        total = len(sim.devices)
        assert total > 250
        first = http.get("/api/v2/account/devices", params={"max": 1000, "page": 0}, headers=auth).json()
        details = first["pageDetails"]
        assert details["count"] == len(first["devices"]) == 250 and details["totalCount"] == total
        assert details["prevPageUrl"] is None
        assert details["nextPageUrl"] == f"{url}/api/v2/account/devices?max=250&page=1"
        last = http.get(details["nextPageUrl"], headers=auth).json()
        assert last["pageDetails"]["nextPageUrl"] is None and len(last["devices"]) == total - 250
        beyond = http.get("/api/v2/account/devices", params={"page": 9}, headers=auth).json()
        assert beyond["devices"] == []
        assert http.get("/api/v2/system/pagination", headers=auth).json() == {"max": 250}


def test_next_page_urls_drop_filters_and_open_alert_pages_lack_a_total(http, sim):
    auth = bearer(http, sim)
    sites = http.get("/api/v2/account/sites", params={"max": 1, "siteName": "a"}, headers=auth).json()
    assert "siteName" not in sites["pageDetails"]["nextPageUrl"]
    assert all("a" in s["name"].lower() for s in sites["sites"])
    open_alerts = http.get("/api/v2/account/alerts/open", headers=auth).json()
    assert "totalCount" not in open_alerts["pageDetails"]


# -- 4: rate limits --------------------------------------------------------------------------------


def test_over_the_read_quota_is_429_and_going_on_is_a_403_block(sim_clock, reach):
    quotas = Quotas(reads=5, block_after=2, block_seconds=300, cutoff_delay=0)
    sim = DattoSimulator(seed=3, clock=sim_clock, quotas=quotas)
    url, transport = reach(sim)
    with httpx.Client(base_url=url, transport=transport) as http:
        auth = bearer(http, sim)
        statuses = [http.get("/api/v2/account", headers=auth).status_code for _ in range(9)]
        assert statuses == [200] * 5 + [429, 429, 403, 403]
        sim_clock.advance(299)
        assert http.get("/api/v2/account", headers=auth).status_code == 403
        assert grant(http, sim).status_code == 403  # the block covers the token endpoint too
        sim_clock.advance(2)
        assert http.get("/api/v2/account", headers=auth).status_code == 200


def test_the_window_slides_and_writes_count_in_their_own_buckets(sim_clock, reach):
    sim = DattoSimulator(seed=3, clock=sim_clock, quotas=Quotas(reads=2, operation=1, cutoff_delay=0))
    url, transport = reach(sim)
    with httpx.Client(base_url=url, transport=transport) as http:
        auth = bearer(http, sim)
        assert http.get("/api/v2/account", headers=auth).status_code == 200
        sim_clock.advance(30)
        assert http.get("/api/v2/account", headers=auth).status_code == 200
        assert http.get("/api/v2/account", headers=auth).status_code == 429
        sim_clock.advance(31)  # the first read left the window
        assert http.get("/api/v2/account", headers=auth).status_code == 200
        assert http.put("/api/v2/site", json={"name": "One"}, headers=auth).status_code == 200
        assert http.put("/api/v2/site", json={"name": "Two"}, headers=auth).status_code == 429
        rate = http.get("/api/v2/system/request_rate", headers=auth).json()
        assert rate["accountCount"] == 2 and rate["accountWriteCount"] == 1
        assert rate["operationWriteStatus"] == {"site-create": {"limit": 1, "count": 1}}
        assert rate["slidingTimeWindowSizeSeconds"] == 60 and rate["accountRateLimit"] == 2


def test_near_the_quota_answers_are_delayed(sim_clock):
    delays: list[float] = []
    sim = DattoSimulator(seed=3, clock=sim_clock, quotas=Quotas(reads=10), sleep=delays.append)
    with httpx.Client(base_url="http://sim", transport=sim.transport()) as http:
        auth = bearer(http, sim)
        for _ in range(10):
            http.get("/api/v2/account", headers=auth)
    assert delays == [1.0, 1.0]  # the 9th and 10th of 10: from 90 % on


# -- 5, 6, 7, 10: shapes -------------------------------------------------------------------------


def test_devices_have_epoch_ms_times_all_300_udfs_and_open_enums(http, sim):
    devices = http.get("/api/v2/account/devices", headers=bearer(http, sim)).json()["devices"]
    assert all(len(d["udf"]) == UDF_COUNT for d in devices)
    assert any(value is None for value in devices[0]["udf"].values())
    assert all(isinstance(d["creationDate"], int) for d in devices)
    classes = {d["deviceClass"] for d in devices}
    assert {"device", "printer", "esxihost", "rmmnetworkdevice"} <= classes
    network = next(d for d in devices if d["deviceClass"] == "rmmnetworkdevice")
    assert network["deviceType"] is None and network["antivirus"] is None
    never = {d["lastAuditDate"] for d in devices if not isinstance(d["lastAuditDate"], int)
             or d["lastAuditDate"] <= 0}
    assert never  # some devices are not audited yet


def test_sites_include_deleted_devices_with_a_non_guid_uid(http, sim):
    sites = http.get("/api/v2/account/sites", headers=bearer(http, sim)).json()["sites"]
    deleted = [s for s in sites if s["name"] == "Deleted Devices"]
    assert len(deleted) == 1
    with pytest.raises(ValueError):
        uuid.UUID(deleted[0]["uid"])
    assert all(uuid.UUID(s["uid"]) for s in sites if s is not deleted[0])


def test_alerts_carry_class_tagged_contexts_one_unknown_and_every_priority(http, sim):
    auth = bearer(http, sim)
    alerts = [*http.get("/api/v2/account/alerts/open", headers=auth).json()["alerts"],
              *http.get("/api/v2/account/alerts/resolved", headers=auth).json()["alerts"]]
    assert all("@class" in a["alertContext"] for a in alerts)
    assert UNKNOWN_CONTEXT_CLASS in {a["alertContext"]["@class"] for a in alerts}
    assert {a["priority"] for a in alerts} == {"Critical", "High", "Moderate", "Low", "Information",
                                              "Unknown"}
    assert all(isinstance(a["timestamp"], int) for a in alerts)
    assert set(alerts[0]["alertMonitorInfo"]) == {"sendsEmails", "createsTicket"}


# -- 8: writes ---------------------------------------------------------------------------------


def test_resolving_moves_an_alert_to_resolved_with_resolved_on_and_an_empty_200(http, sim, sim_clock):
    auth = bearer(http, sim)
    uid = http.get("/api/v2/account/alerts/open", headers=auth).json()["alerts"][0]["alertUid"]
    answer = http.post(f"/api/v2/alert/{uid}/resolve", headers=auth)
    assert answer.status_code == 200 and answer.content == b""
    opened = http.get("/api/v2/account/alerts/open", headers=auth).json()["alerts"]
    resolved = http.get("/api/v2/account/alerts/resolved", headers=auth).json()["alerts"]
    assert uid not in {a["alertUid"] for a in opened}
    moved = next(a for a in resolved if a["alertUid"] == uid)
    assert moved["resolved"] and moved["resolvedOn"] == int(sim_clock() * 1000)
    assert http.post(f"/api/v2/alert/{uid}/resolve", headers=auth).status_code == 400  # NE: option


def test_sites_are_created_with_put(http, sim):
    auth = bearer(http, sim)
    created = http.put("/api/v2/site", json={"name": "Brand New LLC"}, headers=auth).json()
    assert uuid.UUID(created["uid"]) and created["name"] == "Brand New LLC"
    assert http.get(f"/api/v2/site/{created['uid']}", headers=auth).json()["name"] == "Brand New LLC"
    assert http.post("/api/v2/site", json={"name": "x"}, headers=auth).status_code == 405
    assert http.put("/api/v2/site", json={}, headers=auth).status_code == 400


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/v2/site", {"name": 5}, "name"),
    ("/api/v2/site", {"name": ["Acme"]}, "name"),
    ("/api/v2/site", {"name": {"text": "Acme"}}, "name"),
    ("/api/v2/site", {"name": "Acme", "onDemand": "yes"}, "onDemand"),
    ("/api/v2/site", {"name": "Acme", "description": 12}, "description"),
    ("/api/v2/site", {"name": "Acme", "proxySettings": []}, "proxySettings"),
    ("/api/v2/device/{device}/udf", {"udf5": ["x"]}, "udf5"),
    ("/api/v2/device/{device}/udf", {"udf7": 7}, "udf7"),
    ("/api/v2/device/{device}/warranty", {"warrantyDate": "soon"}, "warrantyDate"),
    ("/api/v2/device/{device}/warranty", {"warrantyDate": "2025-02-30"}, "warrantyDate"),
    ("/api/v2/device/{device}/warranty", {"warrantyDate": 20250101}, "warrantyDate"),
])
def test_a_value_of_the_wrong_type_is_a_400_naming_the_field(http, sim, path, body, field):
    method = "PUT" if path == "/api/v2/site" else "POST"
    response = http.request(method, path.format(device=next(iter(sim.devices))), json=body,
                            headers=bearer(http, sim))
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request" and f"'{field}'" in response.json()["message"]


@pytest.mark.parametrize(("body", "status", "words"), [
    (b"[" * 65 + b"]" * 65, 400, "nested more than 64 levels deep"),
    (b"[" * 100_000, 400, "nested more than 64 levels deep"),
    (b'{"name": NaN}', 400, "NaN is not a JSON number"),
    (b'{"name": "' + b"x" * (1024 * 1024) + b'"}', 413, "exceeds the capacity limit"),
])
def test_a_body_that_cannot_be_read_is_refused_not_a_crash(http, sim, body, status, words):
    response = http.put("/api/v2/site", content=body, headers={
        **bearer(http, sim), "Content-Type": "application/json"})
    assert response.status_code == status and words in response.json()["message"]


def test_a_udf_post_merges_and_an_empty_string_clears(http, sim):
    auth = bearer(http, sim)
    uid = next(iter(sim.devices))
    assert http.post(f"/api/v2/device/{uid}/udf", json={"udf5": "x", "udf7": "y"},
                     headers=auth).content == b""
    http.post(f"/api/v2/device/{uid}/udf", json={"udf7": ""}, headers=auth)
    udf = http.get(f"/api/v2/device/{uid}", headers=auth).json()["udf"]
    assert (udf["udf5"], udf["udf7"]) == ("x", None) and len(udf) == UDF_COUNT


# -- 9: lookups --------------------------------------------------------------------------------


def test_audits_answer_only_for_their_own_class_and_404_for_unknown_uids(http, sim):
    auth = bearer(http, sim)
    printer = next(d for d in sim.devices.values() if d["deviceClass"] == "printer")
    assert http.get(f"/api/v2/audit/device/{printer['uid']}", headers=auth).status_code == 400
    assert http.get(f"/api/v2/audit/printer/{printer['uid']}", headers=auth).status_code == 200
    assert http.get(f"/api/v2/audit/device/{uuid.uuid4()}", headers=auth).status_code == 404
    assert http.get(f"/api/v2/alert/{uuid.uuid4()}", headers=auth).status_code == 404


# -- faults and counters -----------------------------------------------------------------------


def test_faults_and_per_endpoint_counters_come_from_the_shared_kit(reach, sim_clock):
    faults = Faults(script=[ScriptedFault("error", method="GET", path="/audit/", status=503)])
    sim = DattoSimulator(seed=0, clock=sim_clock, faults=faults)
    url, transport = reach(sim)
    with httpx.Client(base_url=url, transport=transport) as http:
        auth = bearer(http, sim)
        uid = next(d["uid"] for d in sim.devices.values() if d["deviceClass"] == "device")
        assert http.get(f"/api/v2/audit/device/{uid}", headers=auth).status_code == 503
        assert http.get(f"/api/v2/audit/device/{uid}", headers=auth).status_code == 200
    assert sim.counts["GET /api/v2/audit/{kind}/{uid}"] == 2
    assert sim.counts["POST /auth/oauth/token"] == 1
