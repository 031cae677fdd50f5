"""The Autotask connector's hooks against the simulator, in-process and over loopback."""

from __future__ import annotations

import datetime as dt

import pytest

from psabridge.core.errors import RemoteError
from psabridge.core.models import (
    CompanyFilters,
    Configuration,
    ConfigurationChanges,
    Device,
    DeviceDetails,
    TicketDraft,
)
from psabridge.plugins.autotask import hooks
from psabridge.plugins.autotask.client import DISCOVERY_URL
from psabridge.plugins.autotask.simulator import STATUS_COMPLETE, AutotaskSimulator

from .conftest import connect

MARKER = "psabridge:datto:" + "0f8e6a52-1c4e-4a39-9d0c-3b1f5e7a9c21"  # 52 characters, as core makes


def company(sim, index: int = 0) -> dict:
    return [c for c in sim.companies() if c["id"] != 0][index]


def draft(sim, **fields) -> TicketDraft:
    return TicketDraft(**{"summary": "Disk C: is full", "description": "Free space below 5 %",
                          "company_id": str(company(sim)["id"]), "marker": MARKER, **fields})


# -- connection and companies ----------------------------------------------------------------


def test_check_connection_reports_the_zone_and_the_product(connection):
    report = hooks.psa_check_connection(connection)
    assert report.ok and report.missing_permissions == ()
    assert "Managed Workstation" in report.detail


def test_check_connection_names_the_secret_setting_without_showing_it(sim):
    settings = {**sim.settings(), "secret": "wrong-secret-value"}
    report = hooks.psa_check_connection(connect(settings, sim.transport()))
    assert not report.ok and "secret" in report.detail and "wrong-secret-value" not in report.detail


def test_zone_discovery_finds_the_simulated_zone(sim):
    settings = {**sim.settings(), "api_url": ""}
    connection = connect(settings, sim.transport(), discovery_url="http://autotask.simulator/ATServicesRest/")
    assert hooks.psa_check_connection(connection).ok
    hooks.psa_list_configuration_types(connection)
    assert sim.counts["GET /V1.0/zoneInformation"] == 1  # once for the user, not per request
    assert DISCOVERY_URL.startswith("https://webservices.autotask.net/")


def test_companies_are_listed_by_name_and_filtered(connection, sim):
    companies = list(hooks.psa_list_companies(connection, CompanyFilters()))
    names = [c.name for c in companies]
    assert names == sorted(names, key=str.casefold)
    assert {c.id for c in companies} == {str(c["id"]) for c in sim.companies() if c["id"] != 0}
    wanted = company(sim, 1)["companyName"]
    found = list(hooks.psa_list_companies(connection, CompanyFilters(search=wanted[:6])))
    assert wanted in [c.name for c in found] and all(wanted[:6].lower() in c.name.lower() for c in found)
    customers = list(hooks.psa_list_companies(connection, CompanyFilters(type="Customer")))
    assert customers and all(c.types == ("Customer",) for c in customers)
    assert list(hooks.psa_list_companies(connection, CompanyFilters(type="Nothing Like It"))) == []


# -- configuration items ---------------------------------------------------------------------


def test_created_configuration_item_has_the_product_type_and_link(connection, sim):
    types = {t.name: t.id for t in hooks.psa_list_configuration_types(connection)}
    created = hooks.psa_create_configuration(connection, Configuration(
        name="NEW-PC-01", company_id=str(company(sim)["id"]), type_id=types["Server"],
        serial_number="SN-NEW-1", management_link="https://rmm.example/device/1",
        expiration_date=dt.date(2027, 5, 1)))
    stored = sim.db.table("ConfigurationItems")[int(created.id)]
    assert stored["referenceTitle"] == "NEW-PC-01" and stored["serialNumber"] == "SN-NEW-1"
    assert stored["referenceNumber"] == "https://rmm.example/device/1"
    assert stored["configurationItemType"] == int(types["Server"])
    assert stored["productID"] == min(p["id"] for p in sim.db.table("Products").values())
    assert created.type_name == "Server" and created.management_link == "https://rmm.example/device/1"


