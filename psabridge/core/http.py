"""Sending a request with retries: backoff with jitter, Retry-After honoured, writes kept safe,
and a deadline on every attempt.

Both connectors send through `send`, so "what is retried, how long we wait, and how long one
attempt may take" is decided in one place. A request that may have changed something on the
server (a POST whose answer was lost) is not retried here: the caller recovers, e.g. by looking
up the record it meant to create.

Why a deadline of our own: httpx's timeouts bound each socket operation, not a whole exchange,
so a server that trickles a byte every few seconds would hold a call (and the sync pass, or the
admin's command, behind it) forever. Clients made with `new_client` give every socket operation
at most the time the current attempt has left; an attempt that runs out raises
`DeadlineExceeded`, which connectors turn into a one-line, transient error.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import email.utils
import random
import re
import time
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import httpcore
import httpx

from psabridge.core import coordination, logs
from psabridge.core.settings import seconds_from_environment

log = logs.get_logger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # change nothing on the server

DEADLINE_ENV = "PSABRIDGE_HTTP_DEADLINE"
IN_FLIGHT_ENV = "PSABRIDGE_IN_FLIGHT_WINDOW"


# Seconds one attempt may take, connecting included, until the last byte of the answer. The
# default is twice the connectors' per-read timeout (30 s): a slow but working API finishes
# well within it.
DEADLINE = seconds_from_environment(DEADLINE_ENV, 60.0)
# How long a write whose answer never came may still be acted on by the remote system: the
# attempt's own deadline, and as long again for a server that queued it. Until then no other
# holder takes over the leases it was sent under (docs/architecture.md, "In flight").
IN_FLIGHT_WINDOW = seconds_from_environment(IN_FLIGHT_ENV, 2 * DEADLINE, zero_allowed=True)


@attrs.frozen
class RetryPolicy:
    """How hard to try. Defaults suit a background sync (CW advises 5-10 tries, <= 60 s waits)."""

    attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0  # a longer Retry-After is an outage, not throttling
    statuses: frozenset[int] = RETRYABLE_STATUS
    # Per attempt: a retry gets a deadline of its own, and `attempts` with the waits between
    # them bound the whole call.
    deadline: float = DEADLINE


# -- Retry-After ---------------------------------------------------------------------------------

# RFC 9110 says ASCII digits; some servers send "0.5" or a negative number.
_DELAY_SECONDS = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_unreadable_logged: set[str] = set()
_UNREADABLE_LOG_LIMIT = 32  # distinct values worth a line; a server inventing new ones is muted


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The wait the server asks for, in seconds, from Retry-After as a number of seconds or an
    HTTP date. None when it is absent or cannot be read: the policy's own backoff applies then.

    A negative number or a date in the past asks for no wait (0). A value that cannot be read
    ("soon", a mangled date) is a server bug we work around, not an error: it is logged once
    per distinct value, at debug level.
    """
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    seconds = _parse_retry_after(value)
    if seconds is None and value not in _unreadable_logged:
        if len(_unreadable_logged) < _UNREADABLE_LOG_LIMIT:
            _unreadable_logged.add(value)
            log.debug("ignoring a Retry-After that is neither seconds nor a date; backing off "
                      "instead", retry_after=value[:100])
    return seconds


def _parse_retry_after(value: str) -> float | None:
    if _DELAY_SECONDS.fullmatch(value):
        return max(0.0, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
        # RFC 9110 dates are GMT; a date without a zone must not be read as local time.
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


_jitter = random.Random()


def backoff_delay(policy: RetryPolicy, attempt: int) -> float:
    """Full-jitter exponential backoff for the given (1-based) attempt."""
    return _jitter.uniform(0, min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1)))


# -- the deadline of one attempt -------------------------------------------------------------------


class DeadlineExceeded(httpx.TimeoutException):
    """The server did not finish answering one attempt within the policy's deadline.

    `connected` is False when the time ran out while connecting: the request was never sent,
    so even a POST may be sent again.
    """

    def __init__(self, request: httpx.Request, seconds: float, connected: bool):
        super().__init__(f"no complete answer to {request.method} {request.url.path} within "
                         f"{seconds:g} s", request=request)
        self.seconds = seconds
        self.connected = connected

    def explain(self, service: str, what: str) -> str:
        """One line for the admin: `service` ("ConnectWise") did not finish answering `what`
        ("GET /company/companies")."""
        text = f"{service} did not finish answering {what} within {self.seconds:g} s; "
        if self.connected and self.request.method not in ("GET", "HEAD"):
            text += "the request may or may not have been applied; "
        return text + (f"{service} may be overloaded, or something on the way is holding the "
                       f"connection; try again later, and if it persists check the network to "
                       f"{service} or raise {DEADLINE_ENV}")


@attrs.define
class _Deadline:
    """One attempt's deadline. Its clock starts at the attempt's first socket operation, so time
    spent before that (a connector waiting for room in its quota) is not held against the server."""

    seconds: float
    ends: float | None = None  # time.monotonic()

    def time_left(self) -> float:
        now = time.monotonic()
        if self.ends is None:
            self.ends = now + self.seconds
        return self.ends - now

    def passed(self) -> bool:
        return self.ends is not None and time.monotonic() >= self.ends


# The deadline of the attempt this thread is making. httpx's sync client does its I/O in the
# calling thread, so the sockets below read it from here.
_attempt_deadline: contextvars.ContextVar[_Deadline | None] = contextvars.ContextVar(
    "psabridge_attempt_deadline", default=None)


