"""R21-R30 end to end: the engine, the real connectors, Datto RMM and ConnectWise simulators.

Each test runs twice (the `sims` fixture): simulators in-process and over loopback HTTP. The
settings are chosen from the PSA's own ticket options as the engine reads them, and every
assertion is on what the simulators hold afterwards: the PSA's tickets, notes and attached
configurations (through `sims.psa`), Datto alerts. The test of ConnectWise's board without a
default team is ConnectWise's own.
"""

from __future__ import annotations

import attrs
import pytest

from psabridge.core import sync, ticketing
from psabridge.core.ticketing import MonitorOverride, TicketingError
from tests.e2e.conftest import DISK_C, SPOOLER, connectwise_only
from tests.e2e.psa_sims import TicketRoute

DISK_MONITOR = "perf_disk_usage_ctx:diskName=C:"  # the monitor identity of DISK_C (wire.py)
SPOOLER_MONITOR = "srvc_status_ctx:serviceName=Spooler"


def test_r21_own_switch_source_and_priority_map(desk):
    device = desk.devices[0]
    off = desk.raise_alert(device)  # ticketing not enabled yet: its own switch is off
    assert sync.run_pass(desk.bridge).tickets_created == 0
    assert desk.tickets_for(off) == []

    desk.enable()
    names = desk.psa.priority_names
    critical = desk.raise_alert(device, SPOOLER, priority="Critical")
    low = desk.raise_alert(desk.devices[1], priority="Low")
    unmapped = desk.raise_alert(desk.devices[2], priority="Unknown")  # no entry in the map
    assert sync.run_pass(desk.bridge).tickets_created == 3
    assert desk.ticket_for(critical).priority == names["Critical"]
    assert desk.ticket_for(low).priority == names["Low"]
    # No priority is sent for it: the PSA's own default applies (a simulator may leave none).
    assert desk.ticket_for(unmapped).priority not in (names["Critical"], names["Low"])
    assert {desk.ticket_for(a).source for a in (critical, low, unmapped)} == {
        desk.psa.source_names[0]}

    # A priority ConnectWise does not have is refused before anything is enabled or created.
    ticketing.set_ticketing_enabled(desk.bridge, False)
    ticketing.save_ticket_settings(desk.bridge, desk.settings(priorities={"High": "99999"}))
    problems = ticketing.check_ticket_settings(desk.bridge, ticketing.ticket_settings(desk.bridge))
    assert [p.message for p in problems] == [
        "priority 99999 (for RMM priority High) does not exist in the PSA"]
    with pytest.raises(TicketingError, match="priority 99999"):
        ticketing.set_ticketing_enabled(desk.bridge, True)


def test_r22_attributes_per_origin_open_and_close(desk):
    desk.enable()
    device = desk.devices[0]
    alert = desk.raise_alert(device)
    sync.run_pass(desk.bridge)
    manual = ticketing.create_manual_ticket(desk.bridge, device, "Replace the toner", request_id="r22")

    psa = desk.psa
    alert_ticket = desk.ticket_for(alert)
    assert dict(alert_ticket.routing) == dict(psa.alert_route.routing)
    assert (alert_ticket.status, alert_ticket.priority, alert_ticket.source) == (
        psa.alert_route.open_status, psa.priority_names["High"], psa.source_names[0])
    manual_ticket = desk.ticket(manual.ticket_id)
    assert dict(manual_ticket.routing) == dict(psa.manual_route.routing)
    assert manual_ticket.status == psa.manual_route.open_status

    # Closing uses the origin's closed status.
    desk.sims.datto.resolve_alert(alert)
    assert sync.run_pass(desk.bridge).tickets_closed == 1
    alert_ticket, manual_ticket = desk.ticket(alert_ticket.id), desk.ticket(manual_ticket.id)
    assert (alert_ticket.status, alert_ticket.closed) == (psa.alert_route.closed_status, True)
    assert (manual_ticket.status, manual_ticket.closed) == (psa.manual_route.open_status, False)

    # A "closed" status that does not close is an error of the settings, not of the PSA.
    o = desk.options
    wrong = o.attributes(psa.alert_route, closed_status=psa.alert_route.open_status)
    problems = ticketing.check_ticket_settings(
        desk.bridge, desk.settings(attributes={"alert": wrong}), o.options)
    assert (f"origin alert: closed status {psa.alert_route.open_status} is not a closed status"
            in [p.message for p in problems])


