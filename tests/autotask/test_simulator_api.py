"""The Autotask simulator answers as the REST API v1.0 does (shared/specs/autotask/API-NOTES.md):
zone discovery, header auth, the query model, reads and writes, each shown in-process and over
loopback HTTP."""

from __future__ import annotations

import json
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import attrs
import httpx
import pytest

from psabridge.plugins.autotask.simulator import AutotaskSimulator, Options

ALL = {"filter": [{"op": "gte", "field": "id", "value": 0}]}


@attrs.define
class Api:
    sim: AutotaskSimulator
    url: str  # the server root
    client: httpx.Client  # authenticated, based at /ATServicesRest/V1.0/

    def raw(self, method: str, path: str, **kwargs) -> httpx.Response:
        """A request without the API user's headers, at `path` from the server root."""
        if self.url.startswith("http://autotask.simulator"):
            with httpx.Client(transport=self.sim.transport()) as client:
                return client.request(method, self.url + path, **kwargs)
        return httpx.request(method, self.url + path, **kwargs)


@contextmanager
def running(sim: AutotaskSimulator, mode: str):
    if mode == "in-process":
        with sim.client() as client:
            yield Api(sim, "http://autotask.simulator", client)
        return
    with sim.serve(deliver_webhooks=False) as server, sim.client(server.url) as client:
        yield Api(sim, server.url, client)


@pytest.fixture(params=["in-process", "loopback"])
def api(request):
    with running(AutotaskSimulator(seed=3, companies=10), request.param) as api:
        yield api


def errors(response: httpx.Response) -> list[str]:
    body = response.json()
    assert set(body) == {"errors"} and body["errors"], body
    return body["errors"]


def query(api: Api, entity: str, *conditions, **extra) -> list[dict]:
    response = api.client.post(f"{entity}/query", json={"filter": list(conditions), **extra})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def ticket_body(api: Api, **changes) -> dict:
    company = api.sim.companies()[1]
    return {"companyID": company["id"], "title": "Disk C: below 10 %", "status": 1, "priority": 1,
            "queueID": 29682833, "issueType": 4, "subIssueType": 40, "ticketType": 5, "source": 8,
            "ticketCategory": 101, **changes}


# -- zone discovery and auth ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ATServicesRest/V1.0/zoneInformation",
                                  "/atservicesrest/v1.0/ZoneInformation/"])
def test_zone_discovery_needs_no_auth_and_answers_the_zone_rest_root(api, path):
    answer = api.raw("GET", path, params={"user": api.sim.options.username.upper()})
    assert answer.status_code == 200
    zone = answer.json()
    assert set(zone) == {"zoneName", "url", "webUrl", "ci"}
    assert zone["url"] == f"{api.url}/ATServicesRest/"
    # the answer is usable as is: the client appends V1.0/
    assert httpx.Client(transport=api.sim.transport() if "simulator" in api.url else None,
                        headers=api.sim.headers()).get(zone["url"] + "V1.0/ThresholdInformation") \
        .status_code == 200


def test_zone_discovery_of_an_unknown_user_is_a_500(api):
    for params in ({"user": "someone@else.example"}, {}):
        answer = api.raw("GET", "/ATServicesRest/V1.0/zoneInformation", params=params)
        assert answer.status_code == 500
        assert errors(answer) == ["Zone information could not be determined"]


def test_version_information_lists_the_api_versions(api):
    answer = api.raw("GET", "/ATServicesRest/VersionInformation")
    assert answer.json()["apiVersions"][-1] == "V1.0"


def test_auth_failure_signatures(api):
    good = api.sim.headers()
    path = "/ATServicesRest/V1.0/Companies/0"
    wrong_secret = api.raw("GET", path, headers={**good, "Secret": "not-it"})
    assert wrong_secret.status_code == 401 and wrong_secret.content == b""
    unknown_user = api.raw("GET", path, headers={**good, "UserName": "nobody@x.example"})
    assert unknown_user.status_code == 500
    assert errors(unknown_user) == ["Zone information could not be determined"]
    bad_code = api.raw("GET", path, headers={**good, "ApiIntegrationCode": "WRONG"})
    assert bad_code.status_code == 500 and errors(bad_code) == ["IntegrationCode is invalid."]
    assert api.raw("GET", path).status_code == 500  # no headers at all: no user
    # header names are case-insensitive (Anteris sends `Username`, `APIIntegrationcode`)
    odd_case = {"APIIntegrationcode": good["ApiIntegrationCode"], "Username": good["UserName"],
                "secret": good["Secret"]}
    answer = api.raw("GET", path, headers=odd_case)
    assert answer.status_code == 200 and answer.json()["item"]["id"] == 0


