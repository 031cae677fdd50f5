"""R5-R20 end to end: the mapping engine, the real connectors and both simulators.

Each test runs twice (in-process and over loopback, see conftest) and checks what the
simulators hold afterwards, not only what the engine returns. tests/core/test_mapping.py has
the same rules against in-memory connectors.
"""

from __future__ import annotations

import pytest

from psabridge.core import mapping
from psabridge.core.mapping import NEW, MappingError, apply
from psabridge.core.models import CompanyFilters
from psabridge.plugins.rmm_datto import wire
from tests.e2e.conftest import connectwise_only
from tests.e2e.psa_sims import SimConfiguration

NORTHWIND = "Northwind Corp."  # CW company and Datto site of the same name (seed 3)
JACKSON = "Jackson Pharmacy"
MULTI_TYPE = "Lakeside Marketing P.C."  # types Managed Services and Client
NO_SITE = "Redwood Corp."  # Inactive, two types; its site carries a location tag


# -- helpers --------------------------------------------------------------------------------


def company_id(sims, name: str) -> str:
    return sims.psa.company_id(name)


def map_company(e2e, sims, name: str, site_name: str | None = None) -> dict:
    """Map the CW company `name` to the Datto site `site_name` (default: the same name)."""
    site = sims.datto.site_named(site_name or name)
    outcome = apply(e2e, mapping.plan_company_mappings(e2e, {company_id(sims, name): site["uid"]}))
    assert not outcome.failed
    return site


def map_suggested_device_types(e2e) -> None:
    for row in mapping.load_device_types(e2e):
        if row.configuration_type and not row.flagged:
            mapping.map_device_type(e2e, row.device_type, row.configuration_type.id)


def device_url(sims, device: dict) -> str:
    """The Manage Device link Datto gives the device (its portalUrl)."""
    return f"{sims.datto_url.rstrip('/')}/portal/device/{device['id']}"


def add_device(sims, site: dict, hostname: str, serial: str, manufacturer: str = "Dell Inc.",
               model: str = "OptiPlex 7090", warranty: str | None = None) -> dict:
    """An audited desktop in `site` whose audit says exactly this serial, maker and model."""
    device = sims.datto.add_device(site["uid"], hostname, "desktop", serial=serial)
    sims.datto.audit_device(device["uid"], manufacturer=manufacturer, model=model)
    device["warrantyDate"] = warranty
    return device


def add_configuration(sims, company: str, name: str, type_name: str | None = None,
                      **fields) -> SimConfiguration:
    """A configuration the MSP entered in the PSA by hand."""
    return sims.psa.add_configuration(sims.psa.company_id(company), name, type_name, **fields)


def configuration(sims, configuration_id) -> SimConfiguration | None:
    return sims.psa.configuration(configuration_id)


def mapped_configuration_id(e2e, device_uid: str) -> str:
    return next(m.configuration_id for m in e2e.store.device_mappings(*e2e.pair)
                if m.device_uid == device_uid)


def audited_devices_of(sims, site: dict) -> set[str]:
    """Uids of the site's live devices that the RMM has audited (mappable, R11)."""
    return {d["uid"] for d in sims.datto.devices.values()
            if d["siteUid"] == site["uid"] and not d["deleted"]
            and wire.device(d).last_audit is not None}


def remote_state(e2e, sims) -> tuple[int, dict]:
    """What a command may not change when it has nothing to do: journal and write requests."""
    return len(e2e.store.journal()), sims.writes()


# -- companies and sites (R5-R8) -------------------------------------------------------------


