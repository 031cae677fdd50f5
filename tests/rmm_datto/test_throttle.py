"""The client-side sliding window: Datto counts a rolling 60 s window, not fixed minutes."""

from __future__ import annotations

from psabridge.plugins.rmm_datto.throttle import Limits, SlidingWindowLimiter, buckets_for


def test_the_window_slides_a_request_frees_room_60_s_after_it_was_sent(fake_time):
    limiter = SlidingWindowLimiter(Limits(reads=2), fake_time.clock, fake_time.sleep)
    limiter.acquire(["read"])
    fake_time.now += 40
    limiter.acquire(["read"])
    assert limiter.acquire(["read"]) == 20.0  # the first send leaves the window at t+60
    assert limiter.acquire(["read"]) == 40.0  # then the second, at t+100
    assert limiter.used("read") == 2


def test_a_write_counts_against_writes_and_its_operation_and_waits_for_the_fuller():
    assert buckets_for("GET", None) == ("read",)
    assert buckets_for("POST", "alert-resolve") == ("write", "alert-resolve")
    assert buckets_for("PUT", None) == ("write",)
    limits = Limits()
    assert (limits.of("read"), limits.of("write"), limits.of("site-create"),
            limits.of("device-udf-set")) == (600, 600, 100, 600)


def test_the_full_documented_quota_is_used_without_waiting(fake_time):
    limiter = SlidingWindowLimiter(Limits(), fake_time.clock, fake_time.sleep)
    for _ in range(600):
        limiter.acquire(["read"])
    assert fake_time.slept == []
    limiter.acquire(["read"])
    assert fake_time.slept == [60.0]
