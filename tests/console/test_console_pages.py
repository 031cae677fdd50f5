"""The console's pages and forms through a werkzeug test client, against both simulators: each
write goes through the library's plan, is previewed first, and what goes wrong is said on the
page with the field and what to do."""

from __future__ import annotations

import html
import re

from psabridge.core import mapping, ticketing
from psabridge.core import plugins as plugins_lib
from psabridge.core.bridge import open_bridge
from psabridge.core.models import JournalEntry


def page_text(response) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", response.text))


def form_fields(page: str) -> list[tuple[str, str]]:
    """The hidden fields of a preview's form, as a browser sends them back (no CSRF token:
    the Browser adds the session's)."""
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page)
    return [(name, html.unescape(value)) for name, value in fields if name != "csrf_token"]


def test_a_company_preview_writes_nothing_and_apply_carries_out_the_same_plan(
        browser, pm, store, transports):
    browser.log_in()
    bridge = open_bridge(pm, store, transports)
    northwind = "99"  # Northwind Corp., suggested its own site
    preview = browser.post("/companies/preview", [("select", northwind),
                                                  ("choice:99", "suggested")])
    assert preview.status_code == 200
    assert "map company" in preview.text and "site Northwind Corp." in preview.text
    assert store.company_mappings(*bridge.pair) == []
    fields = form_fields(preview.text)
    applied = browser.post("/companies/apply", fields)
    assert applied.status_code == 303
    (mapped,) = store.company_mappings(*bridge.pair)
    assert (mapped.company_id, mapped.site_name) == ("99", "Northwind Corp.")
    assert "Done: 1 change, 0 failed, 0 skipped." in page_text(browser.get("/companies"))


def test_a_site_taken_twice_is_refused_on_the_page_with_the_reason(browser, pm, store, transports,
                                                                   sims):
    browser.log_in()
    site = next(s for s in open_bridge(pm, store, transports).rmm.call("rmm_list_sites")
                if s.name == "Northwind Corp.")
    other = str(sims[0].company("Jackson Pharmacy")["id"])
    response = browser.post("/companies/preview", [
        ("select", "99"), ("choice:99", f"site:{site.uid}"),
        ("select", other), (f"choice:{other}", f"site:{site.uid}")])
    assert response.status_code == 303
    text = page_text(browser.get("/companies"))
    assert "site Northwind Corp. is already mapped to another company in this request" in text


def test_a_choice_the_form_never_offered_gets_a_specific_message(browser):
    browser.log_in()
    browser.post("/companies/preview", [("select", "99"), ("choice:99", "somewhere")])
    assert "'somewhere' is not a choice this form offers" in page_text(browser.get("/companies"))


def test_the_companies_filter_answers_htmx_with_the_table_alone(browser):
    browser.log_in()
    full = browser.get("/companies?search=lakeside")
    part = browser.get("/companies?search=lakeside", headers={"HX-Request": "true"})
    assert "<html" in full.text and "<html" not in part.text
    assert part.text.lstrip().startswith('<div id="companies-table">')
    assert "Select Lakeside Marketing P.C." in part.text and "Select Northwind" not in part.text
    restored = browser.get("/companies?search=lakeside",  # the Back button, through htmx
                           headers={"HX-Request": "true", "HX-History-Restore-Request": "true"})
    assert "<html" in restored.text


def test_device_exceptions_come_first_each_with_its_candidates_and_why(
        browser, pm, store, transports, sims):
    cw, _ = sims
    bridge = open_bridge(pm, store, transports)
    from psabridge.core import mapping

    mapping.apply(bridge, mapping.plan_company_mappings(bridge, {"99": None}))
    twins = [cw.db.add_configuration(cw.company("Northwind Corp."), "NC-WS01",
                                     "Managed Workstation") for _ in range(2)]
    browser.log_in()
    text = page_text(browser.get("/devices"))
    attention = text[text.index("Needs attention"):text.index("Proposals")]
    assert attention.index("NC-WS01") < attention.index("NC-LT04")  # ambiguous before no match
    assert "2 configurations still match after the model number step" in attention
    assert "not audited by the RMM yet" in attention  # NEW-PC-01
    for twin in twins:
        assert f'value="configuration:{twin["id"]}"' in browser.get("/devices").text
    assert 'id="select-' + next(d.uid for d in bridge.rmm.call("rmm_list_devices", site_uid=None)
                                if d.hostname == "NEW-PC-01") not in browser.get("/devices").text


def test_map_now_needs_automatic_mapping_on_and_the_switch_turns_it_on(browser, store):
    browser.log_in()
    browser.post("/devices/preview", {"what": "map-now"})
    assert "automatic mapping is off" in page_text(browser.get("/devices"))
    browser.post("/devices/auto", {"auto_map": "on"})
    assert store.option("connectwise", "auto_map") is True
    preview = browser.post("/devices/preview", {"what": "map-now"})
    assert preview.status_code == 200 and "Devices: the plan" in preview.text


