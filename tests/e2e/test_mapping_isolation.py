"""One device, or one company, that a remote system will not answer for never stops the rest.

End to end through both simulators, in-process and over loopback: an audit or a candidates
query that fails every time (`tests.outages.Outage`), and what the simulators hold afterwards.
A passing failure (5xx) is retried by the next run by itself; a lasting one (400, 404) becomes a
warning that says what to do.
"""

from __future__ import annotations

import pytest

from psabridge.core import mapping, sync
from psabridge.core.bridge import Bridge, open_bridge
from psabridge.core.errors import RemoteError
from psabridge.core.mapping import apply
from psabridge.simulation import ScriptedFault
from tests.e2e.test_mapping_rules import (
    JACKSON,
    NORTHWIND,
    add_device,
    audited_devices_of,
    company_id,
    device_url,
    map_company,
    map_suggested_device_types,
)
from tests.outages import Outage
from tests.reliability.world import FAST_RETRY, fast_clients

AUDITS = "GET /api/v2/audit/{kind}/{uid}"


@pytest.fixture
def bridge(e2e) -> Bridge:
    """The e2e bridge, retrying as the product does but with waits in milliseconds."""
    fast_clients(e2e)
    return e2e


def audit_of(device: dict):
    return lambda request: request.path.startswith("/api/v2/audit/") and request.path.endswith(device["uid"])


def candidates_of(company: str):
    """ConnectWise's candidates query for one company (`psa_match_configurations`)."""
    return lambda request: (request.path.endswith("/company/configurations")
                            and f"(company/id = {company})" in request.args.get("conditions", ""))


def mapped_uids(bridge: Bridge) -> set[str]:
    return {m.device_uid for m in bridge.store.device_mappings(*bridge.pair)}


def linked_in_the_psa(sims, device_uids) -> set[str]:
    """Which of these devices a PSA configuration links (its Manage Device link)."""
    links = {c.management_link for c in sims.psa.configurations()}
    return {uid for uid in device_uids if device_url(sims, sims.datto.devices[uid]) in links}


def test_a_device_whose_audit_answers_500_every_time_is_retried_each_run_and_the_rest_mapped(
        bridge, sims):
    site = map_company(bridge, sims, NORTHWIND)
    map_suggested_device_types(bridge)
    broken = add_device(sims, site, "AUDIT-500", "SNAUDIT500")
    others = audited_devices_of(sims, site) - {broken["uid"]}
    outage = Outage.behind(sims.datto.injector, audit_of(broken), 500)

    plan = mapping.plan_automatic_mapping(bridge)
    assert plan.held == [] and [s for s, _ in plan.deferred] == [f"AUDIT-500 ({broken['uid']})"]
    assert plan.deferred[0][1].endswith("HTTP 500 to GET /api/v2/audit/device/"
                                        f"{broken['uid']}: simulated outage (500); the next run tries again")
    outcome = apply(bridge, plan)
    assert outcome.done and not outcome.failed and bridge.store.warnings() == []
    assert mapped_uids(bridge) == others
    assert linked_in_the_psa(sims, audited_devices_of(sims, site)) == others
    assert outage.refused == FAST_RETRY.attempts  # the client retried, then gave up for this run

    # The next run asks again by itself (no warning held it back), and changes nothing else.
    audits, writes = sims.datto.counts[AUDITS], sims.writes()
    again = mapping.plan_automatic_mapping(bridge)
    assert again.changes == [] and [s for s, _ in again.deferred] == [f"AUDIT-500 ({broken['uid']})"]
    assert sims.datto.counts[AUDITS] - audits == FAST_RETRY.attempts
    apply(bridge, again)
    assert sims.writes() == writes and bridge.store.warnings() == []

    outage.end()  # the audit answers: the next run maps the device with what it says
    audits = sims.datto.counts[AUDITS]
    assert not apply(bridge, mapping.plan_automatic_mapping(bridge)).failed
    assert sims.datto.counts[AUDITS] - audits == 1
    assert mapped_uids(bridge) == others | {broken["uid"]}
    created = sims.psa.configuration(next(
        m.configuration_id for m in bridge.store.device_mappings(*bridge.pair)
        if m.device_uid == broken["uid"]))
    assert (created.name, created.serial_number) == ("AUDIT-500", "SNAUDIT500")
    assert created.management_link == device_url(sims, broken)


