"""Staying under Datto RMM's request quota on our side, so the server never has to refuse us.

Datto counts requests per account in a rolling 60 s window (API-NOTES §3): reads (GET) against
one quota, writes (PUT/POST/DELETE) against an independent write quota *and* a per-operation
quota ("alert-resolve", "site-create", ...). A request refused with 429 is bad; continuing after
429s earns a temporary IP block (403, about 5 minutes). So every request first waits here until
each bucket it counts against has room in the window.

The window is a log of send times per bucket (a sliding window, exactly the server's model),
with an injectable clock and sleep so tests run instantly.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import attrs

# Per-operation write limits that differ from the default (API-NOTES §3, C pncit/ts-core).
OPERATION_LIMITS = {"device-udf-set": 600}


@attrs.frozen
class Limits:
    """The quotas the client keeps to. Defaults are Datto's documented ones (API-NOTES §3).

    The quota is shared by every integration on the account, so lower `reads` and `writes`
    (the `requests_per_minute` setting) when other tools use the same account.
    """

    window: float = 60.0
    reads: int = 600
    writes: int = 600
    operation: int = 100
    operations: Mapping[str, int] = attrs.field(factory=lambda: dict(OPERATION_LIMITS))

    def of(self, bucket: str) -> int:
        if bucket == "read":
            return self.reads
        if bucket == "write":
            return self.writes
        return self.operations.get(bucket, self.operation)


def buckets_for(method: str, operation: str | None) -> tuple[str, ...]:
    """The buckets a request counts against: reads, or writes plus its own operation."""
    if method in ("GET", "HEAD"):
        return ("read",)
    return ("write", operation) if operation else ("write",)


class SlidingWindowLimiter:
    """Blocks `acquire` until every named bucket has had fewer than its limit in the window."""

    def __init__(self, limits: Limits = Limits(), clock: Callable[[], float] = time.monotonic,
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