def test_a_board_without_default_team_is_not_offered_and_cannot_be_forced(
        browser, pm, store, transports):
    browser.log_in()
    options = open_bridge(pm, store, transports).psa.ticket_options()
    (unusable,) = [b for b in options.field("board").choices if b.unusable]
    page = browser.get("/ticketing").text
    assert f'<option value="{unusable.id}">' not in page.split("Choices not offered")[0]
    assert f"Board {unusable.name}: it has no default team" in page_text(browser.get("/ticketing"))
    browser.post("/ticketing/save", {"route:board:alert": unusable.id, "repeat_minutes": "0"})
    text = page_text(browser.get("/ticketing"))
    assert f"Board (alert tickets): '{unusable.id}' is not one the PSA offers" in text
    assert ticketing.ticket_settings(open_bridge(pm, store, transports)).attributes == {}


def test_ticketing_cannot_be_enabled_with_settings_the_psa_refuses(browser, pm, store, transports):
    browser.log_in()
    options = open_bridge(pm, store, transports).psa.ticket_options()
    board = next(b for b in options.field("board").choices if not b.unusable)
    browser.post("/ticketing/save", {"route:board:alert": board.id, "repeat_minutes": "15"})
    assert "nothing saved: origin alert: no closed status is set" in page_text(
        browser.get("/ticketing"))
    # Saved by other means (an older version): the switch still refuses them.
    ticketing.save_ticket_settings(open_bridge(pm, store, transports), ticketing.TicketSettings(
        attributes={"alert": ticketing.TicketAttributes(routing={"board": board.id})}))
    browser.post("/ticketing/switch", {"ticketing": "on"})
    text = page_text(browser.get("/ticketing"))
    assert "cannot enable ticketing" in text and "no closed status is set" in text
    assert not ticketing.ticket_settings(open_bridge(pm, store, transports)).enabled


def test_a_monitor_override_turns_its_tickets_off(browser, pm, store, transports):
    browser.log_in()
    page = browser.get("/ticketing").text
    key, name = re.search(r'name="name:(\d+)" value="([^"]+)"', page).groups()
    browser.post("/ticketing/monitors", [("monitor", key), ("name:" + key, html.unescape(name))])
    settings = ticketing.ticket_settings(open_bridge(pm, store, transports))
    assert settings.monitors[html.unescape(name)].create_tickets is False


def test_warnings_are_listed_and_cleared(browser, store):
    store.add_warning("connectwise", "NC-WS01 (uid)", "configuration type has required questions")
    browser.log_in()
    assert "configuration type has required questions" in browser.get("/tickets").text
    assert "1 open warning" in page_text(browser.get("/"))
    browser.post("/warnings/clear")
    assert store.warnings() == []
    assert "Cleared 1 warning" in page_text(browser.get("/tickets"))


def test_the_journal_filters_by_plugin_outcome_and_text(browser, store):
    store.record(JournalEntry("datto", "create_site", "Acme", "ok", {"name": "Acme"}))
    store.record(JournalEntry("connectwise", "create_ticket", "alert-1", "failed",
                              {"error": "500 from the PSA"}))
    browser.log_in()
    assert "create_site" in browser.get("/journal").text
    failed = browser.get("/journal?outcome=failed").text
    assert "create_ticket" in failed and "create_site" not in failed
    by_text = browser.get("/journal?search=acme").text
    assert "create_site" in by_text and "create_ticket" not in by_text


def test_with_the_psa_disabled_each_page_says_so_instead_of_failing(browser, pm, store):
    browser.log_in()
    assert browser.get("/companies").status_code == 200
    plugins_lib.disable_plugin(pm, store, "connectwise")
    for path in ("/companies", "/device-types", "/devices", "/ticketing", "/tickets"):
        response = browser.get(path)
        assert response.status_code == 503, path
        assert "no PSA plugin is enabled" in page_text(response)
    overview = browser.get("/")
    assert overview.status_code == 200 and "Not connected" in overview.text
    plugins_lib.enable_plugin(pm, store, "connectwise", check=False)
    assert browser.get("/companies").status_code == 200


def test_a_pass_from_the_overview_is_reported_and_remembered(browser, store):
    browser.log_in()
    browser.post("/pass")
    text = page_text(browser.get("/"))
    assert "Pass finished" in text
    assert store.option("console", "last_pass")["figures"]["tickets_created"] == 0
    assert "No pass has been run" not in text


