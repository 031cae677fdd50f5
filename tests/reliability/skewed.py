"""Run psabridge on a host whose clock is off: `python tests/reliability/skewed.py OFFSET_SECONDS ARGS...`

    python tests/reliability/skewed.py 600 sync --watch --interval 2

runs `psabridge sync --watch --interval 2` as it would run on a host whose wall clock is ten
minutes ahead (a negative offset: behind). The clock keeps ticking from there. Only the wall
clock moves (time.time, datetime.now...): time.monotonic, which timeouts and sleeps use, is
left alone, as it is on a real host whose clock was set wrong.
"""

from __future__ import annotations

import datetime as dt
import sys

import time_machine

USAGE = "usage: python tests/reliability/skewed.py OFFSET_SECONDS psabridge-args..."


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit(USAGE)
    try:
        offset = float(argv[0])
    except ValueError:
        sys.exit(USAGE)
    skewed_now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset)
    with time_machine.travel(skewed_now, tick=True):
        from psabridge.cli import cli

        cli.main(args=argv[1:], prog_name="psabridge")


if __name__ == "__main__":
    main(sys.argv[1:])
