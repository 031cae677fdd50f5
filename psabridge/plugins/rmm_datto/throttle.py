"""Staying under Datto RMM's request quota on our side, so the server never has to refuse us.

Datto counts requests per account in a rolling 60 s window (API-NOTES §3): reads (GET) against
one quota, writes (PUT/POST/DELETE) against an independent write quota *and* a per-operation
quota ("alert-resolve", "site-create", ...). A request refused with 429 is bad; continuing after
429s earns a temporary IP block (403, about 5 minutes). So every request first waits here until
each bucket it counts against has room in the window.

The window itself is core's `SlidingWindowLimiter` (a log of send times per bucket, exactly the
server's model), one per client, shared by every worker that sends through it; this module
declares Datto's buckets and their limits.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from psabridge.core.pacing import SlidingWindowLimiter

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


__all__ = ["Limits", "OPERATION_LIMITS", "SlidingWindowLimiter", "buckets_for"]
