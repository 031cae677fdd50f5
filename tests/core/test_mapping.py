"""The mapping engine against in-memory connectors: plans, idempotency, and the rules' edges.

The same rules run end to end through the ConnectWise and Datto simulators in tests/e2e/.
"""

from __future__ import annotations

import datetime as dt

import attrs
import pytest

from psabridge.core import mapping
from psabridge.core.bridge import open_bridge
from psabridge.core.errors import RemoteError
from psabridge.core.mapping import NEW, MappingError, apply
from psabridge.core.models import Company, CompanyFilters, ConfigurationType, DeviceDetails, Site
from psabridge.core.plugins import configure_plugin, enable_plugin
from tests.core.memory import MemoryPsa, MemoryRmm, ServerError

AUDITED = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
QUESTIONS = "has required questions and cannot be used to create configurations"


@pytest.fixture
def psa(pm):
    plugin = MemoryPsa()
    plugin.companies = {
        "1": Company("1", "ACME", "Acme Corp.", "Active", ("Client", "Partner")),
        "2": Company("2", "SMITH", "Smith & Sons LLC", "Active", ("Client",)),
        "3": Company("3", "INITECH", "Initech", "Inactive", ("Prospect",)),
    }
    plugin.types = {
        "10": ConfigurationType("10", "Managed Workstation"),
        "11": ConfigurationType("11", "Managed Server", unusable=QUESTIONS),
    }
    pm.register(plugin, name="mempsa")
    yield plugin
    pm.unregister(plugin)


@pytest.fixture
def rmm(pm):
    plugin = MemoryRmm()
    plugin.sites = {"s-acme": Site("s-acme", "ACME Corporation"),
                    "s-smith": Site("s-smith", "Smith and Sons"),
                    "s-del": Site("s-del", "Deleted Devices", system=True)}
    pm.register(plugin, name="memrmm")
    yield plugin
    pm.unregister(plugin)


@pytest.fixture
def bridge(pm, store, psa, rmm):
    for name in ("mempsa", "memrmm"):
        configure_plugin(pm, store, name, {"url": "https://x.example.com"})
        enable_plugin(pm, store, name, check=False)
    return open_bridge(pm, store)


def map_acme(bridge):
    apply(bridge, mapping.plan_company_mappings(bridge, {"1": "s-acme"}))


def test_companies_are_listed_once_per_type_with_suggestions_and_filters(bridge):
    rows = mapping.load_companies(bridge)
    assert [(r.company.id, r.company_type, r.suggestion.site_uid) for r in rows] == [
        ("1", "Client", "s-acme"), ("1", "Partner", "s-acme"), ("2", "Client", "s-smith"),
        ("3", "Prospect", None)]
    assert rows[-1].suggestion.site_name == "Initech"  # Create New with the company's name
    only = mapping.load_companies(bridge, filters=CompanyFilters(type="partner"))
    assert [(r.company.id, r.company_type) for r in only] == [("1", "Partner")]
    inactive = mapping.load_companies(bridge, filters=CompanyFilters(status="inactive"))
    assert [r.company.id for r in inactive] == ["3"]
    searched = mapping.load_companies(bridge, filters=CompanyFilters(search="smi"))
    assert [r.company.id for r in searched] == ["2"]


def test_mapping_companies_plans_then_applies_and_is_idempotent(bridge, rmm):
    plan = mapping.plan_company_mappings(bridge, {"1": None, "3": NEW})
    assert [(c.action, c.subject, c.detail) for c in plan.changes] == [
        ("map company", "Acme Corp. (1)", "site ACME Corporation"),
        ("create site", "Initech (3)", "new site 'Initech'"),
    ]
    assert rmm.calls["create_site"] == 0  # planning changed nothing
    outcome = apply(bridge, plan)
    assert len(outcome.done) == 2 and rmm.calls["create_site"] == 1
    mapped = mapping.load_companies(bridge, "mapped")
    assert {(r.company.id, r.mapping.site_name, r.site_url) for r in mapped} == {
        ("1", "ACME Corporation", "https://rmm.example.com/site/s-acme"),
        ("3", "Initech", f"https://rmm.example.com/site/{mapped[1].mapping.site_uid}"),
    }
    # R7: a mapped company is not offered again, under any of its types.
    assert [r.company.id for r in mapping.load_companies(bridge)] == ["2"]
    again = mapping.plan_company_mappings(bridge, {"1": None, "3": NEW})
    assert again.changes == []
    # only the site creation was a remote write (its intent, then its outcome)
    assert [e.outcome for e in bridge.store.journal()] == ["intent", "ok"]


