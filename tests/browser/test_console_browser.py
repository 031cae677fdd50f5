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
