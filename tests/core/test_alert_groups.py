"""A pass's new alerts are claimed and ticketed as a group (`ticketing.tickets_for_alerts`):
the same outcomes as one at a time, in fewer commits, each alert still under its own claim
(docs/architecture.md, "Exactly one ticket per alert")."""

from __future__ import annotations

import attrs
import pytest

from psabridge.core import sync, ticketing
from psabridge.core.bridge import Failed
from psabridge.core.coordination import mark_unanswered
from tests.core.memory import ServerError
from tests.core.test_mapping import bridge, psa, rmm  # noqa: F401 - fixtures
from tests.core.test_ticketing import ready  # noqa: F401 - fixture


@pytest.fixture
def alerts(bridge, rmm, ready):  # noqa: F811
    """Five alerts on the mapped device, ticketing on, no repeat window: five new tickets."""
    settings = ticketing.ticket_settings(bridge)
    ticketing.save_ticket_settings(bridge, attrs.evolve(settings, repeat_minutes=None))
    bridge.ticket_options()  # read and kept in the store once for every process: not counted
    return [rmm.raise_alert(ready, monitor=f"service {n}") for n in range(5)]


@pytest.fixture
def commits(bridge):  # noqa: F811
    counted = []
    bridge.store.db.conn.set_trace_callback(
        lambda sql: counted.append(sql) if sql.strip().upper() == "COMMIT" else None)
    yield counted
    bridge.store.db.conn.set_trace_callback(None)


def claim_of(bridge, alert):  # noqa: F811
    return bridge.store.lease_holder(f"alert:{bridge.psa.name}:{alert.uid}")


def test_a_group_of_new_alerts_gets_one_ticket_each_in_four_commits(bridge, psa, alerts,  # noqa: F811
                                                                   commits):
    rows = ticketing.tickets_for_alerts(bridge, alerts)
    assert [row.state for row in rows] == ["open"] * 5
    assert sorted(t.marker for t in psa.tickets.values()) == sorted(
        ticketing.alert_marker(bridge, a.uid) for a in alerts)
    # The claims; the pending rows, intents and in-flight marks; the answers; the releases.
    assert len(commits) == 4
    assert all(claim_of(bridge, alert) is None for alert in alerts)
    assert [e.outcome for e in bridge.store.journal() if e.action == "create_ticket"] == (
        ["intent"] * 5 + ["ok"] * 5)


def test_an_alert_another_process_is_handling_is_left_to_it(bridge, psa, alerts):  # noqa: F811
    busy = alerts[2]
    bridge.store.acquire_lease(f"alert:{bridge.psa.name}:{busy.uid}", "another process", 60)
    rows = ticketing.tickets_for_alerts(bridge, alerts)
    assert rows[2] is None and [r.state for n, r in enumerate(rows) if n != 2] == ["open"] * 4
    assert bridge.store.alert_ticket(*bridge.pair, busy.uid) is None
    assert claim_of(bridge, busy).owner == "another process"  # untouched


def test_a_create_that_fails_leaves_its_alert_pending_and_the_others_ticketed(
        bridge, psa, alerts):  # noqa: F811
    psa.fail_next_create = (ServerError("503 from the PSA"), "before")
    rows = ticketing.tickets_for_alerts(bridge, alerts)
    failed = [n for n, row in enumerate(rows) if isinstance(row, Failed)]
    assert len(failed) == 1 and "503 from the PSA" in str(rows[failed[0]].error)
    assert bridge.store.alert_ticket(*bridge.pair, alerts[failed[0]].uid).state == "pending"
    assert len(psa.tickets) == 4
    # The next pass settles it: no ticket found by its marker, so one is made, once.
    report = sync.run_pass(bridge)
    assert (report.tickets_created, report.errors) == (1, [])
    assert len(psa.tickets) == 5


def test_a_create_without_an_answer_keeps_only_its_own_claim_in_flight(
        bridge, psa, alerts, monkeypatch):  # noqa: F811
    facade = type(bridge.psa)
    real_create = facade.create_ticket

    def answer_lost_for_the_third(self, draft):
        ticket = real_create(self, draft=draft)
        if len(psa.tickets) == 3:
            mark_unanswered()  # as the HTTP layer does when the connection drops
            raise ServerError("the connection dropped before the answer")
        return ticket

    monkeypatch.setattr(facade, "create_ticket", answer_lost_for_the_third)
    ticketing.tickets_for_alerts(bridge, alerts)
    unanswered = [a for a in alerts if claim_of(bridge, a) is not None]
    assert len(unanswered) == 1  # waited out before anyone looks for its ticket
    assert claim_of(bridge, unanswered[0]).expires_in > 60
    assert bridge.store.alert_ticket(*bridge.pair, unanswered[0].uid).state == "pending"


def test_the_pass_reports_a_group_as_it_reported_alerts_one_by_one(bridge, rmm, psa,  # noqa: F811
                                                                 alerts, monkeypatch):
    monkeypatch.setattr(sync, "ALERT_GROUP", 2)  # three groups: 2, 2 and 1
    unmapped = rmm.add_device("PC-99", "s-smith")  # its site is not mapped: skipped
    rmm.raise_alert(unmapped, monitor="disk")
    report = sync.run_pass(bridge)
    assert (report.tickets_created, report.alerts_skipped, report.errors) == (5, 1, [])
    assert sync.run_pass(bridge).tickets_created == 0