# -- the query model --------------------------------------------------------------------------------


def test_post_query_pages_by_cursor_followed_with_post_and_the_same_body(api):
    every = sorted(c["id"] for c in api.sim.companies())
    body = {**ALL, "MaxRecords": 4}
    seen, url, pages = [], "Companies/query", 0
    while url:
        page = api.client.post(url, json=body)
        assert page.status_code == 200, page.text
        details = page.json()["pageDetails"]
        assert details["count"] == len(page.json()["items"]) <= 4 and details["requestCount"] == 4
        seen += [item["id"] for item in page.json()["items"]]
        url, pages = details["nextPageUrl"], pages + 1
        if url:
            assert url.startswith(f"{api.url}/ATServicesRest/V1.0/Companies/query/next?paging=")
            paging = json.loads(parse_qs(urlsplit(url).query)["paging"][0])
            assert paging["pageSize"] == 4 and paging["nextIds"] == [seen[-1]]
            # a POST query's cursor is not followed with GET (405, ASP.NET's shape)
            refused = api.client.get(url)
            assert refused.status_code == 405
            assert refused.json() == {"Message": "The requested resource does not support http method 'GET'."}
    assert seen == every and pages == -(-len(every) // 4)


def test_get_query_pages_with_get_and_can_go_back(api):
    search = json.dumps({**ALL, "MaxRecords": 3})
    first = api.client.get("Companies/query", params={"search": search}).json()
    assert first["pageDetails"]["prevPageUrl"] is None
    second = api.client.get(first["pageDetails"]["nextPageUrl"]).json()
    assert "search=" in first["pageDetails"]["nextPageUrl"]
    assert [i["id"] for i in second["items"]][0] > first["items"][-1]["id"]
    back = api.client.get(second["pageDetails"]["prevPageUrl"]).json()
    assert back["items"] == first["items"]


def test_max_records_must_be_1_to_500(api):
    for bad in (0, 501, "10"):
        answer = api.client.post("Companies/query", json={**ALL, "MaxRecords": bad})
        assert answer.status_code == 500
        assert errors(answer) == ["maxCountOfRecordsToReturn must be between 1 and 500"]
    default = api.client.post("Companies/query", json=ALL).json()
    assert default["pageDetails"]["requestCount"] == 500


def test_an_empty_filter_and_an_unreadable_search_are_500s(api):
    for body in ({"filter": []}, {}):
        assert api.client.post("Companies/query", json=body).status_code == 500
    broken = api.client.get("Companies/query", params={"search": '{"filter":[{"op":'})
    assert broken.status_code == 500 and "cannot be read" in errors(broken)[0]
    unknown = api.client.post("Companies/query", json={"filter": [{"op": "eq", "field": "nope", "value": 1}]})
    assert errors(unknown) == ["Unable to find nope in the Companies entity."]
    bad_op = api.client.post("Companies/query", json={"filter": [{"op": "like", "field": "id", "value": 1}]})
    assert bad_op.status_code == 500 and "like" in errors(bad_op)[0]
    not_queryable = api.client.post("Tickets/query", json={"filter": [
        {"op": "eq", "field": "creatorType", "value": 1}]})
    assert not_queryable.status_code == 500 and "not queryable" in errors(not_queryable)[0]


def test_filter_operators_groups_and_case(api):
    companies = [c for c in api.sim.companies() if c["id"] != 0]
    target = companies[2]
    word = target["companyName"].split()[0]

    def ids(*conditions):
        return sorted(i["id"] for i in query(api, "Companies", *conditions))

    def expected(predicate):
        return sorted(c["id"] for c in api.sim.companies() if predicate(c))

    assert ids({"op": "eq", "field": "CompanyName", "value": target["companyName"].upper()}) == [target["id"]]
    assert ids({"op": "beginsWith", "field": "companyName", "value": word.lower()}) == \
        expected(lambda c: c["companyName"].casefold().startswith(word.casefold()))
    assert ids({"op": "endsWith", "field": "companyName", "value": "llc"}) == \
        expected(lambda c: c["companyName"].casefold().endswith("llc"))
    assert ids({"op": "contains", "field": "companyName", "value": " & "}) == \
        expected(lambda c: " & " in c["companyName"])
    assert ids({"op": "noteq", "field": "isActive", "value": True}) == expected(lambda c: not c["isActive"])
    assert ids({"op": "eq", "field": "isActive", "value": "false"}) == expected(lambda c: not c["isActive"])
    assert ids({"op": "gt", "field": "id", "value": 176}, {"op": "lte", "field": "id", "value": 179}) == \
        [177, 178, 179]
    assert ids({"op": "in", "field": "id", "value": [174, 180, 99999]}) == [174, 180]
    assert ids({"op": "notIn", "field": "id", "value": [c["id"] for c in companies]}) == [0]
    assert ids({"op": "exist", "field": "companyNumber"}) == expected(lambda c: c["companyNumber"])
    assert ids({"op": "notExist", "field": "companyNumber"}) == [0]
    assert ids({"op": "or", "items": [{"op": "eq", "field": "id", "value": 174},
                                      {"op": "and", "items": [{"op": "gte", "field": "id", "value": 182},
                                                              {"op": "lt", "field": "id", "value": 184}]}]}) \
        == [174, 182, 183]
    old = companies[0]["createDate"]
    assert ids({"op": "lte", "field": "createDate", "value": old[:10]}) == \
        expected(lambda c: c["createDate"][:10] < old[:10])


def test_or_conditions_are_limited_to_500(api):
    many = {"op": "or", "items": [{"op": "eq", "field": "id", "value": n} for n in range(501)]}
    refused = api.client.post("Companies/query", json={"filter": [many]})
    assert "500 or fewer 'OR' conditions" in errors(refused)[0]
    in_list = {"op": "in", "field": "id", "value": list(range(500))}
    assert api.client.post("Companies/query", json={"filter": [in_list]}).status_code == 200


def test_udf_conditions_address_a_udf_by_name_one_per_query(api):
    ci = api.sim.configurations()[3]
    patch = api.client.patch("ConfigurationItems", json={
        "id": ci["id"], "userDefinedFields": [{"name": "RMM Device UID", "value": "dev-42"}]})
    assert patch.status_code == 200
    found = query(api, "ConfigurationItems",
                  {"op": "eq", "field": "RMM Device UID", "value": "DEV-42", "udf": True})
    assert [i["id"] for i in found] == [ci["id"]]
    assert {"name": "RMM Device UID", "value": "dev-42"} in found[0]["userDefinedFields"]
    two = api.client.post("ConfigurationItems/query", json={"filter": [
        {"op": "eq", "field": "RMM Device UID", "value": "x", "udf": True},
        {"op": "eq", "field": "Last Audit", "value": "y", "udf": True}]})
    assert errors(two) == ["Only one user-defined field condition is allowed per query."]


def test_include_fields_and_count(api):
    items = query(api, "Companies", *ALL["filter"], IncludeFields=["ID", "companyName"], MaxRecords=500)
    assert all(set(i) == {"id", "companyName", "userDefinedFields"} for i in items)
    no_id = api.client.post("Companies/query",
                            json={**ALL, "IncludeFields": ["companyName"], "MaxRecords": 2})
    assert no_id.status_code == 500 and "must include id" in errors(no_id)[0]
    count = api.client.post("Companies/query/count",
                            json={"filter": [{"op": "gt", "field": "id", "value": 0}]})
    assert count.json() == {"queryCount": len(api.sim.companies()) - 1}
    get_count = api.client.get("Companies/query/count", params={"search": json.dumps(ALL)})
    assert get_count.json() == {"queryCount": len(api.sim.companies())}


def test_get_by_id_and_missing_ids(api):
    ci = api.sim.configurations()[0]
    assert api.client.get(f"ConfigurationItems/{ci['id']}/").json() == {"item": ci}
    missing = api.client.get("ConfigurationItems/424242")
    assert missing.status_code == 404 and errors(missing)
    lenient = AutotaskSimulator(seed=3, companies=2, options=Options(missing_item="null"))
    with running(lenient, "in-process") as other:
        answer = other.client.get("ConfigurationItems/424242")
        assert answer.status_code == 200 and answer.json() == {"item": None}


def test_picklists_are_served_as_entity_information(api):
    fields = {f["name"]: f for f in api.client.get("Tickets/entityInformation/fields").json()["fields"]}
    labels = {f: {v["label"]: int(v["value"]) for v in fields[f]["picklistValues"]}
              for f in ("status", "priority", "queueID", "issueType", "source", "ticketType",
                        "ticketCategory")}
    assert labels["status"]["Complete"] == 5 and labels["status"]["New"] == 1
    assert {"Monitoring Alert", "Level I Support"} <= set(labels["queueID"])
    sub = fields["subIssueType"]
    assert sub["isPickList"] and sub["picklistParentValueField"] == "issueType"
    monitoring = str(labels["issueType"]["Monitoring"])
    scoped = {v["label"] for v in sub["picklistValues"] if v["parentValue"] == monitoring}
    assert scoped >= {"Disk Space", "Offline"} and "Printer" not in scoped
    assert fields["title"]["length"] == 255 and fields["title"]["isRequired"]
    assert fields["companyID"]["isReference"] and fields["companyID"]["referenceEntityType"] == "Company"
    assert not fields["creatorType"]["isQueryable"]
    ci_types = api.client.get("ConfigurationItems/entityInformation/fields").json()["fields"]
    (ci_type,) = [f for f in ci_types if f["name"] == "configurationItemType"]
    assert {v["label"] for v in ci_type["picklistValues"]} >= {"Workstation", "Server"}
    company_types = api.client.get("Companies/entityInformation/fields").json()["fields"]
    (company_type,) = [f for f in company_types if f["name"] == "companyType"]
    assert {"value": "1", "label": "Customer"}.items() <= company_type["picklistValues"][0].items()
    info = api.client.get("Tickets/entityInformation").json()["info"]
    assert info["canCreate"] and not info["canDelete"] and info["supportsWebhookCallouts"]
    udfs = api.client.get("ConfigurationItems/entityInformation/userDefinedFields").json()["fields"]
    assert "RMM Device UID" in {u["name"] for u in udfs}


# -- writes -------------------------------------------------------------------------------------------


def test_create_update_and_replace_a_ticket(api):
    created = api.client.post("Tickets/", json=ticket_body(api, dueDateTime="2026-12-01T10:00:00Z"))
    assert created.status_code == 200 and set(created.json()) == {"itemId"}
    ticket_id = created.json()["itemId"]
    ticket = api.client.get(f"Tickets/{ticket_id}").json()["item"]
    assert ticket["ticketNumber"].startswith("T") and ticket["status"] == 1
    assert ticket["completedDate"] is None
    assert ticket["creatorResourceID"] == api.sim.db.api_resource()["id"]
    done = api.client.patch("Tickets", json={"id": ticket_id, "status": 5})
    assert done.json() == {"itemId": ticket_id}
    ticket = api.client.get(f"Tickets/{ticket_id}").json()["item"]
    assert ticket["status"] == 5 and ticket["completedDate"] and ticket["title"] == "Disk C: below 10 %"
    replaced = api.client.put("Tickets", json={"id": ticket_id, "companyID": ticket["companyID"],
                                               "title": "replaced", "status": 1, "priority": 2})
    assert replaced.status_code == 200
    ticket = api.sim.ticket(ticket_id)
    assert ticket["queueID"] is None and ticket["issueType"] is None and ticket["title"] == "replaced"
    assert ticket["ticketNumber"] and ticket["completedDate"] is None  # server-set fields stay


def test_write_validation_errors_are_500s_that_name_the_field(api):
    def refused(body, entity="Tickets", method="POST"):
        answer = api.client.request(method, entity, json=body)
        assert answer.status_code == 500, answer.text
        return errors(answer)[0]

    body = ticket_body(api)
    assert "title" in refused({k: v for k, v in body.items() if k != "title"})
    assert "255" in refused({**body, "title": "x" * 256})
    assert "priority" in refused({**body, "priority": "high"})
    assert "picklist status" in refused({**body, "status": 3})
    assert "inactive" in refused({**body, "queueID": 29683012})
    assert "does not belong to the issueType" in refused({**body, "issueType": 1, "subIssueType": 40})
    assert refused({**body, "assignedResourceID": api.sim.db.technicians()[0]["id"]}) == (
        "When assigning a Resource, you must assign both a assignedResourceID and assignedResourceRoleID.")
    assert "API-only" in refused({**body, "assignedResourceID": api.sim.db.api_resource()["id"],
                                  "assignedResourceRoleID": 29682833})
    assert "existing entity for companyID" in refused({**body, "companyID": 999999})
    assert "Unable to find bogus" in refused({**body, "bogus": 1})
    other_ci = next(c for c in api.sim.configurations() if c["companyID"] != body["companyID"])
    assert "does not belong to company" in refused({**body, "configurationItemID": other_ci["id"]})
    assert api.sim.tickets() == []  # nothing was created
    technician = api.sim.db.technicians()[0]["id"]
    assigned = api.client.post("Tickets", json={**body, "assignedResourceID": technician,
                                                "assignedResourceRoleID": 29682833})
    assert assigned.status_code == 200
    assert "companyName" in refused({"companyType": 1, "phone": "1", "ownerResourceID": technician},
                                    "Companies")
    assert "cannot be empty" in refused({"id": assigned.json()["itemId"], "title": None}, method="PATCH")
    assert "needs the id" in refused({"title": "x"}, method="PATCH")


def test_a_configuration_items_company_cannot_be_changed(api):
    ci = api.sim.configurations()[0]
    other = next(c for c in api.sim.companies() if c["id"] not in (0, ci["companyID"]))
    answer = api.client.patch("ConfigurationItems", json={"id": ci["id"], "companyID": other["id"],
                                                          "referenceTitle": "renamed"})
    assert answer.json() == {"itemId": ci["id"]}
    after = api.client.get(f"ConfigurationItems/{ci['id']}").json()["item"]
    assert after["companyID"] == ci["companyID"] and after["referenceTitle"] == "renamed"
    with running(AutotaskSimulator(seed=3, companies=3, options=Options(ci_company_change="error")),
                 "in-process") as strict:
        ci = strict.sim.configurations()[0]
        other = next(c for c in strict.sim.companies() if c["id"] not in (0, ci["companyID"]))
        refused = strict.client.patch("ConfigurationItems", json={"id": ci["id"], "companyID": other["id"]})
        assert refused.status_code == 500 and "cannot be changed" in errors(refused)[0]


def test_create_a_configuration_item_and_a_company(api):
    company = api.client.post("Companies", json={"companyName": "New Client LLC", "companyType": 1,
                                                 "phone": "555-0199",
                                                 "ownerResourceID": api.sim.db.technicians()[1]["id"]})
    assert company.status_code == 200
    company_id = company.json()["itemId"]
    product = api.sim.db.by("Products", name="Managed Workstation")[0]
    ci = api.client.post("ConfigurationItems", json={"companyID": company_id, "productID": product["id"],
                                                     "isActive": True, "referenceTitle": "NCL-WS01",
                                                     "serialNumber": "ABC123", "configurationItemType": 1})
    assert ci.status_code == 200, ci.text
    assert query(api, "ConfigurationItems", {"op": "eq", "field": "companyID", "value": company_id})[0][
        "referenceTitle"] == "NCL-WS01"
    owned_by_api = api.client.post("Companies", json={"companyName": "X", "companyType": 1, "phone": "1",
                                                      "ownerResourceID": api.sim.db.api_resource()["id"]})
    assert owned_by_api.status_code == 500 and "API-only" in errors(owned_by_api)[0]


def test_no_delete_where_the_real_api_has_none(api):
    ticket_id = api.client.post("Tickets", json=ticket_body(api)).json()["itemId"]
    note = api.client.post(f"Tickets/{ticket_id}/Notes",
                           json={"description": "seen", "noteType": 3, "publish": 1})
    ci_id = api.sim.configurations()[0]["id"]
    for path in (f"Tickets/{ticket_id}", "Companies/174", f"ConfigurationItems/{ci_id}",
                 f"TicketNotes/{note.json()['itemId']}"):
        answer = api.client.delete(path)
        assert answer.status_code == 405
        assert answer.json() == {"Message": "The requested resource does not support http method 'DELETE'."}
    assert api.client.get("Tickets").status_code == 405  # no list route: query it
    assert api.client.post("TicketNotes", json={"description": "x"}).status_code == 405  # under the ticket
    unused = api.client.post("ConfigurationItemTypes",
                             json={"name": "Phone", "isActive": True}).json()["itemId"]
    assert api.client.delete(f"ConfigurationItemTypes/{unused}").json() == {"itemId": unused}
    in_use = api.sim.configurations()[0]["configurationItemType"]
    assert api.client.delete(f"ConfigurationItemTypes/{in_use}").status_code == 500


def test_ticket_notes_are_written_under_the_ticket_and_queried_on_their_own(api):
    ticket_id = api.client.post("Tickets", json=ticket_body(api)).json()["itemId"]
    created = api.client.post(f"Tickets/{ticket_id}/Notes",
                              json={"title": "RMM", "description": "Disk cleaned", "noteType": 3,
                                    "publish": 1})
    assert created.status_code == 200
    listed = api.client.get(f"Tickets/{ticket_id}/Notes").json()["items"]
    assert [n["description"] for n in listed] == ["Disk cleaned"] and listed[0]["ticketID"] == ticket_id
    found = query(api, "TicketNotes", {"op": "eq", "field": "ticketID", "value": ticket_id})
    assert [n["id"] for n in found] == [created.json()["itemId"]]
    assert api.client.post("Tickets/999999/Notes", json={"description": "x", "noteType": 3,
                                                         "publish": 1}).status_code == 500
    too_long = api.client.post(f"Tickets/{ticket_id}/Notes", json={"description": "x" * 32001, "noteType": 3,
                                                                   "publish": 1})
    assert too_long.status_code == 500 and "32000" in errors(too_long)[0]


def test_counts_are_kept_per_endpoint_template(api):
    api.client.get("Companies/174")
    api.client.get("companies/175/")
    api.client.post("Companies/query", json=ALL)
    assert api.sim.counts["GET /V1.0/Companies/{id}"] == 2
    assert api.sim.counts["POST /V1.0/Companies/query"] == 1


def test_additional_configuration_items_are_added_under_the_ticket(api):
    body = ticket_body(api)
    own = [c for c in api.sim.configurations() if c["companyID"] == body["companyID"]]
    created = api.client.post("Tickets", json={**body, "configurationItemID": own[0]["id"]})
    ticket_id = created.json()["itemId"]
    added = api.client.post(f"Tickets/{ticket_id}/AdditionalConfigurationItems",
                            json={"configurationItemID": own[1]["id"]})
    assert added.status_code == 200
    assert api.sim.ticket_configurations(ticket_id) == [own[0]["id"], own[1]["id"]]
    listed = api.client.get(f"Tickets/{ticket_id}/AdditionalConfigurationItems").json()["items"]
    assert [(i["ticketID"], i["configurationItemID"]) for i in listed] == [(ticket_id, own[1]["id"])]
    again = api.client.post(f"Tickets/{ticket_id}/AdditionalConfigurationItems",
                            json={"configurationItemID": own[1]["id"]})
    assert again.status_code == 500 and "already on ticket" in errors(again)[0]
    foreign = next(c for c in api.sim.configurations() if c["companyID"] != body["companyID"])
    refused = api.client.post(f"Tickets/{ticket_id}/AdditionalConfigurationItems",
                              json={"configurationItemID": foreign["id"]})
    assert refused.status_code == 500 and "does not belong to company" in errors(refused)[0]
    # there is no top-level route to create them
    top_level = api.client.post("TicketAdditionalConfigurationItems",
                                json={"ticketID": ticket_id, "configurationItemID": own[0]["id"]})
    assert top_level.status_code == 404
    removed = api.client.delete(f"Tickets/{ticket_id}/AdditionalConfigurationItems/{added.json()['itemId']}")
    assert removed.status_code == 200 and api.sim.ticket_configurations(ticket_id) == [own[0]["id"]]


def test_what_the_security_level_denies_is_refused_and_reported():
    sim = AutotaskSimulator(seed=3, companies=3, options=Options(denied={"Tickets": ("Create",),
                                                                         "Companies": ("Query",)}))
    with running(sim, "in-process") as api:
        info = api.client.get("Tickets/entityInformation").json()["info"]
        assert info["userAccessForCreate"] == "None" and info["userAccessForQuery"] == "All"
        refused = api.client.post("Tickets", json=ticket_body(api))
        assert refused.status_code == 500
        assert errors(refused)[0].startswith("The logged in Resource does not have the adequate permissions")
        assert api.client.post("Tickets/query", json=ALL).status_code == 200
        assert api.client.post("Companies/query", json=ALL).status_code == 500
        assert api.client.get("Companies/174").status_code == 500
        assert sim.tickets() == []


def test_a_new_configuration_item_gets_the_default_category(api):
    company = api.sim.companies()[1]
    product = api.sim.db.by("Products", name="Managed Server")[0]
    created = api.client.post("ConfigurationItems", json={"companyID": company["id"],
                                                          "productID": product["id"], "isActive": True})
    item = api.client.get(f"ConfigurationItems/{created.json()['itemId']}").json()["item"]
    default = [c for c in api.sim.db.table("ConfigurationItemCategories").values() if c["isGlobalDefault"]]
    assert item["configurationItemCategoryID"] == default[0]["id"]