def test_r5_companies_load_filtered_by_mapping_type_status_and_search(e2e, sims):
    connectwise_only(sims, "its seeded company types and statuses (Prospect, Inactive)")
    companies = sims.psa.companies()
    every_id = {c.id for c in companies}
    assert {r.company.id for r in mapping.load_companies(e2e)} == every_id  # unmapped by default
    assert mapping.load_companies(e2e, "mapped") == []

    map_company(e2e, sims, NORTHWIND)
    northwind = company_id(sims, NORTHWIND)
    assert {r.company.id for r in mapping.load_companies(e2e)} == every_id - {northwind}
    assert [r.company.id for r in mapping.load_companies(e2e, "mapped")] == [northwind]
    assert {r.company.id for r in mapping.load_companies(e2e, "all")} == every_id

    prospects = mapping.load_companies(e2e, "all", CompanyFilters(type="Prospect"))
    assert {r.company.id for r in prospects} == {
        c.id for c in companies if "Prospect" in c.types}
    assert {r.company_type for r in prospects} == {"Prospect"}
    inactive = mapping.load_companies(e2e, "all", CompanyFilters(status="Inactive"))
    assert [r.company.name for r in inactive] == [NO_SITE, NO_SITE]  # one row per type (R7)
    searched = mapping.load_companies(e2e, "all", CompanyFilters(search="lakeside"))
    assert {r.company.name for r in searched} == {"Lakeside Logistics Group", MULTI_TYPE}


def test_r6_sites_suggested_by_similarity_else_create_new_site_in_the_rmm(e2e, sims):
    rows = {r.company.name: r.suggestion for r in mapping.load_companies(e2e)}
    # Real naming survives: a typo, a change of case, a different legal suffix, a location tag.
    assert rows["Oakwood Construction"].site_name == "Okawood Construction"
    assert 85 <= rows["Oakwood Construction"].score < 100
    assert rows["Nelson Plumbing LLC"].site_name == "nelson plumbing llc"
    assert rows["Walker, Miller & Partners"].site_name == "Walker, Miller & Partners LLP"
    assert rows[NO_SITE].site_name == "Redwood - Downtown"
    # The RMM's site for it becomes another client's: nothing resembles the company any more.
    sims.datto.site_named("Redwood - Downtown")["name"] = "Birchwood Veterinary"
    rows = {r.company.name: r.suggestion for r in mapping.load_companies(e2e)}
    assert rows[NO_SITE].site_uid is None and rows[NO_SITE].site_name == NO_SITE  # Create New

    sites_before = set(sims.datto.sites)
    site_reads = sims.datto.counts["GET /api/v2/account/sites"]
    plan = mapping.plan_company_mappings(e2e, {company_id(sims, NO_SITE): None,
                                               company_id(sims, "Oakwood Construction"): None})
    assert sims.datto.counts["GET /api/v2/account/sites"] == site_reads + 1  # one page, read once
    assert sorted((c.action, c.detail) for c in plan.changes) == [
        ("create site", "new site 'Redwood Corp.'"), ("map company", "site Okawood Construction")]
    assert set(sims.datto.sites) == sites_before  # planning created nothing
    assert not apply(e2e, plan).failed

    created = [s for uid, s in sims.datto.sites.items() if uid not in sites_before]
    assert [s["name"] for s in created] == [NO_SITE]
    assert sims.datto.counts["PUT /api/v2/site"] == 1
    by_company = {m.company_name: m.site_uid for m in e2e.store.company_mappings(*e2e.pair)}
    assert by_company == {NO_SITE: created[0]["uid"],
                          "Oakwood Construction": sims.datto.site_named("Okawood Construction")["uid"]}


def test_r7_company_listed_once_per_type_and_mapped_site_not_offered_again(e2e, sims):
    connectwise_only(sims, "a company of several types (an Autotask company has one)")
    rows = [r for r in mapping.load_companies(e2e) if r.company.name == MULTI_TYPE]
    assert sorted(r.company_type for r in rows) == ["Client", "Managed Services"]
    site = map_company(e2e, sims, MULTI_TYPE)

    unmapped = mapping.load_companies(e2e)
    assert MULTI_TYPE not in {r.company.name for r in unmapped}  # under neither type
    assert site["uid"] not in {r.suggestion.site_uid for r in unmapped}
    with pytest.raises(MappingError, match="already mapped"):
        mapping.plan_company_mappings(e2e, {company_id(sims, "Lakeside Logistics Group"): site["uid"]})


