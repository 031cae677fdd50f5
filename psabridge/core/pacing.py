"""Calls to a remote system, several at a time, at the pace its quota allows.

A real API answers in 100-300 ms, so one request at a time leaves a 20,000-device estate's first
mapping waiting on latency for over an hour, although the quotas would allow it in about 25
minutes. So work that makes many independent calls (reading audits, asking for candidate
configurations, creating configurations) runs them on a bounded pool of workers per remote
(`concurrently`), and every request first waits for room in its remote's quota (a
`SlidingWindowLimiter` the connector's client keeps, one per remote per process, shared by all
workers). Core knows no product's limits: each connector declares its own.

Threads do not inherit context variables, and the leases a piece of work runs under are context
variables (`coordination`, `store.held_fences`): each task runs in a copy of the submitting
context, so its commits are fenced and its remote calls checked (`ensure_held`) exactly as they
would be one at a time.
"""

from __future__ import annotations

import collections
import contextvars
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, Protocol, TypeVar

import attrs

from psabridge.core.errors import PsabridgeError

T = TypeVar("T")
R = TypeVar("R")

CONCURRENCY_ENV = "PSABRIDGE_CONCURRENCY"
# At Datto's quota (600 a minute) with its answers held 1 s once 90 % of the quota is used, a
# steady 10 requests a second needs more than 10 in flight; 16 also stays well inside what
# ConnectWise's guidance calls limited parallelism, and every request is paced anyway.
DEFAULT_CONCURRENCY = 16


def concurrency_from_environment(default: int = DEFAULT_CONCURRENCY) -> int:
    """Workers per remote system: PSABRIDGE_CONCURRENCY, a whole number from 1 (one request at
    a time) up; anything else is ignored with a warning."""
    raw = os.environ.get(CONCURRENCY_ENV, "").strip()
    if not raw:
        return default
    if raw.isdigit() and int(raw) >= 1:
        return int(raw)
    print(f"Warning: {CONCURRENCY_ENV}={raw[:50]!r} ignored: it must be a whole number of "
          f"workers, 1 or more; using {default}", file=sys.stderr)
    return default


# -- pacing -----------------------------------------------------------------------------------------


class Limits(Protocol):
    """What a connector declares: a window in seconds, and each bucket's requests within it."""

    window: float

    def of(self, bucket: str) -> int: ...


@attrs.frozen
class RequestPace:
    """A quota that counts every request alike, reads and writes: at most `requests` in any
    `window` seconds (ConnectWise's per minute, Autotask's per hour). A connector whose API
    counts kinds of request apart (Datto RMM) declares its own `Limits`."""

    requests: int
    window: float = 60.0

    def of(self, bucket: str) -> int:
        return self.requests


class SlidingWindowLimiter:
    """Blocks `acquire` until every named bucket has had fewer than its limit in the window.

    A log of send times per bucket, exactly a sliding-window server's model; thread-safe, so all
    workers of a remote share one and together never exceed its quota. Clock and sleep are
    injectable so tests run instantly."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.limits = limits
        self.clock = clock
        self.sleep = sleep
        self._sent: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def acquire(self, buckets: Iterable[str]) -> float:
        """Wait for room in every bucket, then record one request in each. Returns seconds waited."""
        buckets = tuple(buckets)
        waited = 0.0
        while True:
            with self._lock:
                delay = self._delay_until_room(buckets)
                if delay <= 0:
                    now = self.clock()
                    for bucket in buckets:
                        self._sent[bucket].append(now)
                    return waited
            self.sleep(delay)
            waited += delay

    def used(self, bucket: str) -> int:
        """Requests recorded in `bucket` within the current window."""
        with self._lock:
            self._forget_old(bucket, self.clock())
            return len(self._sent[bucket])

    def _delay_until_room(self, buckets: tuple[str, ...]) -> float:
        now = self.clock()
        delay = 0.0
        for bucket in buckets:
            self._forget_old(bucket, now)
            sent, limit = self._sent[bucket], self.limits.of(bucket)
            if len(sent) >= limit:
                # The oldest of the last `limit` sends must leave the window first.
                oldest_blocking = sent[len(sent) - limit]
                delay = max(delay, oldest_blocking + self.limits.window - now)
        return delay

    def _forget_old(self, bucket: str, now: float) -> None:
        sent = self._sent[bucket]
        while sent and sent[0] <= now - self.limits.window:
            sent.popleft()


# -- workers ----------------------------------------------------------------------------------------


@attrs.frozen
class Done(Generic[T, R]):
    """One item's outcome: its value, or the error that stopped it."""

    item: T
    value: R | None = None
    error: PsabridgeError | None = None


def concurrently(function: Callable[[T], R], items: Sequence[T], workers: int) -> list[Done[T, R]]:
    """`function(item)` for every item, on at most `workers` threads, in the caller's context
    (its held leases included); outcomes in the items' order.

    A PsabridgeError stops only its own item (it is in that item's `Done.error`); anything else
    is a bug: it is raised once the items already started have finished, and no new one starts.
    """
    if workers <= 1 or len(items) <= 1:
        return [_one(function, item) for item in items]
    stop = threading.Event()

    def task(context: contextvars.Context, item: T) -> Done[T, R]:
        if stop.is_set():
            raise _Skipped()
        try:
            return context.run(_one, function, item)
        except BaseException:
            stop.set()
            raise

    with ThreadPoolExecutor(max_workers=min(workers, len(items)),
                            thread_name_prefix="psabridge-worker") as pool:
        futures = [pool.submit(task, contextvars.copy_context(), item) for item in items]
        outcomes, failure = [], None
        for future in futures:
            try:
                outcomes.append(future.result())
            except _Skipped:
                continue
            except BaseException as exc:
                failure = failure or exc
    if failure is not None:
        raise failure
    return outcomes


class _Skipped(Exception):
    """An item not started because another one raised a bug."""


def _one(function: Callable[[T], R], item: T) -> Done[T, R]:
    try:
        return Done(item, function(item))
    except PsabridgeError as exc:
        return Done(item, error=exc)
