"""The PSA half of the conformance kit: `PsaConformance`, a battery of pytest checks.

Subclass it in your connector's tests and give it a `psa_under_test` fixture::

    class TestMyPsaConforms(PsaConformance):
        @pytest.fixture
        def psa_under_test(self):
            sim = MyPsaSimulator()
            return PsaUnderTest(plugin=my_psa, name="mypsa", settings=sim.settings(),
                                transport=sim.transport(), page_size=100,
                                add_companies=sim.add_companies)

Every check names the hook and the promise of `psabridge.core.hookspecs` it holds you to.
"""

from __future__ import annotations

import datetime as dt

import pytest

from psabridge.core.models import (
    Company,
    CompanyFilters,
    Configuration,
    ConfigurationChanges,
    Device,
    DeviceDetails,
    Ticket,
    TicketDraft,
    TicketOptions,
    utcnow,
)
from psabridge.testing.harness import (
    PSA_REQUIRED_HOOKS,
    ConnectorChecks,
    Kit,
    PsaUnderTest,
    TicketSetup,
    as_utc,
    unique_marker,
)


class PsaKit(Kit):
    subject: PsaUnderTest

    def company(self) -> Company:
        companies = self.all("psa_list_companies", filters=CompanyFilters())
        assert companies, "psa_list_companies returned no company: seed at least one"
        active = [c for c in companies if c.status.casefold() == "active" and not c.deleted]
        return (active or companies)[0]

    def configuration_type_id(self) -> str:
        types = self.call("psa_list_configuration_types")
        usable = [t for t in types if not t.has_required_questions and not t.inactive]
        assert usable, "psa_list_configuration_types returned no type usable for creating"
        return usable[0].id

    def create_configuration(self, **fields) -> Configuration:
        draft = Configuration(**{"name": f"KIT-{unique_marker()[-8:]}", "company_id": self.company().id,
                                 "type_id": self.configuration_type_id(), **fields})
        return self.call("psa_create_configuration", configuration=draft)

    def ticket_setup(self) -> TicketSetup:
        if self.subject.ticket_setup is not None:
            return self.subject.ticket_setup()
        options: TicketOptions = self.call("psa_ticket_options")
        for board in options.boards:
            if board.inactive or not board.has_default_team:
                continue
            statuses = [s for s in options.statuses if s.board_id == board.id and not s.inactive]
            closed = [s for s in statuses if s.closed]
            if closed:
                return TicketSetup(self.company().id, board.id, board.default_status_id, closed[0].id)
        pytest.fail("psa_ticket_options offers no active board with a default team and a closed "
                    "status; seed one, or give PsaUnderTest.ticket_setup")

    def create_ticket(self, setup: TicketSetup, marker: str | None = None, **fields) -> Ticket:
        draft = TicketDraft(summary="psabridge conformance kit", description="filed by the kit",
                            company_id=setup.company_id, marker=marker or unique_marker(),
                            board_id=setup.board_id, status_id=setup.open_status_id, **fields)
        ticket = self.call("psa_create_ticket", draft=draft)
        assert isinstance(ticket, Ticket) and ticket.id, "psa_create_ticket must return the new Ticket"
        return ticket


