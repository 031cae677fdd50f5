"""The whole admin flow in a real browser, against both simulators: log in, review companies
(accept some, change one, create one, skip one), map device types, settle a device exception,
set ticketing from the drop-downs and enable it, raise an alert in the Datto simulator, see its
ticket appear with its links, close the ticket, see the alert resolved. A screenshot of each
page goes to the artifacts folder (docs/images/ holds a copy for docs/operating.md)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from psabridge.core import ticketing
from tests.browser.test_console_browser import UNLABELLED, log_in
from tests.e2e.conftest import DISK_C, ChosenOptions
from tests.e2e.psa_sims import ConnectWisePsaSim, TicketRoute

PRIORITY_NAMES = ConnectWisePsaSim.priority_names
ALERT_ROUTE = TicketRoute({"board": "RMM Alerts", "type": "Alert", "subtype": "Hardware"},
                          "Assigned", "Resolved")

pytestmark = pytest.mark.browser

ACCEPTED = ("Northwind Corp.", "Jackson Pharmacy", "Nelson Plumbing LLC")
CHANGED, CHANGED_TO = "Redwood Corp.", "Redwood - Downtown"  # no suggestion: its site by hand
CREATED = "Walker, Miller & Partners"
SKIPPED = "Lakeside Logistics Group"
AMBIGUOUS = "NC-WS01"  # two configurations of Northwind carry its name


def shoot(page, artifacts, name: str) -> None:
    assert page.evaluate(UNLABELLED) == [], f"unlabelled controls on {name}"
    # The whole page, by making the viewport as tall as the page for the shot (playwright's
    # full_page leaves chromium's layout stretched, and the next click would miss).
    size = page.viewport_size
    height = page.evaluate("document.documentElement.scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(height, size["height"])})
    page.screenshot(path=str(artifacts / f"console-{name}.png"))
    page.set_viewport_size(size)


def says(page, text: str) -> None:
    """The page's messages (after the form's redirect) include `text`."""
    expect(page.locator(".flashes")).to_contain_text(text)


def test_the_admin_walks_from_login_to_a_closed_ticket(page, console, artifacts):
    bridge, cw, datto = console.bridge, console.cw, console.datto
    northwind = cw.company("Northwind Corp.")
    twins = [cw.db.add_configuration(northwind, AMBIGUOUS, "Managed Workstation") for _ in range(2)]

    page.goto(f"{console.url}/login")
    shoot(page, artifacts, "login")
    log_in(page, console.url)
    shoot(page, artifacts, "overview")

    # -- companies: accept three, change one, create one, skip one; preview, then apply ------
    page.get_by_role("link", name="Companies", exact=True).click()
    for name in (*ACCEPTED, CHANGED, CREATED, SKIPPED):
        page.get_by_label(f"Select {name}", exact=True).check()
    page.get_by_label("Find a site in the lists").fill("downtown")
    page.get_by_label(f"Action for {CHANGED}", exact=True).select_option(label=CHANGED_TO)
    page.get_by_label(f"Action for {CREATED}", exact=True).select_option(
        label=f"Create New site “{CREATED}”")
    page.get_by_label(f"Action for {SKIPPED}", exact=True).select_option(label="Skip")
    shoot(page, artifacts, "companies")
    page.get_by_role("button", name="Preview the plan for the selected companies").click()
    expect(page.get_by_role("heading", name="Companies: the plan")).to_be_visible()
    expect(page.get_by_text("5 changes")).to_be_visible()
    expect(page.get_by_role("cell", name=f"new site '{CREATED}'")).to_be_visible()
    expect(page.get_by_role("cell", name=f"site {CHANGED_TO}")).to_be_visible()
    assert bridge.store.company_mappings(*bridge.pair) == []  # a preview writes nothing
    shoot(page, artifacts, "companies-preview")
    page.get_by_role("button", name="Apply these changes").click()
    says(page, "Done: 5 changes, 0 failed, 0 skipped.")
    mapped = {m.company_name: m.site_name for m in bridge.store.company_mappings(*bridge.pair)}
    assert mapped == {**{name: name if name != "Nelson Plumbing LLC" else "nelson plumbing llc"
                         for name in ACCEPTED},
                      CHANGED: CHANGED_TO, CREATED: CREATED}
    assert SKIPPED not in mapped
    assert [s["name"] for s in datto.sites.values()].count(CREATED) == 1

    # -- the filter narrows the table in place (htmx) ----------------------------------------
    page.wait_for_load_state("load")  # htmx (a deferred script) has set up the filter form
    with page.expect_request(lambda r: "search=lakeside" in r.url
                             and r.headers.get("hx-request") == "true"):
        page.get_by_label("Search", exact=True).fill("lakeside")
    expect(page.locator("#companies-table tbody tr")).to_have_count(2)  # both Lakeside companies

    # -- device types: every suggestion, with the keyboard --------------------------------------
    page.get_by_role("link", name="Device types", exact=True).click()
    page.wait_for_load_state("load")  # the console's script, which makes "select all" work
    page.get_by_label("Select all device types").focus()
    page.keyboard.press("Space")
    for row in page.locator("input[name=select]").all():
        expect(row).to_be_checked()
    page.get_by_role("button", name="Save the selected device types").focus()
    page.keyboard.press("Enter")
    page.wait_for_load_state()
    says(page, "Desktop → Managed Workstation")
    assert len(bridge.store.device_type_mappings(*bridge.pair)) == 6
    shoot(page, artifacts, "device-types")

    # -- devices: the ambiguous device, settled by choosing one of its candidates --------------
    page.get_by_role("link", name="Devices", exact=True).click()
    row = page.get_by_role("row").filter(has=page.get_by_label(f"Select {AMBIGUOUS}", exact=True))
    expect(row.get_by_text("ambiguous")).to_be_visible()
    expect(row.get_by_text("2 configurations still match")).to_be_visible()
    chosen = str(twins[1]["id"])
    page.get_by_label(f"Configuration for {AMBIGUOUS}", exact=True).select_option(
        value=f"configuration:{chosen}")
    shoot(page, artifacts, "devices")
    page.get_by_role("button", name=f"Preview {AMBIGUOUS}", exact=True).click()
    expect(page.get_by_role("cell", name=re.compile(rf"configuration {AMBIGUOUS} \({chosen}\)"))
           ).to_be_visible()
    shoot(page, artifacts, "devices-preview")
    page.get_by_role("button", name="Apply these changes").click()
    says(page, "Done: 1 change, 0 failed, 0 skipped.")
    (device_mapping,) = bridge.store.device_mappings(*bridge.pair)
    assert device_mapping.configuration_id == chosen
    device = next(d for d in bridge.rmm.list_devices(site_uid=None)
                  if d.uid == device_mapping.device_uid)

    # -- ticketing: from the PSA's drop-downs, then on ----------------------------------------
    options = ChosenOptions(bridge.psa.ticket_options())
    page.get_by_role("link", name="Ticketing", exact=True).click()
    unusable = [b.name for b in options.options.field("board").choices if b.unusable]
    for name in unusable:  # not offered, and the page says why
        expect(page.get_by_text(re.compile(rf"^Board {re.escape(name)}: it has no default"))
               ).to_be_visible()
    page.get_by_label("Source", exact=True).select_option(label="Monitoring")
    for rmm_priority, psa_priority in PRIORITY_NAMES.items():
        page.get_by_label(f"Priority for {rmm_priority}", exact=True).select_option(
            label=psa_priority)
    page.get_by_label("Board for alert tickets", exact=True).select_option(label="RMM Alerts")
    expected = options.attributes(ALERT_ROUTE)
    page.get_by_label("Type for alert tickets", exact=True).select_option(
        value=expected.routing["type"])
    page.get_by_label("Subtype for alert tickets", exact=True).select_option(
        value=expected.routing["subtype"])
    page.get_by_label("Open status for alert tickets", exact=True).select_option(
        value=expected.open_status_id)
    page.get_by_label("Closed status for alert tickets", exact=True).select_option(
        value=expected.closed_status_id)
    page.get_by_label("Repeat window (minutes; 0 is off)", exact=True).fill("60")
    page.get_by_role("button", name="Save ticket settings").click()
    says(page, "Ticket settings saved.")
    page.get_by_role("button", name="Enable ticketing").click()
    says(page, "Ticketing is on")
    shoot(page, artifacts, "ticketing")
    settings = ticketing.ticket_settings(bridge)
    assert settings.enabled and settings.repeat_minutes == 60
    assert settings.attributes["alert"] == expected
    assert settings.priorities["Critical"] == options.priority(PRIORITY_NAMES["Critical"])

    # -- an alert in the RMM becomes a ticket in the PSA ----------------------------------------
    alert = datto.raise_alert(device.uid, DISK_C, "Critical")["alertUid"]
    page.get_by_role("link", name="Overview", exact=True).click()
    page.get_by_role("button", name="Run a pass now").click()
    says(page, "tickets created 1")
    (ticket,) = [t for t in cw.db.tickets.values()
                 if t.get("externalXRef") == ticketing.alert_marker(bridge, alert)]
    assert ticket["board"]["name"] == "RMM Alerts"
    page.get_by_role("link", name="Tickets", exact=True).click()
    # The device may have other alerts (raised while ticketing was off): this alert's row.
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=f"Alert {alert} in the RMM"))
    ticket_link = row.get_by_role("link", name=f"Ticket {ticket['id']} in the PSA")
    alert_link = row.get_by_role("link", name=f"Alert {alert} in the RMM")
    device_link = row.get_by_role("link", name=f"Device {AMBIGUOUS} in the RMM")
    assert f"service_recid={ticket['id']}" in ticket_link.get_attribute("href")
    assert ticket_link.get_attribute("href").startswith(console.cw_url)
    assert alert_link.get_attribute("href").endswith(f"/alert/{alert}")
    # The device's link is the one mapping wrote on its configuration in the PSA.
    configuration = cw.db.configurations[int(chosen)]
    assert device_link.get_attribute("href") == configuration["managementLink"]
    shoot(page, artifacts, "tickets")

    # -- the technician closes the ticket in the PSA; the alert is resolved ------------------
    bridge.psa.close_ticket(ticket_id=str(ticket["id"]),
                            closed_status_id=expected.closed_status_id)
    page.get_by_role("link", name="Overview", exact=True).click()
    page.get_by_role("button", name="Run a pass now").click()
    says(page, "alerts resolved 1")
    assert datto.alerts[alert]["resolved"] is True
    page.get_by_role("link", name="Tickets", exact=True).click()
    line = page.get_by_role("row").filter(has=page.get_by_role("link", name=f"Alert {alert} in the RMM"))
    expect(line.get_by_role("cell", name="resolved", exact=True)).to_be_visible()

    # -- the journal: every remote write, filterable ---------------------------------------------
    page.get_by_role("link", name="The journal of remote writes").click()
    page.get_by_label("Plugin", exact=True).select_option(label="datto")
    page.get_by_role("button", name="Filter").click()
    site_rows = page.get_by_role("row").filter(has_text="create_site")
    expect(site_rows).to_have_count(2)  # its intent, then how it ended
    expect(site_rows.get_by_role("cell", name="ok", exact=True)).to_have_count(1)
    expect(page.get_by_role("cell", name="create_ticket")).to_have_count(0)  # a connectwise write
    shoot(page, artifacts, "journal")
    page.get_by_role("link", name="Overview", exact=True).click()
    shoot(page, artifacts, "overview-after")