def test_r23_a_monitor_overrides_attributes_or_turns_tickets_off(desk):
    psa = desk.psa
    elsewhere = desk.options.attributes(psa.other_route)
    desk.enable(monitors={SPOOLER_MONITOR: MonitorOverride(create_tickets=False),
                          DISK_MONITOR: MonitorOverride(attributes=elsewhere)})
    device, other = desk.devices[0], desk.devices[1]
    spooler = desk.raise_alert(device, SPOOLER)
    disk = desk.raise_alert(device, DISK_C)
    offline = desk.raise_alert(other, {"@class": "online_offline_status_ctx", "status": "OFFLINE"})
    quiet = desk.raise_alert(other, {"@class": "antivirus_ctx", "productName": "Defender",
                                     "status": "NotRunning"}, creates_ticket=False)  # Datto's switch
    report = sync.run_pass(desk.bridge)

    assert desk.tickets_for(spooler) == [] and desk.tickets_for(quiet) == []
    assert dict(desk.ticket_for(disk).routing) == dict(psa.other_route.routing)
    assert desk.ticket_for(disk).status == psa.other_route.open_status
    # No override: the origin's.
    assert dict(desk.ticket_for(offline).routing) == dict(psa.alert_route.routing)
    rows = {r.alert_uid: r for r in desk.bridge.store.alert_tickets(*desk.bridge.pair)}
    assert "does not create tickets" in rows[spooler].note
    assert rows[quiet].state == "skipped"
    assert report.tickets_created == 2

    # The override's closed status closes it when the alert is resolved in Datto.
    desk.sims.datto.resolve_alert(disk)
    sync.run_pass(desk.bridge)
    assert desk.ticket_for(disk).status == psa.other_route.closed_status


def test_r24_a_board_without_default_team_is_reported_before_creation_breaks(desk):
    """ConnectWise's own: its connector declares the board unusable, and core says why."""
    connectwise_only(desk.sims, "a board without a default team")
    sims, o = desk.sims, desk.options
    intake = o.attributes(TicketRoute({"board": "Projects Intake", "type": "Incident",
                                       "subtype": "Hardware"}, "Submitted", "Done"))
    settings = desk.settings(attributes={"alert": intake})
    problems = ticketing.check_ticket_settings(desk.bridge, settings)
    assert [p.message for p in problems if p.severity == "error"] == [
        "origin alert: board Projects Intake cannot take tickets: it has no default team, so "
        "ConnectWise refuses tickets on it; set one on the board in ConnectWise"]
    ticketing.save_ticket_settings(desk.bridge, settings)
    with pytest.raises(TicketingError, match="Projects Intake cannot take tickets: it has no "
                                             "default team"):
        ticketing.set_ticketing_enabled(desk.bridge, True, now=desk.now())
    assert ticketing.ticket_settings(desk.bridge).enabled is False

    # Forced on anyway (enabled with a valid board, then switched to this one), ConnectWise
    # refuses the ticket exactly as reported.
    desk.enable()
    ticketing.save_ticket_settings(desk.bridge, attrs.evolve(
        ticketing.ticket_settings(desk.bridge), attributes={"alert": intake}))
    alert = desk.raise_alert(desk.devices[0])
    report = sync.run_pass(desk.bridge)
    assert report.tickets_created == 0 and desk.tickets_for(alert) == []
    assert any("has no default team" in e for e in report.errors)

    # The admin gives the board a default team in ConnectWise: the check is clean, and the
    # alert that failed gets its (single) ticket on the next pass.
    board_id = int(o.choice("board", "Projects Intake"))
    team = next(t for t in sims.cw.db.board_teams.values() if t["boardId"] == board_id)
    team["defaultFlag"] = True
    fresh = ticketing.check_ticket_settings(desk.bridge, settings)
    assert [p for p in fresh if p.severity == "error"] == []
    assert sync.run_pass(desk.bridge).tickets_created == 1
    assert desk.ticket_for(alert).routing["board"] == "Projects Intake"