def test_r8_mapped_view_links_to_the_site_in_the_rmm(e2e, sims):
    site = map_company(e2e, sims, "Oakwood Construction", "Okawood Construction")
    [row] = mapping.load_companies(e2e, "mapped")
    assert (row.company.name, row.mapping.site_uid, row.mapping.site_name) == (
        "Oakwood Construction", site["uid"], "Okawood Construction")
    assert row.site_url == f"{sims.datto_url.rstrip('/')}/portal/site/{site['id']}"


# -- device types and configuration types (R9, R10) ------------------------------------------


def test_r9_device_types_suggested_and_edits_apply_to_later_configurations_only(e2e, sims):
    connectwise_only(sims, "the suggestions for its configuration type names")
    rows = {r.device_type: r for r in mapping.load_device_types(e2e)}
    assert {k: r.configuration_type.name for k, r in rows.items()} == {
        "Desktop": "Managed Workstation", "Laptop": "Laptop", "Server": "Managed Server",
        "Printer": "Printer", "ESXi Host": "ESXi Host", "Network Device": "Network Device"}
    assert not any(r.mapped for r in rows.values())

    site = map_company(e2e, sims, NORTHWIND)
    mapping.map_device_type(e2e, "Desktop", None)  # take the suggestion
    first = add_device(sims, site, "R9-FIRST", "R9SERIAL01")
    apply(e2e, mapping.plan_device_mappings(e2e, {first["uid"]: NEW}))
    mapping.map_device_type(e2e, "Desktop", "Virtual Machine")  # the admin edits it
    second = add_device(sims, site, "R9-SECOND", "R9SERIAL02")
    apply(e2e, mapping.plan_device_mappings(e2e, {second["uid"]: NEW}))

    desktop = next(r for r in mapping.load_device_types(e2e) if r.device_type == "Desktop")
    assert (desktop.mapped, desktop.configuration_type.name) == (True, "Virtual Machine")
    created_first = configuration(sims, mapped_configuration_id(e2e, first["uid"]))
    created_second = configuration(sims, mapped_configuration_id(e2e, second["uid"]))
    assert created_first.type_name == "Managed Workstation"  # not changed by the edit
    assert created_second.type_name == "Virtual Machine"


def test_r10_type_with_required_questions_flagged_never_used_to_create(e2e, sims):
    """ConnectWise's own: its configuration types with required questions are unusable."""
    connectwise_only(sims, "configuration types with required questions")
    site = map_company(e2e, sims, NORTHWIND)
    mapping.map_device_type(e2e, "Desktop", "Firewall")  # Firewall has required questions
    row = next(r for r in mapping.load_device_types(e2e) if r.device_type == "Desktop")
    assert row.mapped and row.flagged

    new = add_device(sims, site, "R10-NEW", "R10SERIAL1")
    existing_device = add_device(sims, site, "R10-FW", "R10SERIAL2")
    firewall = add_configuration(sims, NORTHWIND, "Edge firewall", "Firewall")
    configurations_before = len(sims.psa.configurations())
    plan = mapping.plan_device_mappings(e2e, {new["uid"]: NEW, existing_device["uid"]: firewall.id})
    assert [c.action for c in plan.changes] == ["map device"]
    assert plan.skipped[0][1].startswith("configuration type 'Firewall' has required questions")
    assert not apply(e2e, plan).failed

    assert len(sims.psa.configurations()) == configurations_before
    assert sims.psa.configuration_creates() == 0
    assert configuration(sims, firewall.id).management_link == device_url(sims, existing_device)
    assert mapped_configuration_id(e2e, existing_device["uid"]) == firewall.id


# -- devices and configurations (R11-R19) ----------------------------------------------------


