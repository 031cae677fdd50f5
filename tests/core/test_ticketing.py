"""Ticketing rules and exactly-once creation, against the in-memory connectors."""

from __future__ import annotations

import datetime as dt
import threading
import time

import attrs
import httpx
import pytest

from psabridge.core import coordination, mapping, sync, ticketing
from psabridge.core.mapping import NEW, apply
from psabridge.core.models import Choice, RoutingField, TicketOptions, TicketStatus
from psabridge.core.ticketing import MonitorOverride, TicketAttributes, TicketingError
from tests.core.test_mapping import AUDITED, bridge, psa, rmm  # noqa: F401 - fixtures

ALERT_ATTRS = TicketAttributes(routing={"board": "b1", "type": "t1"}, open_status_id="new",
                               closed_status_id="done")
OPTIONS = TicketOptions(
    routing=(
        RoutingField("board", "Board", required=True, choices=(
            Choice("b1", "Help Desk"),
            Choice("b2", "No Team", unusable="it has no default team; set one in the PSA"))),
        RoutingField("type", "Type", scoped_by="board", choices=(Choice("t1", "Alert", "b1"),)),
    ),
    statuses=(TicketStatus("new", "New", "b1", default=True),
              TicketStatus("done", "Closed", "b1", closed=True), TicketStatus("x", "Other", "b2")),
    status_scope="board",
    priorities=(Choice("p1", "Priority 1"), Choice("p3", "Priority 3")),
    sources=(Choice("src1", "RMM"), Choice("src2", "Monitoring")),
)