def test_r25_a_manual_ticket_needs_a_mapped_device(desk):
    desk.enable()
    mapped = desk.devices[0]
    unmapped = next(d for d in desk.bridge.rmm.list_devices(site_uid=None)
                    if d.uid not in desk.configuration_of and not d.deleted)
    before = len(desk.psa.tickets())
    with pytest.raises(TicketingError, match=f"{unmapped.hostname} is not mapped to a configuration"):
        ticketing.create_manual_ticket(desk.bridge, unmapped, "Please check")
    assert len(desk.psa.tickets()) == before

    row = ticketing.create_manual_ticket(desk.bridge, mapped, "Please check", "Slow since Monday",
                                         request_id="req-1")
    again = ticketing.create_manual_ticket(desk.bridge, mapped, "Please check", "Slow since Monday",
                                           request_id="req-1")  # a retried request
    assert again.ticket_id == row.ticket_id and len(desk.psa.tickets()) == before + 1
    ticket = desk.ticket(row.ticket_id)
    assert ticket.configuration_ids == (desk.configuration_of[mapped.uid],)
    assert ticket.summary == f"Manual: Please check on {mapped.hostname}"
    assert "Slow since Monday" in ticket.description


def test_r26_repeating_alert_joins_the_open_ticket_within_the_window(desk):
    desk.enable(repeat_minutes=60)
    device = desk.devices[0]
    first = desk.raise_alert(device)
    sync.run_pass(desk.bridge)
    ticket = desk.ticket_for(first)

    desk.clock.advance(20 * 60)
    repeat = desk.raise_alert(device, dict(DISK_C, freeSpace=0.9))  # same monitor, same device
    other_monitor = desk.raise_alert(device, SPOOLER)
    report = sync.run_pass(desk.bridge)
    assert (report.tickets_created, report.tickets_joined) == (1, 1)
    assert desk.tickets_for(repeat) == []
    notes = desk.ticket(ticket.id).notes
    assert len(notes) == 1 and notes[0].startswith("Repeating alert (High)") and "0.9 GB free" in notes[0]
    assert desk.ticket_for(other_monitor).id != ticket.id

    desk.clock.advance(3 * 3600)  # outside the window: a new ticket
    late = desk.raise_alert(device)
    assert sync.run_pass(desk.bridge).tickets_created == 1
    late_ticket = desk.ticket_for(late)
    assert late_ticket.id != ticket.id

    # Inside the window, but the ticket is closed.
    desk.close_in_psa(late_ticket, desk.psa.technician_closed_status)
    sync.run_pass(desk.bridge)
    desk.clock.advance(5 * 60)
    after_close = desk.raise_alert(device)
    assert sync.run_pass(desk.bridge).tickets_created == 1
    assert desk.ticket_for(after_close).id not in (ticket.id, late_ticket.id)
    assert desk.ticket(late_ticket.id).notes == ()  # nothing was added to the closed ticket


def test_r27_disabled_makes_no_tickets_keeps_settings_and_restarts_from_reenabling(desk):
    desk.enable(repeat_minutes=30)
    saved = ticketing.ticket_settings(desk.bridge)
    ticketing.set_ticketing_enabled(desk.bridge, False)
    kept = ticketing.ticket_settings(desk.bridge)
    assert attrs.evolve(kept, enabled=True) == saved  # only the switch changed

    device = desk.devices[0]
    seen_while_off = desk.raise_alert(device)
    writes = desk.sims.writes()
    assert sync.run_pass(desk.bridge).alerts_skipped >= 1
    unseen_while_off = desk.raise_alert(device, SPOOLER)  # raised while off, first read when on
    assert desk.sims.writes() == writes  # nothing written anywhere while off

    desk.clock.advance(60)
    ticketing.set_ticketing_enabled(desk.bridge, True, now=desk.now())
    desk.clock.advance(60)
    after = desk.raise_alert(desk.devices[1])
    report = sync.run_pass(desk.bridge)
    assert report.tickets_created == 1
    assert desk.tickets_for(seen_while_off) == [] and desk.tickets_for(unseen_while_off) == []
    assert len(desk.tickets_for(after)) == 1
    assert ticketing.ticket_settings(desk.bridge).source_id == saved.source_id


