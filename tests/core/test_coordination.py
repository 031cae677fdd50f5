"""Leases, their heartbeat and their fencing (docs/architecture.md, "Coordination"), shown with
several processes: a holder stopped with SIGSTOP past its lease, one killed with SIGKILL, one
whose clock is an hour off, and a live one whose work outlasts its ttl many times over.

Waits here are for a condition, with a deadline; nothing assumes how fast a process runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from psabridge.core import coordination
from psabridge.core.http import RetryPolicy, send
from psabridge.core.models import JournalEntry
from psabridge.core.store import LeaseLost, open_store

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Holder:
    """A `tests.core.lease_holder` process holding one lease on the test's store."""

    def __init__(self, db, name: str, ttl: float, clock_offset: float = 0.0):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.core.lease_holder", str(db), name, str(ttl),
             "--clock-offset", str(clock_offset)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        assert line.startswith("holding "), line
        self.token = int(line.split()[1])

    def ask(self, command: str) -> str:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process.stdin.close()
        self.process.stdout.close()


@pytest.fixture
def holders():
    started = []

    def start(*args, **kwargs) -> Holder:
        holder = Holder(*args, **kwargs)
        started.append(holder)
        return holder

    yield start
    for holder in started:
        holder.stop()


def wait_until(condition, what: str, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"gave up waiting: {what}"
        time.sleep(0.02)


def test_a_holder_that_stalled_past_its_lease_cannot_commit_over_the_next_holder(
        store, db_path, holders):
    stalled = holders(db_path, "work", ttl=1.0)
    stalled.process.send_signal(signal.SIGSTOP)  # a long GC pause, a frozen VM: no heartbeat
    wait_until(lambda: store.lease_holder("work").expires_in <= 0, "the lease to run out")

    with coordination.hold(store, "work", ttl=30) as held:
        assert held.lease.token > stalled.token
        store.set_cursor("test", "work", "written by the next holder")
        stalled.process.send_signal(signal.SIGCONT)
        assert stalled.ask("commit written by the stalled holder") == "lost"
    assert store.cursor("test", "work") == "written by the next holder"


def test_a_live_holder_keeps_its_lease_however_long_its_work_takes(store, db_path, holders):
    ttl = 0.5
    busy = holders(db_path, "work", ttl=ttl)
    observed_until = time.monotonic() + 8 * ttl  # eight lifetimes of a lease nobody renewed
    while time.monotonic() < observed_until:
        with coordination.try_hold(store, "work") as held:
            assert held is None, "the lease of a live holder was handed to another"
        time.sleep(ttl / 5)
    assert busy.ask("commit still mine") == "committed"
    busy.ask("quit")
    busy.process.wait()
    with coordination.try_hold(store, "work") as held:
        assert held is not None


def test_the_lease_of_a_process_killed_on_this_host_is_taken_over_at_once(store, db_path, holders):
    killed = holders(db_path, "work", ttl=3600)
    killed.process.send_signal(signal.SIGKILL)
    killed.process.wait()
    assert store.lease_holder("work").expires_in > 3000  # by the clock it would block an hour
    with coordination.hold(store, "work", wait=0) as held:
        assert held.lease.token > killed.token


def test_a_killed_holders_unanswered_write_is_waited_out_before_its_lease_is_taken_over(
        store, db_path, holders):
    killed = holders(db_path, "alert:x", ttl=3600)
    assert killed.ask("in-flight 1.5") == "marked"  # a ticket POST sent, no answer yet
    killed.process.send_signal(signal.SIGKILL)
    killed.process.wait()
    with coordination.try_hold(store, "alert:x") as held:
        assert held is None  # the PSA may still act on that POST: not yet
    with coordination.hold(store, "alert:x", wait=20) as held:  # once the window has passed
        assert held.lease.token > killed.token


def test_an_answered_write_leaves_nothing_in_flight_from_the_holders_next_commit(store):
    with coordination.hold(store, "alert:x", ttl=30) as held:
        coordination.mark_in_flight(3600)
        assert store.lease_holder("alert:x").expires_in > 3000
        coordination.mark_in_flight(None)  # the answer came: no commit of its own
        assert store.lease_holder("alert:x").expires_in > 3000
        store.record(JournalEntry("psa", "create_ticket", "t", "ok"))  # as Bridge.write does
        assert store.lease_holder("alert:x").expires_in <= 30
    assert store.lease_holder("alert:x") is None and held.lease.token


def test_an_answered_write_does_not_keep_its_lease_taken_once_released(store):
    with coordination.hold(store, "alert:x", ttl=30):
        coordination.mark_in_flight(3600)
        coordination.mark_in_flight(None)  # answered, and nothing committed before the release
    assert store.lease_holder("alert:x") is None
    with coordination.try_hold(store, "alert:x") as again:
        assert again is not None


def test_an_answer_is_not_cleared_by_a_commit_that_was_rolled_back(store):
    with coordination.hold(store, "alert:x", ttl=30):
        coordination.mark_in_flight(3600)
        coordination.mark_in_flight(None)
        with pytest.raises(RuntimeError), store.transaction():
            raise RuntimeError("the change failed")
        assert store.lease_holder("alert:x").expires_in > 3000  # rolled back with it
        store.set_cursor("psa", "x", "1")
        assert store.lease_holder("alert:x").expires_in <= 30


def test_a_write_without_an_answer_keeps_its_lease_in_flight_whatever_is_answered_after(store):
    with coordination.hold(store, "mapping:x", ttl=30), \
            coordination.hold(store, "sync", ttl=30, guards_writes=False):
        coordination.mark_in_flight(3600)  # a configuration POST: its answer is lost
        coordination.mark_unanswered()
        coordination.mark_in_flight(3600)  # the next device's POST, answered
        coordination.mark_in_flight(None)
        assert store.lease_holder("mapping:x").expires_in > 3000
        assert store.lease_holder("sync").expires_in <= 30  # a pass lease guards no write
    assert store.lease_holder("mapping:x") is not None  # kept taken until the window passes
    assert store.lease_holder("sync") is None


@pytest.mark.parametrize("offset", [3600.0, -3600.0])
def test_a_lease_lasts_its_ttl_by_the_stores_clock_whatever_the_holders_clock_says(
        store, db_path, holders, offset):
    holders(db_path, "work", ttl=30, clock_offset=offset)
    left = store.lease_holder("work").expires_in
    assert 0 < left <= 30  # not 30 s +- an hour
    with coordination.try_hold(store, "work") as held:
        assert held is None


def test_no_retry_outlives_the_lease_it_runs_under(pm, db_path):
    store = open_store(pm, f"sqlite://{db_path}")
    thief = open_store(pm, f"sqlite://{db_path}")
    sent = []

    def throttled(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(429, headers={"Retry-After": "0.1"})

    client = httpx.Client(transport=httpx.MockTransport(throttled))
    policy = RetryPolicy(attempts=1000, max_retry_after=1.0)
    with coordination.hold(store, "alert:x", ttl=0.6) as held:
        # Another process takes the lease over, as it would after this one stalled past it.
        stolen = threading.Timer(0.3, lambda: (
            thief.db.execute("update leases set owner = 'thief', token = token + 1000 "
                             "where name = 'alert:x'")))
        stolen.start()
        with pytest.raises(LeaseLost):
            send(client, httpx.Request("POST", "https://psa.example/tickets"), policy)
        stolen.join()
        assert held.lost
    assert 0 < len(sent) < 20  # it stopped once the lease was gone, not after 1000 tries
    thief.close()
    store.close()


def test_the_requests_of_one_change_share_one_in_flight_mark(store, monkeypatch):
    marks = []
    real_mark = store.mark_in_flight
    monkeypatch.setattr(store, "mark_in_flight",
                        lambda leases, seconds: (marks.append(seconds), real_mark(leases, seconds)))
    with coordination.hold(store, "alert:x", ttl=30) as held:
        coordination.mark_in_flight(3600)  # the ticket POST
        coordination.mark_in_flight(None)  # answered
        coordination.mark_in_flight(3600)  # its configuration POST, at once: the mark covers it
        assert marks == [3600 * (1 + coordination.HEADROOM)]
        held.in_flight_until -= 3600  # as if the second request came an hour later
        coordination.mark_in_flight(3600)
        assert len(marks) == 2
        coordination.mark_in_flight(None)
        store.set_cursor("psa", "x", "1")  # the next commit clears the mark ...
        assert store.lease_holder("alert:x").expires_in <= 30
        coordination.mark_in_flight(3600)  # ... so the next write marks again
        assert len(marks) == 3


def test_a_write_waits_out_its_marks_headroom_too_when_its_holder_dies(store, db_path, holders):
    killed = holders(db_path, "alert:x", ttl=3600)
    assert killed.ask("in-flight 3600") == "marked"
    killed.process.send_signal(signal.SIGKILL)
    killed.process.wait()
    assert store.lease_holder("alert:x").expires_in > 3600  # the window, and a quarter more
