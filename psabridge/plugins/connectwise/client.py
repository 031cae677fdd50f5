"""An httpx client for the ConnectWise Manage REST API (3.0).

One client per :class:`~psabridge.core.models.Connection`, kept in `connection.state` for the
run. It resolves the codebase once (`/login/companyinfo/{company}`), and shares it with the other
processes on the store (`connection.shared`), authenticates every call,
sends through :func:`psabridge.core.http.send` (the one place that retries), turns error answers
into the typed exceptions of :mod:`.errors`, and pages through lists lazily.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from psabridge.core import logs
from psabridge.core.http import DeadlineExceeded, RetryPolicy, new_client, send
from psabridge.core.models import Connection
from psabridge.core.pacing import RequestPace, SlidingWindowLimiter
from psabridge.plugins.connectwise import conditions as cond
from psabridge.plugins.connectwise import permissions
from psabridge.plugins.connectwise.errors import (
    ConnectionFailed,
    ConnectWiseError,
    NotFound,
    TooSlow,
    UnexpectedAnswer,
    error_for,
)

log = logs.get_logger(__name__)

API_VERSION = "2025.1"
ACCEPT = f"application/vnd.connectwise.com+json; version={API_VERSION}"
PAGE_SIZE = 1000  # CW's maximum (API-NOTES §2)
STATE_KEY = "connectwise.client"
CODEBASE_KEY = "connectwise.codebase"
SHARED_CODEBASE = "codebase"
DEFAULT_POLICY = RetryPolicy()

# Cloud sites answer the API only on their `api-` host (API-NOTES §1).
_CLOUD_SITE = re.compile(r"^(na|eu|au|aus|za)\.myconnectwise\.net$|^staging\.connectwisedev\.com$",
                         re.IGNORECASE)
# Only these list endpoints have a POST .../search twin (2025.1 path list).
SEARCHABLE = frozenset({"service/tickets", "project/tickets"})


# ConnectWise publishes no fixed quota: its guidance is that an integration sending over 1,000
# requests a minute will likely be rate limited (API-NOTES §4). psabridge keeps below that by
# default, with room for the other integrations of the instance; `requests_per_minute` changes it.
DEFAULT_REQUESTS_PER_MINUTE = 900


def pace_from_settings(settings: Mapping[str, str]) -> RequestPace:
    """The pace the client keeps: `requests_per_minute`, reads and writes alike."""
    rate = (settings.get("requests_per_minute") or "").strip()
    if not rate:
        return RequestPace(DEFAULT_REQUESTS_PER_MINUTE, window=60.0)
    if not rate.isdigit() or int(rate) < 1:
        raise ConnectWiseError(f"requests_per_minute must be a whole number above 0, not {rate!r}")
    return RequestPace(int(rate), window=60.0)


def api_root(site_url: str) -> str:
    """`https://na.myconnectwise.net/` -> `https://api-na.myconnectwise.net`; others unchanged."""
    parts = httpx.URL(site_url.strip().rstrip("/"))
    host = parts.host
    if _CLOUD_SITE.match(host):
        host = "api-" + host
    return str(parts.copy_with(host=host, path="", query=None)).rstrip("/")


def basic_auth(company: str, public_key: str, private_key: str) -> str:
    token = base64.b64encode(f"{company}+{public_key}:{private_key}".encode()).decode()
    return f"Basic {token}"


class ConnectWiseClient:
    def __init__(self, settings: Mapping[str, str], *, transport: httpx.BaseTransport | None = None,
                 policy: RetryPolicy = DEFAULT_POLICY, sleep: Callable[[float], None] = time.sleep,
                 timeout: float = 30.0, state: dict | None = None, limits: RequestPace | None = None,
                 shared: Any = None):
        self.company = settings.get("company", "")
        self.root = api_root(settings.get("url", ""))
        self.policy = policy
        self.sleep = sleep
        self._state = state if state is not None else {}
        self._shared = shared  # the connection's SharedValues, or None
        private_key = settings.get("private_key", "")
        logs.register_secret(private_key)
        headers = {"Accept": ACCEPT}
        if settings.get("client_id"):
            headers["clientId"] = settings["client_id"]
        self._auth = basic_auth(self.company, settings.get("public_key", ""), private_key)
        logs.register_secret(self._auth)
        # One limiter per client, and one client per connection: every worker sending to this
        # instance waits its turn in the same window.
        # It waits in real time even where a test fakes the retries' sleep.
        self.limiter = SlidingWindowLimiter(limits or pace_from_settings(settings))
        self.http = new_client(transport=transport, headers=headers, timeout=timeout,
                               event_hooks={"request": [self._wait_for_pace]})

    @classmethod
    def for_connection(cls, connection: Connection, **options: Any) -> ConnectWiseClient:
        """The connection's client, created on first use (tests pass `policy=`, `sleep=`)."""
        client = connection.state.get(STATE_KEY)
        if client is None or options:
            client = cls(connection.settings, transport=connection.transport,
                         state=connection.state, shared=connection.shared, **options)
            connection.state[STATE_KEY] = client
        return client

    def close(self) -> None:
        self.http.close()

    def _wait_for_pace(self, request: httpx.Request) -> None:
        """Before every attempt, retries included: wait for room in the pace."""
        self.limiter.acquire(("request",))

    # -- codebase ------------------------------------------------------------------------------

    @property
    def codebase(self) -> str:
        """The company's codebase (e.g. `v2025_1/`), looked up once per run, or taken from the
        store where another process on it looked it up: a process started (or restarted after a
        crash) sends no lookup of its own. Should the instance move to another codebase, the
        first request that cannot be routed looks it up again (`_codebase_moved`)."""
        if CODEBASE_KEY not in self._state:
            self._state[CODEBASE_KEY] = self._shared_codebase() or self._look_up_and_share()
        return self._state[CODEBASE_KEY]

    def _shared_codebase(self) -> str | None:
        if self._shared is None:
            return None
        text = self._shared.get(SHARED_CODEBASE)
        try:
            stored = json.loads(text) if text else None
        except ValueError:
            return None
        if not isinstance(stored, dict) or stored.get("for") != self._codebase_owner():
            return None  # looked up for another instance or company: the settings changed
        codebase = stored.get("codebase")
        return codebase if isinstance(codebase, str) and codebase.endswith("/") else None

    def _codebase_owner(self) -> str:
        return f"{self.root} {self.company}"

    def _look_up_and_share(self) -> str:
        codebase = self._lookup_codebase()
        if self._shared is not None:
            self._shared.put(SHARED_CODEBASE, json.dumps({"for": self._codebase_owner(),
                                                          "codebase": codebase}))
        return codebase

    def _lookup_codebase(self) -> str:
        url = f"{self.root}/login/companyinfo/{self.company}"
        try:
            response = send(self.http, self.http.build_request("GET", url), self.policy, sleep=self.sleep)
        except DeadlineExceeded as exc:
            raise TooSlow(exc.explain("ConnectWise", f"the company info lookup at {self.root}")) from exc
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach ConnectWise at {self.root} ({type(exc).__name__}): "
                                   "check the url setting") from exc
        info = _json(response) if response.status_code == 200 else None
        if response.status_code == 404 or (response.status_code == 200 and not info):
            raise NotFound(f"ConnectWise at {self.root} knows no company id {self.company!r}: check "
                           "the company setting (the company id you log in with)", status=404)
        if response.status_code != 200:
            raise error_for(response, "the company info lookup")
        codebase = info.get("Codebase") if isinstance(info, dict) else None
        if not codebase:
            raise UnexpectedAnswer(f"ConnectWise company info for {self.company!r} has no Codebase")
        return codebase if codebase.endswith("/") else codebase + "/"

    @property
    def base_url(self) -> str:
        return f"{self.root}/{self.codebase}apis/3.0/"

    # -- single requests -----------------------------------------------------------------------

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json: Any = None, headers: Mapping[str, str] | None = None,
                idempotent: bool | None = None) -> httpx.Response:
        """Send one request to `path` (relative to apis/3.0/); raise the typed error on failure."""
        path = path.strip("/")
        response = self._send(method, path, params, json, headers, idempotent)
        if _unroutable(response) and self._codebase_moved():
            # Hosted CW moves a company to a new codebase on upgrade (django-connectwise does the
            # same): the request never reached a handler, so sending it again is safe.
            response = self._send(method, path, params, json, headers, idempotent)
        if response.status_code >= 400:
            raise error_for(response, permissions.describe(method, path))
        return response

    def _send(self, method, path, params, json, headers, idempotent) -> httpx.Response:
        request = self.http.build_request(
            method, self.base_url + path, params=_clean(params), json=json,
            headers={"Authorization": self._auth, **(headers or {})},
        )
        try:
            return send(self.http, request, self.policy, idempotent=idempotent, sleep=self.sleep)
        except DeadlineExceeded as exc:
            raise TooSlow(exc.explain("ConnectWise", f"{method} /{path}")) from exc
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"no answer from ConnectWise at {self.root} to {method} {path} "
                                   f"({type(exc).__name__}); the request may or may not have been "
                                   "applied") from exc

    def _codebase_moved(self) -> bool:
        """Look the codebase up again; True when it changed (and is now the one in use)."""
        old = self._state.pop(CODEBASE_KEY, None)
        self._state[CODEBASE_KEY] = self._look_up_and_share()
        return self._state[CODEBASE_KEY] != old

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return _json(self.request("GET", path, params=params))

    def get_or_none(self, path: str) -> Any:
        """GET one record; None when CW answers 404 (deleted, or never existed)."""
        try:
            return self.get(path)
        except NotFound:
            return None

    def post(self, path: str, body: Any) -> Any:
        # A POST whose answer was lost may have created the record: never retried blindly.
        return _json(self.request("POST", path, json=body, idempotent=False))

    def patch(self, path: str, operations: list[dict[str, Any]]) -> Any:
        """JSON-Patch `operations` ([{op, path, value}]); replacing values is idempotent."""
        return _json(self.request("PATCH", path, json=operations, idempotent=True))

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    # -- lists ---------------------------------------------------------------------------------

    def url_fits(self, path: str, params: Mapping[str, Any]) -> bool:
        url = httpx.URL(self.base_url + path.strip("/"), params=_clean(params))
        return len(str(url)) <= cond.SAFE_URL_LENGTH

    def iter_list(self, path: str, conditions: str | None = None, *, order_by: str | None = None,
                  fields: str | None = None, child_conditions: str | None = None,
                  forward_only: bool = False, page_size: int = PAGE_SIZE) -> Iterator[dict]:
        """Yield every record of a list endpoint, one page in memory at a time.

        `forward_only` uses CW's forward-only paging (ordered by id, no `orderBy`), which stays
        fast on big tables. A condition too long for a URL goes by POST .../search where the
        endpoint has one.
        """
        path = path.strip("/")
        params = {"conditions": conditions, "childConditions": child_conditions, "orderBy": order_by,
                  "fields": fields, "pageSize": page_size}
        if forward_only:
            if order_by:
                raise ValueError("CW does not allow orderBy with forward-only paging")
            yield from self._forward_only(path, params)
        elif path in SEARCHABLE and not self.url_fits(path, {**params, "page": 1}):
            yield from self._navigable(path, params, search=True)
        else:
            yield from self._navigable(path, params)

    def first_page(self, path: str, conditions: str | None = None, *, order_by: str | None = None,
                   page_size: int = PAGE_SIZE) -> list[dict]:
        """Only the first page: for keyset paging, where the caller moves the window itself."""
        params = {"conditions": conditions, "orderBy": order_by, "pageSize": page_size}
        return _json_list(self._page(path.strip("/"), params, 1, search=False))

    def _page(self, path: str, params: dict, page: int, search: bool) -> httpx.Response:
        if not search:
            return self.request("GET", path, params={**params, "page": page})
        # FilterValues keys are lower-case in the body (API-NOTES §2).
        body = {"conditions": params["conditions"], "orderBy": params["orderBy"],
                "childconditions": params.get("childConditions")}
        query = {"page": page, "pageSize": params["pageSize"], "fields": params.get("fields")}
        return self.request("POST", f"{path}/search", params=query, json=_clean(body), idempotent=True)

    def _navigable(self, path: str, params: dict, search: bool = False) -> Iterator[dict]:
        page = 1
        while True:
            response = self._page(path, params, page, search)
            rows = _json_list(response)
            yield from rows
            # Follow rel="next", but re-send our own parameters with its page number: a server
            # that drops `conditions` from its Link URL must not widen the query (pyconnectwise#14).
            next_page = _query_value(response.links.get("next", {}).get("url"), "page")
            if next_page is None or not rows:
                return
            page = int(next_page)

    def _forward_only(self, path: str, params: dict) -> Iterator[dict]:
        headers = {"pagination-type": "forward-only"}
        page_id: str | None = None
        while True:
            response = self.request("GET", path, params={**params, "pageId": page_id}, headers=headers)
            rows = _json_list(response)
            yield from rows
            if "link" not in response.headers:
                # No Link at all: the endpoint ignores forward-only (CTC's reading). Continue by
                # id, which is what forward-only does anyway.
                if len(rows) < params["pageSize"]:
                    return
                yield from self._by_id_after(path, params, rows[-1]["id"])
                return
            page_id = _query_value(response.links.get("next", {}).get("url"), "pageId")
            if page_id is None or not rows:
                return

    def _by_id_after(self, path: str, params: dict, last_id: int) -> Iterator[dict]:
        while True:
            conditions = cond.all_of(params["conditions"], cond.compare("id", ">", last_id))
            rows = _json_list(self.request("GET", path, params={
                **params, "conditions": conditions, "orderBy": "id asc", "page": 1}))
            yield from rows
            if len(rows) < params["pageSize"]:
                return
            last_id = rows[-1]["id"]


def _clean(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if params is None else {k: v for k, v in params.items() if v is not None}


def _query_value(url: str | None, key: str) -> str | None:
    """The value of query parameter `key` (any case) in `url`, if present."""
    if not url:
        return None
    query = {k.lower(): v for k, v in parse_qs(urlsplit(url).query).items()}
    values = query.get(key.lower())
    return values[0] if values else None


def _unroutable(response: httpx.Response) -> bool:
    """A 404 from the router (wrong codebase), not CW's "record not found"."""
    if response.status_code != 404:
        return False
    return "Cannot route" in response.text or '"The endpoint does not exist."' in response.text


def _json(response: httpx.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise UnexpectedAnswer(
            f"ConnectWise answered {response.request.method} {response.request.url.path} with a body "
            "that is not JSON", status=response.status_code) from None


def _json_list(response: httpx.Response) -> list[dict]:
    body = _json(response)
    if not isinstance(body, list):
        raise UnexpectedAnswer(f"ConnectWise answered a list request ({response.request.url.path}) "
                               "with something other than a JSON array", status=response.status_code)
    return body


__all__ = ["ConnectWiseClient", "ConnectWiseError", "api_root", "basic_auth"]
