"""Run the psabridge command line as on a host whose clock is off.

    python tests/reliability/skewed.py OFFSET_SECONDS psabridge-args...
    python tests/reliability/skewed.py -3600 --db state.db sync --once --json

Inside, `time.time()` and `datetime.now()` read OFFSET_SECONDS away from the real time and keep
ticking (time-machine), so the process stamps rows, cursors and lock expiries with its wrong
clock while the simulators, in the test process, keep the right one: clock skew between the
bridge's host and the remote systems. `time.monotonic()` is not shifted (timeouts and retry
waits measure durations, which skew does not change), nor is SQLite's own clock in C.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import time_machine


@contextmanager
def skewed_clock(offset_seconds: float) -> Iterator[None]:
    """The wall clock reads `offset_seconds` off from now, and ticks on from there."""
    with time_machine.travel(time.time() + offset_seconds, tick=True):
        yield


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: skewed.py OFFSET_SECONDS psabridge-args...")
    offset, *psabridge_args = argv
    from psabridge.cli import cli

    with skewed_clock(float(offset)):
        cli.main(args=psabridge_args, prog_name="psabridge")


if __name__ == "__main__":
    main(sys.argv[1:])
