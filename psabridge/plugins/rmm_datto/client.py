"""An httpx client for the Datto RMM API v2: token, quota, pages and errors, in one place.

Wire facts (API-NOTES.md in ../shared/specs/datto-rmm, section numbers below):

* the token comes from an OAuth2 password grant at `{api_url}/auth/oauth/token`, outside `/api`,
  with the fixed public client `public-client:public` (§2); it lives 100 h and is renewed early,
  and again on a 401 (once, single-flight); every process on one store shares it (see
  `TokenSource`);
* resources live under `{api_url}/api/v2` (§1); lists page with `page` (0-based) and `max`
  (at most 250), following `pageDetails.nextPageUrl`, an absolute URL (§4);
* the account's quota is kept client-side (see `throttle`), a 429 is waited out for 60-120 s
  and a 403 is never retried (§3).

Retries of 5xx and transport errors are `psabridge.core.http.send`'s job; this module adds the
Datto-specific parts around it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
import httpx

from psabridge.core import logs
from psabridge.core.errors import RemoteError
from psabridge.core.http import (
    DeadlineExceeded,
    RetryPolicy,
    new_client,
    remote_text,
    retry_after_seconds,
    send,
)
from psabridge.core.models import Connection
from psabridge.plugins.rmm_datto.throttle import Limits, SlidingWindowLimiter, buckets_for

log = logs.get_logger(__name__)

TOKEN_PATH = "/auth/oauth/token"
API_PREFIX = "/api"
PAGE_MAX = 250  # §4: the server clamps anything larger to 250
# §2: every Datto API client uses this fixed public OAuth client; it is not a secret.
PUBLIC_CLIENT = "Basic " + base64.b64encode(b"public-client:public").decode()
STATE_KEY = "datto.client"
QUOTA_BUCKETS = "psabridge.datto.buckets"  # request extension: the quota buckets it counts against


# -- errors ------------------------------------------------------------------------------------


class DattoError(RemoteError):
    """Datto RMM refused or failed a request."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(logs.redact_text(message))
        self.status = status
        self.transient = self.transient or (status is not None and status >= 500)


class DattoAuthError(DattoError):
    """The API key or secret was refused, or a fresh token was refused too."""


class DattoNotFound(DattoError):
    """The uid names nothing the account knows (404)."""


class DattoForbidden(DattoError):
    """403: no access to the resource, or the temporary IP block after too many requests."""


class DattoThrottled(DattoError):
    """Still refused with 429 after waiting as long as the retry policy allows."""

    transient = True


class DattoUnreachable(DattoError):
    """No HTTP answer at all (refused, timed out, dropped) after every retry; a write may or
    may not have been applied."""

    transient = True


class DattoTooSlow(DattoUnreachable):
    """An answer that did not finish within the deadline of every attempt (a trickling server,
    or something on the way holding the connection open)."""


# -- options -------------------------------------------------------------------------------------


@attrs.frozen
class ClientOptions:
    """Everything about the client's pace that a test or an admin may want to change.

    `throttle_backoff` is how long to wait after a 429 that carries no Retry-After: Datto's
    answer to that is not established, and the clients that know it wait 60-120 s (§3).
    `block_seconds` is how long to stop sending after a 403 that follows a 429 (the ~5 min
    IP block); requests in that time fail at once instead of extending the block.
    """

    # Datto's 60 s window, and half a second more: the server counts a request when it
    # arrives, later than we counted it, and a request that overtakes an earlier one on the way
    # must not find the server's window still full.
    limits: Limits = Limits(window=60.5)
    retry: RetryPolicy = RetryPolicy(max_retry_after=180.0)
    throttle_backoff: tuple[float, float] = (60.0, 120.0)
    block_seconds: float = 300.0
    refresh_margin: float = 600.0  # renew the token this long before it expires (at most 25 %)
    timeout: float = 30.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    # A shared token's expiry is a moment other processes read: wall-clock time.
    wall_clock: Callable[[], float] = time.time

    @classmethod
    def from_settings(cls, settings: Mapping[str, str], **overrides: Any) -> ClientOptions:
        """Options with the optional `requests_per_minute` setting applied to both quotas."""
        options = cls(**overrides)
        if rate := (settings.get("requests_per_minute") or "").strip():
            if not rate.isdigit() or int(rate) < 1:
                raise DattoError(f"requests_per_minute must be a whole number above 0, not {rate!r}")
            per_minute = int(rate)
            options = attrs.evolve(options, limits=attrs.evolve(
                options.limits, reads=per_minute, writes=per_minute))
        return options


