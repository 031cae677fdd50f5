"""An httpx client for the Autotask PSA REST API (v1.0).

One client per :class:`~psabridge.core.models.Connection`, kept in `connection.state`. It finds
the API user's zone (cached per user, found again once when Autotask answers 401: the database
may have moved), sends the three auth headers, pages through JSON queries, and keeps to
Autotask's limits:

* at most 3 requests in flight per object endpoint (Autotask's thread limit is per tracking
  identifier and endpoint, API-NOTES §6), for every client of this process;
* at most `requests_per_hour` requests in any hour (the database's 10,000 are shared with every
  other integration), and a look at ThresholdInformation every so often: when the database as a
  whole is near its threshold, the client waits, then gives up with a transient error;
* a refusal by either limit (a 429, or any answer whose words mention them, since Autotask
  does not document the status) is retried with backoff, POSTs included: a refused request was
  not applied.

Other retries (no answer, 502-504) happen in :func:`psabridge.core.http.send`. A plain 500 is
not retried: Autotask uses it for validation errors, which do not go away.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from psabridge.core import logs
from psabridge.core.http import (
    DeadlineExceeded,
    RetryPolicy,
    backoff_delay,
    new_client,
    retry_after_seconds,
    send,
)
from psabridge.core.models import Connection
from psabridge.core.pacing import RequestPace, SlidingWindowLimiter
from psabridge.plugins.autotask import query as q
from psabridge.plugins.autotask.errors import (
    AuthenticationFailed,
    AutotaskError,
    ConnectionFailed,
    NotFound,
    RateLimited,
    TooSlow,
    UnexpectedAnswer,
    error_for,
    is_throttled,
)

log = logs.get_logger(__name__)

STATE_KEY = "autotask.client"
DISCOVERY_URL = "https://webservices.autotask.net/ATServicesRest/"
API_VERSION = "V1.0"
PAGE_SIZE = 500  # Autotask's maximum MaxRecords (API-NOTES §3)
THREADS_PER_ENDPOINT = 3  # Autotask's thread limit for integrations made since 2023.1 (§6)
ZONE_TTL = 3600.0  # seconds a discovered zone is trusted before it is asked again

# Autotask's 10,000 requests an hour belong to the whole database, shared with every other
# integration (Datto RMM's own among them), and latency is added from about half of it: by
# default psabridge uses at most half.
DEFAULT_REQUESTS_PER_HOUR = 5000
# Every this many requests the client reads ThresholdInformation (itself a request), and waits
# while the database has used more than THRESHOLD_HEADROOM of its hourly threshold.
THRESHOLD_CHECK_EVERY = 250
THRESHOLD_HEADROOM = 0.9
THRESHOLD_WAIT = 60.0  # seconds between looks while the database is near its threshold
THRESHOLD_MAX_WAIT = 300.0  # after this long, give up with a transient error

# Retries of other failures happen in `send`; a 500 is Autotask's validation answer.
DEFAULT_POLICY = RetryPolicy(statuses=frozenset({502, 503, 504}))


def pace_from_settings(settings: Mapping[str, str]) -> RequestPace:
    """The pace the client keeps: `requests_per_hour`, reads and writes alike."""
    rate = (settings.get("requests_per_hour") or "").strip()
    if not rate:
        return RequestPace(DEFAULT_REQUESTS_PER_HOUR, window=3600.0)
    if not rate.isdigit() or not 1 <= int(rate) <= 10000:
        raise AutotaskError(f"requests_per_hour must be a whole number from 1 to 10000 (Autotask's "
                            f"hourly threshold), not {rate[:20]!r}")
    return RequestPace(int(rate), window=3600.0)


# -- zones ---------------------------------------------------------------------------------------

_zones: dict[tuple[str, str], tuple[str, float]] = {}
_zones_lock = threading.Lock()


def forget_zones() -> None:
    """Drop every cached zone (tests; a process that wants to ask again)."""
    with _zones_lock:
        _zones.clear()


def api_base(url: str) -> str:
    """`https://webservices14.autotask.net[/ATServicesRest[/V1.0]][/]` -> the V1.0 root, with '/'."""
    text = url.strip().rstrip("/")
    lowered = text.lower()
    if lowered.endswith("/v1.0"):
        text = text[: -len("/v1.0")]
        lowered = text.lower()
    if not lowered.endswith("/atservicesrest"):
        text += "/ATServicesRest"
    return f"{text}/{API_VERSION}/"


# -- thread limit --------------------------------------------------------------------------------

_slots: dict[tuple[str, str], threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def endpoint_slot(integration_code: str, endpoint: str) -> threading.BoundedSemaphore:
    """The process-wide semaphore of one (tracking identifier, object endpoint)."""
    key = (integration_code, endpoint.lower())
    with _slots_lock:
        slot = _slots.get(key)
        if slot is None:
            slot = _slots[key] = threading.BoundedSemaphore(THREADS_PER_ENDPOINT)
        return slot


def endpoint_of(path: str) -> str:
    """The object endpoint a path counts against: its first segment (`Tickets/12/Notes` ->
    `Tickets`)."""
    return path.strip("/").split("/", 1)[0].split("?", 1)[0]


# -- the client ----------------------------------------------------------------------------------


class AutotaskClient:
    def __init__(self, settings: Mapping[str, str], *, transport: httpx.BaseTransport | None = None,
                 policy: RetryPolicy = DEFAULT_POLICY, sleep: Callable[[float], None] = time.sleep,
                 timeout: float = 30.0, state: dict | None = None, limits: RequestPace | None = None,
                 discovery_url: str = DISCOVERY_URL, clock: Callable[[], float] = time.monotonic):
        self.username = (settings.get("username") or "").strip()
        self.integration_code = (settings.get("integration_code") or "").strip()
        self.api_url = (settings.get("api_url") or "").strip()
        self.discovery_url = discovery_url.rstrip("/") + "/"
        self.policy = policy
        self.sleep = sleep
        self.clock = clock
        self._state = state if state is not None else {}
        secret = settings.get("secret") or ""
        logs.register_secret(secret)
        self._auth = {"ApiIntegrationCode": self.integration_code, "UserName": self.username,
                      "Secret": secret}
        self.limiter = SlidingWindowLimiter(limits or pace_from_settings(settings))
        self._sent_since_check = 0
        self._check_lock = threading.Lock()
        self.http = new_client(transport=transport, timeout=timeout,
                               headers={"Content-Type": "application/json",
                                        "Accept": "application/json"})

    @classmethod
    def for_connection(cls, connection: Connection, **options: Any) -> AutotaskClient:
        """The connection's client, created on first use (tests pass `policy=`, `sleep=`)."""
        client = connection.state.get(STATE_KEY)
        if client is None or options:
            client = cls(connection.settings, transport=connection.transport,
                         state=connection.state, **options)
            connection.state[STATE_KEY] = client
        return client

    def close(self) -> None:
        self.http.close()

    # -- zone ------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The V1.0 root of the API user's zone: the api_url setting, else discovered."""
        if self.api_url:
            return api_base(self.api_url)
        key = (self.discovery_url, self.username.casefold())
        with _zones_lock:
            cached = _zones.get(key)
        if cached is not None and self.clock() - cached[1] < ZONE_TTL:
            return cached[0]
        zone = self._discover_zone()
        with _zones_lock:
            _zones[key] = (zone, self.clock())
        return zone

    def _forget_zone(self) -> str | None:
        with _zones_lock:
            cached = _zones.pop((self.discovery_url, self.username.casefold()), None)
        return cached[0] if cached else None

    def _discover_zone(self) -> str:
        if not self.username:
            raise AuthenticationFailed("the username setting is empty: set it to the API user's "
                                       "user name")
        url = f"{self.discovery_url}{API_VERSION}/zoneInformation"
        request = self.http.build_request("GET", url, params={"user": self.username})
        try:
            response = send(self.http, request, self.policy, sleep=self.sleep)
        except DeadlineExceeded as exc:
            raise TooSlow(exc.explain("Autotask", "the zone look-up")) from exc
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach Autotask's zone look-up at {self.discovery_url} "
                                   f"({type(exc).__name__}); check the network, or set api_url to "
                                   "your zone's address") from exc
        if response.status_code != 200:
            raise error_for(response, "the zone look-up for the API user")
        info = _json(response)
        zone = info.get("url") if isinstance(info, dict) else None
        if not isinstance(zone, str) or not zone.startswith(("https://", "http://")):
            raise UnexpectedAnswer("Autotask's zone look-up gave no zone address; set api_url to "
                                   "your zone's address (e.g. https://webservices14.autotask.net)")
        if self.discovery_url == DISCOVERY_URL and not _is_autotask_host(zone):
            # The secret goes to whatever address this returns: only to Autotask's own hosts.
            raise UnexpectedAnswer(f"Autotask's zone look-up named {remote_host(zone)}, which is not an "
                                   "Autotask web services host; set api_url if that is intended")
        return api_base(zone)

    # -- single requests -------------------------------------------------------------------------

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json: Any = None, idempotent: bool | None = None, url: str | None = None) -> httpx.Response:
        """Send one request to `path` (relative to V1.0/), or to the absolute `url` of a next
        page; raise the typed error on failure."""
        path = path.strip("/")
        response = self._send_paced(method, path, params, json, idempotent, url)
        if response.status_code == 401 and not self.api_url and url is None:
            old = self._forget_zone()
            if self.base_url != old:
                # The database moved to another zone: the request reached no handler there.
                response = self._send_paced(method, path, params, json, idempotent, None)
        if response.status_code >= 400:
            raise error_for(response, f"{method} {path}")
        return response

    def _send_paced(self, method, path, params, json, idempotent, url) -> httpx.Response:
        """Send within the thread limit; retry refusals by the limits (they applied nothing)."""
        self._watch_threshold(path)
        attempt = 0
        while True:
            attempt += 1
            with endpoint_slot(self.integration_code, endpoint_of(path)):
                self.limiter.acquire(("request",))
                response = self._send_once(method, path, params, json, idempotent, url)
            if not is_throttled(response) or attempt >= self.policy.attempts:
                return response
            wait = retry_after_seconds(response)
            if wait is None or wait > self.policy.max_retry_after:
                wait = backoff_delay(self.policy, attempt)
            log.info("autotask_limit_retry", method=method, path=path, status=response.status_code,
                     attempt=attempt, delay=round(wait, 3))
            response.close()
            self.sleep(wait)

    def _send_once(self, method, path, params, json, idempotent, url) -> httpx.Response:
        target = url if url is not None else self.base_url + path
        request = self.http.build_request(method, target, params=_clean(params), json=json,
                                          headers=self._auth)
        try:
            return send(self.http, request, self.policy, idempotent=idempotent, sleep=self.sleep)
        except DeadlineExceeded as exc:
            raise TooSlow(exc.explain("Autotask", f"{method} {path}")) from exc
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"no answer from Autotask to {method} {path} ({type(exc).__name__});"
                                   " the request may or may not have been applied") from exc

    def _watch_threshold(self, path: str) -> None:
        """Every THRESHOLD_CHECK_EVERY requests, wait while the database is near its threshold."""
        if endpoint_of(path).lower() == "thresholdinformation":
            return
        with self._check_lock:
            self._sent_since_check += 1
            if self._sent_since_check < THRESHOLD_CHECK_EVERY:
                return
            self._sent_since_check = 0
        waited = 0.0
        while True:
            used, threshold = self.threshold()
            if threshold <= 0 or used < threshold * THRESHOLD_HEADROOM:
                return
            if waited >= THRESHOLD_MAX_WAIT:
                raise RateLimited(f"Autotask's database has used {used} of its {threshold} requests "
                                  "this hour (all integrations together); psabridge waits for its "
                                  "next pass. Lower requests_per_hour or the other integrations' use",
                                  status=None)
            log.info("autotask_threshold_wait", used=used, threshold=threshold, delay=THRESHOLD_WAIT)
            self.sleep(THRESHOLD_WAIT)
            waited += THRESHOLD_WAIT

    def threshold(self) -> tuple[int, int]:
        """(requests used this hour, hourly threshold) of the whole database."""
        info = _json(self.request("GET", "ThresholdInformation"))
        if not isinstance(info, dict):
            return 0, 0
        used, limit = info.get("currentTimeframeRequestCount"), info.get("externalRequestThreshold")
        if not isinstance(used, int) or not isinstance(limit, int):
            return 0, 0
        return used, limit

    # -- records ---------------------------------------------------------------------------------

    def get(self, entity: str, record_id: int | str) -> dict | None:
        """One record by id; None when it does not exist (404, or `{"item": null}`)."""
        try:
            body = _json(self.request("GET", f"{entity}/{_id(record_id)}"))
        except NotFound:
            return None
        item = body.get("item") if isinstance(body, dict) else None
        return item if isinstance(item, dict) else None

    def create(self, path: str, body: dict) -> int:
        """POST a new record (to `Entity` or `Parent/{id}/Child`); its new id.

        A POST whose answer was lost may have created the record: never retried blindly."""
        return _item_id(self.request("POST", path, json=body, idempotent=False), path)

    def update(self, path: str, body: dict) -> int | None:
        """PATCH the fields in `body` (which carries `id`); only those change."""
        response = self.request("PATCH", path, json=body, idempotent=True)
        return _item_id(response, path) if response.content else None

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def get_path(self, path: str) -> Any:
        return _json(self.request("GET", path))

    # -- queries ---------------------------------------------------------------------------------

    def query(self, entity: str, conditions: Sequence[q.Condition | None] = (), *,
              fields: Sequence[str] | None = None, page_size: int = PAGE_SIZE) -> Iterator[dict]:
        """Yield every record of `entity` passing all `conditions`, a page at a time.

        Pages follow `nextPageUrl` by POSTing the same body (a GET there is refused), only on
        the zone's own host. Autotask does not promise an order, so rows are de-duplicated by id.
        """
        body: dict[str, Any] = {"filter": q.filters(*conditions), "MaxRecords": page_size}
        if fields:
            body["IncludeFields"] = list(dict.fromkeys(["id", *fields]))  # id: for paging
        seen: set = set()
        next_url: str | None = None
        while True:
            response = self.request("POST", f"{entity}/query", json=body, idempotent=True, url=next_url)
            page = _json(response)
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise UnexpectedAnswer(f"Autotask answered a query of {entity} without an items list",
                                       status=response.status_code)
            new = 0
            for item in page["items"]:
                if isinstance(item, dict) and item.get("id") not in seen:
                    seen.add(item.get("id"))
                    new += 1
                    yield item
            details = page.get("pageDetails") or {}
            next_url = details.get("nextPageUrl") if isinstance(details, dict) else None
            if not next_url or not new:
                return
            if not self._same_host(next_url):
                raise UnexpectedAnswer(f"Autotask's next page of {entity} is on another host "
                                       f"({remote_host(next_url)}); not following it")

    def query_in(self, entity: str, field: str, values: Sequence[Any],
                 scope: Sequence[q.Condition | None] = (), *, fields: Sequence[str] | None = None,
                 batch: int = q.MAX_IN_VALUES) -> Iterator[dict]:
        """Rows whose `field` is one of `values`, in `in` lists of at most `batch` values."""
        for values_batch in q.batches(values, batch):
            yield from self.query(entity, [*scope, q.in_(field, values_batch)], fields=fields)

    def count(self, entity: str, conditions: Sequence[q.Condition | None] = ()) -> int | None:
        body = {"filter": q.filters(*conditions)}
        answer = _json(self.request("POST", f"{entity}/query/count", json=body, idempotent=True))
        count = answer.get("queryCount") if isinstance(answer, dict) else None
        return count if isinstance(count, int) and count >= 0 else None

    def field_info(self, entity: str) -> dict[str, dict]:
        """`entityInformation/fields` of `entity`, by lower-cased field name; read once per run."""
        key = f"autotask.fields.{entity.lower()}"
        if key not in self._state:
            answer = _json(self.request("GET", f"{entity}/entityInformation/fields"))
            fields = answer.get("fields") if isinstance(answer, dict) else None
            if not isinstance(fields, list):
                raise UnexpectedAnswer(f"Autotask's field information for {entity} has no fields list")
            self._state[key] = {str(f.get("name", "")).lower(): f for f in fields if isinstance(f, dict)}
        return self._state[key]

    def picklist(self, entity: str, field: str) -> list[dict]:
        """The picklist values of `entity.field` (`value` as text, `label`, `isActive`, ...)."""
        info = self.field_info(entity).get(field.lower())
        values = info.get("picklistValues") if info else None
        return [v for v in values if isinstance(v, dict)] if isinstance(values, list) else []

    def _same_host(self, url: str) -> bool:
        here, there = httpx.URL(self.base_url), httpx.URL(url)
        return (here.scheme, here.host, here.port) == (there.scheme, there.host, there.port)


