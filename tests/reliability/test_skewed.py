"""skewed.py runs the real command line with the host clock off, and only the wall clock."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time

import pytest

from tests.reliability.processes import SKEWED, psabridge_env, run

CLOCKS = f"""
import datetime, json, runpy, time
skewed = runpy.run_path({str(SKEWED)!r})
with skewed["skewed_clock"](float(__import__("sys").argv[1])):
    before = time.monotonic()
    print(json.dumps({{"time": time.time(), "now": datetime.datetime.now(datetime.UTC).timestamp(),
                      "monotonic": before}}))
"""


@pytest.mark.parametrize("offset", [600, -3600])
def test_the_wall_clock_is_off_by_the_offset_and_durations_are_not(offset):
    real = time.time()
    out = subprocess.run([sys.executable, "-c", CLOCKS, str(offset)], capture_output=True,
                         text=True, check=True).stdout
    clocks = json.loads(out)
    assert abs(clocks["time"] - (real + offset)) < 30
    assert abs(clocks["now"] - (real + offset)) < 30
    assert abs(clocks["monotonic"] - time.monotonic()) < 30  # retry waits and timeouts unaffected


def test_a_cli_process_under_skewed_py_stamps_its_rows_with_the_skewed_clock(tmp_path):
    db = tmp_path / "state.db"
    env = psabridge_env(db, lock_ttl=1, claim_ttl=1)
    run(env, "plugins", "disable", "connectwise", skew=3600).check()
    from psabridge.core.plugins import make_plugin_manager
    from psabridge.core.store import open_store

    store = open_store(make_plugin_manager(), f"sqlite://{db}")
    try:
        (row,) = store.table_rows("plugins")
    finally:
        store.close()
    stamped = dt.datetime.fromisoformat(row["updated_at"])
    assert abs((stamped - dt.datetime.now(dt.UTC)).total_seconds() - 3600) < 30
