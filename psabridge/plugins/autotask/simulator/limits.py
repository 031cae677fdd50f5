"""Autotask's two limits (API-NOTES §6): requests per rolling hour for the whole database
(10,000, shared by every integration; `ThresholdInformation` tells the count), and at most 3
requests in flight per integration code and object endpoint (error code Itgenatr005).

Neither refusal's status is documented (§12): both are `Options.limit_status`, 429 by default,
with the reason in `{"errors": [...]}`.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

THRESHOLD_TEXT = ("The API request threshold of {limit} requests per {minutes} minutes has been "
                  "exceeded for this database; requests are refused until the rolling count drops.")
THREAD_TEXT = ("Itgenatr005: Thread Threshold Exceeded - The Autotask API thread threshold of {limit} "
               "threads has been exceeded.")


class Refused(Exception):
    """A request over a limit; `str()` is the text for `errors`."""


class Limits:
    def __init__(self, threshold: int, window_seconds: float, thread_limit: int,
                 clock: Callable[[], float] = time.time, latency_tiers: bool = False,
                 sleep: Callable[[float], None] = time.sleep):
        self.threshold, self.window, self.thread_limit = threshold, window_seconds, thread_limit
        self.clock, self.latency_tiers, self.sleep = clock, latency_tiers, sleep
        self._calls: collections.deque[float] = collections.deque()
        self.in_flight: collections.Counter[tuple[str, str]] = collections.Counter()
        self.most_in_flight: collections.Counter[tuple[str, str]] = collections.Counter()
        self.refused: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        while self._calls and self._calls[0] <= now - self.window:
            self._calls.popleft()

    def used(self) -> int:
        """Requests counted in the current rolling window."""
        with self._lock:
            self._expire(self.clock())
            return len(self._calls)

    def admit(self, integration_code: str, endpoint: str) -> None:
        """Count the request and take one of its endpoint's threads, or raise Refused."""
        key = (integration_code.casefold(), endpoint.casefold())
        with self._lock:
            now = self.clock()
            self._expire(now)
            if len(self._calls) >= self.threshold:
                self.refused["threshold"] += 1
                raise Refused(THRESHOLD_TEXT.format(limit=self.threshold, minutes=round(self.window / 60)))
            if self.in_flight[key] >= self.thread_limit:
                self.refused["threads"] += 1
                raise Refused(THREAD_TEXT.format(limit=self.thread_limit))
            self._calls.append(now)
            self.in_flight[key] += 1
            self.most_in_flight[key] = max(self.most_in_flight[key], self.in_flight[key])
            share = len(self._calls) / self.threshold
        if self.latency_tiers and share >= 0.5:  # optional (§12): latency added near the threshold
            self.sleep(1.0 if share >= 0.75 else 0.5)

    def release(self, integration_code: str, endpoint: str) -> None:
        key = (integration_code.casefold(), endpoint.casefold())
        with self._lock:
            self.in_flight[key] -= 1
            if self.in_flight[key] <= 0:
                del self.in_flight[key]
