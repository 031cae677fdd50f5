"""Follow-up writes through the outbox, and cursors that ignore the local clock, against the
in-memory connectors (docs/architecture.md: "The outbox", "Cursors")."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from psabridge.core import mapping, outbox, sync, ticketing
from psabridge.core.errors import RemoteError
from psabridge.core.models import DeviceDetails
from tests.core.test_mapping import AUDITED, bridge, map_acme, psa, rmm  # noqa: F401 - fixtures
from tests.core.test_ticketing import ready  # noqa: F401 - fixture


class Unavailable(RemoteError):
    transient = True


class Refused(RemoteError):
    """A lasting refusal (the ticket was deleted, say)."""


def test_a_repeats_note_that_fails_is_kept_and_sent_again_until_it_is_made(
        bridge, psa, rmm, ready):  # noqa: F811
    first = rmm.raise_alert(ready)
    sync.run_pass(bridge)
    ticket_id = bridge.store.alert_ticket(*bridge.pair, first.uid).ticket_id
    # It fails when sent at once and again when the pass's follow-up step retries it.
    psa.fail_next["add_ticket_note"] += [Unavailable("the PSA is not answering")] * 2
    rmm.raise_alert(ready)
    report = sync.run_pass(bridge)
    assert report.tickets_joined == 1 and report.follow_ups_waiting == 1
    assert psa.notes[ticket_id] == []  # not made yet, but not forgotten:
    (waiting,) = bridge.store.outbox()
    assert (waiting.action, waiting.attempts) == ("add_ticket_note", 2)

    bridge.store.db.execute("update outbox set due_at = 0")  # rather than wait out its delay
    assert sync.run_pass(bridge).follow_ups_sent == 1
    assert len(psa.notes[ticket_id]) == 1 and "Repeating alert" in psa.notes[ticket_id][0]
    assert bridge.store.outbox() == []
    assert sync.run_pass(bridge).follow_ups_sent == 0  # made once


def test_a_close_refused_for_good_becomes_a_warning_and_leaves_the_outbox(
        bridge, psa, rmm, ready):  # noqa: F811
    alert = rmm.raise_alert(ready)
    sync.run_pass(bridge)
    psa.fail_next["close_ticket"].append(Refused("no such ticket"))
    rmm.resolve(alert.uid)
    report = sync.run_pass(bridge)
    assert any("given up" in w.message for w in bridge.store.warnings())
    assert bridge.store.outbox() == [] and report.tickets_closed == 1


def test_a_newer_wish_for_the_same_thing_replaces_a_waiting_one(bridge, psa):  # noqa: F811
    first = outbox.enqueue(bridge, bridge.psa, "update_configuration", "configuration:9", "9",
                           changes={"clear_management_link": True})
    second = outbox.enqueue(bridge, bridge.psa, "update_configuration", "configuration:9", "9",
                            changes={"management_link": "https://rmm.example.com/device/1"})
    assert first.key == second.key
    (waiting,) = bridge.store.outbox()
    assert waiting.payload == {"changes": {"management_link": "https://rmm.example.com/device/1"}}


def test_a_device_mapped_again_while_its_links_clear_waits_keeps_its_link(
        bridge, psa, rmm):  # noqa: F811
    """Unmapped, its configuration's link to clear is still waiting (the PSA did not answer);
    mapped again to the same configuration, which as read still carries the link: the clear must
    not be sent after the mapping, or the mapped configuration would lose its link."""
    map_acme(bridge)
    device = rmm.add_device("PC-01", "s-acme", last_audit=AUDITED, details=DeviceDetails("SN1"))
    existing = psa.add_configuration(name="PC-01", company_id="1", serial_number="SN1")
    assert mapping.apply(bridge, mapping.plan_device_mappings(bridge, {device.uid: existing.id})).done
    url = psa.configurations[existing.id].management_link
    assert url

    psa.fail_next["unmap_configurations"].append(Unavailable("the PSA is not answering"))
    unmapped = mapping.apply(bridge, mapping.unmap_devices(bridge, [device.uid]))
    assert unmapped.failed or unmapped.skipped  # the clear waits in the outbox
    assert psa.configurations[existing.id].management_link == url

    assert mapping.apply(bridge, mapping.plan_device_mappings(bridge, {device.uid: existing.id})).done
    bridge.store.db.execute("update outbox set due_at = 0")
    sync.run_pass(bridge)
    assert bridge.store.outbox() == []
    assert psa.configurations[existing.id].management_link == url
    assert bridge.store.device_mapping(*bridge.pair, device.uid).configuration_id == existing.id


@pytest.mark.parametrize("offset", [dt.timedelta(minutes=10), dt.timedelta(hours=1),
                                    dt.timedelta(hours=-1)])
def test_a_host_clock_off_loses_no_resolution_in_either_direction(
        bridge, psa, rmm, ready, offset):  # noqa: F811
    """The connectors stamp changes with the real clock (the remote systems' own); every pass
    runs on a host whose clock is `offset` off."""
    skewed = time_machine.travel(dt.datetime.now(dt.UTC) + offset, tick=True)
    alerts = [rmm.raise_alert(ready, monitor=f"m{i}") for i in range(2)]
    with skewed:
        sync.run_pass(bridge)
        sync.run_pass(bridge)  # cursors now set, from what the remote systems said
    rows = {a.uid: bridge.store.alert_ticket(*bridge.pair, a.uid) for a in alerts}

    rmm.resolve(alerts[0].uid)  # resolved in the RMM, by its clock
    psa.close(rows[alerts[1].uid].ticket_id, "done")  # closed by a technician, by the PSA's clock
    with skewed:
        sync.run_pass(bridge)
    assert psa.tickets[rows[alerts[0].uid].ticket_id].closed
    assert rmm.alerts[alerts[1].uid].resolved
    states = {uid: bridge.store.alert_ticket(*bridge.pair, uid).state for uid in rows}
    assert states == {alerts[0].uid: "closed", alerts[1].uid: "resolved"}


def test_an_alert_still_being_ticketed_holds_the_resolved_cursor_back(
        bridge, psa, rmm, ready):  # noqa: F811
    alert = rmm.raise_alert(ready)
    sync.run_pass(bridge)
    rmm.resolve(alert.uid)
    later = rmm.raise_alert(ready, monitor="other")
    rmm.resolve(later.uid)
    with ticketing._claim(bridge, alert.uid):  # another process is busy with this alert
        sync.run_pass(bridge)
    assert not psa.tickets[bridge.store.alert_ticket(*bridge.pair, alert.uid).ticket_id].closed
    sync.run_pass(bridge)  # the cursor did not pass it: the next pass closes its ticket
    assert psa.tickets[bridge.store.alert_ticket(*bridge.pair, alert.uid).ticket_id].closed