def test_many_skipped_devices_are_summed_up_and_the_session_survives(
        browser, pm, store, transports):
    from psabridge.core import mapping

    bridge = open_bridge(pm, store, transports)
    mapping.apply(bridge, mapping.plan_company_mappings(bridge, None))  # every company
    browser.log_in()
    browser.post("/devices/auto", {"auto_map": "on"})
    # No device type is mapped: Map Now links the devices the MSP had entered in the PSA and holds
    # back every device that needs a new configuration.
    preview = browser.post("/devices/preview", {"what": "map-now"})
    applied = browser.post("/devices/apply", form_fields(preview.text))
    assert applied.status_code == 303
    cookie = next(h for h in applied.headers.getlist("Set-Cookie") if h.startswith("psabridge"))
    assert len(cookie) < 4000  # a browser keeps it: the admin stays logged in
    page = browser.get("/devices")
    assert page.status_code == 200
    skipped = len(store.warnings())
    assert skipped > 10
    text = page_text(page)
    linked = len(store.device_mappings(*bridge.pair))
    assert f"Done: {linked} changes, 0 failed, {skipped} skipped." in text
    assert f"{skipped - 2} more skipped" in text


def test_the_overview_tests_both_connections(browser):
    browser.log_in()
    assert browser.post("/check").status_code == 303
    text = page_text(browser.get("/"))
    assert "connectwise: answers" in text and "datto: answers" in text


def test_an_unexpected_error_is_a_page_without_the_traceback(browser, monkeypatch):
    from psabridge.core import mapping

    def broken(*args, **kwargs):
        raise RuntimeError("internal detail that must not reach the browser")

    monkeypatch.setattr(mapping, "load_device_types", broken)
    browser.log_in()
    response = browser.get("/device-types")
    assert response.status_code == 500
    assert "Something unexpected went wrong" in response.text
    assert "internal detail" not in response.text and "Traceback" not in response.text
    assert response.headers["X-Frame-Options"] == "DENY"


def test_the_tickets_page_shows_the_newest_alerts_and_says_how_many_are_left_out(browser, store):
    from psabridge.core.models import AlertTicket

    for n in range(205):
        store.save_alert_ticket(AlertTicket("connectwise", "datto", f"alert-{n:03}", "skipped",
                                            monitor="m", device_uid="d", note="test"))
    browser.log_in()
    page = browser.get("/tickets")
    assert "the newest 200 of 205" in page_text(page)
    assert "alert-204" in page.text and "alert-004" not in page.text


def test_ticket_settings_that_add_an_error_are_refused_and_nothing_is_saved(
        browser, pm, store, transports, sims):
    cw, _ = sims
    alerts = next(b for b in cw.db.boards.values() if b["name"] == "RMM Alerts")
    by_name = {s["name"]: str(s["id"]) for s in cw.db.statuses_of(alerts["id"])}
    help_desk = next(b for b in cw.db.boards.values() if b["name"] == "Help Desk")
    help_desk_new = next(str(s["id"]) for s in cw.db.statuses_of(help_desk["id"])
                         if s["name"] == "New")
    browser.log_in()
    form = {"route:board:alert": str(alerts["id"]), "closed_status:alert": by_name["Resolved"],
            "repeat_minutes": "0"}
    browser.post("/ticketing/save", {**form, "open_status:alert": help_desk_new})
    text = page_text(browser.get("/ticketing"))
    assert (f"nothing saved: origin alert: open status {help_desk_new} is not a status of board "
            "RMM Alerts") in text
    assert "Ticket settings saved." not in text
    assert ticketing.ticket_settings(open_bridge(pm, store, transports)).attributes == {}
    browser.post("/ticketing/save", {**form, "open_status:alert": by_name["New (Alert)"]})
    assert "Ticket settings saved." in page_text(browser.get("/ticketing"))
    browser.post("/ticketing/switch", {"ticketing": "on"})
    assert ticketing.ticket_settings(open_bridge(pm, store, transports)).enabled


def test_turning_ticketing_on_again_refuses_while_its_settings_have_errors(
        browser, pm, store, transports, sims):
    cw, _ = sims
    help_desk = next(b for b in cw.db.boards.values() if b["name"] == "Help Desk")
    stranger = next(str(s["id"]) for s in cw.db.statuses_of(help_desk["id"]))
    alerts = next(b for b in cw.db.boards.values() if b["name"] == "RMM Alerts")
    ticketing.save_ticket_settings(open_bridge(pm, store, transports), ticketing.TicketSettings(
        enabled=True, attributes={"alert": ticketing.TicketAttributes(
            routing={"board": str(alerts["id"])}, open_status_id=stranger)}))
    browser.log_in()
    browser.post("/ticketing/switch", {"ticketing": "on"})
    text = page_text(browser.get("/ticketing"))
    assert "ticketing is on, but its settings make alert tickets fail" in text
    assert "Ticketing is on: alerts raised from now on make tickets." not in text