def test_create_new_reuses_a_site_left_by_an_interrupted_run(bridge, rmm):
    rmm.sites["s-ini"] = Site("s-ini", "Initech")  # created, but the run died before mapping
    plan = mapping.plan_company_mappings(bridge, {"3": NEW})
    assert [(c.action, c.detail) for c in plan.changes] == [
        ("map company", "site Initech (the RMM already has a site of that name: mapped to it, "
                        "not created again)")]


def test_a_site_maps_to_one_company(bridge):
    map_acme(bridge)
    with pytest.raises(MappingError, match="site ACME Corporation is already mapped to 1"):
        mapping.plan_company_mappings(bridge, {"2": "s-acme"})
    with pytest.raises(MappingError, match="Acme Corp. \\(1\\) is already mapped"):
        mapping.plan_company_mappings(bridge, {"1": "s-smith"})


def test_device_types_are_suggested_and_flagged(bridge, rmm):
    rmm.add_device("PC-01", "s-acme", "Desktop", last_audit=AUDITED)
    rmm.add_device("SRV-01", "s-acme", "Server", last_audit=AUDITED)
    rows = {r.device_type: r for r in mapping.load_device_types(bridge)}
    assert rows["Desktop"].configuration_type.name == "Managed Workstation"
    assert rows["Server"].configuration_type is None  # the only server type has required questions
    chosen = mapping.map_device_type(bridge, "Server", "Managed Server")
    rows = {r.device_type: r for r in mapping.load_device_types(bridge)}
    assert rows["Server"].mapped and rows["Server"].flagged and chosen.configuration_type_id == "11"
    with pytest.raises(MappingError, match="no configuration type 'Nope'"):
        mapping.map_device_type(bridge, "Server", "Nope")


def test_devices_map_by_proposal_create_new_and_write_links_once(bridge, psa, rmm):
    map_acme(bridge)
    mapping.map_device_type(bridge, "Desktop", None)
    known = rmm.add_device("PC-01", "s-acme", last_audit=AUDITED,
                           warranty_date=dt.date(2028, 1, 31),
                           details=DeviceDetails("SN1", "Dell", "OptiPlex"))
    fresh = rmm.add_device("PC-02", "s-acme", last_audit=AUDITED,
                           details=DeviceDetails("SN2", "HP", "EliteDesk"))
    rmm.add_device("PC-03", "s-acme")  # not audited yet (R11)
    existing = psa.add_configuration(name="pc-01 old", company_id="1", serial_number="SN1")

    rows = {r.device.hostname: r for r in mapping.load_devices(bridge)}
    assert rows["PC-01"].match.configuration.id == existing.id
    assert rows["PC-02"].match.configuration is None and rows["PC-02"].match.create_name == "PC-02"
    assert rows["PC-03"].state == "unaudited" and rows["PC-03"].match is None

    plan = mapping.plan_device_mappings(bridge, {known.uid: None, fresh.uid: None})
    assert [c.action for c in plan.changes] == ["map device", "create configuration"]
    apply(bridge, plan)
    linked = psa.configurations[existing.id]
    assert linked.management_link == known.url
    assert linked.expiration_date == dt.date(2028, 1, 31)  # R15: empty, so filled
    created = next(c for c in psa.configurations.values() if c.name == "PC-02")
    assert (created.type_id, created.serial_number, created.manufacturer, created.model_number,
            created.management_link) == ("10", "SN2", "HP", "EliteDesk", fresh.url)

    writes = dict(psa.calls)
    assert mapping.plan_device_mappings(bridge, {known.uid: None, fresh.uid: None}).changes == []
    assert mapping.plan_automatic_mapping(bridge).changes == []
    assert {k: psa.calls[k] for k in ("create_configuration", "update_configuration")} == {
        k: writes[k] for k in ("create_configuration", "update_configuration")}
    with pytest.raises(MappingError, match="PC-03 has not been audited by the RMM yet"):
        mapping.plan_device_mappings(bridge, {"dev-3": None})