def test_r11_unaudited_device_listed_but_cannot_be_mapped_and_mapped_view(e2e, sims):
    site = map_company(e2e, sims, NORTHWIND)
    map_suggested_device_types(e2e)
    unaudited = next(d for d in sims.datto.devices.values() if d["hostname"] == "NEW-PC-01")
    assert unaudited["siteUid"] == site["uid"]

    rows = {r.device.uid: r for r in mapping.load_devices(e2e)}
    assert rows[unaudited["uid"]].state == "unaudited" and rows[unaudited["uid"]].match is None
    assert {uid for uid, r in rows.items() if r.state == "unmapped"} == audited_devices_of(sims, site)
    with pytest.raises(MappingError, match="NEW-PC-01 has not been audited by the RMM yet"):
        mapping.plan_device_mappings(e2e, {unaudited["uid"]: NEW})

    chosen = sorted(audited_devices_of(sims, site))[0]
    apply(e2e, mapping.plan_device_mappings(e2e, {chosen: NEW}))
    assert [r.device.uid for r in mapping.load_devices(e2e, "mapped")] == [chosen]
    assert chosen not in {r.device.uid for r in mapping.load_devices(e2e)}
    assert configuration(sims, mapped_configuration_id(e2e, chosen)).management_link == device_url(
        sims, sims.datto.devices[chosen])


def test_r12_device_in_another_site_than_its_company_counts_as_unmapped(e2e, sims):
    home = map_company(e2e, sims, NORTHWIND)
    elsewhere = map_company(e2e, sims, JACKSON)
    mapping.map_device_type(e2e, "Desktop", None)
    device = add_device(sims, home, "R12-PC", "R12SERIAL1")
    apply(e2e, mapping.plan_device_mappings(e2e, {device["uid"]: NEW}))
    assert [r.device.uid for r in mapping.load_devices(e2e, "mapped")] == [device["uid"]]

    device.update(siteUid=elsewhere["uid"], siteId=elsewhere["id"], siteName=elsewhere["name"])
    assert mapping.load_devices(e2e, "mapped") == []
    moved = [r for r in mapping.load_devices(e2e) if r.device.uid == device["uid"]]
    assert [(r.state, r.company_name) for r in moved] == [("moved", JACKSON)]

    device.update(siteUid=home["uid"], siteId=home["id"], siteName=home["name"])  # moved back
    assert [r.device.uid for r in mapping.load_devices(e2e, "mapped")] == [device["uid"]]


