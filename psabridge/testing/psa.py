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
import re
import uuid

import attrs
import pytest

from psabridge.core.errors import InvalidCallback
from psabridge.core.models import (
    Company,
    CompanyFilters,
    Configuration,
    ConfigurationChanges,
    Device,
    DeviceDetails,
    Ticket,
    TicketCallback,
    TicketDraft,
    TicketOptions,
    utcnow,
)
from psabridge.core.ticketing import workable_attributes
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
        usable = [t for t in types if not t.unusable and not t.inactive]
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
        attributes = workable_attributes(options)
        if attributes is None:
            pytest.fail("psa_ticket_options offers no usable choice of every required routing "
                        "field with a closed status; seed one, or give PsaUnderTest.ticket_setup")
        return TicketSetup(self.company().id, attributes.routing, attributes.open_status_id,
                           attributes.closed_status_id)

    def create_ticket(self, setup: TicketSetup, marker: str | None = None, **fields) -> Ticket:
        fields = {"summary": "psabridge conformance kit", "routing": dict(setup.routing),
                  "status_id": setup.open_status_id, **fields}
        draft = TicketDraft(description="filed by the kit", company_id=setup.company_id,
                            marker=marker or unique_marker(), **fields)
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

    def test_ids_are_strings(self, psa):
        """Core treats every remote id as an opaque string; an int compares unequal to it."""
        options = psa.call("psa_ticket_options")
        ids = {"company": [c.id for c in psa.all("psa_list_companies", filters=CompanyFilters())],
               "configuration type": [t.id for t in psa.call("psa_list_configuration_types")],
               "status": [s.id for s in options.statuses],
               "status scope": [s.scope_id for s in options.statuses if s.scope_id is not None],
               "priority": [p.id for p in options.priorities],
               "source": [s.id for s in options.sources]}
        for field in options.routing:
            ids[f"{field.name} choice"] = [c.id for c in field.choices]
            ids[f"{field.name} scope"] = [c.scope_id for c in field.choices if c.scope_id is not None]
        configuration = psa.create_configuration()
        ticket = psa.create_ticket(psa.ticket_setup())
        ids["created configuration"] = [configuration.id, configuration.company_id]
        ids["created ticket"] = [ticket.id, ticket.company_id, *ticket.configuration_ids]
        for what, values in ids.items():
            wrong = [v for v in values if not isinstance(v, str)]
            assert not wrong, f"{what} ids must be strings, not {type(wrong[0]).__name__}: {wrong[:3]}"

    def test_ticket_options_are_consistent(self, psa):
        options = psa.call("psa_ticket_options")
        names = [f.name for f in options.routing]
        assert len(names) == len(set(names)), f"routing field names repeat: {names}"
        for field in options.routing:
            assert _FIELD_NAME.fullmatch(field.name), (
                f"routing field {field.name!r}: use lower case, digits and _ (it is typed in "
                "`ticketing set --route NAME=...`)")
            assert field.label, f"routing field {field.name} has no label"
            scoped = {c.id: c for c in field.choices}
            seen = [(c.scope_id, c.id) for c in field.choices]
            assert len(seen) == len(set(seen)), f"{field.name}: a choice id repeats within a scope"
            if field.scoped_by is None:
                assert all(c.scope_id is None for c in field.choices), (
                    f"{field.name} has choices with a scope_id but no scoped_by")
                continue
            earlier = names[:names.index(field.name)]
            assert field.scoped_by in earlier, (
                f"{field.name} is scoped by {field.scoped_by!r}, which must be a routing field "
                "declared before it")
            scopes = {c.id for c in options.field(field.scoped_by).choices}
            strays = [c.id for c in scoped.values() if c.scope_id not in (None, *scopes)]
            assert not strays, f"{field.name} choices {strays} belong to no {field.scoped_by}"
        for kind in ("priorities", "sources"):
            ids = [c.id for c in getattr(options, kind)]
            assert len(ids) == len(set(ids)), f"{kind} ids repeat"
        assert options.summary_max is None or options.summary_max > 20

    def test_statuses_are_unambiguous_within_their_scope(self, psa):
        options = psa.call("psa_ticket_options")
        assert any(s.closed for s in options.statuses), "no closed status: tickets cannot close"
        if options.status_scope is None:
            assert all(s.scope_id is None for s in options.statuses), (
                "statuses have a scope_id but status_scope names no routing field")
        else:
            field = options.field(options.status_scope)
            assert field is not None, f"status_scope {options.status_scope!r} is no routing field"
            scopes = {c.id for c in field.choices}
            strays = [s.id for s in options.statuses if s.scope_id not in scopes]
            assert not strays, f"statuses {strays} belong to no {field.name}"
        by_scope: dict = {}
        for status in options.statuses:
            by_scope.setdefault(status.scope_id, []).append(status)
        for scope, statuses in by_scope.items():
            where = f" of {options.status_scope} {scope}" if scope else ""
            ids = [s.id for s in statuses]
            assert len(ids) == len(set(ids)), f"status ids repeat{where}"
            names = [s.name.strip().casefold() for s in statuses if not s.inactive]
            repeated = sorted({n for n in names if names.count(n) > 1})
            assert not repeated, f"statuses{where} share names {repeated}: a name must pick one"

    def test_a_draft_with_every_routing_field_priority_and_source_is_created(self, psa):
        """Core sends whatever the admin set: every routing field (required or not, each within
        the scope chosen before it), a priority, a source, and a summary as long as allowed."""
        options = psa.call("psa_ticket_options")
        setup = psa.ticket_setup()
        routing = dict(setup.routing)
        for field in options.routing:
            if field.name in routing:
                continue
            scope = routing.get(field.scoped_by) if field.scoped_by else None
            usable = [c for c in field.choices if not c.inactive and not c.unusable
                      and (field.scoped_by is None or c.scope_id in (None, scope))]
            if usable:
                routing[field.name] = usable[0].id
        priority = next((p.id for p in options.priorities if not p.inactive), None)
        source = next((s.id for s in options.sources if not s.inactive), None)
        summary = ("kit " * 100)[: options.summary_max or 100]
        created = psa.create_ticket(attrs.evolve(setup, routing=routing), summary=summary,
                                    priority_id=priority, source_id=source)
        stored = psa.call("psa_get_ticket", ticket_id=created.id)
        assert stored is not None and stored.summary == summary, (
            "a summary of summary_max characters must be stored as it is")

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
        setup = attrs.evolve(setup, company_id=configuration.company_id)
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
        url, secret = psa.subject.callback_url, signing_secret()
        first = psa.call("psa_register_ticket_callback", url=url, signing_secret=secret)
        assert first and psa.call("psa_register_ticket_callback", url=url,
                                  signing_secret=secret) == first
        psa.call("psa_unregister_ticket_callback", url=url)
        psa.call("psa_unregister_ticket_callback", url=url)  # nothing left: must not fail

    def test_callback_hooks_come_together(self, psa):
        hooks = ("psa_register_ticket_callback", "psa_unregister_ticket_callback",
                 "psa_parse_ticket_callback")
        implemented = [h for h in hooks if psa.supports(h)]
        assert implemented in ([], list(hooks)), (
            f"implement all of {', '.join(hooks)} or none (it implements {implemented})")

    def test_the_psas_own_callbacks_are_parsed(self, psa):
        psa.require("psa_register_ticket_callback", "psa_unregister_ticket_callback",
                    "psa_parse_ticket_callback")
        sent = psa.arrange("ticket_callbacks")
        url, secret = psa.subject.callback_url, signing_secret()
        psa.call("psa_register_ticket_callback", url=url, signing_secret=secret)
        try:
            setup = psa.ticket_setup()
            ticket = psa.create_ticket(setup)
            psa.call("psa_close_ticket", ticket_id=ticket.id, closed_status_id=setup.closed_status_id)
            deliveries = list(sent(ticket.id))
        finally:
            psa.call("psa_unregister_ticket_callback", url=url)
        assert deliveries, "ticket_callbacks gave no callback for a ticket created and closed"
        events = []
        for headers, body in deliveries:
            parsed = psa.call("psa_parse_ticket_callback", headers=_lower(headers), body=body,
                              signing_secret=secret)
            assert isinstance(parsed, TicketCallback), "a ticket's callback must be parsed"
            assert parsed.ticket_id == ticket.id
            assert parsed.event_id is None or isinstance(parsed.event_id, str)
            events.append(parsed.event_id)
        given = [e for e in events if e is not None]
        assert len(given) == len(set(given)), "two callbacks have one event id: one is a replay"
        if psa.subject.signs_callbacks:
            headers, body = deliveries[0]
            with pytest.raises(InvalidCallback):
                psa.call("psa_parse_ticket_callback", headers=_lower(headers), body=body,
                         signing_secret=signing_secret())
            with pytest.raises(InvalidCallback):
                psa.call("psa_parse_ticket_callback", headers=_lower(headers),
                         body=body.replace(ticket.id.encode(), b"1" + ticket.id.encode(), 1),
                         signing_secret=secret)

    def test_a_body_the_psa_does_not_send_is_refused(self, psa):
        psa.require("psa_parse_ticket_callback")
        for body in (b"not json", b"[1, 2]", b'{"ID": {"nested": true}, "id": []}'):
            with pytest.raises(InvalidCallback) as refused:
                psa.call("psa_parse_ticket_callback", headers={"content-type": "application/json"},
                         body=body, signing_secret=signing_secret())
            assert refused.value.reason.strip(), "say why the body is refused"

    # -- attaching a configuration (optional) ---------------------------------------------------

    def test_attaching_a_configuration_twice_attaches_it_once(self, psa):
        psa.require("psa_attach_configuration")
        configuration = psa.create_configuration()
        setup = attrs.evolve(psa.ticket_setup(), company_id=configuration.company_id)
        created = psa.create_ticket(setup)
        for _ in range(2):
            assert psa.call("psa_attach_configuration", ticket_id=created.id,
                            configuration_id=configuration.id) is None
        stored = psa.call("psa_get_ticket", ticket_id=created.id)
        assert stored.configuration_ids.count(configuration.id) == 1


_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]*")


def signing_secret() -> str:
    """A fresh signing secret shaped as core's (64 hex characters)."""
    return uuid.uuid4().hex + uuid.uuid4().hex


def _lower(headers) -> dict[str, str]:
    return {name.lower(): value for name, value in dict(headers).items()}
