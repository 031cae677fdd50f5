"""Several `sync --watch` on one store share one schedule: a pass every interval, whichever
watcher runs it, not one per watcher; a watcher that stops is replaced within an interval.

The schedule is a lease timed by the store's clock, so the waits here are for that deadline to
pass (`pause_until`) or for a condition with a deadline, never a guess at how fast a pass runs.
"""

from __future__ import annotations

import threading
import time

from psabridge.core import coordination, sync
from tests.core.test_mapping import bridge, psa, rmm  # noqa: F401 - fixtures
from tests.reliability.processes import pause_until, wait_until


def test_a_second_watcher_skips_a_pass_within_the_first_ones_interval(bridge, rmm):  # noqa: F811
    first = sync.Schedule(coordination.new_owner(), interval=1.0)
    second = sync.Schedule(coordination.new_owner(), interval=1.0)

    assert sync.run_pass(bridge, schedule=first) is not None
    ended = time.monotonic()
    reads = rmm.calls["list_alerts"]
    assert reads > 0  # a pass reads the open alerts
    assert sync.run_pass(bridge, schedule=second) is None
    assert rmm.calls["list_alerts"] == reads  # it did not even read: nothing asked of either API
    # The watcher that ran the last pass runs the next when its own interval is over; the
    # others stand by until one and a half intervals have passed since that pass.
    assert sync.run_pass(bridge, schedule=first) is not None
    pause_until(ended + sync.STANDBY * 1.0 + 0.2)
    assert sync.run_pass(bridge, schedule=second) is not None
    assert sync.run_pass(bridge, schedule=first) is None


def test_three_watchers_run_as_many_passes_as_one_and_the_others_take_over(bridge, rmm):  # noqa: F811
    interval = 0.5
    passes: list[tuple[str, float]] = []
    lock = threading.Lock()
    stopping = {name: threading.Event() for name in ("a", "b", "c")}

    def watcher(name: str) -> None:
        def on_pass(report) -> None:
            with lock:
                passes.append((name, time.monotonic()))

        sync.watch(lambda: bridge, interval, on_pass, stop=stopping[name].is_set)

    threads = [threading.Thread(target=watcher, args=(name,), daemon=True) for name in stopping]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    wait_until(lambda: len(passes) >= 6, 30, "six passes")
    with lock:
        first = passes[0][0]
        seen = list(passes)
    elapsed = time.monotonic() - started
    # One watcher's worth of passes: at most one an interval (plus the first), not three.
    assert len(seen) <= elapsed / interval + 2, (len(seen), elapsed)
    # The watcher that stops is replaced: another one runs the passes from then on.
    stopping[first].set()
    threads[list(stopping).index(first)].join(timeout=10)
    count = len(passes)
    stopped_at = time.monotonic()
    wait_until(lambda: len(passes) > count + 1, 10, "a pass by another watcher")
    with lock:
        name, moment = passes[count]
    assert name != first
    assert moment - stopped_at < 3 * interval + 2  # within an interval or so, not a lease's ttl
    for event in stopping.values():
        event.set()
    for thread in threads:
        thread.join(timeout=10)