def _time_for(timeout: float | None, expired: type[Exception]) -> float | None:
    """The timeout for one socket operation: the one httpx asked for, cut to what the current
    attempt has left; `expired` is raised when nothing is left."""
    deadline = _attempt_deadline.get()
    if deadline is None:
        return timeout
    left = deadline.time_left()
    if left <= 0:
        raise expired("the attempt's deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection's stream whose every read and write ends by the attempt's deadline."""

    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _time_for(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _time_for(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._stream.start_tls(
            ssl_context, server_hostname, _time_for(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend, with connecting and every stream bound by the deadline."""

    def __init__(self, backend: httpcore.NetworkBackend):
        self._backend = backend

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._backend.connect_tcp(
            host, port, _time_for(timeout, httpcore.ConnectTimeout), local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._backend.connect_unix_socket(
            path, _time_for(timeout, httpcore.ConnectTimeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _Cookies(httpx.Cookies):
    """A client's cookies, looked for only in an answer that sets some: httpx otherwise passes
    every answer through urllib's cookie machinery, a cost on every request of every alert."""

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


def new_client(**options: Any) -> httpx.Client:
    """An `httpx.Client(**options)` whose connections keep to the deadline of each attempt
    `send` makes. Transports that are not httpx's own (in-process ones, for tests) are used as
    they are: they have no sockets to bound."""
    client = httpx.Client(**options)
    client._cookies = _Cookies(client.cookies)
    # httpx has no option for httpcore's network backend, so it is put into the connection
    # pools of the client's transports: the default one and those for proxies from the
    # environment. tests/core/test_http.py's trickling server fails if httpx changes this.
    for transport in (client._transport, *client._mounts.values()):
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if backend is not None and not isinstance(backend, _DeadlineBackend):
            pool._network_backend = _DeadlineBackend(backend)
    return client


# -- sending ---------------------------------------------------------------------------------------


def send(
    client: httpx.Client,
    request: httpx.Request,
    policy: RetryPolicy = RetryPolicy(),
    idempotent: bool | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> httpx.Response:
    """Send `request`, retrying transport errors and retryable statuses under `policy`.

    Non-idempotent requests (POST, PATCH unless `idempotent=True`) are retried only when the
    server surely did not act: the connection was never made, or it answered 429. Returns the
    last response (the caller maps error statuses); re-raises the last transport error, which
    is `DeadlineExceeded` when the server took longer than `policy.deadline` to answer. Each
    attempt first checks that the leases covering the call are still held (`LeaseLost` if not).
    """
    if idempotent is None:
        idempotent = request.method in IDEMPOTENT_METHODS

    def retry_exception(exc: Exception) -> bool:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return True
        if isinstance(exc, DeadlineExceeded) and not exc.connected:
            return True
        return idempotent and isinstance(exc, httpx.TransportError)

    def retry_response(response: httpx.Response) -> tuple[bool, float | None]:
        """Whether to send again after `response`, and the wait its Retry-After asks for."""
        status = response.status_code
        if status not in policy.statuses or (status != 429 and not idempotent):
            return False, None
        retry_after = retry_after_seconds(response)
        return retry_after is None or retry_after <= policy.max_retry_after, retry_after

    writes = request.method not in SAFE_METHODS

    def attempt() -> httpx.Response:
        coordination.ensure_held()  # no retry outlives the lease it runs under
        if writes:  # until it is answered, the remote system may act on it
            coordination.mark_in_flight(IN_FLIGHT_WINDOW)
        deadline = _Deadline(policy.deadline)
        token = _attempt_deadline.set(deadline)
        try:
            response = client.send(request)  # the body too is read here, within the deadline
        except httpx.TimeoutException as exc:
            never_left = isinstance(exc, httpx.ConnectTimeout)
            if writes:
                _settle_in_flight(answered=never_left)
            if not deadline.passed():
                raise
            raise DeadlineExceeded(request, policy.deadline, connected=not never_left) from exc
        except httpx.ConnectError:
            if writes:  # it never left: nothing of it is in flight
                _settle_in_flight(answered=True)
            raise
        except httpx.TransportError:
            if writes:  # sent, and the answer lost: the remote system may still act on it
                _settle_in_flight(answered=False)
            raise
        finally:
            _attempt_deadline.reset(token)
        if writes:  # answered: the remote system has done with it
            _settle_in_flight(answered=True)
        return response

    # A plain loop rather than a retry library's: every request of every alert passes here,
    # nearly always once.
    attempts = max(1, policy.attempts)
    for number in range(1, attempts + 1):
        try:
            response = attempt()
        except Exception as exc:
            if number == attempts or not retry_exception(exc):
                raise
            reason, delay = type(exc).__name__, backoff_delay(policy, number)
        else:
            again, retry_after = retry_response(response)
            if not again or number == attempts:
                return response  # out of attempts on a bad status: the caller maps it
            reason = f"HTTP {response.status_code}"
            delay = backoff_delay(policy, number) if retry_after is None else retry_after
            response.close()
        log.info("retrying_request", method=request.method, url=_where(request), reason=reason,
                 attempt=number, delay=round(delay, 3))
        sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _settle_in_flight(answered: bool) -> None:
    if answered:
        coordination.mark_in_flight(None)
    else:
        coordination.mark_unanswered()


def remote_text(value: Any, limit: int = 200) -> str:
    """Words from a remote answer (an error message, a body that is not JSON), fit to quote in
    a one-line message to the admin: line breaks, terminal escapes and other control or format
    characters become spaces, runs of spaces one, and it is cut to `limit` characters. A server
    cannot then forge extra lines in a log or repaint the admin's terminal."""
    text = str(value)[: limit * 4]
    cleaned = "".join(" " if char.isspace() or unicodedata.category(char)[0] == "C" else char
                      for char in text)
    one_line = " ".join(cleaned.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


def _where(request: httpx.Request) -> str:
    return str(request.url.copy_with(query=None))