@pytest.mark.parametrize("status", [400, 404])
def test_an_audit_refused_for_good_becomes_a_warning_naming_the_device_and_what_to_do(
        bridge, sims, status):
    site = map_company(bridge, sims, NORTHWIND)
    map_suggested_device_types(bridge)
    refused = add_device(sims, site, "AUDIT-4XX", "SNAUDIT4XX")
    others = audited_devices_of(sims, site) - {refused["uid"]}
    outage = Outage.behind(sims.datto.injector, audit_of(refused), status)

    assert not apply(bridge, mapping.plan_automatic_mapping(bridge)).failed
    assert mapped_uids(bridge) == others
    assert linked_in_the_psa(sims, audited_devices_of(sims, site)) == others
    [warning] = bridge.store.warnings(sims.psa.plugin)
    assert warning.subject == f"AUDIT-4XX ({refused['uid']})"
    assert f"GET /api/v2/audit/device/{refused['uid']}" in warning.message
    assert warning.message.endswith(
        "; check the device in the RMM, then `psabridge warnings clear` to try again, or map it "
        f"by hand (`psabridge devices map {refused['uid']}=CONFIGURATION_ID`)")
    assert outage.refused == 1  # a 4xx is not retried

    # Held back: automatic mapping does not ask again until the warning is cleared.
    bridge.set_option("auto_map", True)
    assert mapping.map_now(bridge).changes == [] and outage.refused == 1

    outage.end()
    assert bridge.store.clear_warnings(sims.psa.plugin) == 1
    assert not apply(bridge, mapping.map_now(bridge)).failed
    assert linked_in_the_psa(sims, audited_devices_of(sims, site)) == others | {refused["uid"]}


def test_one_company_whose_candidates_query_fails_leaves_the_other_companies_mapped(bridge, sims):
    northwind = map_company(bridge, sims, NORTHWIND)
    jackson = map_company(bridge, sims, JACKSON)
    map_suggested_device_types(bridge)
    outage = Outage.behind(sims.cw.app, candidates_of(company_id(sims, JACKSON)), 503)

    plan = mapping.plan_automatic_mapping(bridge)
    assert {s.rpartition("(")[2].rstrip(")") for s, _ in plan.deferred} == audited_devices_of(sims, jackson)
    assert all(f"company {JACKSON} ({company_id(sims, JACKSON)})" in why for _, why in plan.deferred)
    assert not apply(bridge, plan).failed and bridge.store.warnings() == []
    assert mapped_uids(bridge) == audited_devices_of(sims, northwind)
    assert linked_in_the_psa(sims, audited_devices_of(sims, jackson)) == set()
    assert outage.refused == FAST_RETRY.attempts

    outage.end()
    apply(bridge, mapping.plan_automatic_mapping(bridge))
    everything = audited_devices_of(sims, northwind) | audited_devices_of(sims, jackson)
    assert mapped_uids(bridge) == everything == linked_in_the_psa(sims, everything)


def test_a_device_list_that_cannot_be_read_still_stops_the_command(bridge, sims):
    map_company(bridge, sims, NORTHWIND)
    sims.datto.injector.faults.add(ScriptedFault("error", "GET", r"/account/devices$", status=400))
    with pytest.raises(RemoteError, match="HTTP 400 to GET /api/v2/account/devices"):
        mapping.plan_automatic_mapping(bridge)


def test_a_sync_pass_tickets_alerts_while_one_device_audit_answers_500(desk, sims, pm, store):
    bridge = open_bridge(pm, store, sims.transports)  # a new `psabridge sync` process
    fast_clients(bridge)
    bridge.set_option("auto_map", True)
    broken = add_device(sims, sims.datto.site_named(NORTHWIND), "AUDIT-500", "SNAUDIT500")
    Outage.behind(sims.datto.injector, audit_of(broken), 500)
    desk.enable()
    alert = desk.raise_alert(desk.devices[0])

    report = sync.run_pass(bridge)
    assert report.tickets_created == 1
    (left_for_next_pass,) = report.errors  # said, not stored as a warning: the next pass retries
    assert left_for_next_pass.startswith("AUDIT-500") and "500" in left_for_next_pass
    ticket = desk.ticket_for(alert)  # in the PSA, found by the alert's marker
    assert ticket.configuration_ids == (desk.configuration_of[desk.devices[0].uid],)
    assert broken["uid"] not in mapped_uids(bridge) and store.warnings() == []