def test_audits_are_read_once_per_audit_date(bridge, rmm):
    map_acme(bridge)
    device = rmm.add_device("PC-01", "s-acme", last_audit=AUDITED)
    mapping.load_devices(bridge)
    mapping.load_devices(bridge)
    assert rmm.calls["device_details"] == 1
    rmm.devices[device.uid] = attrs.evolve(device, last_audit=AUDITED + dt.timedelta(days=1))
    mapping.load_devices(bridge)
    assert rmm.calls["device_details"] == 2


def test_manual_choice_overrides_and_one_device_per_configuration(bridge, psa, rmm):
    map_acme(bridge)
    a = rmm.add_device("PC-A", "s-acme", last_audit=AUDITED)
    b = rmm.add_device("PC-B", "s-acme", last_audit=AUDITED)
    target = psa.add_configuration(name="Front desk", company_id="1")
    apply(bridge, mapping.plan_device_mappings(bridge, {a.uid: target.id}))
    assert psa.configurations[target.id].management_link == a.url
    with pytest.raises(MappingError, match=f"configuration {target.id} is already mapped to device {a.uid}"):
        mapping.plan_device_mappings(bridge, {b.uid: target.id})


def test_missing_type_mapping_and_required_questions_become_warnings_once(bridge, psa, rmm):
    map_acme(bridge)
    pc = rmm.add_device("PC-01", "s-acme", "Desktop", last_audit=AUDITED)
    srv = rmm.add_device("SRV-01", "s-acme", "Server", last_audit=AUDITED)
    mapping.map_device_type(bridge, "Server", "11")
    plan = mapping.plan_device_mappings(bridge, {pc.uid: NEW, srv.uid: NEW})
    assert plan.changes == [] and bridge.store.warnings() == []  # planning writes nothing
    apply(bridge, plan)
    apply(bridge, mapping.plan_device_mappings(bridge, {pc.uid: NEW, srv.uid: NEW}))
    messages = [w.message for w in bridge.store.warnings("mempsa")]
    assert messages == [
        "no configuration type is mapped for device type 'Desktop'; map one with "
        "`psabridge device-types map`",
        "configuration type 'Managed Server' has required questions and cannot be used to "
        "create configurations; map device type 'Server' to another one with "
        "`psabridge device-types map`",
    ]
    assert psa.calls["create_configuration"] == 0


def test_automatic_mapping_triggers(bridge, psa, rmm):
    mapping.map_device_type(bridge, "Desktop", None)
    rmm.add_device("PC-01", "s-acme", last_audit=AUDITED)
    with pytest.raises(MappingError, match="automatic mapping is off"):
        mapping.map_now(bridge)
    map_acme(bridge)
    assert psa.calls["create_configuration"] == 0  # off by default: mapping a site maps nothing

    bridge.set_option("auto_map", True)
    apply(bridge, mapping.map_now(bridge))  # trigger 1: Map Now
    assert psa.calls["create_configuration"] == 1
    rmm.add_device("PC-S", "s-smith", last_audit=AUDITED)
    apply(bridge, mapping.plan_company_mappings(bridge, {"2": "s-smith"}))  # trigger 2: new site
    assert psa.calls["create_configuration"] == 2
    rmm.add_device("PC-02", "s-acme", last_audit=AUDITED)  # trigger 3: a new device
    apply(bridge, mapping.plan_automatic_mapping(bridge))
    assert psa.calls["create_configuration"] == 3
    assert len(bridge.store.device_mappings("mempsa", "memrmm")) == 3


def test_a_device_that_moved_site_counts_as_unmapped(bridge, rmm):
    map_acme(bridge)
    apply(bridge, mapping.plan_company_mappings(bridge, {"2": "s-smith"}))
    device = rmm.add_device("PC-01", "s-acme", last_audit=AUDITED)
    apply(bridge, mapping.plan_device_mappings(bridge, {device.uid: NEW}))
    mapping.map_device_type(bridge, "Desktop", None)
    apply(bridge, mapping.plan_device_mappings(bridge, {device.uid: NEW}))
    assert [r.device.uid for r in mapping.load_devices(bridge, "mapped")] == [device.uid]
    rmm.devices[device.uid] = attrs.evolve(device, site_uid="s-smith")
    assert mapping.load_devices(bridge, "mapped") == []
    assert [(r.device.uid, r.state) for r in mapping.load_devices(bridge)] == [(device.uid, "moved")]