class PsaConformance(ConnectorChecks):
    """The checks every PSA connector passes. Provide a `psa_under_test` fixture."""

    kind = "psa"
    required_hooks = PSA_REQUIRED_HOOKS
    refused_listing = ("psa_list_companies", {"filters": CompanyFilters()})

    @pytest.fixture
    def psa(self, psa_under_test: PsaUnderTest) -> PsaKit:
        return PsaKit(psa_under_test, "psa")

    @pytest.fixture
    def kit(self, psa: PsaKit) -> PsaKit:
        return psa

    # -- companies and configuration types -----------------------------------------------------

    def test_companies_come_back_whole_across_pages(self, psa):
        add = psa.arrange("add_companies")
        if psa.subject.page_size is None:
            pytest.skip("give PsaUnderTest.page_size to check pagination")
        added = list(add(psa.subject.page_size + 3))
        ids = [c.id for c in psa.all("psa_list_companies", filters=CompanyFilters())]
        assert len(ids) == len(set(ids)), "a company came back twice"
        assert set(added) <= set(ids), f"{len(set(added) - set(ids))} companies were lost"

    def test_configuration_types_have_distinct_ids(self, psa):
        types = psa.call("psa_list_configuration_types")
        ids = [t.id for t in types]
        assert ids and len(ids) == len(set(ids))

    # -- configurations ------------------------------------------------------------------------

    def test_created_configuration_comes_back_with_an_id(self, psa):
        link = "https://rmm.example.com/device/kit-created"
        created = psa.create_configuration(serial_number="KIT-SERIAL-1", management_link=link)
        assert created.id, "psa_create_configuration must return the stored configuration with its id"
        [stored] = psa.call("psa_get_configurations", ids=[created.id])
        assert (stored.id, stored.name, stored.company_id) == (created.id, created.name, created.company_id)
        assert stored.serial_number == "KIT-SERIAL-1"
        assert stored.management_link == link

    def test_get_configurations_leaves_out_missing_ids(self, psa):
        created = psa.create_configuration()
        found = psa.call("psa_get_configurations", ids=[created.id, psa.subject.missing_id])
        assert [c.id for c in found] == [created.id]

    def test_match_configurations_finds_by_link_serial_and_name(self, psa):
        link = f"https://rmm.example.com/device/{unique_marker()[-12:]}"
        target = psa.create_configuration(serial_number=f"SN{unique_marker()[-10:]}", management_link=link)
        site = "kit-site"
        devices = [
            Device(uid="by-link", hostname="other-name-1", site_uid=site, url=link),
            Device(uid="by-serial", hostname="other-name-2", site_uid=site),
            Device(uid="by-name", hostname=target.name, site_uid=site),
            Device(uid="by-nothing", hostname="no-such-host-kit", site_uid=site),
        ]
        details = {d.uid: DeviceDetails() for d in devices}
        details["by-serial"] = DeviceDetails(serial_number=target.serial_number)
        found = psa.call("psa_match_configurations", company_id=target.company_id, devices=devices,
                         details=details)
        ids = {uid: {c.id for c in found.get(uid, [])} for uid in details}
        assert target.id in ids["by-link"], "not found by its management link"
        assert target.id in ids["by-serial"], "not found by its serial number"
        assert target.id in ids["by-name"], "not found by its name"
        assert target.id not in ids["by-nothing"], "found for a device that shares nothing with it"

    def test_update_sets_and_clears_the_management_link(self, psa):
        created = psa.create_configuration()
        link = "https://rmm.example.com/device/kit-updated"
        updated = psa.call("psa_update_configuration", configuration_id=created.id,
                           changes=ConfigurationChanges(management_link=link))
        assert updated.management_link == link
        cleared = psa.call("psa_update_configuration", configuration_id=created.id,
                           changes=ConfigurationChanges(clear_management_link=True))
        assert not cleared.management_link

    def test_update_deactivates_and_reactivates(self, psa):
        created = psa.create_configuration()
        inactive = psa.call("psa_update_configuration", configuration_id=created.id,
                            changes=ConfigurationChanges(active=False))
        assert inactive.active is False
        active = psa.call("psa_update_configuration", configuration_id=created.id,
                          changes=ConfigurationChanges(active=True))
        assert active.active is True

    def test_unmap_clears_links_skips_missing_ids_and_leaves_configurations_active(self, psa):
        created = psa.create_configuration(management_link="https://rmm.example.com/device/kit-unmap")
        psa.call("psa_unmap_configurations", configuration_ids=[psa.subject.missing_id, created.id])
        [stored] = psa.call("psa_get_configurations", ids=[created.id])
        assert not stored.management_link
        assert stored.active is True

    # -- tickets -------------------------------------------------------------------------------

    def test_ticket_options_are_consistent(self, psa):
        options = psa.call("psa_ticket_options")
        boards = {b.id for b in options.boards}
        assert len(boards) == len(options.boards), "board ids repeat"
        strays = [s.id for s in options.statuses if s.board_id not in boards]
        assert not strays, f"statuses {strays} belong to no listed board"

    def test_created_ticket_is_found_by_its_exact_marker(self, psa):
        setup = psa.ticket_setup()
        marker = unique_marker()
        created = psa.create_ticket(setup, marker=f"{marker}-1")
        found = psa.call("psa_find_ticket", marker=f"{marker}-1")
        assert found is not None and found.id == created.id
        assert psa.call("psa_find_ticket", marker=marker) is None, "a prefix of the marker matched"
        assert psa.call("psa_find_ticket", marker=unique_marker()) is None

    def test_long_marker_is_found(self, psa):
        marker = unique_marker("long-" + "x" * 200)
        created = psa.create_ticket(psa.ticket_setup(), marker=marker)
        found = psa.call("psa_find_ticket", marker=marker)
        assert found is not None and found.id == created.id

    def test_created_ticket_carries_its_configuration(self, psa):
        setup = psa.ticket_setup()
        configuration = psa.create_configuration()
        setup = TicketSetup(configuration.company_id, setup.board_id, setup.open_status_id,
                            setup.closed_status_id)
        created = psa.create_ticket(setup, configuration_id=configuration.id)
        assert configuration.id in created.configuration_ids
        stored = psa.call("psa_get_ticket", ticket_id=created.id)
        assert stored is not None and configuration.id in stored.configuration_ids
        assert stored.closed is False and stored.company_id == configuration.company_id

    def test_get_missing_ticket_returns_none(self, psa):
        assert psa.call("psa_get_ticket", ticket_id=psa.subject.missing_id) is None

    def test_note_is_added(self, psa):
        created = psa.create_ticket(psa.ticket_setup())
        assert psa.call("psa_add_ticket_note", ticket_id=created.id, text="kit: repeated alert") is None

    def test_closed_ticket_is_closed_with_the_status_and_reported_changed(self, psa):
        setup = psa.ticket_setup()
        before = utcnow() - dt.timedelta(seconds=2)
        created = psa.create_ticket(setup)
        closed = psa.call("psa_close_ticket", ticket_id=created.id, closed_status_id=setup.closed_status_id)
        assert (closed.id, closed.closed, closed.status_id) == (created.id, True, setup.closed_status_id)
        stored = psa.call("psa_get_ticket", ticket_id=created.id)
        assert stored.closed and stored.status_id == setup.closed_status_id
        changed = {t.id: t for t in psa.all("psa_changed_tickets", since=before)}
        assert created.id in changed, "psa_changed_tickets does not report the closed ticket"
        assert changed[created.id].closed is True

    def test_changed_tickets_since_the_future_is_empty(self, psa):
        psa.create_ticket(psa.ticket_setup())
        assert psa.all("psa_changed_tickets", since=utcnow() + dt.timedelta(days=1)) == []

    def test_changed_tickets_come_back_whole_across_pages_oldest_first(self, psa):
        add = psa.arrange("add_tickets")
        if psa.subject.page_size is None:
            pytest.skip("give PsaUnderTest.page_size to check pagination")
        added = list(add(psa.ticket_setup(), psa.subject.page_size + 3))
        tickets = psa.all("psa_changed_tickets", since=None)
        ids = [t.id for t in tickets]
        assert len(ids) == len(set(ids)), "a ticket came back twice"
        assert set(added) <= set(ids), f"{len(set(added) - set(ids))} tickets were lost"
        stamps = [as_utc(t.last_updated) for t in tickets if t.last_updated]
        assert stamps == sorted(stamps), "not oldest change first"

    # -- callbacks (optional hooks) ------------------------------------------------------------

    def test_registering_a_callback_twice_gives_one_registration(self, psa):
        psa.require("psa_register_ticket_callback", "psa_unregister_ticket_callback")
        url = psa.subject.callback_url
        first = psa.call("psa_register_ticket_callback", url=url)
        assert first and psa.call("psa_register_ticket_callback", url=url) == first
        psa.call("psa_unregister_ticket_callback", url=url)
        psa.call("psa_unregister_ticket_callback", url=url)  # nothing left: must not fail