def test_the_product_setting_chooses_the_product_by_name(sim):
    connection = connect({**sim.settings(), "product": "generic device"}, sim.transport())
    created = hooks.psa_create_configuration(connection, Configuration(
        name="PRN-1", company_id=str(company(sim)["id"])))
    product = sim.db.table("Products")[sim.db.table("ConfigurationItems")[int(created.id)]["productID"]]
    assert product["name"] == "Generic Device"
    with pytest.raises(RemoteError, match="product setting"):
        hooks.psa_create_configuration(connect({**sim.settings(), "product": "No Such"}, sim.transport()),
                                       Configuration(name="X", company_id=str(company(sim)["id"])))


def test_match_finds_by_link_serial_and_name_within_the_company_only(connection, sim):
    home, other = company(sim, 0), company(sim, 1)
    by_link = hooks.psa_create_configuration(connection, Configuration(
        name="LINKED", company_id=str(home["id"]), management_link="https://rmm.example/device/L"))
    by_serial = hooks.psa_create_configuration(connection, Configuration(
        name="OTHER-NAME", company_id=str(home["id"]), serial_number="SER-42"))
    by_name = hooks.psa_create_configuration(connection, Configuration(name="Named-Box",
                                                                       company_id=str(home["id"])))
    hooks.psa_create_configuration(connection, Configuration(name="NAMED-BOX", company_id=str(other["id"])))
    devices = [Device(uid="d1", hostname="x1", site_uid="s", url="https://rmm.example/device/L"),
               Device(uid="d2", hostname="x2", site_uid="s"),
               Device(uid="d3", hostname="named-box", site_uid="s"),
               Device(uid="d4", hostname="nothing", site_uid="s")]
    found = hooks.psa_match_configurations(connection, str(home["id"]), devices,
                                           {"d2": DeviceDetails(serial_number="ser-42")})
    assert [c.id for c in found["d1"]] == [by_link.id]
    assert [c.id for c in found["d2"]] == [by_serial.id]
    assert [c.id for c in found["d3"]] == [by_name.id]
    assert found["d4"] == []


def test_matching_many_devices_keeps_every_in_list_within_autotasks_limit(connection, sim):
    devices = [Device(uid=f"d{i}", hostname=f"host-{i}", site_uid="s", url=f"https://rmm.example/d/{i}")
               for i in range(400)]
    details = {d.uid: DeviceDetails(serial_number=f"SN{i}") for i, d in enumerate(devices)}
    found = hooks.psa_match_configurations(connection, str(company(sim)["id"]), devices, details)
    assert set(found) == {d.uid for d in devices}
    assert sim.counts["POST /V1.0/ConfigurationItems/query"] == 3  # 160 + 160 + 80 devices


def test_update_sets_clears_the_link_and_deactivates(connection, sim):
    created = hooks.psa_create_configuration(connection, Configuration(
        name="UPD-1", company_id=str(company(sim)["id"])))
    linked = hooks.psa_update_configuration(connection, created.id, ConfigurationChanges(
        management_link="https://rmm.example/device/U"))
    assert linked.management_link == "https://rmm.example/device/U"
    gone = hooks.psa_update_configuration(connection, created.id, ConfigurationChanges(
        active=False, clear_management_link=True))
    assert not gone.active and gone.status == "Inactive" and gone.management_link is None
    assert sim.db.table("ConfigurationItems")[int(created.id)]["isActive"] is False


def test_unmap_empties_links_skips_missing_ids_and_leaves_items_active(connection, sim):
    created = hooks.psa_create_configuration(connection, Configuration(
        name="UNMAP-1", company_id=str(company(sim)["id"]), management_link="https://rmm.example/x"))
    hooks.psa_unmap_configurations(connection, [created.id, "987654321"])
    [after] = hooks.psa_get_configurations(connection, [created.id, "987654321"])
    assert after.management_link is None and after.active


