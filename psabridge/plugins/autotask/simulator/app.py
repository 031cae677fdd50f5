"""The simulated Autotask PSA REST API (v1.0): a WSGI app over a :class:`~.data.Database`.

It enforces what the real API enforces (shared/specs/autotask/API-NOTES.md): zone discovery
without auth, header auth with the real failure signatures, the query model (search objects,
cursor paging with `nextPageUrl` followed by the same method, `MaxRecords` 1..500, counts),
writes answering `{"itemId": N}` with required fields, types and lengths checked, picklists and
references resolved, no DELETE where the real API has none, the request and thread limits, and
TicketWebhook callouts. Failed operations answer HTTP 500 with `{"errors": [...]}`; a method a
route does not support answers 405 with ASP.NET's `{"Message": ...}`. Paths are
case-insensitive and may end with a slash, as the real service's are.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import attrs
from werkzeug.wrappers import Request, Response

from psabridge.plugins.autotask.simulator import data
from psabridge.plugins.autotask.simulator.data import (
    API_LICENSE_TYPE,
    NOT_QUERYABLE,
    REFERENCES,
    STATUS_COMPLETE,
    SUB_ISSUE_TYPES,
    UDFS,
    Database,
    now_text,
)
from psabridge.plugins.autotask.simulator.limits import Limits, Refused
from psabridge.plugins.autotask.simulator.query import (
    QueryError,
    Search,
    parse_datetime,
    parse_search,
    project,
)
from psabridge.plugins.autotask.simulator.spec import FIELDS
from psabridge.plugins.autotask.simulator.webhooks import Deliverer, new_guid
from psabridge.simulation import BoundedRequest, UnreadableJson, parse_json


@attrs.define
class Options:
    """The simulated tenant's credentials, and the choices §12 of the notes leaves open."""

    username: str = "psabridge-api@simulated-msp.example"
    secret: str = "sim-Secret-7f3a9c2e1b"
    integration_code: str = "SIMULATEDPSABRIDGEINTEGRA27"  # a 27-character tracking identifier
    # Other integrations of the same database (e.g. a vendor's): they share its hourly
    # threshold but have threads of their own.
    other_integration_codes: tuple[str, ...] = ("SIMULATEDVENDORINTEGRATION1",)
    zone_name: str = "AE02"
    web_url: str = "https://ww14.autotask.net/"
    database_id: int = 29683600  # `ci` in the zone answer
    request_threshold: int = 10_000  # per rolling window, for the whole database
    threshold_window: float = 3600.0  # seconds
    thread_limit: int = 3  # requests in flight per integration code and entity
    limit_status: int = 429  # the status of both limits' refusals (undocumented: 429 or 500)
    latency_tiers: bool = False  # 0.5 s from 50 % of the threshold, 1 s from 75 %
    missing_item: str = "404"  # GET /{Entity}/{id} of no record: "404", or "null" (200, item null)
    empty_filter_error: bool = True  # a query without conditions is refused
    patch_answer: str = "itemId"  # the body of a PATCH/PUT success: "itemId", or "empty"
    ci_company_change: str = "ignore"  # a CI's companyID on update: "ignore" (as documented), "error"
    # entity -> actions ("Query", "Create", "Update", "Delete") the API user's security level
    # lacks: refused with the 500 Autotask answers, and "None" in entityInformation's
    # userAccessFor* (API-NOTES §2).
    denied: dict[str, tuple[str, ...]] = attrs.field(factory=dict)
    webhook_timeout: float = 10.0
    webhook_retry_interval: float = 30.0
    webhook_attempts: int = 5
    webhook_failures_to_disable: int = 25


