"""The simulator enforces what the real API enforces, and answers in CW's shapes."""

from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from psabridge.plugins.connectwise.client import ACCEPT, basic_auth
from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator, Options
from psabridge.simulation import Faults, ScriptedFault

API = "/v2025_1/apis/3.0/"


def headers_for(sim: ConnectWiseSimulator, **overrides) -> dict:
    o = sim.options
    headers = {"Authorization": basic_auth(o.company_id, o.public_key, o.private_key),
               "clientId": o.client_ids[0], "Accept": ACCEPT}
    headers.update(overrides)
    return {k: v for k, v in headers.items() if v is not None}


def direct(sim: ConnectWiseSimulator) -> httpx.Client:
    """An authenticated in-process client to `sim`'s API root."""
    return httpx.Client(transport=sim.transport(), base_url="http://sim" + API, headers=headers_for(sim))


@pytest.fixture(params=["in-process", "loopback"])
def api(request, sim):
    """A plain httpx client to the simulator's API root, authenticated."""
    if request.param == "in-process":
        with direct(sim) as client:
            yield client
        return
    with sim.serve() as server, httpx.Client(base_url=server.url + API, headers=headers_for(sim)) as client:
        yield client


def test_companyinfo_gives_the_codebase_and_null_for_an_unknown_company(api, sim):
    root = str(api.base_url).replace(API, "/")
    info = api.get(root + f"login/companyinfo/{sim.options.company_id}").json()
    assert info["Codebase"] == "v2025_1/"
    assert api.get(root + "login/companyinfo/nobody").json() is None


def test_a_wrong_codebase_cannot_be_routed(api):
    response = api.get(str(api.base_url).replace("v2025_1", "v2019_1") + "system/info")
    assert response.status_code == 404 and "Codebase/company is invalid" in response.text


@pytest.mark.parametrize("change", [
    {"Authorization": None}, {"Authorization": basic_auth("psabridge", "simPublicKey0001", "wrong")},
    {"Authorization": basic_auth("other", "simPublicKey0001", "simPrivateKey-d41d8cd98f00b204")},
    {"clientId": None}, {"clientId": "not-registered"},
])
def test_auth_and_client_id_are_enforced_with_cw_401_bodies(api, sim, change):
    request = api.build_request("GET", "system/info")
    for name, value in change.items():
        if value is None:
            del request.headers[name]
        else:
            request.headers[name] = value
    response = api.send(request)
    assert response.status_code == 401
    assert set(response.json()) == {"code", "message"}
    assert response.json()["code"] in ("Unauthorized", "ConnectWiseApi")


def test_a_malformed_condition_gets_cws_400_body(api):
    response = api.get("company/companies", params={"conditions": 'name = "unterminated'})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "ApiFindCondition" and "Unterminated string" in body["message"]
    assert set(body) == {"code", "message", "errors"}
    unknown = api.get("company/companies", params={"conditions": 'typeids = "1"'}).json()
    assert unknown["message"] == "typeids is not a recognized name."


def test_conditions_nested_too_deeply_get_cws_400_body_not_a_crash(api):
    deep = "(" * 300 + "id = 1" + ")" * 300
    response = api.get("company/companies", params={"conditions": deep})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "ApiFindCondition" and "nested too deeply" in body["message"]
    assert set(body) == {"code", "message", "errors"}


def test_a_post_missing_a_required_field_gets_cws_invalid_object_body(api, sim):
    company = next(iter(sim.db.companies.values()))
    response = api.post("company/configurations", json={"company": {"id": company["id"]}, "name": "PC"})
    assert response.status_code == 400
    assert response.json() == {
        "code": "InvalidObject", "message": "configuration object is invalid",
        "errors": [{"code": "MissingRequiredField", "message": "The type field is required.",
                    "resource": "configuration", "field": "type"}]}


def test_max_lengths_from_the_spec_are_enforced(api, sim):
    company = next(iter(sim.db.companies.values()))
    response = api.post("service/tickets", json={"summary": "x" * 101, "company": {"id": company["id"]}})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "summary"


def test_missing_records_and_endpoints_answer_in_cws_404_shapes(api):
    assert api.get("company/configurations/999999").json() == {
        "code": "NotFound", "message": "Configuration 999999 not found"}
    assert api.get("company/nothing").json() == {"code": "ConnectWiseApi",
                                                 "message": "The endpoint does not exist."}