def test_unmap_and_deleted_devices(bridge, psa, rmm):
    map_acme(bridge)
    mapping.map_device_type(bridge, "Desktop", None)
    one = rmm.add_device("PC-01", "s-acme", last_audit=AUDITED)
    two = rmm.add_device("PC-02", "s-acme", last_audit=AUDITED)
    apply(bridge, mapping.plan_device_mappings(bridge, {one.uid: NEW, two.uid: NEW}))
    config_of = {m.device_uid: m.configuration_id for m in bridge.store.device_mappings("mempsa", "memrmm")}

    apply(bridge, mapping.unmap_devices(bridge, [one.uid]))  # R17
    assert psa.configurations[config_of[one.uid]].management_link is None
    assert psa.configurations[config_of[one.uid]].active is True

    del rmm.devices[two.uid]  # R18
    apply(bridge, mapping.plan_deleted_devices(bridge))
    assert psa.configurations[config_of[two.uid]].active is False
    assert bridge.store.device_mappings("mempsa", "memrmm") == []
    assert mapping.plan_deleted_devices(bridge).changes == []


# -- one device never stops the others --------------------------------------------------------


def subject(device) -> str:
    return f"{device.hostname} ({device.uid})"


def mapped_uids(bridge) -> set[str]:
    return {m.device_uid for m in bridge.store.device_mappings("mempsa", "memrmm")}


@pytest.fixture
def acme_desktops(bridge):
    """ACME mapped, Desktop mapped to a configuration type: audited desktops get configurations."""
    map_acme(bridge)
    mapping.map_device_type(bridge, "Desktop", None)


def test_a_device_whose_details_fail_for_now_is_retried_by_the_next_run_not_held_back(
        bridge, psa, rmm, acme_desktops):
    good = rmm.add_device("PC-01", "s-acme", last_audit=AUDITED)
    flaky = rmm.add_device("PC-02", "s-acme", last_audit=AUDITED, details=DeviceDetails("SN2"))
    rmm.unreadable[flaky.uid] = ServerError("the RMM answered HTTP 500")

    plan = mapping.plan_automatic_mapping(bridge)
    assert [c.subject for c in plan.changes] == [subject(good)]
    assert plan.held == [] and plan.deferred == [(subject(flaky), (
        "its hardware details (serial number, manufacturer, model) could not be read from the "
        "RMM: the RMM answered HTTP 500; the next run tries again"))]
    outcome = apply(bridge, plan)
    assert len(outcome.done) == 1 and not outcome.failed
    assert bridge.store.warnings() == []  # nothing for the admin to clear
    assert mapped_uids(bridge) == {good.uid} and psa.calls["create_configuration"] == 1

    reads = rmm.calls["device_details"]
    assert [s for s, _ in mapping.plan_automatic_mapping(bridge).deferred] == [subject(flaky)]
    assert rmm.calls["device_details"] == reads + 1  # asked again, not held back

    del rmm.unreadable[flaky.uid]  # the RMM answers again
    assert not apply(bridge, mapping.plan_automatic_mapping(bridge)).failed
    assert mapped_uids(bridge) == {good.uid, flaky.uid}
    assert next(c for c in psa.configurations.values() if c.name == "PC-02").serial_number == "SN2"


