"""A process that holds a lease on a store, for the coordination tests (run with `python -m`).

    python -m tests.core.lease_holder DB NAME TTL [--clock-offset SECONDS]

It takes lease NAME on the SQLite store at DB, prints `holding TOKEN`, then obeys lines on its
standard input: `commit VALUE` writes a cursor under the lease and prints `committed` or `lost`;
`in-flight SECONDS` marks a remote write in flight under it and prints `marked`; `quit`
releases the lease and exits. With --clock-offset the process's clock is moved that many
seconds (time-machine), as on a host whose clock is off.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("name")
    parser.add_argument("ttl", type=float)
    parser.add_argument("--clock-offset", type=float, default=0.0)
    args = parser.parse_args()
    if args.clock_offset:
        import time_machine

        time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=args.clock_offset),
                            tick=True).start()
    from psabridge.core import coordination, logs
    from psabridge.core.plugins import make_plugin_manager
    from psabridge.core.store import LeaseLost, open_store

    logs.configure_logging(stream=sys.stderr)  # stdout carries the answers
    store = open_store(make_plugin_manager(), f"sqlite://{args.db}")
    with coordination.hold(store, args.name, ttl=args.ttl) as held:
        print(f"holding {held.lease.token}", flush=True)
        for line in sys.stdin:
            command, _, value = line.strip().partition(" ")
            if command == "commit":
                try:
                    store.set_cursor("test", args.name, value)
                except LeaseLost:
                    print("lost", flush=True)
                else:
                    print("committed", flush=True)
            elif command == "in-flight":
                coordination.mark_in_flight(float(value))
                print("marked", flush=True)
            elif command == "quit":
                break
    store.close()


if __name__ == "__main__":
    main()