def _is_autotask_host(url: str) -> bool:
    parts = httpx.URL(url)
    return parts.scheme == "https" and (parts.host == "autotask.net" or parts.host.endswith(".autotask.net"))


def remote_host(url: str) -> str:
    try:
        return httpx.URL(url).host[:100] or "an address without a host"
    except (httpx.InvalidURL, ValueError):
        return "an unreadable address"


def _id(value: int | str) -> str:
    text = str(value).strip()
    if not text.isdigit():
        raise NotFound(f"{text[:40]!r} is not an Autotask id (ids are whole numbers)", status=None)
    return quote(text, safe="")


def _clean(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if params is None else {k: v for k, v in params.items() if v is not None}


def _json(response: httpx.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise UnexpectedAnswer(
            f"Autotask answered {response.request.method} {response.request.url.path} with a body "
            "that is not JSON", status=response.status_code) from None


def _item_id(response: httpx.Response, path: str) -> int:
    answer = _json(response)
    item_id = answer.get("itemId") if isinstance(answer, dict) else None
    if not isinstance(item_id, int) or isinstance(item_id, bool):
        raise UnexpectedAnswer(f"Autotask answered a write to {path} without the record's itemId",
                               status=response.status_code)
    return item_id


__all__ = ["AutotaskClient", "AutotaskError", "api_base", "forget_zones", "pace_from_settings"]
