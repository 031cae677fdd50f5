"""Crash test: `psabridge sync` killed with SIGKILL at random moments, rerun, then finished.

The test process serves both simulators on loopback and sets up the store file as the admin
would; each `python -m psabridge sync` is a real process on that store, killed with kill -9 at a
seeded random moment of its run (a little latency on every request spreads a run over about a
second, so the kills land among the remote writes). A killed pass leaves the sync lock and an
alert's claim held: PSABRIDGE_LOCK_TTL, PSABRIDGE_CLAIM_TTL and PSABRIDGE_IN_FLIGHT_WINDOW make
them (and a killed process's unanswered write) expire in a second instead of minutes. Finally
sync runs until a pass does nothing, and the invariants of the convergence test must hold.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.reliability.world import (
    check_invariants,
    raise_alerts,
    set_up,
    settled,
    technician_closes,
    world,
)

TTL = "1"


def _sync(env, timeout=60.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "psabridge", "sync", "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_at_random(env, rng: random.Random, kills: int, longest: float) -> list[float]:
    moments = []
    for _ in range(kills):
        process = _sync(env)
        moment = rng.uniform(0.3, longest)  # the first 0.3 s is Python importing psabridge
        try:
            process.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            moments.append(round(moment, 2))
        else:
            moments.append(-1.0)  # it finished first: the next run starts from there
        process.communicate()
    return moments


def _finish(w, env, max_runs: int = 15) -> list[dict]:
    """Rerun until a pass succeeds and has nothing left to do; waits out held locks."""
    reports = []
    for _ in range(max_runs):
        process = _sync(env)
        out, err = process.communicate(timeout=120)
        if process.returncode == 0:
            report = json.loads(out.strip().splitlines()[-1])
            reports.append(report)
            if not any(v for k, v in report.items() if isinstance(v, int) or k == "errors"):
                if settled(w):
                    return reports
                time.sleep(float(TTL))  # an alert waits for a dead run's claim to expire
        elif "another psabridge sync is running" in err or "being handled" in err:
            time.sleep(float(TTL))  # the killed run's lock: it expires
        else:
            reports.append({"exit": process.returncode, "stderr": err[-500:]})
    raise AssertionError(f"sync did not settle in {max_runs} runs: {reports[-3:]}")


def run_crashes(tmp_path, seed: int, kills: int) -> dict:
    print(f"crash test seed={seed} kills={kills}")
    rng = random.Random(seed)
    db = tmp_path / "state.db"
    with world(db, seed, companies=6, loopback=True) as w:
        set_up(w)
        w.inject(latency=0.01)
        raise_alerts(w, 12, rng, repeats=2)
        env = {**os.environ, "PSABRIDGE_DB": str(db), "PSABRIDGE_LOCK_TTL": TTL,
               "PSABRIDGE_CLAIM_TTL": TTL, "PSABRIDGE_IN_FLIGHT_WINDOW": TTL,
               "PSABRIDGE_LOAD_PLUGINS": "connectwise,datto,sqlite"}
        env.pop("PYTHONWARNINGS", None)
        first = kills * 3 // 5
        moments = _kill_at_random(env, rng, first, longest=2.5)
        _finish(w, env)

        psa, rmm = w.bridge.pair
        rows = [w.store.alert_ticket(psa, rmm, a["alertUid"]) for a in w.raised]
        by_ticket = {}
        for row in rows:
            by_ticket.setdefault(row.ticket_id, []).append(row)
        single = sorted(group[0].alert_uid for group in by_ticket.values() if len(group) == 1)
        rng.shuffle(single)
        for uid in single[:3]:
            w.datto.resolve_alert(uid)
        for uid in single[3:6]:
            technician_closes(w, w.store.alert_ticket(psa, rmm, uid).ticket_id)
        moments += _kill_at_random(env, rng, kills - first, longest=1.5)
        _finish(w, env)
        figures = check_invariants(w, interrupted=sum(m >= 0 for m in moments))
        print({"kill moments": moments, **figures})
        return figures


def assert_converged_after_kills(figures: dict, kills: int) -> None:
    """The invariants held (check_invariants asserts them); a kill leaves at most one write
    without its outcome, and there was work to kill."""
    assert 0 <= figures["interrupted writes"] <= kills
    assert figures["tickets"] > 0 and figures["devices mapped"] > 0


def test_killed_syncs_converge(tmp_path):
    assert_converged_after_kills(run_crashes(tmp_path, seed=31, kills=5), kills=5)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [41, 42])
def test_killed_twenty_times_converges(tmp_path, seed):
    assert_converged_after_kills(run_crashes(tmp_path, seed=seed, kills=20), kills=20)
