"""The simulated ConnectWise Manage API: a WSGI app over a :class:`~.db.Database`.

It enforces what the real API enforces (API-NOTES): Basic auth `company+public:private` and the
`clientId` header, the codebase in the path, page/pageSize limits with `Link` headers,
forward-only paging, the conditions grammar, required fields and max lengths on POST,
JSON-Patch on PATCH, board/status consistency, and the API member's security role. Errors
come back in CW's shapes (samples/*.json). Ticket changes are POSTed to registered callbacks.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode

import attrs
import httpx
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from psabridge import simulation
from psabridge.core import logs
from psabridge.plugins.connectwise import permissions
from psabridge.plugins.connectwise.simulator.conditions import ConditionError, compile_conditions
from psabridge.plugins.connectwise.simulator.db import MEMBER_IDENTIFIER, Database, ref
from psabridge.plugins.connectwise.simulator.spec import SCHEMAS
from psabridge.plugins.connectwise.simulator.validation import (
    Invalid,
    apply_patch,
    check_body,
    error,
    type_errors,
)

log = logs.get_logger(__name__)

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 25
# Fields every record answers to in conditions although they live in `_info` (API-NOTES §2.1).
INFO_FIELDS = frozenset({"lastupdated", "dateentered", "enteredby", "updatedby", "_info"})
SEARCH_FILTERS = frozenset({"conditions", "childconditions", "customfieldconditions", "orderby"})
CALLBACK_TYPES = frozenset({"ticket", "project", "company", "contact", "opportunity", "activity",
                            "schedule", "configuration", "agreement", "invoice", "expense", "member",
                            "productcatalog", "purchaseorder", "time"})


@attrs.define
class Options:
    """What the simulated instance accepts and how strict it is."""

    company_id: str = "psabridge"
    public_key: str = "simPublicKey0001"
    private_key: str = "simPrivateKey-d41d8cd98f00b204"
    client_ids: tuple[str, ...] = ("6c7f1f9e-5c2a-4b9e-9d3a-2f2f8a1e0b11",)
    codebase: str = "v2025_1/"
    require_client_id: bool = True  # real servers enforce it (API-NOTES §1)
    enforce_role: bool = True  # 403 when the member's role lacks what the endpoint needs
    system_reads_allowed: bool = True  # may the member read /system/members and role settings?
    # Unverified: whether CW refuses a ticket on a board without a default team. True is the
    # stricter world in which the warning about boards without a default team matters.
    require_default_team: bool = True
    callback_timeout: float = 2.0


class HttpError(Exception):
    """Answer with CW's error body: {"code", "message"[, "errors"]}."""

    def __init__(self, status: int, code: str, message: str, errors: list | None = None,
                 with_errors: bool = False):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.errors, self.with_errors = errors, with_errors

    def response(self) -> Response:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.errors is not None or self.with_errors:
            body["errors"] = self.errors
        return _json_response(body, self.status)


def not_found(kind: str, record_id: Any) -> HttpError:
    return HttpError(404, "NotFound", f"{kind} {record_id} not found")


def _json_response(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(body), status, headers=headers, content_type="application/json; charset=utf-8")


def endpoint_template(method: str, path: str) -> str:
    """"GET /v2025_1/apis/3.0/service/tickets/12/notes" -> "GET /service/tickets/{id}/notes"."""
    path = re.sub(r"^/[^/]+/apis/3\.0", "", path)
    return f"{method} " + re.sub(r"/\d+(?=/|$)", "/{id}", path)


Handler = Callable[..., Response]