def test_a_link_longer_than_reference_number_names_the_setting(connection, sim):
    with pytest.raises(RemoteError, match="device_link_field"):
        hooks.psa_create_configuration(connection, Configuration(
            name="LONG", company_id=str(company(sim)["id"]), management_link="https://x/" + "a" * 120))


def test_the_link_can_live_in_a_user_defined_field(sim):
    connection = connect({**sim.settings(), "device_link_field": "udf:RMM Device UID"}, sim.transport())
    home = str(company(sim)["id"])
    link = "https://rmm.example/device/" + "u" * 120  # too long for referenceNumber
    created = hooks.psa_create_configuration(connection, Configuration(name="UDF-1", company_id=home,
                                                                       management_link=link))
    stored = sim.db.table("ConfigurationItems")[int(created.id)]
    assert {"name": "RMM Device UID", "value": link} in stored["userDefinedFields"]
    assert stored["referenceNumber"] is None
    found = hooks.psa_match_configurations(connection, home, [Device(uid="d", hostname="zz", site_uid="s",
                                                                     url=link)], {})
    assert [c.id for c in found["d"]] == [created.id]
    cleared = hooks.psa_update_configuration(connection, created.id,
                                             ConfigurationChanges(clear_management_link=True))
    assert cleared.management_link is None


@pytest.mark.parametrize("setting, value, said", [
    ("device_link_field", "notes", "referenceNumber or udf:NAME"),
    ("device_link_field", "serialNumber", "matches configuration items by serial number"),
    ("due_hours", "soon", "due_hours must be a whole number"),
    ("device_link_field", "udf:No Such Field", "Check the device_link_field setting"),
    ("product", "No Such Product", "set the product setting"),
    ("product", "987654", "check the product setting"),
    ("closed_statuses", "Waiting Customer, Nope", "closed_statuses names 'Nope'"),
])
def test_a_bad_setting_fails_the_check_naming_it(sim, setting, value, said):
    report = hooks.psa_check_connection(connect({**sim.settings(), setting: value}, sim.transport()))
    assert not report.ok and said in report.detail


def test_a_bad_requests_per_hour_fails_the_check_naming_it(sim):
    from psabridge.core.models import Connection

    report = hooks.psa_check_connection(Connection("autotask", {**sim.settings(), "requests_per_hour": "0"},
                                                   transport=sim.transport()))
    assert not report.ok and "requests_per_hour must be a whole number from 1 to 10000" in report.detail