def test_a_company_of_several_types_is_one_row_naming_every_type(browser, sims, pm, store,
                                                                 transports):
    cw, _ = sims
    both = cw.db.add_company("Twofold Traders", types=["Prospect", "Client"])
    browser.log_in()
    for query in ("?search=twofold", "?search=twofold&type=Client", "?search=twofold&type=Prospect"):
        page = browser.get(f"/companies{query}").text
        assert page.count("<th scope=\"row\">Twofold Traders</th>") == 1, query
        assert "<th scope=\"row\">Twofold Traders</th>\n      <td>Prospect, Client</td>" in page
    # Mapped, it is still named with both types.
    preview = browser.post("/companies/preview", [("only", str(both["id"])),
                                                  (f"choice:{both['id']}", "new")])
    fields = form_fields(preview.text)
    browser.post("/companies/apply", fields)
    mapped = browser.get("/companies?view=mapped&search=twofold").text
    assert re.search(r"Twofold Traders</th>\s*<td>Prospect, Client</td>", mapped)
    (saved,) = [m for m in store.company_mappings(*open_bridge(pm, store, transports).pair)
                if m.company_id == str(both["id"])]
    assert saved.company_type in ("Prospect", "Client")


def test_a_plan_gone_stale_is_not_applied_and_the_page_says_what_left_it_and_why(
        browser, pm, store, transports, sims):
    from psabridge.core import mapping

    cw, _ = sims
    bridge = open_bridge(pm, store, transports)
    jackson = str(cw.company("Jackson Pharmacy")["id"])
    browser.log_in()
    preview = browser.post("/companies/preview", [("select", "99"), ("choice:99", "suggested"),
                                                  ("select", jackson), (f"choice:{jackson}", "new")])
    assert preview.status_code == 200 and "2 changes" in preview.text
    # Meanwhile, someone maps Northwind Corp. elsewhere (as `companies map "99=SITE"` does).
    elsewhere = next(s for s in bridge.rmm.call("rmm_list_sites")
                     if s.name not in ("Northwind Corp.", "Jackson Pharmacy"))
    mapping.apply(bridge, mapping.plan_company_mappings(bridge, {"99": elsewhere.uid}))
    stale = browser.post("/companies/apply", form_fields(preview.text))
    assert stale.status_code == 409
    text = page_text(stale)
    assert ("No longer in the plan: map company for Northwind Corp. (99) (site Northwind Corp.): "
            f"since the preview, it was mapped to site {elsewhere.name}") in text
    assert "Nothing was applied: the plan changed since the preview" in text
    assert "1 change" in text and "Jackson Pharmacy" in text
    assert [m.company_id for m in store.company_mappings(*bridge.pair)] == ["99"]
    # The new plan, applied as shown, is carried out.
    browser.post("/companies/apply", form_fields(stale.text))
    assert "Done: 1 change, 0 failed, 0 skipped." in page_text(browser.get("/companies"))
    assert {m.company_id: m.site_uid for m in store.company_mappings(*bridge.pair)}["99"] == \
        elsewhere.uid
    assert jackson in {m.company_id for m in store.company_mappings(*bridge.pair)}


def test_a_device_unmapped_since_the_preview_is_named_with_why(browser, pm, store, transports):
    from psabridge.core import mapping

    bridge = open_bridge(pm, store, transports)
    mapping.apply(bridge, mapping.plan_company_mappings(bridge, {"99": None}))
    proposal = next(r for r in mapping.load_devices(bridge, "all")
                    if r.state == "unmapped" and r.match and r.match.configuration)
    mapping.apply(bridge, mapping.plan_device_mappings(bridge, {proposal.device.uid: None}))
    browser.log_in()
    preview = browser.post("/devices/preview", [("what", "unmap"),
                                                ("unmap", proposal.device.uid)])
    assert preview.status_code == 200 and "unmap device" in preview.text
    mapping.apply(bridge, mapping.unmap_devices(bridge, [proposal.device.uid]))
    stale = browser.post("/devices/apply", form_fields(preview.text))
    assert stale.status_code == 409
    assert (f"No longer in the plan: unmap device for {proposal.device.uid}"
            in page_text(stale))
    assert "since the preview, it is no longer mapped" in page_text(stale)


def test_a_configuration_type_the_psa_cannot_use_says_why_on_the_device_types_page(
        browser, pm, store, transports):
    browser.log_in()
    bridge = open_bridge(pm, store, transports)
    mapping.map_device_type(bridge, "Desktop", "Firewall")  # ConnectWise: required questions
    text = page_text(browser.get("/device-types"))
    assert "Firewall (has required questions and cannot be used to create configurations)" in text
    assert "Has required questions and cannot be used to create configurations" in text
