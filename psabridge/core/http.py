"""Sending a request with retries: backoff with jitter, Retry-After honoured, writes kept safe.

Both connectors send through `send`, so "what is retried, and how long we wait" is decided in
one place. A request that may have changed something on the server (a POST whose answer was
lost) is not retried here: the caller recovers, e.g. by looking up the record it meant to create.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import random
import re
import time
from collections.abc import Callable

import attrs
import httpx
import tenacity

from psabridge.core import coordination, logs

log = logs.get_logger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@attrs.frozen
class RetryPolicy:
    """How hard to try. Defaults suit a background sync (CW advises 5-10 tries, <= 60 s waits)."""

    attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0  # a longer Retry-After is an outage, not throttling
    statuses: frozenset[int] = RETRYABLE_STATUS


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
    last response (the caller maps error statuses); re-raises the last transport error. Each
    attempt first checks that the leases covering the call are still held (`LeaseLost` if not).
    """
    if idempotent is None:
        idempotent = request.method in IDEMPOTENT_METHODS

    def retry_exception(exc: BaseException) -> bool:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return True
        return idempotent and isinstance(exc, httpx.TransportError)

    def retry_response(response: httpx.Response) -> bool:
        status = response.status_code
        if status not in policy.statuses or (status != 429 and not idempotent):
            return False
        retry_after = retry_after_seconds(response)
        return retry_after is None or retry_after <= policy.max_retry_after

    def wait(state: tenacity.RetryCallState) -> float:
        outcome = state.outcome
        if not outcome.failed and (seconds := retry_after_seconds(outcome.result())) is not None:
            return seconds
        return backoff_delay(policy, state.attempt_number)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        reason = (type(outcome.exception()).__name__ if outcome.failed
                  else f"HTTP {outcome.result().status_code}")
        if not outcome.failed:
            outcome.result().close()
        log.info("retrying request", method=request.method, url=_where(request), reason=reason,
                 attempt=state.attempt_number, delay=round(state.upcoming_sleep, 3))

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=wait,
        retry=(tenacity.retry_if_exception(retry_exception)
               | tenacity.retry_if_result(retry_response)),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
        # Out of attempts on a bad status: hand the response back for the caller to map.
        retry_error_callback=lambda state: state.outcome.result(),
    )
    def attempt() -> httpx.Response:
        coordination.ensure_held()  # no retry outlives the lease it runs under
        return client.send(request)

    return retrying(attempt)


def _where(request: httpx.Request) -> str:
    return str(request.url.copy_with(query=None))
