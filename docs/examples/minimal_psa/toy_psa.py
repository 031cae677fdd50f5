"""ToyPSA: a made-up PSA with a small JSON API, standing in for the remote side of the example.

Real connectors talk to a real product; this one exists so that the example connector in
`minimal_psa/__init__.py` has something to talk to in tests. It is a WSGI app, so a test reaches
it in-process with `httpx.WSGITransport(app=ToyPsa())`. Its API:

    Authorization: Bearer <api key>           every request; anything else is a 401
    GET   /companies?page=N                   {"items": [...], "next": N+1 or null}, 50 a page
    GET   /types                              [{"id", "name"}]
    GET   /configurations?company_id=C&page=N paged like /companies
    GET   /configurations/ID                  404 if there is none
    POST  /configurations                     the new configuration, with its id
    PATCH /configurations/ID                  {field: value, ...} -> the configuration
    GET   /ticket-options                     {"queues", "statuses", "priorities"}: [{"id", "name", ...}]
    GET   /tickets?reference=R                [tickets whose reference is exactly R]
    GET   /tickets?changed_after=ISO&page=N   paged, oldest change first
    POST  /tickets                            the new ticket
    GET   /tickets/ID                         404 if there is none
    PATCH /tickets/ID                         {"status_id": ...} -> the ticket
    POST  /tickets/ID/notes                   {"text": ...}
    GET   /webhooks                           [{"id", "url"}]
    POST  /webhooks                           {"url", "secret"} -> {"id"}
    DELETE /webhooks/ID

Tickets are routed to a queue; statuses are the same for every queue. A registered webhook is
POSTed {"event_id", "ticket_id"} when a ticket changes, signed with its secret:
`X-Toy-Signature: <hex HMAC-SHA256 of the body>` (`callbacks_for` builds them, for tests).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import itertools
import json
import uuid

from werkzeug.exceptions import HTTPException, NotFound, Unauthorized
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

PAGE_SIZE = 50
OPTIONS = {
    "queues": [{"id": "1", "name": "Help Desk"}, {"id": "2", "name": "Monitoring"}],
    "statuses": [{"id": "10", "name": "New", "closed": False, "default": True},
                 {"id": "11", "name": "Closed", "closed": True, "default": False}],
    "priorities": [{"id": "1", "name": "High"}, {"id": "2", "name": "Normal"}],
}

ROUTES = Map([
    Rule("/companies", endpoint="companies", methods=["GET"]),
    Rule("/types", endpoint="types", methods=["GET"]),
    Rule("/configurations", endpoint="configurations", methods=["GET", "POST"]),
    Rule("/configurations/<id>", endpoint="configuration", methods=["GET", "PATCH"]),
    Rule("/ticket-options", endpoint="ticket_options", methods=["GET"]),
    Rule("/tickets", endpoint="tickets", methods=["GET", "POST"]),
    Rule("/tickets/<id>", endpoint="ticket", methods=["GET", "PATCH"]),
    Rule("/tickets/<id>/notes", endpoint="notes", methods=["POST"]),
    Rule("/webhooks", endpoint="webhooks", methods=["GET", "POST"]),
    Rule("/webhooks/<id>", endpoint="webhook", methods=["DELETE"]),
])


class ToyPsa:
    def __init__(self, api_key: str = "toy-api-key-0001", companies: int = 3):
        self.api_key = api_key
        self.ids = itertools.count(100)
        self.companies: dict[str, dict] = {}
        self.configurations: dict[str, dict] = {}
        self.tickets: dict[str, dict] = {}
        self.notes: dict[str, list[str]] = {}
        self.webhooks: dict[str, dict] = {}
        for n in range(companies):
            self.add_company(f"Client {n + 1}")

    def add_company(self, name: str) -> dict:
        return self._insert(self.companies, {"name": name, "identifier": name.replace(" ", "")})

    def add_ticket(self, company_id: str, summary: str) -> dict:
        return self._insert(self.tickets, {"summary": summary, "company_id": company_id, "queue_id": "1",
                                           "status_id": "10", "closed": False, "reference": None,
                                           "configuration_ids": [], "updated": _now()})

    def _insert(self, table: dict, record: dict) -> dict:
        record = {"id": str(next(self.ids)), **record}
        table[record["id"]] = record
        return record

    # -- WSGI ----------------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        request = Request(environ)
        try:
            if request.headers.get("Authorization") != f"Bearer {self.api_key}":
                raise Unauthorized("unknown API key")
            endpoint, args = ROUTES.bind_to_environ(environ).match()
            body = getattr(self, f"on_{endpoint}")(request, **args)
            response = Response(json.dumps(body), content_type="application/json")
        except HTTPException as exc:
            response = Response(json.dumps({"error": exc.description}), exc.code,
                                content_type="application/json")
        return response(environ, start_response)

    def on_companies(self, request):
        return _page(list(self.companies.values()), request)

    def on_types(self, request):
        return [{"id": "1", "name": "Workstation"}, {"id": "2", "name": "Server"}]

    def on_configurations(self, request):
        if request.method == "POST":
            return self._insert(self.configurations, {"active": True, **request.get_json()})
        company = request.args.get("company_id")
        return _page([c for c in self.configurations.values() if c["company_id"] == company], request)

    def on_configuration(self, request, id):
        record = self._get(self.configurations, id)
        if request.method == "PATCH":
            record.update(request.get_json())
        return record

    def on_ticket_options(self, request):
        return OPTIONS

    def on_tickets(self, request):
        if request.method == "POST":
            return self._insert(self.tickets, {"closed": False, **request.get_json(), "updated": _now()})
        if "reference" in request.args:
            return [t for t in self.tickets.values() if t["reference"] == request.args["reference"]]
        after = request.args.get("changed_after", "")
        changed = sorted((t for t in self.tickets.values() if t["updated"] > after),
                         key=lambda t: (t["updated"], int(t["id"])))
        return _page(changed, request)

    def on_ticket(self, request, id):
        record = self._get(self.tickets, id)
        if request.method == "PATCH":
            status = request.get_json()["status_id"]
            record.update(status_id=status, updated=_now(),
                          closed=any(s["id"] == status and s["closed"] for s in OPTIONS["statuses"]))
        return record

    def on_notes(self, request, id):
        self._get(self.tickets, id)
        self.notes.setdefault(id, []).append(request.get_json()["text"])
        return {}

    def on_webhooks(self, request):
        if request.method == "POST":
            return {"id": self._insert(self.webhooks, request.get_json())["id"]}
        return [{"id": w["id"], "url": w["url"]} for w in self.webhooks.values()]

    def on_webhook(self, request, id):
        self._get(self.webhooks, id)
        del self.webhooks[id]
        return {}

    def callbacks_for(self, ticket_id: str) -> list[tuple[str, dict[str, str], bytes]]:
        """What ToyPSA POSTs when ticket `ticket_id` changes: (url, headers, body) per webhook."""
        body = json.dumps({"event_id": str(uuid.uuid4()), "ticket_id": ticket_id}).encode()
        return [(w["url"], {"Content-Type": "application/json", "X-Toy-Signature": hmac.new(
                    w["secret"].encode(), body, hashlib.sha256).hexdigest()}, body)
                for w in self.webhooks.values()]

    @staticmethod
    def _get(table: dict, id: str) -> dict:
        if id not in table:
            raise NotFound(f"no record {id}")
        return table[id]


def _page(items: list, request) -> dict:
    page = int(request.args.get("page", 1))
    chunk = items[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    return {"items": chunk, "next": page + 1 if page * PAGE_SIZE < len(items) else None}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()