@pytest.fixture
def ready(bridge, psa, rmm):  # noqa: F811
    """An integration with a mapped site, a mapped device and ticketing on."""
    psa.options = OPTIONS
    apply(bridge, mapping.plan_company_mappings(bridge, {"1": "s-acme"}))
    mapping.map_device_type(bridge, "Desktop", None)
    device = rmm.add_device("PC-01", "s-acme", last_audit=AUDITED)
    apply(bridge, mapping.plan_device_mappings(bridge, {device.uid: NEW}))
    ticketing.save_ticket_settings(bridge, ticketing.TicketSettings(
        source_id="src1", priorities={"High": "p1", "Low": "p3"},
        attributes={"alert": ALERT_ATTRS, "manual": ALERT_ATTRS}, repeat_minutes=60))
    ticketing.set_ticketing_enabled(bridge, True, now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    return device


def configuration_of(bridge, device):  # noqa: F811
    return bridge.store.device_mappings(*bridge.pair)[0].configuration_id


def test_r24_settings_are_checked_against_the_psas_options(bridge, psa):  # noqa: F811
    psa.options = OPTIONS
    settings = ticketing.TicketSettings(
        source_id="nope", priorities={"High": "p9"},
        attributes={"alert": TicketAttributes(routing={"board": "b2"}, open_status_id="x",
                                              closed_status_id="x"),
                    "manual": TicketAttributes(routing={"board": "b1"}, closed_status_id="new")})
    messages = [p.message for p in ticketing.check_ticket_settings(bridge, settings)]
    assert messages == [
        "source nope does not exist in the PSA",
        "priority p9 (for RMM priority High) does not exist in the PSA",
        "origin alert: board No Team cannot take tickets: it has no default team; set one in "
        "the PSA",
        "origin alert: closed status Other is not a closed status",
        "origin manual: closed status New is not a closed status",
    ]
    ticketing.save_ticket_settings(bridge, settings)
    with pytest.raises(TicketingError, match="cannot enable ticketing: source nope"):
        ticketing.set_ticketing_enabled(bridge, True)


def test_settings_that_add_an_error_are_refused_and_nothing_is_saved(bridge, psa):  # noqa: F811
    psa.options = OPTIONS
    good = ticketing.TicketSettings(attributes={"alert": ALERT_ATTRS})
    assert ticketing.change_ticket_settings(bridge, good) == []
    other_boards_status = attrs.evolve(ALERT_ATTRS, open_status_id="x")  # a status of No Team
    with pytest.raises(TicketingError, match="nothing saved: origin alert: open status x is not "
                                             "a status of board Help Desk"):
        ticketing.change_ticket_settings(bridge, attrs.evolve(
            good, attributes={"alert": other_boards_status}))
    assert ticketing.ticket_settings(bridge) == good
    # An error the saved settings already have does not block another change.
    ticketing.save_ticket_settings(bridge, attrs.evolve(good, source_id="nope"))
    fixed_later = attrs.evolve(good, source_id="nope", repeat_minutes=30)
    problems = ticketing.change_ticket_settings(bridge, fixed_later)
    assert [p.message for p in problems] == ["source nope does not exist in the PSA"]
    assert ticketing.ticket_settings(bridge).repeat_minutes == 30


def test_ticketing_already_on_with_broken_settings_is_not_said_to_be_on(bridge, psa):  # noqa: F811
    psa.options = OPTIONS
    ticketing.save_ticket_settings(bridge, ticketing.TicketSettings(
        enabled=True, attributes={"alert": attrs.evolve(ALERT_ATTRS, open_status_id="x")}))
    with pytest.raises(TicketingError, match="ticketing is on, but its settings make alert "
                                             "tickets fail: origin alert: open status x"):
        ticketing.set_ticketing_enabled(bridge, True)


def test_r29_an_alert_makes_one_ticket_with_configuration_links_priority_and_source(
        bridge, psa, rmm, ready):  # noqa: F811
    alert = rmm.raise_alert(ready, diagnostics="C: has 2% free")
    report = sync.run_pass(bridge)
    assert report.tickets_created == 1
    (ticket_id, draft), = psa.drafts.items()
    assert draft.configuration_id == configuration_of(bridge, ready)
    assert draft.routing == {"board": "b1", "type": "t1"}
    assert (draft.status_id, draft.priority_id, draft.source_id) == ("new", "p1", "src1")
    assert draft.device_url == ready.url and draft.alert_url == f"https://rmm.example.com/alert/{alert.uid}"
    assert "C: has 2% free" in draft.description
    assert ready.url not in draft.description, "the links are the connector's to place, once"
    assert sync.run_pass(bridge).tickets_created == 0  # a second pass changes nothing
    assert psa.calls["create_ticket"] == 1


def test_r30_a_changed_source_applies_to_tickets_created_after(bridge, psa, rmm, ready):  # noqa: F811
    rmm.raise_alert(ready, monitor="cpu")
    sync.run_pass(bridge)
    settings = ticketing.ticket_settings(bridge)
    ticketing.save_ticket_settings(bridge, ticketing.attrs.evolve(settings, source_id="src2"))
    rmm.raise_alert(ready, monitor="memory")
    sync.run_pass(bridge)
    assert [d.source_id for d in psa.drafts.values()] == ["src1", "src2"]


def test_r23_a_monitor_can_turn_tickets_off(bridge, psa, rmm, ready):  # noqa: F811
    settings = ticketing.ticket_settings(bridge)
    ticketing.save_ticket_settings(bridge, ticketing.attrs.evolve(
        settings, monitors={"noisy": MonitorOverride(create_tickets=False)}))
    rmm.raise_alert(ready, monitor="noisy")
    rmm.raise_alert(ready, monitor="quiet", creates_ticket=False)  # the RMM's own switch
    report = sync.run_pass(bridge)
    assert (report.tickets_created, report.alerts_skipped) == (0, 2)


def test_r26_a_repeating_alert_joins_the_open_ticket_within_the_window(bridge, psa, rmm, ready):  # noqa: F811
    t0 = dt.datetime.now(dt.UTC)
    rmm.raise_alert(ready, raised_at=t0)
    sync.run_pass(bridge)
    rmm.raise_alert(ready, raised_at=t0 + dt.timedelta(minutes=30))  # same monitor and device
    report = sync.run_pass(bridge)
    assert (report.tickets_created, report.tickets_joined) == (0, 1)
    (ticket_id,) = psa.tickets
    assert len(psa.notes[ticket_id]) == 1 and "Repeating alert" in psa.notes[ticket_id][0]

    rmm.raise_alert(ready, raised_at=t0 + dt.timedelta(minutes=200))  # outside the window
    assert sync.run_pass(bridge).tickets_created == 1
    psa.close(max(psa.tickets), "done")  # the newest ticket is closed in the PSA
    rmm.raise_alert(ready, raised_at=t0 + dt.timedelta(minutes=210))  # in its window, but closed
    assert sync.run_pass(bridge).tickets_created == 1
    assert len(psa.tickets) == 3


def test_r27_alerts_raised_while_ticketing_is_off_make_no_tickets(bridge, psa, rmm, ready):  # noqa: F811
    ticketing.set_ticketing_enabled(bridge, False)
    assert ticketing.ticket_settings(bridge).source_id == "src1"  # settings kept
    rmm.raise_alert(ready, monitor="while-off, seen by a pass")
    assert sync.run_pass(bridge).alerts_skipped == 1
    unseen = rmm.raise_alert(ready, monitor="while-off, no pass ran")
    ticketing.set_ticketing_enabled(bridge, True)
    # Raised in the same millisecond as "on", by the RMM's clock: still after, still ticketed.
    rmm.raise_alert(ready, monitor="after-enable", raised_at=unseen.raised_at)
    report = sync.run_pass(bridge)
    assert (report.tickets_created, report.alerts_skipped) == (1, 0)
    assert bridge.store.alert_ticket(*bridge.pair, unseen.uid).note == "raised while ticketing was off"


def test_r25_a_manual_ticket_needs_a_mapped_device(bridge, psa, rmm, ready):  # noqa: F811
    loose = rmm.add_device("PC-LOOSE", "s-acme", last_audit=AUDITED)
    with pytest.raises(TicketingError, match="PC-LOOSE is not mapped to a configuration"):
        ticketing.create_manual_ticket(bridge, loose, "Please check")
    row = ticketing.create_manual_ticket(bridge, ready, "Please check", request_id="r1")
    again = ticketing.create_manual_ticket(bridge, ready, "Please check", request_id="r1")
    assert row.ticket_id == again.ticket_id and psa.calls["create_ticket"] == 1
    assert psa.drafts[row.ticket_id].configuration_id == configuration_of(bridge, ready)


def test_r28_round_trip_both_ways(bridge, psa, rmm, ready):  # noqa: F811
    first = rmm.raise_alert(ready, monitor="disk")
    second = rmm.raise_alert(ready, monitor="cpu")
    sync.run_pass(bridge)
    ticket_of = {r.alert_uid: r.ticket_id for r in bridge.store.alert_tickets(*bridge.pair)}

    rmm.resolve(first.uid)  # RMM -> PSA: closed with the origin's closed status
    report = sync.run_pass(bridge)
    assert report.tickets_closed == 1
    assert psa.tickets[ticket_of[first.uid]].status_id == "done"

    psa.close(ticket_of[second.uid], "done")  # PSA -> RMM
    report = sync.run_pass(bridge)
    assert report.alerts_resolved == 1 and rmm.alerts[second.uid].resolved
    quiet = sync.run_pass(bridge)  # no echo either way
    assert (quiet.tickets_closed, quiet.alerts_resolved) == (0, 0)
    assert (psa.calls["close_ticket"], rmm.calls["resolve_alert"]) == (1, 1)


@pytest.mark.parametrize("failure", ["before the call", "after the PSA answered", "timeout after creation"])
def test_exactly_one_ticket_per_alert_whatever_fails(bridge, psa, rmm, ready, monkeypatch, failure):  # noqa: F811
    alert = rmm.raise_alert(ready)
    if failure == "before the call":
        psa.fail_next_create = (httpx.ConnectError("refused"), "before")
    elif failure == "after the PSA answered":
        real_save = bridge.store.save_alert_ticket

        def crash_on_open(entry):
            if entry.state == "open":
                raise KeyboardInterrupt("killed before the commit")
            return real_save(entry)
        monkeypatch.setattr(bridge.store, "save_alert_ticket", crash_on_open)
    else:
        psa.fail_next_create = (httpx.ReadTimeout("the answer never came"), "after")

    with pytest.raises((KeyboardInterrupt, httpx.HTTPError)):
        ticketing.ticket_for_alert(bridge, alert)
    assert bridge.store.alert_ticket(*bridge.pair, alert.uid).state == "pending"

    monkeypatch.undo()
    sync.run_pass(bridge)
    sync.run_pass(bridge)
    assert len(psa.tickets) == 1
    assert bridge.store.alert_ticket(*bridge.pair, alert.uid).state == "open"


def test_two_syncs_cannot_run_at_once(bridge, ready):  # noqa: F811
    with sync.sync_lock(bridge), pytest.raises(sync.SyncBusy, match="another psabridge sync is running"):
        sync.run_pass(bridge)
    assert sync.run_pass(bridge).errors == []  # released afterwards


def test_a_sync_killed_on_this_host_does_not_block_the_next_one(bridge, ready):  # noqa: F811
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_owner = f"{socket.gethostname()}:{gone.stdout.strip()}::deadbeef"
    assert bridge.store.acquire_lease(sync.LOCK, dead_owner, 600)
    assert sync.run_pass(bridge).errors == []  # taken over, not "another sync is running"
    alive_owner = coordination._owner()  # this process, which is alive
    assert bridge.store.acquire_lease(sync.LOCK, alive_owner, 600)
    with pytest.raises(sync.SyncBusy):
        sync.run_pass(bridge)


def test_an_alert_and_its_repeat_handled_at_once_open_one_ticket(bridge, psa, rmm, ready):  # noqa: F811
    """A webhook handles the first alert while a pass meets its repeat: the repeat must wait for
    the first one's ticket and join it, not open a second ticket for one problem."""
    first, repeat = rmm.raise_alert(ready), rmm.raise_alert(ready)
    # The first alert's handler is held up before it has written anything about its ticket.
    rmm.alert_url_gate = gate = threading.Event()
    handling = threading.Thread(target=ticketing.ticket_for_alert, args=(bridge, first))
    handling.start()
    assert rmm.alert_url_held.wait(timeout=10)
    assert ticketing.ticket_for_alert(bridge, repeat) is None  # in hand elsewhere: later
    gate.set()
    handling.join()
    joined = ticketing.ticket_for_alert(bridge, repeat)
    assert joined.note == "repeat" and len(psa.tickets) == 1
    assert joined.ticket_id == bridge.store.alert_ticket(*bridge.pair, first.uid).ticket_id


def coordination_wait(condition, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end
        time.sleep(0.01)


def test_routing_is_checked_by_what_the_psa_declares(bridge, psa):  # noqa: F811
    """A PSA with global statuses and a field scoped by another than the first (Autotask's
    shape): scope, inactive and unknown fields are errors, with no field known to core."""
    psa.options = TicketOptions(
        routing=(
            RoutingField("queue", "Queue", required=True, choices=(
                Choice("q1", "Monitoring"), Choice("q2", "Old queue", inactive=True))),
            RoutingField("issue_type", "Issue type", choices=(Choice("i1", "Hardware"),
                                                              Choice("i2", "Software"))),
            RoutingField("sub_issue_type", "Sub-issue type", scoped_by="issue_type",
                         choices=(Choice("s1", "Disk", "i1"), Choice("s2", "Licence", "i2"))),
        ),
        statuses=(TicketStatus("1", "New", default=True), TicketStatus("5", "Complete", closed=True)),
    )
    good = TicketAttributes(routing={"queue": "q1", "issue_type": "i1", "sub_issue_type": "s1"},
                            open_status_id="1", closed_status_id="5")
    assert ticketing.check_ticket_settings(bridge, ticketing.TicketSettings(
        attributes={"alert": good})) == []
    bad = TicketAttributes(routing={"queue": "q2", "issue_type": "i2", "sub_issue_type": "s1",
                                    "board": "7"}, open_status_id="5", closed_status_id="1")
    messages = [p.message for p in ticketing.check_ticket_settings(
        bridge, ticketing.TicketSettings(attributes={"alert": bad}))]
    assert messages == [
        "origin alert: the PSA has no ticket field 'board' (its fields: issue_type, queue, "
        "sub_issue_type); unset it",
        "origin alert: queue Old queue is inactive in the PSA",
        "origin alert: sub-issue type Disk is not a sub-issue type of issue type Software",
        "origin alert: open status Complete is a closed status",
        "origin alert: closed status New is not a closed status",
    ]
    assert [p.message for p in ticketing.check_ticket_settings(bridge, ticketing.TicketSettings(
        attributes={"alert": TicketAttributes(closed_status_id="5")}))] == [
        "origin alert: no queue is set"]
    unscoped = TicketAttributes(routing={"queue": "q1", "sub_issue_type": "s1"},
                                closed_status_id="5")
    assert [p.message for p in ticketing.check_ticket_settings(bridge, ticketing.TicketSettings(
        attributes={"alert": unscoped}))] == [
        "origin alert: sub-issue type Disk is a sub-issue type of issue type Hardware, which is "
        "not set"]


def test_settings_stored_per_field_are_read_as_routing(bridge, psa):  # noqa: F811
    """Settings saved before routing was generic keep working: read as routing, once."""
    psa.options = OPTIONS
    old = {"enabled": False, "source_id": "src1", "priorities": {"High": "p1"},
           "attributes": {"alert": {"board_id": "b1", "type_id": "t1", "subtype_id": None,
                                    "open_status_id": "new", "closed_status_id": "done"}},
           "monitors": {"cpu": {"create_tickets": True, "attributes": {
               "board_id": "b1", "type_id": None, "subtype_id": None, "open_status_id": None,
               "closed_status_id": "done"}}, "disk": {"create_tickets": False, "attributes": None}},
           "repeat_minutes": 30}
    bridge.store.set_option(bridge.psa.name, ticketing.OPTION, old)
    settings = ticketing.ticket_settings(bridge)
    assert settings.attributes["alert"] == ALERT_ATTRS
    assert settings.monitors["cpu"].attributes == TicketAttributes(
        routing={"board": "b1"}, closed_status_id="done")
    assert settings.monitors["disk"] == MonitorOverride(create_tickets=False)
    assert (settings.source_id, settings.repeat_minutes) == ("src1", 30)
    assert ticketing.check_ticket_settings(bridge, settings) == []
    ticketing.save_ticket_settings(bridge, settings)
    assert bridge.store.option(bridge.psa.name, ticketing.OPTION)["attributes"]["alert"] == {
        "routing": {"board": "b1", "type": "t1"}, "open_status_id": "new",
        "closed_status_id": "done"}


def test_the_summary_is_kept_to_the_length_the_psa_declares(bridge, psa, rmm, ready):  # noqa: F811
    psa.options = attrs.evolve(OPTIONS, summary_max=40)
    rmm.raise_alert(ready, message="x" * 80)
    sync.run_pass(bridge)
    (draft,) = psa.drafts.values()
    assert len(draft.summary) == 40 and draft.summary.endswith("…")