def test_r13_cascade_link_serial_name_manufacturer_model_and_ambiguity(e2e, sims):
    connectwise_only(sims, "configurations with a manufacturer and model (Autotask's items have "
                           "neither: they belong to the product)")
    site = map_company(e2e, sims, NORTHWIND)
    mapping.map_device_type(e2e, "Desktop", None)
    cfg = {}

    linked = add_device(sims, site, "LINK-PC", "SNLINK0001")
    cfg["link"] = add_configuration(sims, NORTHWIND, "Renamed long ago",
                                    management_link=device_url(sims, linked))
    add_configuration(sims, NORTHWIND, "LINK-PC")  # the name alone loses to the link

    by_serial = add_device(sims, site, "SERIAL-PC", "SNSERIAL01")
    cfg["serial"] = add_configuration(sims, NORTHWIND, "Old name", serial_number="SNSERIAL01")

    by_name = add_device(sims, site, "NAME-PC", "SNNAME0001")
    cfg["name"] = add_configuration(sims, NORTHWIND, "NAME-PC", serial_number="SNNAME0001")
    add_configuration(sims, NORTHWIND, "NAME-PC-SPARE", serial_number="SNNAME0001")

    by_maker = add_device(sims, site, "MAKER-PC", "SNMAKER001", manufacturer="Dell Inc.")
    cfg["manufacturer"] = add_configuration(sims, NORTHWIND, "MAKER-PC", manufacturer="Dell Inc.")
    add_configuration(sims, NORTHWIND, "MAKER-PC", manufacturer="HP")

    by_model = add_device(sims, site, "MODEL-PC", "SNMODEL001", model="OptiPlex 7090")
    cfg["model"] = add_configuration(sims, NORTHWIND, "MODEL-PC", manufacturer="Dell Inc.",
                                     model="OptiPlex 7090")
    add_configuration(sims, NORTHWIND, "MODEL-PC", manufacturer="Dell Inc.", model="OptiPlex 3000")

    ambiguous = add_device(sims, site, "AMBIG-PC", "SNAMBIG001")
    twins = [add_configuration(sims, NORTHWIND, "AMBIG-PC", manufacturer="Dell Inc.",
                               model="OptiPlex 7090") for _ in range(2)]

    devices = {"link": linked, "serial": by_serial, "name": by_name, "manufacturer": by_maker,
               "model": by_model}
    rows = {r.device.uid: r for r in mapping.load_devices(e2e)}
    for step, device in devices.items():
        match = rows[device["uid"]].match
        assert (match.step, match.configuration.id) == (step, cfg[step].id), step
    lost = rows[ambiguous["uid"]].match
    assert (lost.configuration, lost.step, lost.create_name) == (None, "none", "AMBIG-PC")
    assert lost.reason.startswith("2 configurations still match after the model number step")

    configurations_before = {c.id for c in sims.psa.configurations()}
    wanted = {d["uid"]: None for d in [*devices.values(), ambiguous]}
    assert not apply(e2e, mapping.plan_device_mappings(e2e, wanted)).failed
    for step, device in devices.items():
        assert configuration(sims, cfg[step].id).management_link == device_url(sims, device)
        assert mapped_configuration_id(e2e, device["uid"]) == cfg[step].id
    assert [configuration(sims, t.id).management_link for t in twins] == [None, None]
    [created] = {c.id for c in sims.psa.configurations()} - configurations_before
    assert configuration(sims, created).name == "AMBIG-PC"  # "[name]": a new configuration
    assert mapped_configuration_id(e2e, ambiguous["uid"]) == str(created)


def test_r13_manual_choice_overrides_the_cascade(e2e, sims):
    site = map_company(e2e, sims, NORTHWIND)
    device = add_device(sims, site, "MANUAL-PC", "SNMANUAL01")
    add_configuration(sims, NORTHWIND, "MANUAL-PC", serial_number="SNMANUAL01")  # the proposal
    chosen = add_configuration(sims, NORTHWIND, "Reception desk")
    apply(e2e, mapping.plan_device_mappings(e2e, {device["uid"]: chosen.id}))
    assert configuration(sims, chosen.id).management_link == device_url(sims, device)
    assert mapped_configuration_id(e2e, device["uid"]) == chosen.id


def test_r14_one_device_per_configuration_and_one_configuration_per_device(e2e, sims):
    site = map_company(e2e, sims, NORTHWIND)
    mapping.map_device_type(e2e, "Desktop", None)
    # Two devices the cascade cannot tell apart both point at the one configuration.
    first = add_device(sims, site, "TWIN-PC", "SNTWIN0001")
    second = add_device(sims, site, "TWIN-PC", "SNTWIN0002")
    existing = add_configuration(sims, NORTHWIND, "TWIN-PC")

    outcome = apply(e2e, mapping.plan_device_mappings(e2e, {first["uid"]: None, second["uid"]: None}))
    assert not outcome.failed
    assert sorted(c.action for c in outcome.done) == ["create configuration", "map device"]
    twins = [c for c in sims.psa.configurations() if c.name == "TWIN-PC"]
    assert len(twins) == 2  # the second device got a configuration of its own
    assert {c.management_link for c in twins} == {device_url(sims, first), device_url(sims, second)}
    config_ids = [mapped_configuration_id(e2e, d["uid"]) for d in (first, second)]
    assert existing.id in config_ids and len(set(config_ids)) == 2

    third = add_device(sims, site, "THIRD-PC", "SNTHIRD001")
    with pytest.raises(MappingError, match=f"configuration {existing.id} is already mapped"):
        mapping.plan_device_mappings(e2e, {third["uid"]: existing.id})
    other = add_configuration(sims, NORTHWIND, "Spare")
    with pytest.raises(MappingError, match="TWIN-PC is already mapped to configuration"):
        mapping.plan_device_mappings(e2e, {first["uid"]: other.id})