def test_a_device_whose_details_are_refused_is_held_back_by_a_warning_until_cleared(
        bridge, psa, rmm, acme_desktops):
    good = rmm.add_device("PC-01", "s-acme", last_audit=AUDITED)
    refused = rmm.add_device("PC-02", "s-acme", last_audit=AUDITED)
    rmm.unreadable[refused.uid] = RemoteError("the RMM has no audit for it (HTTP 404)")

    outcome = apply(bridge, mapping.plan_automatic_mapping(bridge))
    assert len(outcome.done) == 1 and mapped_uids(bridge) == {good.uid}
    [warning] = bridge.store.warnings("mempsa")
    assert warning.subject == subject(refused)
    assert warning.message == (
        "its hardware details (serial number, manufacturer, model) could not be read from the "
        "RMM: the RMM has no audit for it (HTTP 404); check the device in the RMM, then "
        "`psabridge warnings clear` to try again, or map it by hand "
        f"(`psabridge devices map {refused.uid}=CONFIGURATION_ID`)")

    reads = rmm.calls["device_details"]
    held = mapping.plan_automatic_mapping(bridge)
    assert held.changes == [] and held.skipped == [] and rmm.calls["device_details"] == reads

    del rmm.unreadable[refused.uid]
    assert bridge.store.clear_warnings("mempsa") == 1
    apply(bridge, mapping.plan_automatic_mapping(bridge))
    assert mapped_uids(bridge) == {good.uid, refused.uid}


@pytest.mark.parametrize(("error", "warned"), [
    (ServerError("the PSA answered HTTP 503"), False),
    (RemoteError("the PSA refused the query (HTTP 400)"), True),
])
def test_one_company_whose_candidates_cannot_be_read_leaves_the_other_companies_mapped(
        bridge, psa, rmm, acme_desktops, error, warned):
    apply(bridge, mapping.plan_company_mappings(bridge, {"2": "s-smith"}))
    acme_pc = rmm.add_device("PC-A", "s-acme", last_audit=AUDITED)
    smith_pc = rmm.add_device("PC-S", "s-smith", last_audit=AUDITED)
    psa.unmatchable["2"] = error

    plan = mapping.plan_automatic_mapping(bridge)
    assert [c.subject for c in plan.changes] == [subject(acme_pc)]
    [(skipped, why)] = plan.held if warned else plan.deferred
    assert skipped == subject(smith_pc)
    assert why.startswith("the PSA could not be asked which configurations of company "
                          f"Smith & Sons LLC (2) match it: {error}; ")
    apply(bridge, plan)
    assert mapped_uids(bridge) == {acme_pc.uid}
    assert [w.subject for w in bridge.store.warnings()] == ([subject(smith_pc)] if warned else [])

    del psa.unmatchable["2"]
    bridge.store.clear_warnings("mempsa")
    apply(bridge, mapping.plan_automatic_mapping(bridge))
    assert mapped_uids(bridge) == {acme_pc.uid, smith_pc.uid}


def test_a_device_mapped_by_hand_to_a_configuration_needs_no_details(bridge, psa, rmm):
    map_acme(bridge)
    device = rmm.add_device("PC-01", "s-acme", last_audit=AUDITED)
    rmm.unreadable[device.uid] = RemoteError("the RMM has no audit for it (HTTP 404)")
    target = psa.add_configuration(name="Front desk", company_id="1")
    outcome = apply(bridge, mapping.plan_device_mappings(bridge, {device.uid: target.id}))
    assert len(outcome.done) == 1 and rmm.calls["device_details"] == 0
    assert psa.configurations[target.id].management_link == device.url


def test_devices_load_says_why_a_device_has_no_proposal(bridge, rmm):
    map_acme(bridge)
    good = rmm.add_device("PC-01", "s-acme", last_audit=AUDITED)
    flaky = rmm.add_device("PC-02", "s-acme", last_audit=AUDITED)
    rmm.unreadable[flaky.uid] = ServerError("the RMM answered HTTP 500")
    rows = {r.device.uid: r for r in mapping.load_devices(bridge)}
    assert rows[good.uid].match.create_name == "PC-01" and rows[good.uid].problem == ""
    assert rows[flaky.uid].match is None
    assert rows[flaky.uid].problem.endswith("HTTP 500; the next run tries again")


def test_a_refusal_caused_by_a_connector_setting_points_at_the_setting_not_the_company():
    from psabridge.core.models import CompanySiteMapping

    company = CompanySiteMapping("psa", "rmm", "7", "Acme", "s1", "Acme HQ")
    plain = mapping._unreadable_candidates(company, RemoteError("refused"))
    assert "check the company in the PSA" in plain.why
    error = RemoteError("no such user-defined field")
    error.setting = "device_link_field"
    pointed = mapping._unreadable_candidates(company, error)
    assert "device_link_field setting" in pointed.why
    assert "check the company" not in pointed.why
