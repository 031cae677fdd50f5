"""Whatever a client sends, the simulators answer it: a 4xx for a bad request, never a 500.

Hypothesis throws JSON of any shape at every write endpoint of both simulators, in-process
through their WSGI apps: wholly random bodies, and valid bodies with one field replaced by a
random value, so that the bad value gets past the first checks to where it would be used (a
reference whose id is a list, a number where text belongs, NUL, long text, null). ConnectWise
list endpoints get random `conditions` built from the language's own words. An exception raised
inside an app reaches the test through the in-process transport, so it fails like a 500 would.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psabridge.plugins.connectwise.client import ACCEPT, basic_auth
from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator
from psabridge.plugins.connectwise.simulator.spec import SCHEMAS
from psabridge.plugins.rmm_datto.simulator import DattoSimulator
from psabridge.simulation import MAX_BODY

# Per endpoint; about 1000 requests in all, well under a minute on a shared machine.
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Some examples carry text near the body limit; hypothesis would warn about printing them.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

# -- JSON of any shape ---------------------------------------------------------------------------

TEXT = st.text(max_size=12) | st.sampled_from(["", " ", "\x00", "a\x00b", "\ud800", "é😀", "\n"])
SCALARS = (st.none() | st.booleans() | TEXT
           | st.integers(-(2**33), 2**33) | st.sampled_from([2**31 - 1, 2**31, -(2**31) - 1, 2**70])
           | st.floats(allow_nan=False, allow_infinity=False)
           # Long text: past every maximum length, yet under the body limit.
           | st.integers(0, MAX_BODY // 2).map(lambda n: "x" * n))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)


def near(valid: dict, fields: list[str], ids: st.SearchStrategy) -> st.SearchStrategy:
    """`valid` with one of its `fields` (mostly) or some unknown field set to random JSON or a
    random reference: the bad value gets as far into the endpoint as it can."""
    reference = st.fixed_dictionaries({}, optional={"id": ids | JSON, "name": JSON,
                                                    "identifier": JSON})
    value = JSON | reference | st.lists(reference, max_size=3)
    # The valid body's own fields half the time: a type confusion there goes deepest.
    field = st.sampled_from(list(valid) or fields) | st.sampled_from(fields)
    one_known = st.builds(lambda name, bad: {name: bad}, field, value)
    unknown = st.dictionaries(TEXT, value, min_size=1, max_size=2)
    return (one_known | one_known | one_known | unknown).map(lambda change: {**valid, **change})


def bodies(valid: dict, fields: list[str], ids: st.SearchStrategy) -> st.SearchStrategy:
    return near(valid, fields, ids) | near(valid, fields, ids) | JSON


def patches(fields: list[str], ids: st.SearchStrategy, focus: list[str]) -> st.SearchStrategy:
    """JSON-Patch documents, near-valid or not at all; paths are `focus` fields half the time."""
    path = st.sampled_from(focus) | st.sampled_from(fields)
    operation = st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "replace", "remove"]) | JSON,
         "path": path | path.map(lambda field: "/" + field) | JSON},
        optional={"value": JSON | near({}, ["id", "name", "identifier"], ids)})
    return st.lists(operation, min_size=1, max_size=3) | JSON


def assert_answered(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text[:500]
    response.json()  # an answer in the API's shape, not an HTML error page


# -- ConnectWise -----------------------------------------------------------------------------------

API = "/v2025_1/apis/3.0/"
CW_IDS = st.integers(-1, 60)  # the small simulator's records have ids within this range


def cw_fields(schema: str) -> list[str]:
    return SCHEMAS[schema]["fields"]


def cw_focus(schema: str) -> list[str]:
    """The fields a simulator does most with: the required ones and the references."""
    return sorted({*SCHEMAS[schema]["required"], *SCHEMAS[schema]["types"].get("reference", [])})


class CW:
    """A small simulator with a ticket and an inactive callback, and a client to it."""

    def __init__(self):
        self.sim = ConnectWiseSimulator(seed=3, companies=2, configurations_per_company=1)
        db = self.sim.db
        company = next(iter(db.companies.values()))
        self.ticket = db.add_ticket(company, "Printer jam", self.sim.board("Help Desk"))
        # Inactive, and nowhere: a fuzzed ticket change must not make the simulator call out.
        self.callback = db.insert(db.callbacks, {"url": "http://127.0.0.1:9/", "objectId": 1,
                                                 "type": "ticket", "level": "owner",
                                                 "inactiveFlag": True})
        o = self.sim.options
        self.http = httpx.Client(transport=self.sim.transport(), base_url="http://cw" + API,
                                 headers={"Authorization": basic_auth(o.company_id, o.public_key,
                                                                      o.private_key),
                                          "clientId": o.client_ids[0], "Accept": ACCEPT})

    def send(self, method: str, path: str, body) -> httpx.Response:
        path = path.format(ticket=self.ticket["id"], callback=self.callback["id"],
                           configuration=next(iter(self.sim.db.configurations)))
        return self.http.request(method, path, content=json.dumps(body),
                                 headers={"Content-Type": "application/json"})


# Valid bodies, with ids of the seed=3 simulator (CW_IDS covers them): the starting points.
_seeded = CW()
_company, _type = next(iter(_seeded.sim.db.companies)), next(iter(_seeded.sim.db.configuration_types))
CW_WRITES = [
    ("POST", "procurement/manufacturers", bodies({"name": "Acme"}, cw_fields("Manufacturer"), CW_IDS)),
    ("POST", "company/configurations", bodies(
        {"name": "PC", "company": {"id": _company}, "type": {"id": _type}},
        cw_fields("CompanyConfiguration"), CW_IDS)),
    ("PATCH", "company/configurations/{configuration}",
     patches(cw_fields("CompanyConfiguration"), CW_IDS, cw_focus("CompanyConfiguration"))),
    ("POST", "service/tickets", bodies(
        {"summary": "x", "company": {"id": _company}, "board": {"id": _seeded.sim.board("Help Desk")["id"]}},
        cw_fields("Ticket"), CW_IDS)),
    ("PATCH", "service/tickets/{ticket}", patches(cw_fields("Ticket"), CW_IDS, cw_focus("Ticket"))),
    ("POST", "service/tickets/search", bodies(
        {"conditions": "id > 1"}, ["conditions", "childConditions", "orderBy", "Conditions"], CW_IDS)),
    ("POST", "service/tickets/{ticket}/notes", bodies(
        {"text": "x", "detailDescriptionFlag": True}, cw_fields("ServiceNote"), CW_IDS)),
    ("POST", "service/tickets/{ticket}/configurations", bodies(
        {"id": next(iter(_seeded.sim.db.configurations))}, ["id", "deviceIdentifier"], CW_IDS)),
    ("POST", "system/callbacks", bodies(
        {"url": "http://127.0.0.1:9/", "objectId": 1, "type": "ticket", "level": "owner",
         "inactiveFlag": True}, cw_fields("CallbackEntry"), CW_IDS)),
    ("PATCH", "system/callbacks/{callback}",
     patches(cw_fields("CallbackEntry"), CW_IDS, cw_focus("CallbackEntry"))),
]


@pytest.mark.parametrize(("method", "path", "body"), CW_WRITES,
                         ids=lambda v: v if isinstance(v, str) else "")
@FUZZ
@given(data=st.data())
def test_connectwise_write_endpoints_answer_any_json_without_a_500(method, path, body, data):
    assert_answered(CW().send(method, path, data.draw(body, "body")))


CONDITION_WORDS = ["(", ")", "(", ")", "and", "or", "not", "like", "contains", "in", ",", "=",
                   "!=", "<", ">=", "null", "true", "False", "id", "name", "status/id",
                   "_info/lastUpdated", "lastUpdated", "types/id", '"x*"', "'a\\'b'", '"%"', "12",
                   "-3.5", "9" * 120, "[2025-01-01T00:00:00Z]", "[not a date]", '"unterminated',
                   "[", "]", "nosuchfield", "*a*a*a*b"]
# Query strings travel as UTF-8, which has no lone surrogates.
URL_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
CONDITIONS = (st.lists(st.sampled_from(CONDITION_WORDS) | URL_TEXT, max_size=12).map(" ".join)
              | st.integers(0, 2000).map(lambda depth: "(" * depth + "id = 1" + ")" * depth)
              | URL_TEXT)


@FUZZ
@given(conditions=CONDITIONS, order_by=st.none() | st.sampled_from(["name", "id desc", "x y z", ""])
       | URL_TEXT, fields=st.none() | URL_TEXT, page=st.none() | URL_TEXT | st.integers().map(str),
       path=st.sampled_from(["company/companies", "company/configurations", "service/tickets",
                             "company/companies/count", "service/tickets/{ticket}/notes"]))
def test_connectwise_lists_answer_any_conditions_without_a_500(conditions, order_by, fields, page,
                                                                path):
    cw = _seeded  # reads change nothing, so one simulator serves every example
    params = {k: v for k, v in {"conditions": conditions, "orderBy": order_by, "fields": fields,
                                "page": page, "pageSize": page}.items() if v is not None}
    assert_answered(cw.http.get(path.format(ticket=cw.ticket["id"]), params=params))


# -- Datto RMM -------------------------------------------------------------------------------------

BASIC = "Basic " + base64.b64encode(b"public-client:public").decode()
UDF_FIELDS = [f"udf{n}" for n in (1, 5, 300)] + ["udf0", "udf301", "UDF1"]
SITE_FIELDS = ["name", "description", "notes", "onDemand", "splashtopAutoInstall", "proxySettings"]
NO_IDS = st.nothing()


class Datto:
    def __init__(self):
        self.sim = DattoSimulator(seed=0, companies=2)
        self.http = httpx.Client(transport=self.sim.transport(), base_url="http://datto")
        grant = self.http.post("/auth/oauth/token", headers={"Authorization": BASIC}, data={
            "grant_type": "password", "username": self.sim.api_key, "password": self.sim.api_secret})
        self.auth = {"Authorization": "Bearer " + grant.json()["access_token"]}

    def send(self, method: str, path: str, body) -> httpx.Response:
        path = path.format(device=next(iter(self.sim.devices)), alert=next(iter(self.sim.alerts)))
        return self.http.request(method, path, content=json.dumps(body),
                                 headers={**self.auth, "Content-Type": "application/json"})


DATTO_WRITES = [
    ("PUT", "/api/v2/site", bodies({"name": "Acme"}, SITE_FIELDS, NO_IDS)),
    ("POST", "/api/v2/device/{device}/udf", bodies({"udf1": "x"}, UDF_FIELDS, NO_IDS)),
    ("POST", "/api/v2/device/{device}/warranty", bodies(
        {"warrantyDate": "2027-01-31"}, ["warrantyDate"], NO_IDS)),
    ("POST", "/api/v2/alert/{alert}/resolve", JSON),
    ("POST", "/auth/oauth/token", JSON),
]


@pytest.mark.parametrize(("method", "path", "body"), DATTO_WRITES,
                         ids=lambda v: v if isinstance(v, str) else "")
@FUZZ
@given(data=st.data())
def test_datto_write_endpoints_answer_any_json_without_a_500(method, path, body, data):
    response = Datto().send(method, path, data.draw(body, "body"))
    assert response.status_code < 500, response.text[:500]
    if response.content:  # a void write answers with an empty 200
        response.json()