def test_r15_created_configuration_fields_and_warranty_only_into_empty_expiration(e2e, sims):
    connectwise_only(sims, "the manufacturer and model written on a new configuration")
    site = map_company(e2e, sims, NORTHWIND)
    mapping.map_device_type(e2e, "Desktop", None)
    fresh = add_device(sims, site, "R15-NEW", "SNR15NEW01", "HP", "EliteDesk 800 G6",
                       warranty="2028-03-31")
    dated = add_device(sims, site, "R15-DATED", "SNR15DATE1", warranty="2029-06-30")
    undated = add_device(sims, site, "R15-UNDATED", "SNR15UND01", warranty="2027-09-15")
    with_date = add_configuration(sims, NORTHWIND, "R15-DATED", serial_number="SNR15DATE1",
                                  expiration_date="2026-01-01T00:00:00Z")
    without_date = add_configuration(sims, NORTHWIND, "R15-UNDATED", serial_number="SNR15UND01")

    apply(e2e, mapping.plan_device_mappings(e2e, {fresh["uid"]: NEW, dated["uid"]: None,
                                                  undated["uid"]: None}))
    created = configuration(sims, mapped_configuration_id(e2e, fresh["uid"]))
    assert (created.name, created.type_name, created.active, created.manufacturer, created.model,
            created.serial_number, created.management_link) == (
        "R15-NEW", "Managed Workstation", True, "HP", "EliteDesk 800 G6", "SNR15NEW01",
        device_url(sims, fresh))
    assert created.expiration_date.startswith("2028-03-31")
    assert configuration(sims, with_date.id).expiration_date.startswith("2026-01-01")
    assert configuration(sims, without_date.id).expiration_date.startswith("2027-09-15")

    apply(e2e, mapping.plan_automatic_mapping(e2e))  # the rest of the site, generated devices
    # The warranty changes in the RMM after mapping: nothing is pushed again.
    for device in (fresh, dated, undated):
        device["warrantyDate"] = "2031-12-31"
    e2e.set_option("auto_map", True)
    before = remote_state(e2e, sims)
    assert mapping.plan_device_mappings(e2e, {fresh["uid"]: None, dated["uid"]: None,
                                              undated["uid"]: None}).changes == []
    assert mapping.map_now(e2e).changes == []
    assert remote_state(e2e, sims) == before
    assert configuration(sims, created.id).expiration_date.startswith("2028-03-31")
    assert configuration(sims, without_date.id).expiration_date.startswith("2027-09-15")


def test_r16_automatic_mapping_off_by_default_then_map_now_new_site_and_new_device(e2e, sims):
    map_suggested_device_types(e2e)
    assert e2e.option("auto_map") is False
    northwind = map_company(e2e, sims, NORTHWIND)
    assert sims.psa.configuration_creates() == 0  # off: mapping a site maps nothing
    with pytest.raises(MappingError, match="automatic mapping is off"):
        mapping.map_now(e2e)

    def mapped_uids() -> set[str]:
        return {m.device_uid for m in e2e.store.device_mappings(*e2e.pair)}

    e2e.set_option("auto_map", True)
    assert not apply(e2e, mapping.map_now(e2e)).failed  # trigger 1: Map Now
    assert mapped_uids() == audited_devices_of(sims, northwind)

    jackson = map_company(e2e, sims, JACKSON)  # trigger 2: a newly mapped site
    assert mapped_uids() == audited_devices_of(sims, northwind) | audited_devices_of(sims, jackson)

    newcomer = add_device(sims, jackson, "R16-NEW", "SNR16NEW01")  # trigger 3: a new device
    assert not apply(e2e, mapping.plan_automatic_mapping(e2e)).failed
    assert newcomer["uid"] in mapped_uids()
    for uid in mapped_uids():
        linked = configuration(sims, mapped_configuration_id(e2e, uid))
        assert linked.management_link == device_url(sims, sims.datto.devices[uid])


