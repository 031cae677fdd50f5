"""Exactly one PSA ticket per alert, whatever fails and wherever, then a rerun.

Faults are scripted on the PSA simulator (`sims.psa.fail_ticket_creates`) at the ticket create:
refused before the simulator acts, or answered and then lost (dropped connection, or an answer
slower than the client's timeout). The kill between the PSA's answer and the store's commit is
an exception out of the store's save of the `open` row: nothing after it runs, as if the process
had died there. Tickets are counted by the marker the PSA stores.

A create that got no answer may still be acted on by the PSA for a while (its in-flight window,
docs/architecture.md): until then the alert is left alone, and only after it is the ticket
looked for by its marker. The tests shorten that window from minutes to two seconds.
"""

from __future__ import annotations

import time

import pytest

from psabridge.core import coordination, http, sync

ALERTS = 5
IN_FLIGHT_WINDOW = 2.0


def short_in_flight_window(desk, monkeypatch, timeout: float | None = None) -> None:
    """Wait seconds, not minutes, for a write that got no answer (and `timeout` for an answer)."""
    monkeypatch.setattr(http, "IN_FLIGHT_WINDOW", IN_FLIGHT_WINDOW)
    if timeout is not None:
        desk.psa.tune_client(desk.bridge.psa.connection, timeout)


def after_the_window_a_rerun(desk, unanswered: int) -> sync.PassReport:
    """The rerun at once leaves the unanswered alerts alone; the one after the window acts."""
    at_once = sync.run_pass(desk.bridge)
    assert (at_once.tickets_created, at_once.recovered) == (0, 0)
    assert len(desk.bridge.store.alert_tickets(*desk.bridge.pair, ("pending",))) == unanswered
    time.sleep(IN_FLIGHT_WINDOW * (1 + coordination.HEADROOM))  # the mark's headroom too
    return sync.run_pass(desk.bridge)


def raise_alerts(desk) -> list[str]:
    return [desk.raise_alert(desk.devices[n % len(desk.devices)],
                             {"@class": "srvc_status_ctx", "serviceName": f"svc-{n}", "status": "STOPPED"})
            for n in range(ALERTS)]


def assert_exactly_one_each(desk, alerts: list[str]) -> None:
    for uid in alerts:
        (ticket,) = desk.tickets_for(uid)
        row = desk.bridge.store.alert_ticket(*desk.bridge.pair, uid)
        assert (row.state, row.ticket_id) == ("open", ticket.id)
        device_uid = desk.alert(uid)["alertSourceInfo"]["deviceUid"]
        assert ticket.configuration_ids == (desk.configuration_of[device_uid],)  # R29 too
    ours = [t for t in desk.psa.tickets() if (t.marker or "").startswith("psabridge:")]
    assert len(ours) == len(alerts)


@pytest.mark.parametrize("kind", ["error", "drop"])
def test_failure_before_the_create_call_then_rerun(desk, kind, monkeypatch):
    desk.enable()
    short_in_flight_window(desk, monkeypatch)
    alerts = raise_alerts(desk)
    # The first three creations fail before the PSA does anything.
    desk.psa.fail_ticket_creates(kind, "before", times=3)
    first = sync.run_pass(desk.bridge)
    assert first.tickets_created == ALERTS - 3 and len(first.errors) == 3
    pending = desk.bridge.store.alert_tickets(*desk.bridge.pair, ("pending",))
    assert len(pending) == 3 and all(desk.tickets_for(r.alert_uid) == [] for r in pending)

    # A 5xx is an answer: nothing is in flight. A dropped connection is not: it waits.
    rerun = (sync.run_pass(desk.bridge) if kind == "error"
             else after_the_window_a_rerun(desk, unanswered=3))
    assert (rerun.tickets_created, rerun.errors) == (3, [])
    assert_exactly_one_each(desk, alerts)
    assert sync.run_pass(desk.bridge).tickets_created == 0


class Killed(BaseException):
    """Stands for the process dying: not an error anything in psabridge catches."""


def test_killed_after_the_psa_answered_before_the_commit_then_rerun(desk, monkeypatch):
    desk.enable()
    alerts = raise_alerts(desk)
    store = desk.bridge.store
    real_save = store.save_alert_ticket
    opened = []

    def die_on_the_third_commit(entry):
        if entry.state == "open":
            opened.append(entry.alert_uid)
            if len(opened) == 3:
                raise Killed("killed between the PSA's answer and the store's commit")
        return real_save(entry)

    monkeypatch.setattr(store, "save_alert_ticket", die_on_the_third_commit)
    with pytest.raises(Killed):
        sync.run_pass(desk.bridge)
    monkeypatch.undo()
    victim = opened[-1]
    assert len(desk.tickets_for(victim)) == 1  # the PSA has the ticket ...
    assert store.alert_ticket(*desk.bridge.pair, victim).state == "pending"  # ... the store not
    # Alerts are ticketed in groups: those whose answers were not yet committed are `pending`
    # with their tickets made; those the kill came before have no ticket yet.
    made = {uid for uid in alerts if desk.tickets_for(uid)}
    pending = {row.alert_uid for row in store.alert_tickets(*desk.bridge.pair, ("pending",))}

    rerun = sync.run_pass(desk.bridge)
    assert rerun.errors == []
    assert rerun.recovered == len(pending & made) >= 1  # adopted, not made again
    assert rerun.tickets_created == ALERTS - len(made)  # never reached
    assert_exactly_one_each(desk, alerts)


def test_timeout_after_creation_then_rerun(desk, sims, monkeypatch):
    desk.enable()
    alerts = raise_alerts(desk)
    if sims.transports:  # in-process there is no socket to time out: the answer is dropped
        short_in_flight_window(desk, monkeypatch)
        desk.psa.fail_ticket_creates("drop", "after", times=3)
    else:  # on loopback the answer comes later than the client waits
        short_in_flight_window(desk, monkeypatch, timeout=0.2)
        desk.psa.fail_ticket_creates("slow", "after", times=3, seconds=0.6)
    first = sync.run_pass(desk.bridge)
    # A loaded machine may also be late with an answer that was not slowed: one more outcome
    # unknown, recovered the same way. At least the three slowed or dropped ones are unknown.
    unknown = len(first.errors)
    assert unknown >= 3 and all("may or may not have been applied" in e for e in first.errors)
    assert desk.psa.faults_served("drop" if sims.transports else "slow") == 3
    created_unknowingly = [uid for uid in alerts if
                           desk.bridge.store.alert_ticket(*desk.bridge.pair, uid).state == "pending"]
    assert len(created_unknowingly) == unknown
    # The PSA did create them.
    assert all(len(desk.tickets_for(uid)) == 1 for uid in created_unknowingly)

    rerun = after_the_window_a_rerun(desk, unanswered=unknown)
    assert rerun.recovered == unknown and (rerun.tickets_created, rerun.errors) == (0, [])
    assert_exactly_one_each(desk, alerts)
