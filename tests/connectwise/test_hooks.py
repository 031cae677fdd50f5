"""Every PSA hook against the simulator, in-process and over real loopback HTTP."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from psabridge.core.models import (
    CompanyFilters,
    Configuration,
    ConfigurationChanges,
    Device,
    DeviceDetails,
    TicketCallback,
    TicketDraft,
)
from psabridge.plugins.connectwise import hooks
from psabridge.plugins.connectwise.errors import BadRequest, ConnectionFailed, ConnectWiseError
from psabridge.simulation import ScriptedFault

from .conftest import connect

NASTY = 'Bob\'s "PC" \\ *x and y'


@pytest.fixture
def company(sim):
    return next(c for c in sim.db.companies.values() if c["status"]["name"] == "Active")


def device(uid: str, hostname: str, url: str | None = None) -> Device:
    return Device(uid=uid, hostname=hostname, site_uid="site-1", url=url)


def role_line(sim, function: str) -> dict:
    settings = next(iter(sim.db.role_settings.values()))
    return next(s for s in settings if s["moduleFunctionName"] == function)


# -- connection (R2) -----------------------------------------------------------------------------


def test_connection_check_passes_with_the_seeds_role(connection):
    report = hooks.psa_check_connection(connection)
    assert report.ok and report.missing_permissions == ()
    assert "security role 'RMM Integration'" in report.detail


def test_connection_check_lists_role_lines_below_the_seeds_table(connection, sim):
    role_line(sim, "Close Service Tickets")["editLevel"] = "My"
    role_line(sim, "Table Setup")["addLevel"] = "None"
    report = hooks.psa_check_connection(connection)
    assert report.ok
    assert report.missing_permissions == (
        "Service Desk > Close Service Tickets: Edit level All (has My)",
        "System > Table Setup: Add level All (has None)",
    )


def test_without_access_to_roles_the_check_probes_what_reads_can_prove(connection, sim):
    sim.options.system_reads_allowed = False
    role_line(sim, "Company Maintenance")["inquireLevel"] = "None"
    report = hooks.psa_check_connection(connection)
    assert report.ok and "probed with read requests only" in report.detail
    assert report.missing_permissions == ("Companies > Company Maintenance: Inquire level All",)


def test_wrong_keys_fail_the_check_naming_the_settings_and_never_the_key(sim):
    settings = {**sim.settings("http://connectwise.test"), "private_key": "wrong-private-key-123"}
    report = hooks.psa_check_connection(connect(settings, sim.transport()))
    assert not report.ok and "public key and the private key" in report.detail
    assert "wrong-private-key-123" not in report.detail


def test_an_unknown_company_fails_the_check_naming_the_company_setting(sim):
    settings = {**sim.settings("http://connectwise.test"), "company": "nobody"}
    report = hooks.psa_check_connection(connect(settings, sim.transport()))
    assert not report.ok and "company setting" in report.detail


def test_an_unreachable_url_fails_the_check_naming_the_url_setting(sim):
    report = hooks.psa_check_connection(connect(sim.settings("http://127.0.0.1:9")))
    assert not report.ok and "check the url setting" in report.detail


# -- companies and types (R5, R7, R10) --------------------------------------------------------------


def test_companies_come_with_every_type_and_their_status(connection, sim):
    companies = list(hooks.psa_list_companies(connection, CompanyFilters()))
    assert {c.name for c in companies} == {c["name"] for c in sim.db.companies.values()}
    stored = {str(c["id"]): c for c in sim.db.companies.values()}
    for company in companies:
        assert company.types == tuple(t["name"] for t in stored[company.id]["types"])
        assert company.status == stored[company.id]["status"]["name"]


def test_company_filters_by_type_status_and_search(connection, sim):
    special = sim.db.add_company("Smith & Sons (*) LLC", types=["Partner", "Client"], status="Inactive")
    sim.db.add_company("Smith and Sons LLC", types=["Partner"], status="Inactive")
    found = list(hooks.psa_list_companies(connection, CompanyFilters(
        type="Partner", status="Inactive", search="& Sons (*)")))
    assert [c.id for c in found] == [str(special["id"])]
    assert found[0].types == ("Partner", "Client")


def test_configuration_types_flag_required_questions(connection):
    types = {t.name: t for t in hooks.psa_list_configuration_types(connection)}
    assert "required questions" in types["Firewall"].unusable
    assert "required questions" in types["Mobile Device"].unusable
    assert not types["Managed Workstation"].unusable


# -- configurations (R13, R15, R17, R18, R19, R29) ---------------------------------------------------


def test_a_name_with_quotes_backslash_star_and_and_matches_exactly_and_nothing_else(connection, sim, company):
    target = sim.db.add_configuration(company, NASTY, "Laptop")
    decoys = ['Bob\'s "PC" \\ Ax and y', "Bob's", 'Bob\'s "PC" \\ *x', "y", 'Bob\'s "PC" \\\\ *x and y',
              "Bob's \"PC\" \\ *x and y OR 1", '" or name != "']
    for name in decoys:
        sim.db.add_configuration(company, name, "Laptop")
    matched = hooks.psa_match_configurations(connection, str(company["id"]), [device("d1", NASTY)], {})
    assert [c.id for c in matched["d1"]] == [str(target["id"])]


def test_matching_finds_candidates_by_link_serial_and_name_within_the_company(connection, sim, company):
    other = next(c for c in sim.db.companies.values() if c["id"] != company["id"])
    by_link = sim.db.add_configuration(company, "OLD-NAME", "Laptop", managementLink="https://rmm/device/1")
    by_serial = sim.db.add_configuration(company, "X", "Laptop", serialNumber="SN-42")
    by_name = sim.db.add_configuration(company, "ws-07", "Laptop")
    sim.db.add_configuration(other, "WS-07", "Laptop", serialNumber="SN-42")  # another company's
    devices = [device("d1", "new-name", "https://rmm/device/1"), device("d2", "nomatch"),
               device("d3", "WS-07")]
    details = {"d2": DeviceDetails(serial_number="sn-42")}
    matched = hooks.psa_match_configurations(connection, str(company["id"]), devices, details)
    assert [c.id for c in matched["d1"]] == [str(by_link["id"])]
    assert [c.id for c in matched["d2"]] == [str(by_serial["id"])]
    assert [c.id for c in matched["d3"]] == [str(by_name["id"])]


def test_matching_many_devices_costs_a_few_batched_requests_not_one_each(connection, sim, company):
    devices = [device(f"d{n}", f"HOST-{n:04d}", f"https://rmm.example.com/device/{n:06d}")
               for n in range(300)]
    details = {d.uid: DeviceDetails(serial_number=f"SERIAL{n:08d}") for n, d in enumerate(devices)}
    for n in (5, 150, 299):
        sim.db.add_configuration(company, f"HOST-{n:04d}", "Laptop")
    sim.counts.clear()
    matched = hooks.psa_match_configurations(connection, str(company["id"]), devices, details)
    assert sorted(uid for uid, found in matched.items() if found) == ["d150", "d299", "d5"]
    assert 3 <= sim.counts["GET /company/configurations"] <= 30  # vs 900 one by one


def test_created_configurations_carry_type_status_hardware_link_and_warranty(connection, sim, company):
    laptop = sim.db.by_name(sim.db.configuration_types, "Laptop")
    created = hooks.psa_create_configuration(connection, Configuration(
        name="ACME-LT01", company_id=str(company["id"]), type_id=str(laptop["id"]), status="Active",
        serial_number="5CD1234", manufacturer="Framework Computer", model_number="Laptop 13",
        management_link="https://rmm.example.com/device/abc", expiration_date=dt.date(2027, 5, 1)))
    stored = sim.db.configurations[int(created.id)]
    assert stored["type"]["id"] == laptop["id"]
    assert (stored["status"]["name"], stored["activeFlag"]) == ("Active", True)
    assert stored["manufacturer"]["name"] == "Framework Computer"  # created on the fly
    assert (stored["serialNumber"], stored["modelNumber"]) == ("5CD1234", "Laptop 13")
    assert stored["managementLink"] == "https://rmm.example.com/device/abc"
    assert stored["warrantyExpirationDate"] == "2027-05-01T00:00:00Z"
    assert created.expiration_date == dt.date(2027, 5, 1)


def test_a_type_with_required_questions_is_refused_by_connectwise(connection, sim, company):
    firewall = sim.db.by_name(sim.db.configuration_types, "Firewall")
    with pytest.raises(BadRequest) as caught:
        hooks.psa_create_configuration(connection, Configuration(
            name="FW", company_id=str(company["id"]), type_id=str(firewall["id"])))
    assert caught.value.errors[0]["field"] == "questions"


def test_update_sets_inactive_and_the_expiration_date(connection, sim, company):
    record = sim.db.add_configuration(company, "PC", "Laptop")
    updated = hooks.psa_update_configuration(connection, str(record["id"]), ConfigurationChanges(
        active=False, expiration_date=dt.date(2026, 1, 31), management_link="https://rmm/d/9"))
    assert (updated.active, updated.status) == (False, "Inactive")
    assert updated.expiration_date == dt.date(2026, 1, 31) and updated.management_link == "https://rmm/d/9"
    again = hooks.psa_update_configuration(connection, str(record["id"]), ConfigurationChanges(active=True))
    assert (again.active, again.status) == (True, "Active")


def test_unmap_clears_the_link_keeps_active_and_skips_deleted_ones(connection, sim, company):
    kept = sim.db.add_configuration(company, "PC", "Laptop", managementLink="https://rmm/d/1")
    gone = sim.db.add_configuration(company, "OLD", "Laptop", managementLink="https://rmm/d/2")
    del sim.db.configurations[gone["id"]]
    hooks.psa_unmap_configurations(connection, [str(gone["id"]), str(kept["id"])])
    assert not sim.db.configurations[kept["id"]]["managementLink"]
    assert sim.db.configurations[kept["id"]]["activeFlag"] is True


def test_get_configurations_leaves_out_deleted_ones(connection, sim, company):
    kept = sim.db.add_configuration(company, "PC", "Laptop")
    found = hooks.psa_get_configurations(connection, [str(kept["id"]), "987654"])
    assert [c.id for c in found] == [str(kept["id"])]


# -- tickets (R22, R24, R26, R28, R29) -----------------------------------------------------------


def test_ticket_options_report_boards_without_a_default_team(connection, sim):
    options = hooks.psa_ticket_options(connection)
    assert [(f.name, f.required, f.scoped_by) for f in options.routing] == [
        ("board", True, None), ("type", False, "board"), ("subtype", False, "board")]
    assert options.status_scope == "board" and options.summary_max == 100
    boards = {b.name: b for b in options.field("board").choices}
    assert "no default team" in boards["Projects Intake"].unusable
    assert boards["Help Desk"].unusable == ""
    help_desk = boards["Help Desk"].id
    default = [s for s in options.statuses if s.scope_id == help_desk and s.default]
    assert [s.id for s in default] == [str(sim.board_status("Help Desk", "New")["id"])]
    closed = {s.name for s in options.statuses if s.scope_id == help_desk and s.closed}
    assert closed == {"Completed", "Closed"}
    types, subtypes = options.field("type").choices, options.field("subtype").choices
    assert {t.name for t in types if t.scope_id == help_desk} >= {"Incident", "Alert"}
    assert {s.name for s in subtypes if s.scope_id == help_desk} >= {"Hardware"}
    assert options.priorities[0].name.startswith("Priority 1") and options.sources


def draft_for(sim, company, **changes) -> TicketDraft:
    board = sim.board("Help Desk")
    fields = dict(summary="Disk C: nearly full", description="Free space 2%", company_id=str(company["id"]),
                  marker="alert-123", routing={"board": str(board["id"])},
                  priority_id=str(next(iter(sim.db.priorities))),
                  device_url="https://rmm.example.com/device/1", alert_url="https://rmm.example.com/alert/9")
    fields.update(changes)
    return TicketDraft(**fields)


def test_a_created_ticket_has_its_configuration_rmm_links_and_marker(connection, sim, company):
    configuration = sim.db.add_configuration(company, "PC", "Laptop")
    draft = draft_for(sim, company, configuration_id=str(configuration["id"]))
    ticket = hooks.psa_create_ticket(connection, draft)
    assert ticket.configuration_ids == (str(configuration["id"]),) and not ticket.closed
    stored = sim.db.tickets[int(ticket.id)]
    assert stored["externalXRef"] == "alert-123"
    assert sim.db.ticket_configurations[int(ticket.id)] == [configuration["id"]]
    notes = [n["text"] for n in sim.db.ticket_notes.values() if n["ticketId"] == int(ticket.id)]
    assert notes == ["Free space 2%\n\nRMM Device: https://rmm.example.com/device/1\n"
                     "RMM Alert: https://rmm.example.com/alert/9"]


def test_find_ticket_by_marker_is_exact_even_for_long_or_odd_markers(connection, sim, company):
    odd = hooks.psa_create_ticket(connection, draft_for(sim, company, marker=NASTY))
    long_marker = "alert:" + "x" * 200
    long = hooks.psa_create_ticket(connection, draft_for(sim, company, marker=long_marker))
    hooks.psa_create_ticket(connection, draft_for(sim, company, marker='Bob\'s "PC" \\ Ax and y'))
    assert hooks.psa_find_ticket(connection, NASTY).id == odd.id
    assert hooks.psa_find_ticket(connection, long_marker).id == long.id
    assert len(sim.db.tickets[int(long.id)]["externalXRef"]) <= 100
    assert hooks.psa_find_ticket(connection, "never-used") is None


def test_a_lost_create_answer_is_recovered_by_the_marker(connection, sim, company):
    sim.faults.add(ScriptedFault("drop", method="POST", path=r"/service/tickets$", when="after"))
    with pytest.raises(ConnectionFailed):
        hooks.psa_create_ticket(connection, draft_for(sim, company, marker="lost-answer"))
    found = hooks.psa_find_ticket(connection, "lost-answer")
    assert found is not None and len([t for t in sim.db.tickets.values()
                                      if t["externalXRef"] == "lost-answer"]) == 1


def test_a_board_without_default_team_breaks_creation_as_r24_warns(connection, sim, company):
    with pytest.raises(BadRequest, match="no default team"):
        board_id = str(sim.board("Projects Intake")["id"])
        hooks.psa_create_ticket(connection, draft_for(sim, company, routing={"board": board_id}))


def test_notes_get_and_deleted_tickets(connection, sim, company):
    ticket = hooks.psa_create_ticket(connection, draft_for(sim, company))
    hooks.psa_add_ticket_note(connection, ticket.id, "The alert fired again")
    texts = [n["text"] for n in sim.db.ticket_notes.values() if n["ticketId"] == int(ticket.id)]
    assert texts[-1] == "The alert fired again"
    assert hooks.psa_get_ticket(connection, ticket.id).marker == "alert-123"
    del sim.db.tickets[int(ticket.id)]
    assert hooks.psa_get_ticket(connection, ticket.id) is None


def test_closing_moves_to_the_boards_closed_status_and_verifies(connection, sim, company):
    ticket = hooks.psa_create_ticket(connection, draft_for(sim, company))
    completed = sim.board_status("Help Desk", "Completed")
    closed = hooks.psa_close_ticket(connection, ticket.id, str(completed["id"]))
    assert closed.closed and closed.status_id == str(completed["id"])
    assert sim.db.tickets[int(ticket.id)]["closedFlag"] is True
    assert hooks.psa_close_ticket(connection, ticket.id, str(completed["id"])).closed  # idempotent


@pytest.mark.parametrize(("board", "status"), [("Help Desk", "In Progress"), ("RMM Alerts", "Resolved")])
def test_closing_refuses_a_status_that_is_open_or_of_another_board(connection, sim, company, board, status):
    ticket = hooks.psa_create_ticket(connection, draft_for(sim, company))
    with pytest.raises(ConnectWiseError, match="not a closed status of board Help Desk"):
        hooks.psa_close_ticket(connection, ticket.id, str(sim.board_status(board, status)["id"]))
    assert sim.db.tickets[int(ticket.id)]["closedFlag"] is False


def test_closing_without_the_close_permission_is_refused(connection, sim, company):
    ticket = hooks.psa_create_ticket(connection, draft_for(sim, company))
    role_line(sim, "Close Service Tickets")["editLevel"] = "None"
    with pytest.raises(ConnectWiseError, match="403"):
        hooks.psa_close_ticket(connection, ticket.id, str(sim.board_status("Help Desk", "Closed")["id"]))


def test_changed_tickets_come_oldest_first_across_keyset_pages(connection, sim, company, monkeypatch):
    monkeypatch.setattr(hooks, "CHANGED_TICKETS_PAGE", 3)
    board = sim.board("Help Desk")
    stamps = [f"2030-01-01T00:00:0{n // 3}Z" for n in range(10)]  # several per second
    for n, stamp in enumerate(stamps):
        sim.db.clock = lambda stamp=stamp: stamp
        sim.db.add_ticket(company, f"t{n}", board)
    changed = list(hooks.psa_changed_tickets(connection, dt.datetime(2030, 1, 1, 0, 0, 1, tzinfo=dt.UTC)))
    assert [t.summary for t in changed] == [f"t{n}" for n in range(3, 10)]
    assert [t.last_updated for t in changed] == sorted(t.last_updated for t in changed)
    everything = [t.summary for t in hooks.psa_changed_tickets(connection, None)]
    assert everything[-10:] == [f"t{n}" for n in range(10)]


def test_ticket_callback_registration_is_idempotent_and_revives_a_disabled_one(connection, sim):
    url = "https://bridge.example.com/hooks/psa?token=t0ken"
    first = hooks.psa_register_ticket_callback(connection, url, SIGNING)
    assert hooks.psa_register_ticket_callback(connection, url, SIGNING) == first
    sim.db.callbacks[int(first)]["inactiveFlag"] = True
    assert hooks.psa_register_ticket_callback(connection, url, SIGNING) == first
    entry = sim.db.callbacks[int(first)]
    assert (entry["type"], entry["level"], entry["objectId"]) == ("ticket", "owner", 1)
    # ConnectWise appends the record id to a URL ending in `=`: it comes after the token.
    assert entry["url"] == url + "&recordId="
    assert entry["inactiveFlag"] is False
    hooks.psa_unregister_ticket_callback(connection, url)
    hooks.psa_unregister_ticket_callback(connection, url)  # nothing left: no error
    assert sim.db.callbacks == {}


SIGNING = "0" * 64


def test_a_ticket_created_with_every_routing_field_carries_them(connection, sim, company):
    board = sim.board("Help Desk")
    kind = next(t for t in sim.db.board_types.values() if t["board"]["id"] == board["id"])
    sub = next(t for t in sim.db.board_subtypes.values() if t["board"]["id"] == board["id"])
    source = next(iter(sim.db.sources))
    draft = draft_for(sim, company, routing={"board": str(board["id"]), "type": str(kind["id"]),
                                             "subtype": str(sub["id"])}, source_id=str(source))
    stored = sim.db.tickets[int(hooks.psa_create_ticket(connection, draft).id)]
    assert (stored["board"]["id"], stored["type"]["id"], stored["subType"]["id"],
            stored["source"]["id"]) == (board["id"], kind["id"], sub["id"], source)
    with pytest.raises(ConnectWiseError, match="ConnectWise has no ticket field queue"):
        hooks.psa_create_ticket(connection, draft_for(sim, company, routing={"queue": "1"}))


def test_a_callback_is_read_from_connectwise_s_body():
    body = {"MessageId": "0f8fad5b-d9cb-469f-a165-70867728950e", "Type": "ticket",
            "Action": "updated", "ID": 4711, "Entity": "{}", "Metadata": {"key_url": "x"}}
    parsed = hooks.psa_parse_ticket_callback(None, {}, json.dumps(body).encode(), SIGNING)
    assert parsed == TicketCallback("4711", "0f8fad5b-d9cb-469f-a165-70867728950e")
    assert hooks.psa_parse_ticket_callback(
        None, {}, json.dumps({**body, "MessageId": None}).encode(), SIGNING) == TicketCallback("4711")
    assert hooks.psa_parse_ticket_callback(
        None, {}, json.dumps({**body, "Type": "company"}).encode(), SIGNING) is None


# -- resilience ------------------------------------------------------------------------------------


def test_hooks_ride_out_throttling_errors_and_drops(connection, sim, slept):
    sim.faults.add(ScriptedFault("throttle", path="company/companies", seconds=2))
    sim.faults.add(ScriptedFault("error", path="company/companies", status=502))
    sim.faults.add(ScriptedFault("drop", path="company/companies"))
    companies = list(hooks.psa_list_companies(connection, CompanyFilters()))
    assert len(companies) == len(sim.db.companies)
    assert slept[0] == 2.0 and len(slept) == 3


def test_a_codebase_moved_by_an_upgrade_is_looked_up_again(connection, sim, company):
    hooks.psa_get_configurations(connection, ["1"])  # codebase v2025_1/ now cached
    sim.options.codebase = "v2025_2/"
    sim.counts.clear()
    kept = sim.db.add_configuration(company, "PC", "Laptop")
    assert [c.id for c in hooks.psa_get_configurations(connection, [str(kept["id"])])] == [str(kept["id"])]
    assert sim.counts["GET /login/companyinfo/psabridge"] == 1
    assert connection.state["connectwise.codebase"] == "v2025_2/"