@pytest.fixture
def mapped_pair(e2e, sims):
    """Two devices of Northwind mapped to configurations created for them."""
    site = map_company(e2e, sims, NORTHWIND)
    map_suggested_device_types(e2e)
    devices = [add_device(sims, site, f"PAIR-{n}", f"SNPAIR000{n}") for n in (1, 2)]
    apply(e2e, mapping.plan_device_mappings(e2e, {d["uid"]: NEW for d in devices}))
    return devices


def test_r17_unmap_clears_the_link_and_the_configuration_stays_active(e2e, sims, mapped_pair):
    device, kept = mapped_pair
    config_id = mapped_configuration_id(e2e, device["uid"])
    assert configuration(sims, config_id).management_link == device_url(sims, device)

    assert not apply(e2e, mapping.unmap_devices(e2e, [device["uid"]])).failed
    record = configuration(sims, config_id)
    assert record.management_link in ("", None)
    assert record.active is True
    assert {m.device_uid for m in e2e.store.device_mappings(*e2e.pair)} == {kept["uid"]}
    assert device["uid"] in {r.device.uid for r in mapping.load_devices(e2e)}  # unmapped again


def test_r18_device_deleted_in_the_rmm_is_unmapped_and_its_configuration_inactive(e2e, sims, mapped_pair):
    gone, kept = mapped_pair
    config_id = mapped_configuration_id(e2e, gone["uid"])
    sims.datto.delete_device(gone["uid"])

    plan = mapping.plan_deleted_devices(e2e)
    assert [c.action for c in plan.changes] == ["deactivate configuration"]
    assert configuration(sims, config_id).active is True  # planning changed nothing
    assert not apply(e2e, plan).failed
    record = configuration(sims, config_id)
    assert record.active is False
    assert record.management_link in ("", None)
    assert {m.device_uid for m in e2e.store.device_mappings(*e2e.pair)} == {kept["uid"]}
    kept_config = configuration(sims, mapped_configuration_id(e2e, kept["uid"]))
    assert kept_config.active is True


def test_r19_configuration_deleted_in_the_psa_leaves_the_device_mapped_until_unmapped(
        e2e, sims, mapped_pair):
    device, _ = mapped_pair
    apply(e2e, mapping.plan_automatic_mapping(e2e))  # the rest of the site, generated devices
    config_id = mapped_configuration_id(e2e, device["uid"])
    sims.psa.delete_configuration(config_id)  # an admin deletes it in the PSA

    assert device["uid"] in {r.device.uid for r in mapping.load_devices(e2e, "mapped")}
    e2e.set_option("auto_map", True)
    assert mapping.map_now(e2e).changes == []  # not re-created behind the admin's back
    assert mapping.plan_deleted_devices(e2e).changes == []

    outcome = apply(e2e, mapping.unmap_devices(e2e, [device["uid"]]))
    assert not outcome.failed and e2e.store.warnings() == []
    assert device["uid"] not in {m.device_uid for m in e2e.store.device_mappings(*e2e.pair)}
    assert sims.psa.configuration(config_id) is None
    assert device["uid"] in {r.device.uid for r in mapping.load_devices(e2e)}


def test_r20_problems_that_stop_a_creation_are_warnings_listed_once_and_cleared(e2e, sims):
    site = map_company(e2e, sims, NORTHWIND)
    device = add_device(sims, site, "R20-PC", "SNR20PC001")  # Desktop: no type mapped yet
    subject = f"R20-PC ({device['uid']})"
    for _ in range(2):
        apply(e2e, mapping.plan_device_mappings(e2e, {device["uid"]: NEW}))
    assert [(w.subject, w.message) for w in e2e.store.warnings(sims.psa.plugin)] == [
        (subject, "no configuration type is mapped for device type 'Desktop'; map one with "
                  "`psabridge device-types map`")]
    assert sims.psa.configuration_creates() == 0

    mapping.map_device_type(e2e, "Desktop", None)
    e2e.set_option("auto_map", True)
    assert subject not in {c.subject for c in mapping.map_now(e2e).changes}  # held back
    assert e2e.store.clear_warnings(sims.psa.plugin) == 1
    assert e2e.store.warnings() == []
    assert not apply(e2e, mapping.map_now(e2e)).failed  # tried again once cleared
    assert configuration(sims, mapped_configuration_id(e2e, device["uid"])).name == "R20-PC"