# entity -> (create, update, delete); only these are served. Children are written under their
# parent (CHILDREN); a child entity's own name only answers queries and entityInformation.
ENTITIES: dict[str, tuple[bool, bool, bool]] = {
    "Companies": (True, True, False), "ConfigurationItems": (True, True, False),
    "ConfigurationItemTypes": (True, True, True), "ConfigurationItemCategories": (True, True, False),
    "Products": (True, True, False), "Resources": (False, True, False), "Tickets": (True, True, False),
    "TicketNotes": (False, False, False), "TicketCategories": (False, True, False),
    "TicketWebhooks": (True, True, True), "TicketWebhookFields": (False, False, False),
    "TicketWebhookExcludedResources": (False, False, False), "WebhookEventErrorLogs": (False, False, True),
    "TicketAdditionalConfigurationItems": (False, False, False),
}
# (parent, child path) -> (child entity, parent id field, create, update, delete)
CHILDREN: dict[tuple[str, str], tuple[str, str, bool, bool, bool]] = {
    ("Tickets", "Notes"): ("TicketNotes", "ticketID", True, True, False),
    ("Tickets", "AdditionalConfigurationItems"): ("TicketAdditionalConfigurationItems", "ticketID",
                                                  True, False, True),
    ("TicketWebhooks", "Fields"): ("TicketWebhookFields", "webhookID", True, True, True),
    ("TicketWebhooks", "ExcludedResources"): ("TicketWebhookExcludedResources", "webhookID",
                                              True, False, True),
}
MAX_ADDITIONAL_ITEMS = 100
ACTIONS = ("Create", "Delete", "Query", "Update")
# Child entities that have no top-level query route (only under their parent).
CHILD_ONLY = frozenset({"TicketWebhookFields", "TicketWebhookExcludedResources",
                        "TicketAdditionalConfigurationItems"})
META = {"zoneinformation": "zoneInformation", "thresholdinformation": "ThresholdInformation",
        "version": "Version", "modules": "Modules", "versioninformation": "VersionInformation"}
_ENTITY_NAMES = {name.casefold(): name for name in ENTITIES}
_DATA_TYPES = {"integer": "integer", "long": "long", "short": "short", "boolean": "boolean",
               "datetime": "datetime", "double": "double", "decimal": "decimal", "string": "string",
               "byte": "byte", "byte[]": "byte[]"}


class ApiError(Exception):
    """An answer other than success: `errors` (Autotask's shape), or `message` (ASP.NET's 405
    shape), or neither (an empty body)."""

    def __init__(self, status: int, *errors: str, message: str | None = None,
                 headers: dict | None = None):
        super().__init__(errors[0] if errors else message or str(status))
        self.status, self.errors, self.message, self.headers = status, list(errors), message, headers or {}

    def response(self) -> Response:
        if self.message is not None:
            body = json.dumps({"Message": self.message})
        elif self.errors:
            body = json.dumps({"errors": self.errors})
        else:
            body = ""
        return Response(body, self.status, self.headers, content_type="application/json; charset=utf-8")


def failed(*errors: str) -> ApiError:
    """A failed operation: HTTP 500 with the error strings (API-NOTES §4)."""
    return ApiError(500, *errors)


def not_supported(method: str) -> ApiError:
    return ApiError(405, message=f"The requested resource does not support http method '{method}'.")


def no_route() -> ApiError:
    return ApiError(404, message="No HTTP resource was found that matches the request URI.")


def ok(body: Any) -> Response:
    return Response(json.dumps(body), 200, content_type="application/json; charset=utf-8")


def endpoint_template(method: str, path: str) -> str:
    """"GET /V1.0/Tickets/{id}" for GET /atservicesrest/v1.0/tickets/7001/: what `counts`
    are keyed by."""
    parts = [p for p in path.split("/") if p]
    if parts and parts[0].casefold() == "atservicesrest":
        parts = parts[1:]
    out = []
    for part in parts:
        folded = part.casefold()
        if re.fullmatch(r"-?\d+", part):
            out.append("{id}")
        elif folded == "v1.0":
            out.append("V1.0")
        elif folded in _ENTITY_NAMES or folded in META:
            out.append(_ENTITY_NAMES.get(folded) or META[folded])
        else:
            out.append(part)
    return f"{method} /{'/'.join(out)}"