def test_navigable_paging_caps_page_size_and_links_every_page(api, sim):
    total = len(sim.db.configurations)
    first = api.get("company/configurations", params={"pageSize": 4, "orderBy": "name desc"})
    assert len(first.json()) == 4
    names = [r["name"].casefold() for r in first.json()]
    assert names == sorted(names, reverse=True)
    assert set(first.links) == {"first", "next", "last"}
    assert f"page={-(-total // 4)}" in first.links["last"]["url"]
    assert "orderBy=name+desc" in first.links["next"]["url"]
    huge = api.get("company/configurations", params={"pageSize": 5000})
    assert len(huge.json()) == min(total, 1000)
    assert api.get("company/configurations", params={"page": 0}).status_code == 400


def test_forward_only_paging_walks_by_id_and_ends_with_an_empty_link(api, sim):
    seen, page_id = [], None
    forward_only = {"pagination-type": "forward-only"}
    while True:
        params = {"pageSize": 7, "pageId": page_id} if page_id else {"pageSize": 7}
        response = api.get("company/configurations", params=params, headers=forward_only)
        seen += [r["id"] for r in response.json()]
        if not response.headers["Link"]:
            break
        page_id = response.links["next"]["url"].split("pageId=")[1]
    assert seen == sorted(sim.db.configurations)
    refused = api.get("company/configurations", params={"orderBy": "name"},
                      headers={"pagination-type": "forward-only"})
    assert refused.status_code == 400


def test_fields_returns_partial_objects(api):
    rows = api.get("company/companies", params={"fields": "id,status/name", "pageSize": 2}).json()
    assert all(set(r) == {"id", "status"} and set(r["status"]) == {"name"} for r in rows)


def test_a_ticket_status_must_belong_to_its_board(api, sim):
    company = next(iter(sim.db.companies.values()))
    foreign = sim.board_status("RMM Alerts", "Assigned")
    response = api.post("service/tickets", json={"summary": "x", "company": {"id": company["id"]},
                                                 "board": {"id": sim.board("Help Desk")["id"]},
                                                 "status": {"id": foreign["id"]}})
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "status"


def replace(path, value):
    return [{"op": "replace", "path": path, "value": value}]


# Each: where to send it, a body with one value of the wrong type, the field CW names. Quoted
# <names> stand for the ids of records the simulator has.
PC = {"name": "PC", "company": {"id": "<company>"}, "type": {"id": "<type>"}}
WRONG_TYPES = [
    ("POST", "service/tickets", {"summary": "x", "company": {"id": [1]}}, "company"),
    ("POST", "service/tickets", {"summary": "x", "company": {"id": {"id": "<company>"}}}, "company"),
    ("POST", "service/tickets", {"summary": "x", "company": {"id": True}}, "company"),
    ("POST", "service/tickets", {"summary": "x", "company": {"id": 2**40}}, "company"),
    ("POST", "service/tickets", {"summary": "x", "company": [{"id": "<company>"}]}, "company"),
    ("POST", "service/tickets", {"summary": 12, "company": {"id": "<company>"}}, "summary"),
    ("POST", "service/tickets", {"summary": "x", "company": {"id": "<company>"}, "initialDescription": ["x"]},
     "initialDescription"),
    ("POST", "service/tickets", {"summary": "x", "company": {"id": "<company>"}, "requiredDate": "soon"},
     "requiredDate"),
    ("PATCH", "service/tickets/{ticket}", replace("status", {"id": [1]}), "status"),
    ("PATCH", "service/tickets/{ticket}", replace("summary", {"text": "x"}), "summary"),
    ("PATCH", "service/tickets/{ticket}", replace("skipCallback", "yes"), "skipCallback"),
    ("POST", "company/configurations", {"name": "PC", "company": {"id": "<company>"}, "type": {"id": [1]}},
     "type"),
    ("POST", "company/configurations", {**PC, "questions": "all of them"}, "questions"),
    ("POST", "company/configurations", {**PC, "questions": [{"questionId": [1], "answer": "x"}]},
     "questions"),
    ("PATCH", "company/configurations/{configuration}", replace("manufacturer", {"name": 5}),
     "manufacturer"),
    ("PATCH", "company/configurations/{configuration}", replace("activeFlag", 0), "activeFlag"),
    ("POST", "procurement/manufacturers", {"name": 5}, "name"),
    ("POST", "service/tickets/{ticket}/notes", {"text": ["x"], "detailDescriptionFlag": True}, "text"),
    ("POST", "service/tickets/{ticket}/configurations", {"id": [1]}, "id"),
    ("POST", "service/tickets/search", {"conditions": 5}, "conditions"),
    ("POST", "system/callbacks", {"url": "https://x.example/", "objectId": "one", "type": "ticket",
                                  "level": "owner"}, "objectId"),
    ("PATCH", "system/callbacks/{callback}", replace("url", "ftp://x.example/"), "url"),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), WRONG_TYPES)