# -- idempotency and dry runs ----------------------------------------------------------------


def test_every_mapping_command_twice_writes_nothing_the_second_time_and_dry_runs_write_nothing(
        e2e, sims):
    def run_twice(make_plan) -> mapping.Outcome:
        before = remote_state(e2e, sims)
        plan = make_plan()  # --dry-run: the plan is printed, nothing applied
        assert plan.changes, "the first run has something to do"
        assert remote_state(e2e, sims) == before
        outcome = apply(e2e, plan)
        assert not outcome.failed
        after = remote_state(e2e, sims)
        again = make_plan()
        assert again.changes == []
        apply(e2e, again)
        assert remote_state(e2e, sims) == after
        return outcome

    # companies map --suggested (Redwood Corp.'s site is renamed away: a site is created for it)
    sims.datto.site_named("Redwood - Downtown")["name"] = "Birchwood Veterinary"
    suggested = {r.company.id: None for r in mapping.load_companies(e2e)}
    run_twice(lambda: mapping.plan_company_mappings(e2e, suggested))
    assert sims.datto.counts["PUT /api/v2/site"] == 1

    # device-types map --suggested: store only, twice
    before = remote_state(e2e, sims)
    map_suggested_device_types(e2e)
    map_suggested_device_types(e2e)
    assert remote_state(e2e, sims) == before

    # devices map UID=new UID (by proposal)
    northwind = sims.datto.site_named(NORTHWIND)
    first, second = (add_device(sims, northwind, f"IDEM-{n}", f"SNIDEM000{n}") for n in (1, 2))
    add_configuration(sims, NORTHWIND, "IDEM-2", serial_number="SNIDEM0002")
    choices = {first["uid"]: NEW, second["uid"]: None}
    run_twice(lambda: mapping.plan_device_mappings(e2e, choices))

    # devices map --all, then map-now after a new device
    run_twice(lambda: mapping.plan_automatic_mapping(e2e))
    e2e.set_option("auto_map", True)
    add_device(sims, northwind, "IDEM-3", "SNIDEM0003")
    run_twice(lambda: mapping.map_now(e2e))

    # devices unmap, and the deleted-devices check
    run_twice(lambda: mapping.unmap_devices(e2e, [first["uid"]]))
    sims.datto.delete_device(second["uid"])
    run_twice(lambda: mapping.plan_deleted_devices(e2e))


def test_mapping_a_site_asks_for_candidates_once_and_reads_manufacturers_once(e2e, sims):
    connectwise_only(sims, "its endpoints and its manufacturers list")
    map_suggested_device_types(e2e)
    site = map_company(e2e, sims, NORTHWIND)
    before = sims.request_counts()
    plan = mapping.plan_automatic_mapping(e2e)
    # Every device's link, serial and name in one OR'ed query (they fit in one URL).
    assert sims.request_counts()["psa GET /company/configurations"] - before.get(
        "psa GET /company/configurations", 0) == 1
    created = sum(c.action == "create configuration" for c in plan.changes)
    matched = sum(c.action == "map device" for c in plan.changes)  # the MSP recorded by hand
    assert created + matched == len(audited_devices_of(sims, site)) and created > 1
    apply(e2e, plan)
    # The manufacturers list is read once for all creations, not once per configuration.
    assert sims.cw.counts["GET /procurement/manufacturers"] == 1
    assert sims.psa.configuration_creates() == created