class AutotaskApp:
    def __init__(self, db: Database, options: Options, clock: Callable[[], float],
                 deliverer: Deliverer):
        self.db, self.options, self.clock, self.webhooks = db, options, clock, deliverer
        self.limits = Limits(options.request_threshold, options.threshold_window, options.thread_limit,
                             clock, options.latency_tiers)
        # entity -> event: requests for it wait on the event while counted in flight (tests
        # hold requests this way to show the thread limit).
        self.holds: dict[str, Any] = {}

    def __call__(self, environ, start_response):
        request = BoundedRequest(environ)
        try:
            response = self.dispatch(request)
        except ApiError as exc:
            response = exc.response()
        return response(environ, start_response)

    # -- routing ------------------------------------------------------------------------------

    def dispatch(self, request: Request) -> Response:
        parts = [p for p in request.path.split("/") if p]
        if not parts or parts[0].casefold() != "atservicesrest":
            raise no_route()
        parts = parts[1:]
        if len(parts) == 1 and parts[0].casefold() == "versioninformation":
            return ok({"apiVersions": ["V1.0"]})
        if not parts or parts[0].casefold() != "v1.0" or len(parts) < 2:
            raise no_route()
        parts = parts[1:]
        head = parts[0].casefold()
        if head == "zoneinformation" and len(parts) == 1:  # no auth, no limits (API-NOTES §1, §6)
            return self.zone_information(request)
        entity = _ENTITY_NAMES.get(head)
        if entity is None and head not in META:
            raise no_route()
        code = self.authenticate(request)
        endpoint = entity or parts[0]
        try:
            self.limits.admit(code, endpoint.casefold())
        except Refused as exc:
            raise ApiError(self.options.limit_status, str(exc)) from None
        try:
            hold = self.holds.get(endpoint.casefold())
            if hold is not None:
                hold.wait(30)
            if entity is None:
                return self.meta(request, head, parts)
            return self.entity_route(request, entity, parts[1:])
        finally:
            self.limits.release(code, endpoint.casefold())

    def zone_information(self, request: Request) -> Response:
        if request.method != "GET":
            raise not_supported(request.method)
        user = _arg(request, "user")
        if not user or user.casefold() != self.options.username.casefold():
            raise failed("Zone information could not be determined")
        return ok({"zoneName": self.options.zone_name,
                   "url": f"{request.host_url.rstrip('/')}/ATServicesRest/",
                   "webUrl": self.options.web_url, "ci": self.options.database_id})

    def authenticate(self, request: Request) -> str:
        """The integration code of an authenticated request, or the failure signatures of
        API-NOTES §2: unknown user and bad integration code are 500s with `errors`, a wrong
        secret for a known user a 401 with an empty body."""
        headers = request.headers  # werkzeug's are case-insensitive, as the real service's
        user = headers.get("UserName", "")
        if not user or user.casefold() != self.options.username.casefold():
            raise failed("Zone information could not be determined")
        code = headers.get("ApiIntegrationCode", "")
        known = (self.options.integration_code, *self.options.other_integration_codes)
        if not any(hmac.compare_digest(code.encode(), k.encode()) for k in known):
            raise failed("IntegrationCode is invalid.")
        secret = headers.get("Secret", "")
        if not hmac.compare_digest(secret.encode(), self.options.secret.encode()):
            raise ApiError(401)
        return code

    def meta(self, request: Request, head: str, parts: list[str]) -> Response:
        if request.method != "GET":
            raise not_supported(request.method)
        if len(parts) != 1:
            raise no_route()
        if head == "thresholdinformation":
            return ok({"externalRequestThreshold": self.options.request_threshold,
                       "requestThresholdTimeframe": round(self.options.threshold_window / 60),
                       "currentTimeframeRequestCount": self.limits.used()})
        if head == "version":
            return ok({"version": "2026.1.0.0"})
        if head == "modules":
            return ok({"modules": [{"key": "Service Desk", "value": True}, {"key": "CRM", "value": True}]})
        raise no_route()

    def entity_route(self, request: Request, entity: str, rest: list[str]) -> Response:
        method = request.method
        words = [p.casefold() for p in rest]
        create, update, delete = ENTITIES[entity]
        if not rest:
            if entity in CHILD_ONLY:  # written under their parent only
                raise no_route()
            if method == "POST" and create:
                return self.create(request, entity)
            if method in ("PATCH", "PUT") and update:
                return self.update(request, entity, method)
            raise not_supported(method)
        if words[0] == "entityinformation":
            if method != "GET":
                raise not_supported(method)
            return self.entity_information(entity, words[1:])
        if entity in CHILD_ONLY:
            raise no_route()
        if words[0] == "query":
            return self.query_route(request, entity, words[1:])
        record_id = _int_segment(rest[0])
        if len(rest) == 1:
            if method == "GET":
                return self.get_one(entity, record_id)
            if method == "DELETE" and delete:
                return self.delete(entity, record_id)
            raise not_supported(method)
        child = next((value for (parent, name), value in CHILDREN.items()
                      if parent == entity and name.casefold() == words[1]), None)
        if child is None:
            raise no_route()
        return self.child_route(request, entity, record_id, child, rest[2:])

    def child_route(self, request: Request, parent: str, parent_id: int, child: tuple, rest: list[str]):
        entity, parent_field, create, update, delete = child
        method = request.method
        if self.db.get(parent, parent_id) is None:
            raise failed(f"No matching records found for {parent} with id {parent_id}.")
        if not rest:
            if method == "GET":
                self.allow(entity, "Query")
                rows = sorted(self.db.by(entity, **{parent_field: parent_id}), key=lambda r: r["id"])
                return ok({"items": rows, "pageDetails": {"count": len(rows), "requestCount": len(rows),
                                                          "prevPageUrl": None, "nextPageUrl": None}})
            if method == "POST" and create:
                return self.create(request, entity, parent_field, parent_id)
            if method in ("PATCH", "PUT") and update:
                return self.update(request, entity, method, parent_field, parent_id)
            raise not_supported(method)
        if len(rest) != 1:
            raise no_route()
        record_id = _int_segment(rest[0])
        record = self.db.get(entity, record_id)
        if record is not None and record[parent_field] != parent_id:
            record = None
        if method == "GET":
            self.allow(entity, "Query")
            return self._item(entity, record_id, record)
        if method == "DELETE" and delete:
            if record is None:
                raise failed(f"No matching records found for {entity} with id {record_id}.")
            return self._delete_record(entity, record)
        raise not_supported(method)

    # -- reads --------------------------------------------------------------------------------

    def _item(self, entity: str, record_id: int, record: dict | None) -> Response:
        if record is None:
            if self.options.missing_item == "null":
                return ok({"item": None})
            raise ApiError(404, f"No {entity} record was found with id {record_id}.")
        return ok({"item": record})

    def _denied(self, entity: str, action: str) -> bool:
        return action in self.options.denied.get(entity, ())

    def allow(self, entity: str, action: str) -> None:
        if self._denied(entity, action):
            raise failed("The logged in Resource does not have the adequate permissions to "
                         f"{action.lower()} this entity type: {entity}.")

    def get_one(self, entity: str, record_id: int) -> Response:
        self.allow(entity, "Query")
        return self._item(entity, record_id, self.db.get(entity, record_id))

    def entity_information(self, entity: str, words: list[str]) -> Response:
        create, update, delete = ENTITIES[entity]
        if entity in CHILD_ONLY or entity == "TicketNotes":
            child = next(v for v in CHILDREN.values() if v[0] == entity)
            create, update, delete = child[2:]
        if not words:
            return ok({"info": {"name": _singular(entity),
                                "canCreate": create, "canUpdate": update, "canDelete": delete,
                                "canQuery": entity not in CHILD_ONLY,
                                "hasUserDefinedFields": entity in UDFS,
                                "supportsWebhookCallouts": entity in ("Tickets", "Companies",
                                                                      "ConfigurationItems", "TicketNotes"),
                                **{f"userAccessFor{action}": "None" if self._denied(entity, action)
                                   else "All" for action in ACTIONS}}})
        if words == ["fields"]:
            return ok({"fields": self.field_information(entity)})
        if words == ["userdefinedfields"]:
            return ok({"fields": [{"name": name, "label": name, "type": "string", "length": 8000,
                                   "isPickList": False, "picklistValues": None, "isRequired": False,
                                   "isProtected": False} for name in UDFS.get(entity, [])]})
        raise no_route()

    def field_information(self, entity: str) -> list[dict]:
        picklists = self.db.picklists(entity)
        out = []
        for name, spec in sorted(FIELDS[entity].items()):
            reference = REFERENCES.get(name) if name not in picklists else None
            out.append({
                "name": name, "dataType": _DATA_TYPES.get(spec["type"], "string"),
                "length": spec["maxLength"] or 0, "isRequired": spec["required"],
                "isReadOnly": spec["readOnly"],
                "isQueryable": name not in NOT_QUERYABLE.get(entity, ()),
                "isReference": reference is not None,
                "referenceEntityType": _singular(reference) if reference else "",
                "isPickList": name in picklists, "picklistValues": picklists.get(name),
                "picklistParentValueField": "issueType" if (entity, name) == ("Tickets", "subIssueType")
                else "",
                "isSupportedWebhookField": entity == "Tickets" and name != "id",
            })
        return out

    def query_route(self, request: Request, entity: str, words: list[str]) -> Response:
        method = request.method
        if words not in ([], ["count"], ["next"]):
            raise no_route()
        if method not in ("GET", "POST"):
            raise not_supported(method)
        after, previous, page_size = -1, [], None
        if words == ["next"]:  # prevPageUrl is a /query/next URL too, with earlier ids
            paging = _paging(_arg(request, "paging"))
            page_size = paging["pageSize"]
            after = paging["nextIds"][0]
            previous = paging["previousIds"]
            if method == "GET" and _arg(request, "search") is None:
                # The cursor of a POST query is followed with POST and the same body.
                raise not_supported("GET")
        self.allow(entity, "Query")
        body = self._search_body(request)
        try:
            search = parse_search(body, FIELDS[entity], UDFS.get(entity, []), entity,
                                  frozenset(NOT_QUERYABLE.get(entity, ())), self.options.empty_filter_error)
        except QueryError as exc:
            raise failed(str(exc)) from None
        with self.db.lock:
            rows = sorted((r for r in self.db.table(entity).values() if search.predicate(r)),
                          key=lambda r: r["id"])
        if words == ["count"]:
            return ok({"queryCount": len(rows)})
        return self._page(request, entity, rows, search, after, previous, page_size or search.max_records,
                          body if method == "GET" else None)

    def _search_body(self, request: Request) -> Any:
        if request.method == "GET":
            text = _arg(request, "search")
            if text is None:
                raise failed("The search parameter is required: a URL-encoded JSON search object.")
        else:
            text = request.get_data(as_text=True)
        try:
            return parse_json(text)
        except UnreadableJson as exc:
            raise failed(f"The search object cannot be read: {exc}.") from None

    def _page(self, request: Request, entity: str, rows: list[dict], search: Search, after: int,
              previous: list[int], page_size: int, get_search: Any) -> Response:
        following = [r for r in rows if r["id"] > after]
        page, more = following[:page_size], len(following) > page_size
        if more and search.include_fields is not None and "id" not in search.include_fields:
            raise failed("IncludeFields must include id when the result has more records than one page.")
        base = f"{request.host_url.rstrip('/')}/ATServicesRest/V1.0/{entity}/query"
        tail = f"&search={quote(json.dumps(get_search, separators=(',', ':')))}" if get_search is not None \
            else ""

        def url(token: dict) -> str:
            return f"{base}/next?paging={quote(json.dumps(token, separators=(',', ':')))}{tail}"

        next_url = url({"pageSize": page_size, "previousIds": [*previous, after],
                        "nextIds": [page[-1]["id"]]}) if more else None
        prev_url = url({"pageSize": page_size, "previousIds": previous[:-1],
                        "nextIds": [previous[-1]]}) if previous else None
        return ok({"items": [project(r, search.include_fields) for r in page],
                   "pageDetails": {"count": len(page), "requestCount": page_size,
                                   "prevPageUrl": prev_url, "nextPageUrl": next_url}})

    # -- writes -------------------------------------------------------------------------------

    def _body(self, request: Request) -> dict:
        try:
            body = parse_json(request.get_data() or b"")
        except UnreadableJson as exc:
            raise failed(f"The request body cannot be read: {exc}.") from None
        if not isinstance(body, dict):
            raise failed("The request body must be a JSON object.")
        return body

    def create(self, request: Request, entity: str, parent_field: str | None = None,
               parent_id: int | None = None) -> Response:
        self.allow(entity, "Create")
        body = self._body(request)
        if parent_field is not None:  # the parent's id comes from the URL (API-NOTES §13)
            body = {k: v for k, v in body.items() if k.casefold() != parent_field.casefold()}
            body[parent_field] = parent_id
        with self.db.lock:
            values = self.validate(entity, body, "create")
            if entity == "ConfigurationItems" and values.get("configurationItemCategoryID") is None:
                values["configurationItemCategoryID"] = self.db.default_category_id()
            person = self.acting_resource(request)
            record = self.db.insert(entity, values)
            self.after_write(entity, None, record, person)
        return ok({"itemId": record["id"]})

    def update(self, request: Request, entity: str, method: str, parent_field: str | None = None,
               parent_id: int | None = None) -> Response:
        self.allow(entity, "Update")
        body = self._body(request)
        record_id = _key(body, "id")
        if isinstance(record_id, bool) or not isinstance(record_id, int):
            raise failed(f"An update of {entity} needs the id of the record to change.")
        with self.db.lock:
            record = self.db.get(entity, record_id)
            if record is None or (parent_field is not None and record[parent_field] != parent_id):
                raise failed(f"No matching records found for {entity} with id {record_id}.")
            if parent_field is not None:
                body = {k: v for k, v in body.items() if k.casefold() != parent_field.casefold()}
            values = self.validate(entity, body, "patch" if method == "PATCH" else "put", record)
            person = self.acting_resource(request)
            before = dict(record)
            if method == "PUT":  # every writable field not sent becomes null (API-NOTES §4)
                for name, spec in FIELDS[entity].items():
                    if not spec["readOnly"] and name != parent_field and name not in values:
                        record[name] = None
            record.update(values)
            self.after_write(entity, before, record, person)
        return ok({"itemId": record_id}) if self.options.patch_answer == "itemId" else \
            Response("", 200, content_type="application/json")

    def delete(self, entity: str, record_id: int) -> Response:
        with self.db.lock:
            record = self.db.get(entity, record_id)
            if record is None:
                raise failed(f"No matching records found for {entity} with id {record_id}.")
            return self._delete_record(entity, record)

    def _delete_record(self, entity: str, record: dict) -> Response:
        self.allow(entity, "Delete")
        with self.db.lock:
            if entity == "ConfigurationItemTypes" and self.db.by("ConfigurationItems",
                                                                  configurationItemType=record["id"]):
                raise failed(f"The configuration item type {record['name']} is in use and cannot be deleted.")
            del self.db.table(entity)[record["id"]]
            if entity == "TicketWebhooks":
                for child in ("TicketWebhookFields", "TicketWebhookExcludedResources"):
                    for row in self.db.by(child, webhookID=record["id"]):
                        del self.db.table(child)[row["id"]]
            if entity == "TicketWebhookFields":
                self._refresh_ready(record["webhookID"])
        if entity == "TicketWebhooks":
            self.webhooks.deactivated(record)
        return ok({"itemId": record["id"]})

    def acting_resource(self, request: Request) -> int:
        """Who a write is attributed to: the API user, or the resource named by
        `ImpersonationResourceId`, which must be a resource that can be impersonated (API-only
        resources cannot: API-NOTES §2)."""
        named = request.headers.get("ImpersonationResourceId")
        if not named:
            return self.db.api_resource()["id"]
        resource = self.db.get("Resources", int(named)) if named.strip().isdigit() else None
        if resource is None or not resource["isActive"]:
            raise failed(f"ImpersonationResourceId {named} is not an active resource.")
        if resource["licenseType"] == API_LICENSE_TYPE:
            raise failed(f"The resource {named} cannot be impersonated.")
        return resource["id"]

    def validate(self, entity: str, body: dict, mode: str, record: dict | None = None) -> dict:
        """The fields `body` writes, canonical names, checked; read-only fields are ignored."""
        specs = FIELDS[entity]
        names = {name.casefold(): name for name in specs}
        values: dict[str, Any] = {}
        for key, value in body.items():
            if key.casefold() == "userdefinedfields" and entity in UDFS:
                values["userDefinedFields"] = self._udfs(entity, value, record)
                continue
            name = names.get(key.casefold())
            if name is None:
                raise failed(f"Unable to find {key} in the {entity} entity.")
            if specs[name]["readOnly"]:
                continue
            values[name] = _check_type(entity, name, specs[name], value)
        required = [n for n, s in specs.items() if s["required"] and not s["readOnly"]]
        for name in required:
            sent_empty = name in values and values[name] is None
            if sent_empty or (mode != "patch" and values.get(name) is None):
                raise failed(f"{entity}: the field {name} is required and cannot be empty.")
        merged = {**(record or {}), **values} if mode == "patch" else {**values}
        self._check_rules(entity, values, merged, record)
        return values

    def _udfs(self, entity: str, value: Any, record: dict | None) -> list[dict]:
        if not isinstance(value, list):
            raise failed("userDefinedFields must be a list of {name, value} objects.")
        current = {u["name"]: u["value"] for u in (record or {}).get("userDefinedFields") or []}
        current = {name: current.get(name) for name in UDFS[entity]}
        known = {n.casefold(): n for n in UDFS[entity]}
        for item in value:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise failed("Each user-defined field needs a name and a value.")
            name = known.get(item["name"].casefold())
            if name is None:
                raise failed(f"Unable to find user-defined field {item['name']} in the {entity} entity.")
            given = item.get("value")
            current[name] = None if given is None else str(given)
        return [{"name": n, "value": v} for n, v in current.items()]

    def _check_rules(self, entity: str, values: dict, merged: dict, record: dict | None) -> None:
        for name, value in values.items():
            if value is None or name == "userDefinedFields":
                continue
            choice = self.db.picklist_value(entity, name, value)
            if choice is None or (choice and not choice["isActive"]):
                state = "an inactive value" if choice else "not a value"
                raise failed(f"The value {value} is {state} of the picklist {name} of {entity}.")
            target = REFERENCES.get(name)
            if target and not choice and target in self.db.tables and self.db.get(target, value) is None:
                raise failed(f"Value does not reference an existing entity for {name}.")
        if entity == "Companies" and "ownerResourceID" in values:
            self._not_api_user(values["ownerResourceID"], "own a company (ownerResourceID)")
        if entity == "ConfigurationItems" and record is not None and "companyID" in values \
                and values["companyID"] != record["companyID"]:
            if self.options.ci_company_change == "error":
                raise failed("The companyID of a configuration item cannot be changed.")
            del values["companyID"]  # ignored on update, as documented (API-NOTES §4)
        if entity == "Tickets":
            self._ticket_rules(values, merged)
        if entity == "TicketAdditionalConfigurationItems":
            self._additional_item_rules(merged)

    def _not_api_user(self, resource_id: Any, what: str) -> None:
        resource = self.db.get("Resources", resource_id)
        if resource is not None and resource["licenseType"] == API_LICENSE_TYPE:
            raise failed(f"An API-only resource cannot {what}.")

    def _ticket_rules(self, values: dict, merged: dict) -> None:
        if merged.get("assignedResourceID") is not None or merged.get("assignedResourceRoleID") is not None:
            if merged.get("assignedResourceID") is None or merged.get("assignedResourceRoleID") is None:
                raise failed("When assigning a Resource, you must assign both a assignedResourceID and "
                             "assignedResourceRoleID.")
            self._not_api_user(merged["assignedResourceID"], "be assigned a ticket (assignedResourceID)")
            if merged["assignedResourceRoleID"] not in {role for role, _ in data.ROLES}:
                raise failed("Value does not reference an existing entity for assignedResourceRoleID.")
        sub, issue = merged.get("subIssueType"), merged.get("issueType")
        if sub is not None:
            parent = next((p for v, _, p in SUB_ISSUE_TYPES if v == sub), None)
            if parent != issue:
                raise failed(f"The subIssueType {sub} does not belong to the issueType {issue}.")
        ci_id = merged.get("configurationItemID")
        if ci_id is not None and ("configurationItemID" in values or "companyID" in values):
            ci = self.db.get("ConfigurationItems", ci_id)
            if ci is not None and ci["companyID"] != merged.get("companyID"):
                raise failed(f"The configuration item {ci_id} does not belong to company "
                             f"{merged.get('companyID')}.")
        if values.get("dueDateTime") is not None:
            values["dueDateTime"] = _datetime_text(values["dueDateTime"])

    def _additional_item_rules(self, merged: dict) -> None:
        """At most 100 per ticket, each active and of the ticket's company (API-NOTES §5)."""
        ticket = self.db.get("Tickets", merged["ticketID"])
        ci = self.db.get("ConfigurationItems", merged["configurationItemID"])
        others = self.db.by("TicketAdditionalConfigurationItems", ticketID=merged["ticketID"])
        if len(others) >= MAX_ADDITIONAL_ITEMS:
            raise failed(f"A ticket can have at most {MAX_ADDITIONAL_ITEMS} additional configuration items.")
        if ci["companyID"] != ticket["companyID"]:
            raise failed(f"The configuration item {ci['id']} does not belong to company "
                         f"{ticket['companyID']}.")
        if not ci["isActive"]:
            raise failed(f"The configuration item {ci['id']} is inactive.")
        if any(o["configurationItemID"] == ci["id"] for o in others):
            raise failed(f"The configuration item {ci['id']} is already on ticket {ticket['id']}.")

    def after_write(self, entity: str, before: dict | None, record: dict,
                    person_id: int | None = None) -> None:
        """What the server sets on a write, and the callouts it fires."""
        now = now_text(self.clock())
        person_id = person_id if person_id is not None else self.db.api_resource()["id"]
        if entity == "Tickets":
            if before is None:
                record.update(ticketNumber=self.db.ticket_number(), createDate=now,
                              creatorResourceID=person_id, creatorType=1)
            was_complete = before is not None and before["status"] == STATUS_COMPLETE
            if record["status"] == STATUS_COMPLETE and not was_complete:
                record.update(completedDate=now, completedByResourceID=person_id)
            elif record["status"] != STATUS_COMPLETE:
                record.update(completedDate=None, completedByResourceID=None)
            record.update(lastActivityDate=now, lastTrackedModificationDateTime=now,
                          lastActivityResourceID=person_id, lastActivityPersonType=1)
            self.webhooks.ticket_changed("Create" if before is None else "Update", before, record, person_id)
        elif entity == "TicketNotes":
            if before is None:
                record.update(createDateTime=now, creatorResourceID=person_id)
            record["lastActivityDate"] = now
            ticket = self.db.get("Tickets", record["ticketID"])
            if ticket is not None:
                ticket["lastActivityDate"] = now
        elif entity == "ConfigurationItems":
            if before is None:
                record.update(createDate=now, createdByPersonID=person_id)
            record["lastModifiedTime"] = now
        elif entity == "Companies":
            if before is None:
                record["createDate"] = now
            record["lastActivityDate"] = now
        elif entity == "TicketWebhooks":
            if before is None:
                record.update(webhookGUID=new_guid(), isReady=False)
            elif before["isActive"] and not record["isActive"]:
                self.webhooks.deactivated(record)
        elif entity == "TicketWebhookFields":
            self._refresh_ready(record["webhookID"])

    def _refresh_ready(self, webhook_id: int) -> None:
        """A webhook is ready once one of its fields is subscribed (API-NOTES §7)."""
        webhook = self.db.get("TicketWebhooks", webhook_id)
        if webhook is not None:
            webhook["isReady"] = any(f["isSubscribedField"] for f in self.db.by("TicketWebhookFields",
                                                                                webhookID=webhook_id))


