"""The console in a real browser: logging in with the keyboard, every page's controls labelled,
no script or style the Content-Security-Policy blocks."""

from __future__ import annotations

import pytest

from tests.browser.conftest import PASSWORD

pytestmark = pytest.mark.browser

UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter(e => e.type !== 'hidden')
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
               && !(e.tagName === 'BUTTON' && e.textContent.trim()))
  .map(e => e.outerHTML.slice(0, 120))"""


def log_in(page, url: str) -> None:
    """With the keyboard: the password field has the focus, Enter submits."""
    page.goto(f"{url}/")
    assert page.url.startswith(f"{url}/login")
    page.get_by_label("Password").focus()
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{url}/")


def test_log_in_with_the_keyboard_and_every_page_has_labelled_controls(page, console, artifacts):
    page.goto(f"{console.url}/login")
    assert page.evaluate(UNLABELLED) == []
    log_in(page, console.url)
    page.keyboard.press("Tab")  # the first stop on every page skips the navigation
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    assert page.get_by_role("heading", name="Overview").is_visible()
    for name in ("Companies", "Device types", "Devices", "Ticketing", "Tickets", "Journal"):
        page.get_by_role("navigation").get_by_role("link", name=name, exact=True).click()
        assert page.get_by_role("heading", level=1).first.is_visible()
        assert page.evaluate(UNLABELLED) == [], name


RECORD_VIOLATIONS = """window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(
  `${e.violatedDirective} blocked ${e.blockedURI || "inline"}: ${e.sample}`));"""


def test_no_page_breaks_the_content_security_policy_even_as_htmx_swaps(page, console):
    """Chromium reports each violation as a `securitypolicyviolation` event (and a console
    error): htmx's indicator styles, injected inline unless `includeIndicatorStyles` is off,
    were one; a swapped table could bring more."""
    page.context.add_init_script(RECORD_VIOLATIONS)
    reported = []
    page.on("console", lambda m: reported.append(m.text) if "Content Security Policy" in m.text
            else None)
    page.goto(f"{console.url}/login")
    assert page.evaluate("window.__violations") == [], "login"
    log_in(page, console.url)
    for path in ("/", "/companies", "/device-types", "/devices", "/ticketing", "/tickets",
                 "/journal"):
        page.goto(f"{console.url}{path}")
        page.wait_for_load_state("load")
        assert page.evaluate("htmx.config.includeIndicatorStyles") is False, path
        assert page.evaluate("window.__violations") == [], path
    page.goto(f"{console.url}/companies")
    with page.expect_response(lambda r: "search=" in r.url and
                              r.request.headers.get("hx-request") == "true"):
        page.get_by_label("Search", exact=True).press_sequentially("north", delay=20)
    page.wait_for_function("!document.querySelector('.htmx-request')")
    assert "Northwind" in page.locator("#companies-table").inner_text()
    # Leaving the search box is a `change`: the table is asked for once more.
    page.get_by_label("Find a site in the lists").press_sequentially("corp")
    page.wait_for_load_state("networkidle")  # before the server stops at the test's end
    page.get_by_label("Find a site in the lists").press_sequentially("corp")
    assert page.evaluate("window.__violations") == [], "companies, after typing"
    assert reported == []