class ConnectWiseApp:
    def __init__(self, db: Database, options: Options | None = None):
        self.db = db
        self.options = options or Options()
        self.deliveries: list[dict] = []  # callback POSTs made: {"url", "payload", "status"|"error"}
        self._delivery_threads: list[threading.Thread] = []
        self.routes: list[tuple[str, re.Pattern, Handler]] = []
        self._add_routes()

    # -- WSGI ------------------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        request = simulation.BoundedRequest(environ)
        try:
            response = self.dispatch(request)
        except HttpError as exc:
            response = exc.response()
        except HTTPException as exc:  # werkzeug's own refusals, e.g. 413 for a body too big
            response = HttpError(exc.code or 400, "ConnectWiseApi", exc.description or exc.name).response()
        except Invalid as exc:
            response = HttpError(400, "InvalidObject", str(exc), exc.errors).response()
        except ConditionError as exc:
            response = HttpError(400, "ApiFindCondition", str(exc), with_errors=True).response()
        response.headers["x-cw-request-id"] = str(uuid.uuid4())
        response.headers["api-current-version"] = "2025.1"
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        companyinfo = re.fullmatch(r"/login/companyinfo/([^/]+)/?", request.path, re.IGNORECASE)
        if companyinfo:
            return self.company_info(companyinfo.group(1))
        prefix = re.match(r"^/([^/]+/)apis/3\.0/(.*)$", request.path)
        if not prefix or prefix.group(1).lower() not in (self.options.codebase.lower(), "v4_6_release/"):
            return Response("Cannot route. Codebase/company is invalid", 404, content_type="text/plain")
        member = self.authenticate(request)
        path = prefix.group(2).strip("/")
        for method, pattern, handler in self.routes:
            match = pattern.fullmatch(path)
            if match and method == request.method:
                self.authorize(member, request.method, path)
                with self.db.lock:
                    return handler(request, *(int(g) for g in match.groups()))
        if any(p.fullmatch(path) for _, p, _ in self.routes):
            raise HttpError(405, "ConnectWiseApi", f"The requested resource does not support http "
                                                   f"method '{request.method}'.")
        raise HttpError(404, "ConnectWiseApi", "The endpoint does not exist.")

    def route(self, method: str, template: str, handler: Handler) -> None:
        pattern = re.escape(template).replace(r"\{id\}", r"(\d+)")
        self.routes.append((method, re.compile(pattern, re.IGNORECASE), handler))

    # -- auth ------------------------------------------------------------------------------------

    def company_info(self, company: str) -> Response:
        if company.casefold() != self.options.company_id.casefold():
            return _json_response(None)  # CW answers null for an unknown company (DJ)
        return _json_response({"CompanyName": "psabridge simulator", "Codebase": self.options.codebase,
                               "VersionCode": "v2025.1", "VersionNumber": "v4.6.2025.1",
                               "CompanyID": self.options.company_id, "IsCloud": True})

    def authenticate(self, request: Request) -> dict:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            raise HttpError(401, "Unauthorized", "Authorization header is missing or not Basic.")
        try:
            user, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise HttpError(401, "Unauthorized", "Authorization header cannot be decoded.") from None
        company, _, public_key = user.partition("+")
        o = self.options
        if (company.casefold(), public_key, secret) != (o.company_id.casefold(), o.public_key, o.private_key):
            raise HttpError(401, "ConnectWiseApi", "UserNotAuthenticated")
        client_id = request.headers.get("clientId")
        if o.require_client_id and client_id not in o.client_ids:
            raise HttpError(401, "Unauthorized", "A valid clientId header is required "
                                                 "(register one at developer.connectwise.com).")
        return next(m for m in self.db.members.values() if m["identifier"] == MEMBER_IDENTIFIER)

    def authorize(self, member: dict, method: str, path: str) -> None:
        if path.lower().startswith(("system/members", "system/securityroles")):
            if not self.options.system_reads_allowed:
                raise HttpError(403, "Forbidden", "You do not have access to security settings.")
            return
        need = permissions.needed_for(method, path)
        if need and self.options.enforce_role:
            self.require(member, *need)

    def require(self, member: dict, function: str, action: str) -> None:
        settings = self.db.role_settings.get(member["securityRole"]["id"], [])
        line = next((s for s in settings if s["moduleFunctionName"] == function), {})
        if line.get(f"{action}Level") != "All":
            raise HttpError(403, "Forbidden", f"The security role does not allow {action} on "
                                              f"{line.get('moduleName', '')} > {function}.")

    # -- listing -----------------------------------------------------------------------------------

    def listing(self, request: Request, rows: Iterable[dict], schema: str,
                body: dict | None = None) -> Response:
        """Filter, order, page and project `rows` as CW's list endpoints do."""
        args = {k.lower(): v for k, v in request.args.items()}
        filters = {k.lower(): v for k, v in (body or {}).items()}
        conditions = filters.get("conditions", args.get("conditions"))
        child = filters.get("childconditions", args.get("childconditions"))
        known = self._known(schema)
        predicates = [compile_conditions(conditions, resolve, known),
                      compile_conditions(child, resolve, known)]
        selected = [r for r in rows if all(p(r) for p in predicates)]
        page_size = _int_arg(args, "pagesize", DEFAULT_PAGE_SIZE, minimum=1)
        page_size = min(page_size, MAX_PAGE_SIZE)  # CW caps rather than refuses
        order_by = filters.get("orderby", args.get("orderby"))
        if request.headers.get("pagination-type", "").lower() == "forward-only":
            if order_by:
                raise HttpError(400, "InvalidObject", "orderBy is not supported with forward-only "
                                                      "pagination.", with_errors=True)
            page, link = self._forward_only_page(request, selected, page_size, args)
        else:
            selected = sorted(selected, key=lambda r: r["id"])
            for field, descending in reversed(_parse_order(order_by, known)):
                selected.sort(key=lambda r, f=field: _sort_key(resolve(r, f)), reverse=descending)
            page, link = self._navigable_page(request, selected, page_size, args)
        fields = args.get("fields")
        body_rows = [project(r, fields) for r in page] if fields else page
        return _json_response(body_rows, headers={"Link": link})

    def _navigable_page(self, request, rows, page_size, args) -> tuple[list[dict], str]:
        page = _int_arg(args, "page", 1, minimum=1)
        last = max(1, -(-len(rows) // page_size))
        chunk = rows[(page - 1) * page_size: page * page_size]
        rels = [("first", 1)]
        if page > 1:
            rels.append(("prev", min(page - 1, last)))
        if page < last:
            rels.append(("next", page + 1))
        rels.append(("last", last))
        return chunk, ", ".join(f'<{self._url(request, page=n)}>; rel="{rel}"' for rel, n in rels)

    def _forward_only_page(self, request, rows, page_size, args) -> tuple[list[dict], str]:
        after = _int_arg(args, "pageid", 0, minimum=0)
        remaining = sorted((r for r in rows if r["id"] > after), key=lambda r: r["id"])
        chunk = remaining[:page_size]
        if len(remaining) > page_size:
            return chunk, f'<{self._url(request, pageId=chunk[-1]["id"], page=None)}>; rel="next"'
        return chunk, ""  # an empty Link header marks the last page (CTC's reading)

    @staticmethod
    def _url(request: Request, **changes: Any) -> str:
        params = {k: v for k, v in request.args.items()}
        for key, value in changes.items():
            params.pop(key, None)
            if value is not None:
                params[key] = value
        return f"{request.base_url}?{urlencode(params)}"

    @staticmethod
    def _known(schema: str) -> Callable[[str], bool]:
        fields = {f.lower() for f in SCHEMAS[schema]["fields"]} | INFO_FIELDS | {"id"}
        return lambda field: field.split("/")[0].lower() in fields

    # -- helpers -----------------------------------------------------------------------------------

    def one(self, table: dict[int, dict], record_id: int, kind: str) -> dict:
        record = table.get(record_id)
        if record is None:
            raise not_found(kind, record_id)
        return record

    def resolve_ref(self, table: dict[int, dict], value: Any, resource: str, field: str,
                    name_key: str = "name", allowed: Iterable[int] | None = None) -> dict | None:
        """Turn a reference as sent ({id} or {name}) into the stored record, or raise Invalid."""
        if value in (None, {}):
            return None
        record = None
        if isinstance(value, dict) and value.get("id") is not None:
            record = table.get(value["id"])
        elif isinstance(value, dict) and (value.get("name") or value.get("identifier")):
            wanted = str(value.get("name") or value.get("identifier")).casefold()
            record = next((r for r in table.values()
                           if str(r.get(name_key) or r.get("identifier") or "").casefold() == wanted), None)
        if record is None or (allowed is not None and record["id"] not in set(allowed)):
            raise Invalid(resource, [error("InvalidField", f"The {field} reference is not valid.",
                                           resource, field)])
        return record

    # -- routes ------------------------------------------------------------------------------------

    def _add_routes(self) -> None:
        db, r = self.db, self.route
        simple = {
            "company/companies/types": (db.company_types, "CompanyType"),
            "company/companies/statuses": (db.company_statuses, "CompanyStatus"),
            "company/configurations/types": (db.configuration_types, "ConfigurationType"),
            "company/configurations/statuses": (db.configuration_statuses, "ConfigurationStatus"),
            "procurement/manufacturers": (db.manufacturers, "Manufacturer"),
            "service/boards": (db.boards, "Board"),
            "service/priorities": (db.priorities, "Priority"),
            "service/sources": (db.sources, "Source"),
            "system/members": (db.members, "Member"),
            "system/securityroles": (db.security_roles, "SecurityRole"),
            "system/callbacks": (db.callbacks, "CallbackEntry"),
            "company/companies": (db.companies, "Company"),
            "company/configurations": (db.configurations, "CompanyConfiguration"),
            "service/tickets": (db.tickets, "Ticket"),
        }
        for path, (table, schema) in simple.items():
            r("GET", path, self._lister(table, schema))
            r("GET", path + "/count", self._counter(table, schema))
            r("GET", path + "/{id}", self._getter(table, SCHEMAS[schema]["resource"]))
        for child, (table, schema) in {
            "statuses": (db.board_statuses, "BoardStatus"), "types": (db.board_types, "BoardType"),
            "subtypes": (db.board_subtypes, "BoardSubType"), "teams": (db.board_teams, "BoardTeam"),
        }.items():
            r("GET", "service/boards/{id}/" + child, self._board_child_lister(table, schema))
            r("GET", "service/boards/{id}/" + child + "/{id}", self._board_child_getter(table, schema))
        r("GET", "company/configurations/types/{id}/questions", self.list_type_questions)
        r("GET", "system/securityroles/{id}/settings", self.list_role_settings)
        r("GET", "system/info", self.system_info)
        r("POST", "procurement/manufacturers", self.create_manufacturer)
        r("POST", "company/configurations", self.create_configuration)
        r("PATCH", "company/configurations/{id}", self.patch_configuration)
        r("DELETE", "company/configurations/{id}", self._deleter(db.configurations, "Configuration"))
        r("POST", "service/tickets", self.create_ticket)
        r("POST", "service/tickets/search", self.search_tickets)
        r("PATCH", "service/tickets/{id}", self.patch_ticket)
        r("DELETE", "service/tickets/{id}", self.delete_ticket)
        r("GET", "service/tickets/{id}/notes", self.list_notes)
        r("POST", "service/tickets/{id}/notes", self.add_note)
        r("GET", "service/tickets/{id}/configurations", self.list_ticket_configurations)
        r("POST", "service/tickets/{id}/configurations", self.attach_configuration)
        r("DELETE", "service/tickets/{id}/configurations/{id}", self.detach_configuration)
        r("POST", "system/callbacks", self.create_callback)
        r("PATCH", "system/callbacks/{id}", self.patch_callback)
        r("DELETE", "system/callbacks/{id}", self._deleter(db.callbacks, "Callback"))

    def _lister(self, table, schema) -> Handler:
        return lambda request: self.listing(request, list(table.values()), schema)

    def _counter(self, table, schema) -> Handler:
        def count(request):
            predicate = compile_conditions(request.args.get("conditions"), resolve, self._known(schema))
            return _json_response({"count": sum(1 for row in table.values() if predicate(row))})
        return count

    def _getter(self, table, kind) -> Handler:
        return lambda request, record_id: _json_response(self.one(table, record_id, kind.capitalize()))

    def _deleter(self, table, kind) -> Handler:
        def delete(request, record_id):
            self.one(table, record_id, kind)
            del table[record_id]
            return Response(status=204)
        return delete

    def _board_child_lister(self, table, schema) -> Handler:
        def list_children(request, board_id):
            self.one(self.db.boards, board_id, "Board")
            rows = [row for row in table.values() if _board_id(row) == board_id]
            return self.listing(request, rows, schema)
        return list_children

    def _board_child_getter(self, table, schema) -> Handler:
        def get_child(request, board_id, child_id):
            record = table.get(child_id)
            if record is None or _board_id(record) != board_id:
                raise not_found(SCHEMAS[schema]["resource"], child_id)
            return _json_response(record)
        return get_child

    def list_type_questions(self, request, type_id):
        self.one(self.db.configuration_types, type_id, "ConfigurationType")
        rows = [q for q in self.db.configuration_type_questions.values()
                if q["configurationType"]["id"] == type_id]
        return self.listing(request, rows, "ConfigurationTypeQuestion")

    def list_role_settings(self, request, role_id):
        self.one(self.db.security_roles, role_id, "SecurityRole")
        return self.listing(request, self.db.role_settings.get(role_id, []), "SecurityRoleSetting")

    def system_info(self, request):
        return _json_response({"version": "v2025.1.104392", "isCloud": True, "cloudRegion": "NA",
                               "serverTimeZone": "Eastern Standard Time", "licenseBits": []})

    # -- configurations ------------------------------------------------------------------------------

    def create_manufacturer(self, request):
        body = _body(request)
        check_body("Manufacturer", body)
        if any(m["name"].casefold() == body["name"].casefold() for m in self.db.manufacturers.values()):
            raise Invalid("manufacturer", [error("ObjectExists", "A manufacturer with this name "
                                                 "already exists", "manufacturer", "name")])
        record = self.db.insert(self.db.manufacturers, {"name": body["name"],
                                                        "inactiveFlag": bool(body.get("inactiveFlag"))})
        return _json_response(record, 201)

    def create_configuration(self, request):
        body = _body(request)
        check_body("CompanyConfiguration", body)
        record = {k: v for k, v in body.items() if k in SCHEMAS["CompanyConfiguration"]["fields"]}
        record.pop("id", None)
        record.pop("_info", None)
        self._resolve_configuration_refs(record)
        ctype = self.db.configuration_types[record["type"]["id"]]
        self._check_required_answers(ctype, body.get("questions") or [])
        record.setdefault("activeFlag", True)
        created = self.db.insert(self.db.configurations, record)
        return _json_response(created, 201)

    def _resolve_configuration_refs(self, record: dict) -> None:
        db = self.db
        company = self.resolve_ref(db.companies, record.get("company"), "configuration", "company")
        if company is not None:
            record["company"] = ref(company, "identifier", "name")
        ctype = self.resolve_ref(db.configuration_types, record.get("type"), "configuration", "type")
        if ctype is not None:
            record["type"] = ref(ctype)
        status = self.resolve_ref(db.configuration_statuses, record.get("status"), "configuration", "status",
                                  name_key="description")
        if status is None and "status" not in record:
            status = next((s for s in db.configuration_statuses.values() if s["defaultFlag"]), None)
        if status is not None:
            record["status"] = {"id": status["id"], "name": status["description"]}
        manufacturer = self.resolve_ref(db.manufacturers, record.get("manufacturer"), "configuration",
                                        "manufacturer")
        if manufacturer is not None:
            record["manufacturer"] = ref(manufacturer)

    def _check_required_answers(self, ctype: dict, questions: list[dict]) -> None:
        for number, question in enumerate(questions, 1):
            if not isinstance(question.get("questionId"), int | None) or \
                    isinstance(question.get("questionId"), bool):
                raise Invalid("configuration", [error(
                    "InvalidField", f"The questions item {number} questionId must be a whole number.",
                    "configuration", "questions")])
        answered = {q.get("questionId") for q in questions if q.get("answer") not in (None, "")}
        missing = [q for q in self.db.configuration_type_questions.values()
                   if q["configurationType"]["id"] == ctype["id"] and q["requiredFlag"]
                   and not q["inactiveFlag"] and q["id"] not in answered]
        if missing:
            raise Invalid("configuration", [
                error("MissingRequiredField", f"The answer to question '{q['question']}' is required.",
                      "configuration", "questions") for q in missing])

    def patch_configuration(self, request, record_id):
        record = self.one(self.db.configurations, record_id, "Configuration")
        updated, changed = apply_patch("CompanyConfiguration", record, _body(request))
        self._resolve_configuration_refs(updated)
        record.clear()
        record.update(updated)
        if changed:
            self.db.touch(record)
        return _json_response(record)

    # -- tickets -------------------------------------------------------------------------------------

    def search_tickets(self, request):
        body = _body(request)
        if not isinstance(body, dict):
            raise HttpError(400, "InvalidObject", "The search body is a JSON object.", with_errors=True)
        # FilterValues: every filter is a string, like the query parameters it stands for.
        problems = [error("InvalidField", f"The {name} field must be text.", "filterValues", name)
                    for name, value in body.items()
                    if name.lower() in SEARCH_FILTERS and not isinstance(value, str | None)]
        if problems:
            raise Invalid("filterValues", problems)
        return self.listing(request, list(self.db.tickets.values()), "Ticket", body=body)

    def create_ticket(self, request):
        body = _body(request)
        check_body("Ticket", body)
        schema_fields = SCHEMAS["Ticket"]["fields"]
        record = {k: v for k, v in body.items() if k in schema_fields}
        for transient in ("id", "_info", "initialDescription", "initialInternalAnalysis",
                          "initialResolution", "processNotifications", "skipCallback",
                          "closedFlag", "closedDate", "closedBy"):
            record.pop(transient, None)
        record.setdefault("recordType", "ServiceTicket")
        self._resolve_ticket_refs(record, creating=True)
        record["closedFlag"] = False
        ticket = self.db.insert(self.db.tickets, record)
        self._follow_status(ticket)
        if body.get("initialDescription"):
            self._insert_note(ticket, body["initialDescription"], detail=True)
        if not body.get("skipCallback"):
            self.notify("ticket", "added", ticket)
        return _json_response(ticket, 201)

    def _resolve_ticket_refs(self, record: dict, creating: bool) -> None:
        db, t = self.db, "ticket"
        company = self.resolve_ref(db.companies, record.get("company"), t, "company")
        record["company"] = ref(company, "identifier", "name")
        board = self.resolve_ref(db.boards, record.get("board"), t, "board") or next(iter(db.boards.values()))
        record["board"] = ref(board)
        status_ids = [s["id"] for s in db.statuses_of(board["id"])]
        status = self.resolve_ref(db.board_statuses, record.get("status"), t, "status", allowed=status_ids)
        status = status or (db.default_status(board["id"]) if creating else None)
        if status is None:
            raise Invalid(t, [error("MissingRequiredField", f"The status field is required: board "
                                    f"{board['name']} has no default status.", t, "status")])
        record["status"] = {"id": status["id"], "name": status["name"], "sort": status["sortOrder"]}
        teams = [tm["id"] for tm in db.board_teams.values() if tm["boardId"] == board["id"]]
        team = self.resolve_ref(db.board_teams, record.get("team"), t, "team", allowed=teams)
        team = team or (db.default_team(board["id"]) if creating else None)
        if team is None and creating and self.options.require_default_team:
            raise Invalid(t, [error("MissingRequiredField", f"The team field is required: board "
                                    f"{board['name']} has no default team.", t, "team")])
        if team is not None:
            record["team"] = ref(team)
        for field, table in (("type", db.board_types), ("subType", db.board_subtypes)):
            allowed = [row["id"] for row in table.values() if row["board"]["id"] == board["id"]]
            found = self.resolve_ref(table, record.get(field), t, field, allowed=allowed)
            if found is not None:
                record[field] = ref(found)
        for field, table in (("priority", db.priorities), ("source", db.sources)):
            found = self.resolve_ref(table, record.get(field), t, field)
            if found is not None:
                record[field] = ref(found)

    def _follow_status(self, ticket: dict) -> None:
        """closedFlag mirrors the status's closedStatus; closedDate/closedBy follow it."""
        status = self.db.board_statuses[ticket["status"]["id"]]
        closed = bool(status["closedStatus"])
        if closed and not ticket.get("closedFlag"):
            ticket.update(closedFlag=True, closedDate=self.db.clock(), closedBy=MEMBER_IDENTIFIER)
        elif not closed:
            ticket.update(closedFlag=False, closedDate=None, closedBy=None)

    def patch_ticket(self, request, ticket_id):
        ticket = self.one(self.db.tickets, ticket_id, "Ticket")
        operations = _body(request)
        updated, changed = apply_patch("Ticket", ticket, operations)
        # closedFlag is read-side: CW may take the PATCH and not close (API-NOTES, Siemplify).
        updated["closedFlag"] = ticket.get("closedFlag")
        self._resolve_ticket_refs(updated, creating=False)
        new_status = self.db.board_statuses[updated["status"]["id"]]
        if new_status["closedStatus"] and not ticket.get("closedFlag"):
            member = next(iter(self.db.members.values()))
            if self.options.enforce_role:
                self.require(member, "Close Service Tickets", "edit")
        ticket.clear()
        ticket.update(updated)
        self._follow_status(ticket)
        if changed:
            self.db.touch(ticket)
            skip = any(op.get("path", "").lstrip("/") == "skipCallback" and op.get("value")
                       for op in operations if isinstance(op, dict))
            if not skip:
                self.notify("ticket", "updated", ticket)
        return _json_response(ticket)

    def delete_ticket(self, request, ticket_id):
        ticket = self.one(self.db.tickets, ticket_id, "Ticket")
        del self.db.tickets[ticket_id]
        self.notify("ticket", "deleted", ticket)
        return Response(status=204)

    def _insert_note(self, ticket: dict, text: str, detail: bool = True, internal: bool = False) -> dict:
        return self.db.insert(self.db.ticket_notes, {
            "ticketId": ticket["id"], "text": text, "detailDescriptionFlag": detail,
            "internalAnalysisFlag": internal, "resolutionFlag": False,
            "member": {"id": 1, "identifier": MEMBER_IDENTIFIER}, "dateCreated": self.db.clock(),
            "createdBy": MEMBER_IDENTIFIER})

    def list_notes(self, request, ticket_id):
        self.one(self.db.tickets, ticket_id, "Ticket")
        rows = [n for n in self.db.ticket_notes.values() if n["ticketId"] == ticket_id]
        return self.listing(request, rows, "ServiceNote")

    def add_note(self, request, ticket_id):
        ticket = self.one(self.db.tickets, ticket_id, "Ticket")
        body = _body(request)
        check_body("ServiceNote", body)
        if not body.get("text"):
            raise Invalid("serviceNote", [error("MissingRequiredField", "The text field is required.",
                                                "serviceNote", "text")])
        flags = ("detailDescriptionFlag", "internalAnalysisFlag", "resolutionFlag")
        if not any(body.get(flag) for flag in flags):
            raise Invalid("serviceNote", [error("InvalidObject", "At least one of detailDescriptionFlag, "
                                                "internalAnalysisFlag or resolutionFlag must be true.",
                                                "serviceNote", "detailDescriptionFlag")])
        note = self._insert_note(ticket, body["text"], bool(body.get("detailDescriptionFlag")),
                                 bool(body.get("internalAnalysisFlag")))
        self.db.touch(ticket)
        self.notify("ticket", "updated", ticket)
        return _json_response(note, 201)

    def list_ticket_configurations(self, request, ticket_id):
        self.one(self.db.tickets, ticket_id, "Ticket")
        rows = [self._configuration_ref(cid) for cid in self.db.ticket_configurations.get(ticket_id, [])
                if cid in self.db.configurations]
        return self.listing(request, rows, "ConfigurationReference")

    def _configuration_ref(self, configuration_id: int) -> dict:
        configuration = self.db.configurations[configuration_id]
        return {"id": configuration_id, "deviceIdentifier": configuration.get("deviceIdentifier"),
                "_info": dict(configuration["_info"])}

    def attach_configuration(self, request, ticket_id):
        ticket = self.one(self.db.tickets, ticket_id, "Ticket")
        body = _body(request)
        if isinstance(body, dict) and (problems := type_errors("ConfigurationReference", body)):
            raise Invalid("configuration", problems)
        wanted = body.get("id") if isinstance(body, dict) else None
        if wanted is None and isinstance(body, dict) and body.get("deviceIdentifier"):
            wanted = next((c["id"] for c in self.db.configurations.values()
                           if c.get("deviceIdentifier") == body["deviceIdentifier"]), None)
        if wanted is None:
            raise Invalid("configuration", [error("MissingRequiredField", "id or deviceIdentifier is "
                                                  "required.", "configuration", "id")])
        if wanted not in self.db.configurations:
            raise not_found("Configuration", wanted)
        attached = self.db.ticket_configurations.setdefault(ticket_id, [])
        if wanted not in attached:
            attached.append(wanted)
        self.db.touch(ticket)
        return _json_response(self._configuration_ref(wanted), 201)

    def detach_configuration(self, request, ticket_id, configuration_id):
        attached = self.db.ticket_configurations.get(ticket_id, [])
        if configuration_id not in attached:
            raise not_found("Configuration", configuration_id)
        attached.remove(configuration_id)
        return Response(status=204)

    # -- callbacks -----------------------------------------------------------------------------------

    def create_callback(self, request):
        body = _body(request)
        check_body("CallbackEntry", body)
        _check_callback(body)
        entry = {"url": body["url"], "objectId": 1,  # owner level: CW stores 1 whatever was sent
                 "type": body["type"].lower(), "level": "owner", "description": body.get("description"),
                 "memberId": next(iter(self.db.members)),
                 "payloadVersion": body.get("payloadVersion", "3.0.0"),
                 "inactiveFlag": bool(body.get("inactiveFlag")), "isSoapCallbackFlag": False,
                 "isSelfSuppressedFlag": bool(body.get("isSelfSuppressedFlag")),
                 "connectWiseID": str(uuid.uuid4())}
        if any((c["url"], c["type"], c["level"], c["objectId"]) ==
               (entry["url"], entry["type"], entry["level"], entry["objectId"])
               for c in self.db.callbacks.values()):
            raise Invalid("callbackEntry", [error("ObjectExists", "A matching callback entry already exists",
                                                  "callbackEntry", "objectId")])
        return _json_response(self.db.insert(self.db.callbacks, entry), 201)

    def patch_callback(self, request, callback_id):
        record = self.one(self.db.callbacks, callback_id, "Callback")
        updated, changed = apply_patch("CallbackEntry", record, _body(request))
        _check_callback(updated)  # a callback changed into one CW could not call is refused
        record.clear()
        record.update(updated)
        if changed:
            self.db.touch(record)
        return _json_response(record)

    def notify(self, object_type: str, action: str, record: dict) -> None:
        """POST CW's callback payload to every active registration for `object_type`, each from
        its own thread with a short timeout, so a slow receiver never blocks the API."""
        for entry in self.db.callbacks.values():
            if entry["type"] != object_type or entry.get("inactiveFlag"):
                continue
            payload = {
                "MessageId": str(uuid.uuid4()), "FromUrl": "simulator.local",
                "CompanyId": self.options.company_id, "MemberId": MEMBER_IDENTIFIER,
                "Action": action, "Type": object_type, "ID": record["id"],
                "ProductInstanceId": "psabridge-simulator", "PartnerId": "psabridge-simulator",
                "Entity": None if action == "deleted" else json.dumps(record),
                "Metadata": {"key_url": f"https://simulator.local/{self.options.codebase}/system/"
                                        f"callbackkey/index.rails?companyName={self.options.company_id}"
                                        f"&id={entry['connectWiseID']}"},
                "CallbackObjectRecId": entry["id"],
            }
            # CW appends the record id to a URL ending in "recordId=" (API-NOTES §5).
            url = entry["url"] + str(record["id"]) if entry["url"].endswith("=") else entry["url"]
            thread = threading.Thread(target=self._deliver, args=(url, payload), daemon=True)
            self._delivery_threads.append(thread)
            thread.start()

    def _deliver(self, url: str, payload: dict) -> None:
        outcome: dict[str, Any] = {"url": url, "payload": payload}
        try:
            response = httpx.post(url, json=payload, timeout=self.options.callback_timeout)
            outcome["status"] = response.status_code
        except httpx.HTTPError as exc:
            outcome["error"] = type(exc).__name__
        self.deliveries.append(outcome)

    def wait_for_deliveries(self, timeout: float = 5.0) -> list[dict]:
        """Join the callback threads started so far (for tests); return every delivery."""
        for thread in list(self._delivery_threads):
            thread.join(timeout)
        return self.deliveries


# -- record helpers ------------------------------------------------------------------------------


def resolve(record: dict, field: str) -> Any:
    """The value of `field` (`status/id`, `lastUpdated`) in `record`; a list inside an array."""
    parts = field.split("/")
    head = parts[0]
    if head.lower() in INFO_FIELDS and head != "_info":
        info = record.get("_info") or {}
        return next((v for k, v in info.items() if k.lower() == head.lower()), None)
    value: Any = record
    for part in parts:
        if isinstance(value, list):
            value = [_get(item, part) for item in value]
        else:
            value = _get(value, part)
    return value


def _get(value: Any, key: str) -> Any:
    if not isinstance(value, dict):
        return None
    if key in value:
        return value[key]
    return next((v for k, v in value.items() if k.lower() == key.lower()), None)


def project(record: dict, fields: str) -> dict:
    """Keep only `fields` ("id,name,status/id"), nested via `/`, as CW's `fields` parameter does."""
    result: dict = {}
    for field in (f.strip() for f in fields.split(",") if f.strip()):
        source, target = record, result
        parts = field.split("/")
        for part in parts[:-1]:
            source = _get(source, part)
            if not isinstance(source, dict):
                break
            target = target.setdefault(part, {})
        else:
            value = _get(source, parts[-1])
            if value is not None:
                target[parts[-1]] = value
    return result


def _parse_order(order_by: str | None, known: Callable[[str], bool]) -> list[tuple[str, bool]]:
    if not order_by:
        return []
    keys = []
    for part in order_by.split(","):
        words = part.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise HttpError(400, "InvalidObject", f"Invalid orderBy: {order_by}", with_errors=True)
        if not known(words[0]):
            raise ConditionError(f"{words[0]} is not a recognized name.")
        keys.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
    return keys


def _sort_key(value: Any) -> tuple:
    if value is None:
        return (0, "")
    # Numbers before strings: a field holding both (bad data a test planted) still sorts.
    if isinstance(value, bool | int | float):
        return (1, value, "")
    if isinstance(value, str):
        return (2, 0, value.casefold())
    return (2, 0, str(value))


def _int_arg(args: dict, name: str, default: int, minimum: int) -> int:
    raw = args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, "InvalidObject", f"{name} must be an integer.", with_errors=True) from None
    if value < minimum:
        raise HttpError(400, "InvalidObject", f"{name} must be at least {minimum}.", with_errors=True)
    return value


def _board_id(row: dict) -> int | None:
    return row["board"]["id"] if isinstance(row.get("board"), dict) else row.get("boardId")


def _check_callback(entry: dict) -> None:
    """Raise `Invalid` unless CW could call `entry`: an http(s) URL, a known type, owner level."""
    problems = []
    try:
        url = httpx.URL(entry["url"]) if isinstance(entry["url"], str) else None
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        problems.append(error("InvalidField", "Invalid URL", "callbackEntry", "url"))
    if str(entry["type"]).lower() not in CALLBACK_TYPES:
        problems.append(error("InvalidField", "Unrecognized type", "callbackEntry", "type"))
    if str(entry["level"]).lower() != "owner":
        problems.append(error("InvalidObject", "Unrecognized level for type, see documentation for "
                              "supported levels for each type", "callbackEntry", "level"))
    if problems:
        raise Invalid("callbackEntry", problems)


def _body(request: Request) -> Any:
    """The JSON body, None when there is none; CW's 400 when it is not strict JSON or nests too
    deeply (werkzeug answers 413 for one over the size limit)."""
    data = request.get_data()
    if not data:
        return None
    try:
        return simulation.parse_json(data)
    except simulation.UnreadableJson as exc:
        raise HttpError(400, "InvalidObject", f"The request body cannot be read: {exc}.",
                        with_errors=True) from None