def _singular(entity: str) -> str:
    """"Companies" -> "Company", "Tickets" -> "Ticket": the entity names `info` carries."""
    if entity.endswith("ies"):
        return entity[:-3] + "y"
    return entity[:-1] if entity.endswith("s") else entity


def _arg(request: Request, name: str) -> str | None:
    for key, value in request.args.items(multi=True):
        if key.casefold() == name.casefold():
            return value
    return None


def _key(body: dict, name: str) -> Any:
    return next((v for k, v in body.items() if k.casefold() == name.casefold()), None)


def _int_segment(text: str) -> int:
    if not re.fullmatch(r"-?\d{1,18}", text):
        raise no_route()
    return int(text)


def _paging(text: str | None) -> dict:
    try:
        token = json.loads(text or "")
        page_size, after = int(token["pageSize"]), int(token["nextIds"][0])
        previous = [int(i) for i in token.get("previousIds") or []]
    except (ValueError, TypeError, KeyError, IndexError):
        raise failed("The paging parameter is not a valid page token: follow nextPageUrl as given.") from None
    if not 1 <= page_size <= 500:
        raise failed("maxCountOfRecordsToReturn must be between 1 and 500")
    return {"pageSize": page_size, "nextIds": [after], "previousIds": previous}


_INTEGER = {"integer", "long", "short", "byte"}


def _check_type(entity: str, name: str, spec: dict, value: Any) -> Any:
    """`value` for field `name`, or the 500 the API answers for a value of the wrong type or
    over the field's length."""
    if value is None:
        return None
    kind = spec["type"]
    wrong = failed(f"The value {json.dumps(value)[:60]} is not valid for field {name} ({kind}) of {entity}.")
    if kind in _INTEGER:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise wrong
        try:
            return int(value)
        except ValueError:
            raise wrong from None
    if kind in ("double", "decimal"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong
        return value
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.casefold() in ("true", "false"):
            return value.casefold() == "true"
        raise wrong
    if kind == "datetime":
        try:
            parse_datetime(value)
        except ValueError:
            raise wrong from None
        return value
    if not isinstance(value, str):
        raise wrong
    if spec["maxLength"] and len(value) > spec["maxLength"]:
        raise failed(f"The value of field {name} of {entity} is {len(value)} characters long; it can be at "
                     f"most {spec['maxLength']}.")
    return value


def _datetime_text(value: str) -> str:
    return now_text(parse_datetime(value).timestamp())