# -- the token -----------------------------------------------------------------------------------


@attrs.define
class _Token:
    value: str
    renew_at: float  # clock() time after which we fetch a new one


SHARED_TOKEN = "token"


class TokenSource:
    """Gets, caches and renews the bearer token; one grant at a time across threads.

    With `shared` (the connection's `SharedValues`), the token is shared by every process on the
    store: a process takes the one in the store while it is not near its expiry, and writes back
    each token it is granted. So workers, replicas and every restart after a crash use one token
    instead of logging in each. A token the API refuses (401) is renewed once: unless the store
    already holds a newer one (another process renewed first), which is taken instead.
    The stored token names the account and key it was granted for, and its expiry in wall-clock
    time; one for another key (the settings changed) is ignored.
    """

    def __init__(self, http: httpx.Client, api_url: str, key: str, secret: str,
                 options: ClientOptions, shared: Any = None):
        self._http, self._api_url, self._key, self._secret = http, api_url, key, secret
        self._options = options
        self._shared = shared
        # Which account and key a shared token belongs to, without the key itself.
        self._owner = hashlib.sha256(f"{api_url}\n{key}".encode()).hexdigest()[:16]
        self._token: _Token | None = None
        self._lock = threading.Lock()
        self.grants = 0

    def current(self) -> str:
        with self._lock:
            if self._token is None or self._options.clock() >= self._token.renew_at:
                self._token = self._from_store() or self._grant_and_share()
            return self._token.value

    def renew_after_rejection(self, rejected: str) -> str:
        """The server said 401 to `rejected`: renew, unless another thread (or, through the
        store, another process) already has."""
        with self._lock:
            if self._token is None or self._token.value == rejected:
                shared = self._from_store()
                if shared is not None and shared.value != rejected:
                    self._token = shared
                else:
                    self._token = self._grant_and_share()
            return self._token.value

    def _from_store(self) -> _Token | None:
        """The shared token, if there is one for this key that is not due for renewal."""
        if self._shared is None:
            return None
        text = self._shared.get(SHARED_TOKEN)
        try:
            stored = json.loads(text) if text else None
            if not isinstance(stored, dict) or stored.get("owner") != self._owner:
                return None
            value, expires_at = str(stored["access_token"]), float(stored["expires_at"])
            lifetime = float(stored["lifetime"])
        except (ValueError, KeyError, TypeError):
            return None
        logs.register_secret(value)
        remaining = expires_at - self._options.wall_clock()
        left_before_renewal = remaining - self._margin(lifetime)
        if left_before_renewal <= 0:
            return None
        log.debug("datto_token_shared", renew_in=round(left_before_renewal))
        return _Token(value, self._options.clock() + left_before_renewal)

    def _margin(self, lifetime: float) -> float:
        return min(self._options.refresh_margin, lifetime * 0.25)

    def _grant_and_share(self) -> _Token:
        value, lifetime = self._grant()
        if self._shared is not None:
            self._shared.put(SHARED_TOKEN, json.dumps({
                "owner": self._owner, "access_token": value, "lifetime": lifetime,
                "expires_at": self._options.wall_clock() + lifetime}))
        return _Token(value, self._options.clock() + lifetime - self._margin(lifetime))

    def _grant(self) -> tuple[str, float]:
        """A new token from the token endpoint, and how many seconds it lives."""
        request = self._http.build_request(
            "POST", self._api_url + TOKEN_PATH,
            data={"grant_type": "password", "username": self._key, "password": self._secret},
            headers={"Authorization": PUBLIC_CLIENT, "Accept": "application/json"},
        )
        # A grant changes nothing on the server, so it is safe to retry like a read.
        try:
            response = send(self._http, request, self._options.retry, idempotent=True,
                            sleep=self._options.sleep)
        except DeadlineExceeded as exc:
            raise DattoTooSlow(exc.explain("Datto RMM", f"the token request at {self._api_url}")) \
                from exc
        except httpx.TransportError as exc:
            raise DattoUnreachable(f"no answer from the Datto RMM token endpoint at "
                                   f"{self._api_url} ({type(exc).__name__})") from exc
        if response.status_code in (400, 401, 403):
            raise DattoAuthError(
                f"Datto RMM refused the API key and secret (HTTP {response.status_code}): check "
                "api_key and api_secret, that API access is enabled for the account and the user, "
                "and that api_url is your platform's API URL", response.status_code)
        if response.status_code != 200:
            raise DattoError(f"the Datto RMM token endpoint answered HTTP {response.status_code}",
                             response.status_code)
        try:
            body = response.json()
            value = str(body["access_token"])
        except (ValueError, KeyError, TypeError):
            raise DattoError("the Datto RMM token endpoint answered without an access_token; "
                             "check that api_url is the platform's API URL") from None
        logs.register_secret(value)
        lifetime = float(body.get("expires_in") or 3600)
        self.grants += 1
        log.info("datto_token_granted", expires_in=lifetime)
        return value, lifetime


