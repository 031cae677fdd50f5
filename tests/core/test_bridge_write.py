"""`Bridge.write`: what is committed before a remote write leaves and after its answer, and in
how many commits (docs/architecture.md, "In flight" and "Exactly one ticket per alert")."""

from __future__ import annotations

import pytest

from psabridge.core import coordination, http
from psabridge.core.store import LeaseLost
from tests.core.test_mapping import bridge, psa, rmm  # noqa: F401 - fixtures


class Killed(BaseException):
    """Stands for the process dying mid-request."""


@pytest.fixture
def commits(bridge):  # noqa: F811
    counted = []
    bridge.store.db.conn.set_trace_callback(
        lambda sql: counted.append(sql) if sql.strip().upper() == "COMMIT" else None)
    yield counted
    bridge.store.db.conn.set_trace_callback(None)


def outcomes(bridge):  # noqa: F811
    return [(e.action, e.outcome) for e in bridge.store.journal()]


def test_the_row_before_the_intent_and_the_mark_are_one_commit_and_the_answer_another(
        bridge, commits):  # noqa: F811
    store = bridge.store
    with coordination.hold(store, "alert:a", ttl=30):
        commits.clear()
        result = bridge.write(bridge.psa, "create_ticket", "m",
                              # the request marks the lease as the HTTP layer does: covered
                              lambda: (coordination.mark_in_flight(http.IN_FLIGHT_WINDOW), "T1")[1],
                              before=lambda: store.set_cursor("test", "row", "pending"),
                              after=lambda ticket: store.set_cursor("test", "row", ticket),
                              alert="a")
        assert result is None  # what `after` returned
        assert len(commits) == 2
        assert store.cursor("test", "row") == "T1"
    assert outcomes(bridge) == [("create_ticket", "intent"), ("create_ticket", "ok")]
    assert store.lease_holder("alert:a") is None  # answered: released at once


def test_a_process_killed_mid_request_leaves_the_row_and_the_intent_and_its_lease_in_flight(
        bridge):  # noqa: F811
    store = bridge.store

    def killed_before_the_answer():
        raise Killed

    with pytest.raises(Killed), coordination.hold(store, "alert:a", ttl=30):
        bridge.write(bridge.psa, "create_ticket", "m", killed_before_the_answer,
                     before=lambda: store.set_cursor("test", "row", "pending"),
                     after=lambda ticket: store.set_cursor("test", "row", ticket))
    assert store.cursor("test", "row") == "pending"
    assert outcomes(bridge)[0] == ("create_ticket", "intent")
    # Nothing said the request was answered: its lease stays taken for the window.
    assert store.lease_holder("alert:a").expires_in > 30


def test_nothing_is_sent_or_saved_when_the_row_before_cannot_be_written(bridge):  # noqa: F811
    sent = []

    def refused():
        raise RuntimeError("the store refused the row")

    with pytest.raises(RuntimeError), coordination.hold(bridge.store, "alert:a", ttl=30):
        bridge.write(bridge.psa, "create_ticket", "m", lambda: sent.append(1), before=refused)
    assert sent == [] and outcomes(bridge) == []


def test_an_answer_whose_lease_was_lost_is_still_journalled(bridge):  # noqa: F811
    store = bridge.store
    with pytest.raises(LeaseLost), coordination.hold(store, "alert:a", ttl=30) as held:
        def taken_over_meanwhile():  # stalled past its lease, which another holder took
            coordination.mark_in_flight(None)
            store.release_lease(held.lease)
            assert store.acquire_lease("alert:a", "someone else", 30) is not None
            return "T1"

        bridge.write(bridge.psa, "create_ticket", "m", taken_over_meanwhile,
                     after=lambda ticket: store.set_cursor("test", "row", ticket))
    assert store.cursor("test", "row") is None  # not written over the new holder's work
    assert outcomes(bridge) == [("create_ticket", "intent"), ("create_ticket", "ok")]