def test_listing_cost_counts_pages_of_500(connection, sim):
    count = len(sim.configurations())
    assert hooks.psa_configuration_listing_cost(connection) == max(1, -(-count // 500))
    assert len(list(hooks.psa_list_all_configurations(connection))) == count


# -- ticket options --------------------------------------------------------------------------


def test_ticket_options_route_by_queue_and_issue_types_with_global_statuses(connection):
    options = hooks.psa_ticket_options(connection)
    names = [f.name for f in options.routing]
    assert names[:3] == ["queue", "issue_type", "sub_issue_type"]
    sub = options.field("sub_issue_type")
    issue_ids = {c.id for c in options.field("issue_type").choices}
    assert sub.scoped_by == "issue_type" and all(c.scope_id in issue_ids for c in sub.choices)
    assert options.status_scope is None and all(s.scope_id is None for s in options.statuses)
    closed = [s for s in options.statuses if s.closed]
    assert [s.id for s in closed] == [str(STATUS_COMPLETE)]
    assert [s.name for s in options.statuses if s.default] == ["New"]
    assert options.summary_max == 255


def test_closed_statuses_setting_adds_closed_statuses(sim):
    connection = connect({**sim.settings(), "closed_statuses": "Waiting Vendor"}, sim.transport())
    closed = {s.name for s in hooks.psa_ticket_options(connection).statuses if s.closed}
    assert closed == {"Complete", "Waiting Vendor"}


# -- tickets ---------------------------------------------------------------------------------


def test_ticket_is_created_with_explicit_routing_and_found_by_its_marker(connection, sim):
    options = hooks.psa_ticket_options(connection)
    queue = next(c.id for c in options.field("queue").choices if c.name == "Monitoring Alert")
    sub = next(c for c in options.field("sub_issue_type").choices if c.name == "Disk Space")
    ticket = hooks.psa_create_ticket(connection, draft(sim, routing={
        "queue": queue, "issue_type": sub.scope_id, "sub_issue_type": sub.id},
        device_url="https://rmm.example/device/1", alert_url="https://rmm.example/alert/1"))
    stored = sim.ticket(int(ticket.id))
    assert stored["queueID"] == int(queue) and stored["subIssueType"] == int(sub.id)
    # What Autotask would default is not known: every one of these is sent.
    for field in ("status", "priority", "ticketType", "source", "ticketCategory", "dueDateTime"):
        assert stored[field] is not None, field
    assert stored["description"].endswith("RMM Device: https://rmm.example/device/1\n"
                                          "RMM Alert: https://rmm.example/alert/1")
    assert len(stored["externalID"]) <= 50 and ticket.status_name == "New" and not ticket.closed
    assert hooks.psa_find_ticket(connection, MARKER).id == ticket.id
    assert hooks.psa_find_ticket(connection, MARKER[:-1] + "x") is None


def test_a_short_marker_is_stored_as_it_is(connection, sim):
    ticket = hooks.psa_create_ticket(connection, draft(sim, marker="psabridge:manual:1"))
    assert sim.ticket(int(ticket.id))["externalID"] == "psabridge:manual:1"
    assert ticket.marker == "psabridge:manual:1"


def test_ticket_carries_its_configuration_and_attaching_again_changes_nothing(connection, sim):
    created = hooks.psa_create_configuration(connection, Configuration(
        name="TKT-CI", company_id=str(company(sim)["id"])))
    ticket = hooks.psa_create_ticket(connection, draft(sim, configuration_id=created.id))
    assert ticket.configuration_ids == (created.id,)
    hooks.psa_attach_configuration(connection, ticket.id, created.id)
    assert hooks.psa_get_ticket(connection, ticket.id).configuration_ids == (created.id,)


def test_attach_sets_the_primary_item_of_a_ticket_without_one(connection, sim):
    created = hooks.psa_create_configuration(connection, Configuration(
        name="LATE-CI", company_id=str(company(sim)["id"])))
    ticket = hooks.psa_create_ticket(connection, draft(sim))
    hooks.psa_attach_configuration(connection, ticket.id, created.id)
    assert hooks.psa_get_ticket(connection, ticket.id).configuration_ids == (created.id,)


def test_a_missing_ticket_is_none(connection):
    assert hooks.psa_get_ticket(connection, "987654321") is None


def test_note_is_added_with_labelled_note_type_and_publish(connection, sim):
    ticket = hooks.psa_create_ticket(connection, draft(sim))
    hooks.psa_add_ticket_note(connection, ticket.id, "The alert was raised again\nat 10:00")
    [note] = sim.db.by("TicketNotes", ticketID=int(ticket.id))
    assert note["description"].startswith("The alert was raised again")
    assert note["title"] == "The alert was raised again"
    assert (note["noteType"], note["publish"]) == (3, 1)  # "Task Notes", "All Autotask Users"


def test_closing_moves_to_complete_and_refuses_an_open_status(connection, sim):
    ticket = hooks.psa_create_ticket(connection, draft(sim))
    with pytest.raises(RemoteError, match="not a closed status"):
        hooks.psa_close_ticket(connection, ticket.id, "8")
    closed = hooks.psa_close_ticket(connection, ticket.id, str(STATUS_COMPLETE))
    assert closed.closed and closed.status_name == "Complete"
    assert sim.ticket(int(ticket.id))["status"] == STATUS_COMPLETE
    assert hooks.psa_close_ticket(connection, ticket.id, str(STATUS_COMPLETE)).closed  # again: no change


def test_changed_tickets_are_oldest_first_and_since_is_inclusive(connection, sim):
    first = hooks.psa_create_ticket(connection, draft(sim, marker="m-1"))
    second = hooks.psa_create_ticket(connection, draft(sim, marker="m-2"))
    hooks.psa_close_ticket(connection, first.id, str(STATUS_COMPLETE))  # now the newest change
    tickets = list(hooks.psa_changed_tickets(connection, None))
    assert [t.id for t in tickets][-2:] == [second.id, first.id]
    since = hooks.psa_get_ticket(connection, first.id).last_updated
    assert first.id in [t.id for t in hooks.psa_changed_tickets(connection, since)]
    assert list(hooks.psa_changed_tickets(connection, since + dt.timedelta(days=1))) == []


def test_ticket_url_opens_the_ticket_in_the_zones_web_interface():
    from psabridge.plugins.autotask.hooks import _web_root

    assert _web_root("https://webservices14.autotask.net/ATServicesRest/V1.0/") == "https://ww14.autotask.net"


def test_ticket_url_names_the_ticket(connection):
    url = hooks.psa_ticket_url(connection, "7001")
    assert url.endswith("ExecuteCommand.aspx?Code=OpenTicketDetail&TicketID=7001")


def test_attaching_a_second_item_adds_it_under_the_ticket_once(connection, sim):
    home = str(company(sim)["id"])
    first = hooks.psa_create_configuration(connection, Configuration(name="CI-A", company_id=home))
    second = hooks.psa_create_configuration(connection, Configuration(name="CI-B", company_id=home))
    ticket = hooks.psa_create_ticket(connection, draft(sim, configuration_id=first.id))
    hooks.psa_attach_configuration(connection, ticket.id, second.id)
    hooks.psa_attach_configuration(connection, ticket.id, second.id)
    assert hooks.psa_get_ticket(connection, ticket.id).configuration_ids == (first.id, second.id)
    assert sim.ticket_configurations(int(ticket.id)).count(int(second.id)) == 1


def test_what_the_security_level_denies_is_reported_as_missing_permissions():
    from psabridge.plugins.autotask.simulator import Options

    sim = AutotaskSimulator(seed=3, companies=2, options=Options(
        denied={"ConfigurationItems": ("Create",), "TicketNotes": ("Create",)}))
    report = hooks.psa_check_connection(connect(sim.settings(), sim.transport()))
    assert report.ok
    assert report.missing_permissions == ("ConfigurationItems: Create", "TicketNotes: Create")


def test_a_denied_create_is_a_permission_error_naming_the_security_level():
    from psabridge.plugins.autotask.errors import PermissionDenied
    from psabridge.plugins.autotask.simulator import Options

    sim = AutotaskSimulator(seed=3, companies=2, options=Options(denied={"ConfigurationItems": ("Create",)}))
    connection = connect(sim.settings(), sim.transport())
    with pytest.raises(PermissionDenied, match="security level") as refused:
        hooks.psa_create_configuration(connection,
                                       Configuration(name="X", company_id=str(company(sim)["id"])))
    assert not refused.value.transient


def test_check_connection_takes_an_existing_udf_and_existing_closed_statuses(sim):
    settings = {**sim.settings(), "device_link_field": "udf:RMM Device UID",
                "closed_statuses": "waiting customer, 5"}
    report = hooks.psa_check_connection(connect(settings, sim.transport()))
    assert report.ok, report.detail


def test_a_query_on_a_missing_udf_points_at_the_device_link_field_setting(sim):
    connection = connect({**sim.settings(), "device_link_field": "udf:No Such Field"}, sim.transport())
    home = next(c for c in sim.companies() if c["id"] != 0)
    with pytest.raises(RemoteError) as caught:
        hooks.psa_match_configurations(connection, str(home["id"]), [
            Device(uid="d", hostname="zz", site_uid="s", url="https://rmm.example/device/1")], {})
    assert caught.value.setting == "device_link_field"
    assert "device_link_field setting" in str(caught.value)