# -- the client ----------------------------------------------------------------------------------


class DattoClient:
    """Sends requests to one Datto RMM account. Thread-safe; keep one per connection."""

    def __init__(self, api_url: str, key: str, secret: str, options: ClientOptions = ClientOptions(),
                 transport: httpx.BaseTransport | None = None, shared: Any = None):
        logs.register_secret(secret)
        self.api_url = api_url.rstrip("/")
        self.options = options
        self.http = new_client(transport=transport, timeout=options.timeout, event_hooks={
            "request": [self._wait_for_quota], "response": [self._supply_retry_after]})
        self.tokens = TokenSource(self.http, self.api_url, key, secret, options, shared)
        self.limiter = SlidingWindowLimiter(options.limits, options.clock, options.sleep)
        self._random = random.Random()
        self._last_throttled: float | None = None
        self._blocked_until: float | None = None

    def close(self) -> None:
        self.http.close()

    # -- requests ----------------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.json(self.request("GET", path, params=params))

    @staticmethod
    def json(response: httpx.Response) -> Any:
        """The body of a 2xx answer, or a DattoError saying it was not JSON."""
        try:
            return response.json()
        except ValueError:
            raise DattoError(f"Datto RMM answered {response.request.method} "
                             f"{response.request.url.path} with a body that is not JSON") from None

    def request(self, method: str, path_or_url: str, *, params: Mapping[str, Any] | None = None,
                json: Any = None, operation: str | None = None,
                idempotent: bool | None = None) -> httpx.Response:
        """Send one API request and return its 2xx response; raise a DattoError otherwise.

        `path_or_url` is a path under /api ("/v2/account") or an absolute URL on the API's own
        origin (a nextPageUrl). `operation` names the write quota bucket ("alert-resolve").
        """
        url = self._url(path_or_url)
        token = self.tokens.current()
        response = self._send(method, url, token, params, json, operation, idempotent)
        if response.status_code == 401:
            # §2: an expired or revoked token; get a new one and try once more.
            response.close()
            token = self.tokens.renew_after_rejection(token)
            response = self._send(method, url, token, params, json, operation, idempotent)
        self._raise_for_status(method, url, response)
        return response

    def _send(self, method, url, token, params, json, operation, idempotent) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        request = self.http.build_request(method, url, params=params, json=json, headers=headers,
                                          extensions={QUOTA_BUCKETS: buckets_for(method, operation)})
        try:
            return send(self.http, request, self.options.retry, idempotent=idempotent,
                        sleep=self.options.sleep)
        except DeadlineExceeded as exc:
            raise DattoTooSlow(exc.explain("Datto RMM", f"{method} {urlsplit(url).path}")) from exc
        except httpx.TransportError as exc:
            raise DattoUnreachable(
                f"no answer from Datto RMM at {self.api_url} to {method} {urlsplit(url).path} "
                f"({type(exc).__name__}); the request may or may not have been applied") from exc

    def _url(self, path_or_url: str) -> str:
        if "://" not in path_or_url:
            return f"{self.api_url}{API_PREFIX}{path_or_url}"
        if _origin(path_or_url) != _origin(self.api_url):
            # §4: never hand the bearer token to a host we were not configured for.
            raise DattoError(f"Datto RMM pointed the next page at another host "
                             f"({_origin(path_or_url)}); refusing to send the token there")
        return path_or_url

    # -- throttling --------------------------------------------------------------------------

    def _wait_for_quota(self, request: httpx.Request) -> None:
        """Before every attempt, retries by `send` included: wait for room in the quota.

        The token endpoint is not an API resource and carries no buckets, so it is not counted.
        """
        buckets = request.extensions.get(QUOTA_BUCKETS)
        if buckets:
            self._refuse_while_blocked()
            self.limiter.acquire(buckets)

    def _supply_retry_after(self, response: httpx.Response) -> None:
        """Give a 429 without a usable Retry-After the wait Datto clients use, so `send`
        honours it: a Retry-After that cannot be read counts as none."""
        if response.status_code != 429:
            return
        self._last_throttled = self.options.clock()
        if retry_after_seconds(response) is None:
            low, high = self.options.throttle_backoff
            response.headers["Retry-After"] = f"{self._random.uniform(low, high):.3f}"

    def _refuse_while_blocked(self) -> None:
        if self._blocked_until is not None and self.options.clock() < self._blocked_until:
            wait = self._blocked_until - self.options.clock()
            raise DattoForbidden(
                f"Datto RMM blocked this address after too many requests; psabridge sends "
                f"nothing for another {wait:.0f} s so that the block can end", 403)

    def _raise_for_status(self, method: str, url: str, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        where = f"{method} {urlsplit(url).path}"
        detail = _error_detail(response)
        if status == 401:
            raise DattoAuthError(f"Datto RMM refused a freshly granted token for {where}; "
                                 "check that the API user still has API access", status)
        if status == 403:
            raise self._forbidden(where, detail)
        if status == 404:
            raise DattoNotFound(f"Datto RMM does not know {where}{detail}", status)
        if status == 429:
            raise DattoThrottled(f"Datto RMM kept refusing {where} with HTTP 429 (rate limit) "
                                 "after waiting; another integration may be using the account's "
                                 "quota; lower requests_per_minute or try later", status)
        raise DattoError(f"Datto RMM answered HTTP {status} to {where}{detail}", status)

    def _forbidden(self, where: str, detail: str) -> DattoForbidden:
        now = self.options.clock()
        throttled_lately = (self._last_throttled is not None
                            and now - self._last_throttled < self.options.block_seconds)
        if throttled_lately:
            # §3: 403 after 429s is the temporary IP block; more requests would extend it.
            self._blocked_until = now + self.options.block_seconds
            return DattoForbidden(
                f"Datto RMM blocked this address (HTTP 403 after rate-limit answers) for {where}; "
                f"psabridge pauses for {self.options.block_seconds:.0f} s; if it persists, "
                "lower requests_per_minute", 403)
        return DattoForbidden(
            f"Datto RMM refused {where} (HTTP 403{detail}): the API user may lack access to it, "
            "or the account's address is temporarily blocked for too many requests", 403)

    # -- pages -------------------------------------------------------------------------------

    def pages(self, path: str, key: str, params: Mapping[str, Any] | None = None) -> Iterator[dict]:
        """Yield every item of a paged list, following `pageDetails.nextPageUrl` (§4)."""
        wanted = {**(params or {}), "max": PAGE_MAX}
        url, query = path, {**wanted, "page": 0}
        seen: set[str] = set()
        while True:
            body = self.json(self.request("GET", url, params=query))
            items = body.get(key) or []
            yield from items
            next_url = (body.get("pageDetails") or {}).get("nextPageUrl")
            if not next_url or not items:
                return
            url, query = _with_missing_params(next_url, wanted), None
            if url in seen:
                raise DattoError(f"Datto RMM's pages of {path} loop back to a page already read")
            seen.add(url)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _with_missing_params(url: str, wanted: Mapping[str, Any]) -> str:
    """Re-add the query parameters a nextPageUrl dropped (ts-core does the same, §4)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for name, value in wanted.items():
        query.setdefault(name, str(value).lower() if isinstance(value, bool) else str(value))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _error_detail(response: httpx.Response) -> str:
    """The server's own words, if its body has some (the error shape is not established, §6),
    made safe to quote in one line."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        for field in ("message", "error", "detail"):
            if isinstance(body.get(field), str) and (words := remote_text(body[field])):
                return f": {words}"
    return ""


# -- one client per connection ---------------------------------------------------------------


def client_for(connection: Connection, options: ClientOptions | None = None) -> DattoClient:
    """The connection's client, made on first use and kept in `connection.state`; its token is
    shared with the other processes on the store through `connection.shared`.

    Pass `options` on the first call to choose the pace (tests inject a clock and a sleep).
    """
    client = connection.state.get(STATE_KEY)
    if client is None:
        settings = connection.settings
        client = DattoClient(
            settings["api_url"], settings["api_key"], settings["api_secret"],
            options or ClientOptions.from_settings(settings), transport=connection.transport,
            shared=connection.shared,
        )
        connection.state[STATE_KEY] = client
    return client