def test_a_value_of_the_wrong_type_gets_cws_400_naming_the_field(api, sim, method, path, body, field):
    company = next(iter(sim.db.companies.values()))
    ticket = sim.db.add_ticket(company, "x", sim.board("Help Desk"))
    callback = sim.db.insert(sim.db.callbacks, {"url": "https://x.example/", "objectId": 1,
                                                "type": "ticket", "level": "owner"})
    path = path.format(ticket=ticket["id"], configuration=next(iter(sim.db.configurations)),
                       callback=callback["id"])
    ids = {"<company>": company["id"], "<type>": next(iter(sim.db.configuration_types))}
    body = json.loads(re.sub(r'"(<\w+>)"', lambda m: str(ids[m.group(1)]), json.dumps(body)))
    response = api.request(method, path, json=body)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["code"] == "InvalidObject" and answer["message"].endswith("object is invalid")
    assert [e["field"] for e in answer["errors"]] == [field], answer


@pytest.mark.parametrize(("body", "status", "words"), [
    (b"[" * 65 + b"]" * 65, 400, "nested more than 64 levels deep"),
    (b"[" * 100_000, 400, "nested more than 64 levels deep"),
    (b'{"summary": NaN}', 400, "NaN is not a JSON number"),
    (b'{"summary": 1e999}', 400, "too large"),
    (b'{"summary": "x"', 400, "not valid JSON"),
    (b'{"summary": "' + b"x" * (1024 * 1024) + b'"}', 413, "exceeds the capacity limit"),
])
def test_a_body_that_cannot_be_read_gets_cws_error_body(api, body, status, words):
    response = api.post("service/tickets", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert set(response.json()) >= {"code", "message"} and words in response.json()["message"]


def test_closed_flag_follows_the_status_and_cannot_be_patched_directly(api, sim):
    company = next(iter(sim.db.companies.values()))
    ticket = api.post("service/tickets", json={"summary": "x", "company": {"id": company["id"]},
                                               "board": {"id": sim.board("Help Desk")["id"]}}).json()
    assert ticket["closedFlag"] is False and ticket["status"]["name"] == "New"
    ignored = api.patch(f"service/tickets/{ticket['id']}", json=[
        {"op": "replace", "path": "closedFlag", "value": True}])
    assert ignored.status_code == 200 and ignored.json()["closedFlag"] is False
    closed = api.patch(f"service/tickets/{ticket['id']}", json=[
        {"op": "replace", "path": "/status", "value": {"id": sim.board_status("Help Desk", "Closed")["id"]}}])
    assert closed.json()["closedFlag"] is True and closed.json()["closedDate"]


def test_a_nested_patch_path_is_the_false_200_cw_warns_about(api, sim):
    configuration = next(iter(sim.db.configurations.values()))
    response = api.patch(f"company/configurations/{configuration['id']}", json=[
        {"op": "replace", "path": "company/identifier", "value": "Elsewhere"}])
    assert response.status_code == 200
    assert response.json()["company"] == configuration["company"]


def test_writes_maintain_last_updated(api, sim):
    sim.db.clock = lambda: "2030-01-01T00:00:00Z"
    configuration = next(iter(sim.db.configurations.values()))
    patched = api.patch(f"company/configurations/{configuration['id']}", json=[
        {"op": "replace", "path": "notes", "value": "hello"}]).json()
    assert patched["_info"]["lastUpdated"] == "2030-01-01T00:00:00Z"


def test_a_board_without_a_default_team_refuses_tickets(api, sim):
    company = next(iter(sim.db.companies.values()))
    response = api.post("service/tickets", json={"summary": "x", "company": {"id": company["id"]},
                                                 "board": {"id": sim.board("Projects Intake")["id"]}})
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "team"


def test_the_security_role_is_enforced(api, sim):
    role_settings = next(iter(sim.db.role_settings.values()))
    line = next(s for s in role_settings if s["moduleFunctionName"] == "Configurations")
    line["addLevel"] = "None"
    company = next(iter(sim.db.companies.values()))
    response = api.post("company/configurations", json={"company": {"id": company["id"]}})
    assert response.status_code == 403


def test_duplicate_and_invalid_callbacks_answer_like_the_samples(api):
    entry = {"url": "https://hooks.example.com/cw?recordId=", "objectId": 0, "type": "ticket",
             "level": "owner"}
    created = api.post("system/callbacks", json=entry)
    assert created.status_code == 201 and created.json()["objectId"] == 1
    again = api.post("system/callbacks", json=entry).json()
    assert again["errors"][0]["code"] == "ObjectExists"
    invalid = api.post("system/callbacks", json={**entry, "url": "not a url", "level": "bogus"}).json()
    assert [e["field"] for e in invalid["errors"]] == ["url", "level"]


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.received.append((self.path, json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_ticket_changes_are_posted_to_callbacks_in_cws_payload_shape(api, sim):
    receiver = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    _Receiver.received = []
    try:
        url = f"http://127.0.0.1:{receiver.server_port}/cw?recordId="
        api.post("system/callbacks", json={"url": url, "objectId": 1, "type": "ticket", "level": "owner"})
        company = next(iter(sim.db.companies.values()))
        ticket = api.post("service/tickets", json={"summary": "cb", "company": {"id": company["id"]}}).json()
        deliveries = sim.api.wait_for_deliveries()
    finally:
        receiver.shutdown()
    assert [d.get("status") for d in deliveries] == [204]
    path, payload = _Receiver.received[0]
    assert path == f"/cw?recordId={ticket['id']}"
    assert {"MessageId", "FromUrl", "CompanyId", "MemberId", "Action", "Type", "ID", "ProductInstanceId",
            "PartnerId", "Entity", "Metadata", "CallbackObjectRecId"} <= set(payload)
    assert (payload["Action"], payload["Type"], payload["ID"]) == ("added", "ticket", ticket["id"])
    assert json.loads(payload["Entity"])["summary"] == "cb"  # Entity is the record as a string


def test_a_slow_callback_receiver_does_not_block_the_api(sim):
    sim.options.callback_timeout = 0.2
    with direct(sim) as api:
        # A receiver that never answers: a listening socket nobody accepts from.
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        try:
            api.post("system/callbacks", json={"url": f"http://127.0.0.1:{silent.getsockname()[1]}/x",
                                               "objectId": 1, "type": "ticket", "level": "owner"})
            company = next(iter(sim.db.companies.values()))
            response = api.post("service/tickets", json={"summary": "x", "company": {"id": company["id"]}},
                                timeout=0.15)
            assert response.status_code == 201
            assert sim.api.wait_for_deliveries()[0]["error"] == "ReadTimeout"
        finally:
            silent.close()


def test_faults_and_counts_per_endpoint_template():
    faults = Faults(script=[ScriptedFault("throttle", seconds=2)])
    sim = ConnectWiseSimulator(seed=1, companies=2, faults=faults, options=Options(enforce_role=False))
    with direct(sim) as api:
        throttled = api.get("service/tickets/1")
        assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "2"
        assert throttled.json() == {"error": "ConnectWiseAPI",
                                    "message": "Too many requests. Please try again in 2 seconds."}
        api.get("service/tickets/2")
    assert sim.counts["GET /service/tickets/{id}"] == 2


def test_the_same_seed_gives_the_same_data():
    def without_info(table):
        return [{k: v for k, v in row.items() if k != "_info"} for row in table.values()]

    first, second = ConnectWiseSimulator(seed=9, companies=4), ConnectWiseSimulator(seed=9, companies=4)
    assert without_info(first.db.companies) == without_info(second.db.companies)
    assert without_info(first.db.configurations) == without_info(second.db.configurations)
    other = ConnectWiseSimulator(seed=10, companies=4)
    assert without_info(first.db.companies) != without_info(other.db.companies)
