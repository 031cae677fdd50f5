"""The simulator's model of Datto's rate limit (API-NOTES §3), every number configurable.

Per account, in a sliding window: reads (GET) against `reads`, writes against `writes` and also
their own operation's bucket. A request over a limit gets 429 and is not counted. After
`block_after` refusals within a window the caller's address is blocked: 403 for `block_seconds`.
From `cutoff_ratio` of a quota on, answers are delayed by `cutoff_delay` (Datto: 90 %, 1 s).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Mapping

import attrs

from psabridge.plugins.rmm_datto.throttle import OPERATION_LIMITS


@attrs.frozen
class Quotas:
    window: float = 60.0
    reads: int = 600
    writes: int = 600
    operation: int = 100
    operations: Mapping[str, int] = attrs.field(factory=lambda: dict(OPERATION_LIMITS))
    cutoff_ratio: float = 0.9
    cutoff_delay: float = 1.0
    block_after: int = 10  # 429s within a window before the address is blocked
    block_seconds: float = 300.0

    def limit(self, bucket: str) -> int:
        if bucket == "read":
            return self.reads
        if bucket == "write":
            return self.writes
        return self.operations.get(bucket, self.operation)


@attrs.frozen
class Verdict:
    status: int = 200  # 200 go ahead, 429 throttled, 403 blocked
    delay: float = 0.0  # seconds to hold the answer (the 90 % cut-off)


class QuotaKeeper:
    def __init__(self, quotas: Quotas, clock: Callable[[], float]):
        self.quotas = quotas
        self.clock = clock
        self._counted: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._refusals: collections.deque[float] = collections.deque()
        self._blocked_until: float | None = None
        self.refused = 0  # requests answered 429 (or 403, blocked) for the quota, ever
        self._lock = threading.Lock()

    def blocked(self) -> bool:
        with self._lock:
            return self._blocked_until is not None and self.clock() < self._blocked_until

    def admit(self, buckets: tuple[str, ...]) -> Verdict:
        with self._lock:
            now = self.clock()
            if self._blocked_until is not None and now < self._blocked_until:
                return Verdict(403)
            for bucket in buckets:
                self._forget_old(self._counted[bucket], now)
            if any(len(self._counted[b]) >= self.quotas.limit(b) for b in buckets):
                return self._refuse(now)
            for bucket in buckets:
                self._counted[bucket].append(now)
            near_limit = any(len(self._counted[b]) >= self.quotas.cutoff_ratio * self.quotas.limit(b)
                             for b in buckets)
            return Verdict(200, self.quotas.cutoff_delay if near_limit else 0.0)

    def _refuse(self, now: float) -> Verdict:
        self.refused += 1
        self._forget_old(self._refusals, now)
        self._refusals.append(now)
        if len(self._refusals) > self.quotas.block_after:
            self._blocked_until = now + self.quotas.block_seconds
            self._refusals.clear()
            return Verdict(403)
        return Verdict(429)

    def count(self, bucket: str) -> int:
        with self._lock:
            self._forget_old(self._counted[bucket], self.clock())
            return len(self._counted[bucket])

    def operation_counts(self) -> dict[str, int]:
        with self._lock:
            names = [b for b in self._counted if b not in ("read", "write")]
        return {name: self.count(name) for name in names}

    def _forget_old(self, times: collections.deque[float], now: float) -> None:
        while times and times[0] <= now - self.quotas.window:
            times.popleft()