def test_r28_round_trip_both_ways_without_echo(desk):
    desk.enable()
    datto, psa = desk.sims.datto, desk.psa
    from_rmm = desk.raise_alert(desk.devices[0])
    from_psa = desk.raise_alert(desk.devices[1])
    edited = desk.raise_alert(desk.devices[2])
    sync.run_pass(desk.bridge)

    # Alert resolved in Datto -> ticket moved to the origin's closed status in the PSA.
    datto.resolve_alert(from_rmm)
    report = sync.run_pass(desk.bridge)
    assert (report.tickets_closed, report.alerts_resolved) == (1, 0)
    closed = desk.ticket_for(from_rmm)
    assert (closed.status, closed.closed) == (psa.alert_route.closed_status, True)

    # Ticket closed in the PSA by a technician -> alert resolved in Datto.
    desk.close_in_psa(desk.ticket_for(from_psa), psa.technician_closed_status)
    # Other changes in the PSA (a summary, a note) have nowhere to go in Datto.
    psa.edit_ticket(desk.ticket_for(edited).id, "Looking into it", "Called the client")
    report = sync.run_pass(desk.bridge)
    assert (report.tickets_closed, report.alerts_resolved) == (0, 1)
    assert desk.alert(from_psa)["resolved"] and desk.alert(from_psa)["resolvedBy"] == "api-user"
    assert desk.alert(edited)["resolved"] is False

    # No echo: the resolved alert does not close its ticket again, nor the reverse.
    writes = desk.sims.writes()
    quiet = sync.run_pass(desk.bridge)
    assert (quiet.tickets_closed, quiet.alerts_resolved, quiet.errors) == (0, 0, [])
    assert desk.sims.writes() == writes
    assert datto.counts["POST /api/v2/alert/{uid}/resolve"] == 1
    # Left as the technician set it.
    assert desk.ticket_for(from_psa).status == psa.technician_closed_status
    assert sum(1 for t in psa.tickets() if t.closed) == 2


def test_r29_ticket_carries_configuration_diagnostics_and_rmm_links(desk):
    desk.enable()
    device = desk.devices[0]
    alert = desk.sims.datto.raise_alert(device.uid, DISK_C, "High")
    alert["diagnostics"] = "Free space fell below 2 GB at 10:02"
    report = sync.run_pass(desk.bridge)
    assert report.tickets_created == 1

    ticket = desk.ticket_for(alert["alertUid"])
    configuration = next(c for c in desk.psa.configurations()
                         if c.id == desk.configuration_of[device.uid])
    assert ticket.configuration_ids == (configuration.id,)
    assert ticket.company_id == configuration.company_id
    assert ticket.summary == f"High: Disk C: has 1.5 GB free of 237.9 GB on {device.hostname}"
    description = ticket.description
    device_link = f"RMM Device: {device.url}"
    alert_link = f"RMM Alert: {desk.sims.datto.settings(desk.sims.datto_url)['portal_url']}" \
                 f"/alert/{alert['alertUid']}"
    assert "Free space fell below 2 GB at 10:02" in description
    assert description.count(device_link) == 1 and description.count(alert_link) == 1
    assert configuration.management_link == device.url  # the Manage Device link

    writes = desk.sims.writes()
    assert sync.run_pass(desk.bridge).tickets_created == 0  # a second pass adds nothing
    assert desk.sims.writes() == writes


def test_r30_a_changed_source_applies_to_tickets_created_after(desk):
    desk.enable()
    before = desk.raise_alert(desk.devices[0])
    sync.run_pass(desk.bridge)
    settings = ticketing.ticket_settings(desk.bridge)
    first, second = desk.psa.source_names
    ticketing.save_ticket_settings(desk.bridge, attrs.evolve(
        settings, source_id=desk.options.source(second)))
    after = desk.raise_alert(desk.devices[1])
    sync.run_pass(desk.bridge)
    assert desk.ticket_for(before).source == first  # not rewritten
    assert desk.ticket_for(after).source == second
