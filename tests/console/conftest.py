"""The console against both simulators (in-process), as an admin who has configured and enabled
the two connectors would meet it; and a werkzeug test client that logs in like a browser."""

from __future__ import annotations

import re

import pytest
from werkzeug.datastructures import MultiDict
from werkzeug.test import Client

from psabridge.console import auth
from psabridge.console.app import ConsoleApp
from psabridge.core.plugins import configure_plugin, enable_plugin
from tests.e2e.conftest import make_sims

PASSWORD = "correct horse battery staple"


@pytest.fixture
def sims():
    return make_sims()


@pytest.fixture
def transports(sims):
    cw, datto = sims
    return {"connectwise": cw.transport(), "datto": datto.transport()}


@pytest.fixture
def console(pm, store, sims, transports) -> ConsoleApp:
    cw, datto = sims
    configure_plugin(pm, store, "connectwise", cw.settings("http://connectwise.simulator"))
    configure_plugin(pm, store, "datto", datto.settings("http://datto.simulator"))
    enable_plugin(pm, store, "connectwise", transport=transports["connectwise"])
    enable_plugin(pm, store, "datto", transport=transports["datto"])
    auth.set_password(store, PASSWORD)
    return ConsoleApp(pm, store, transports)


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


class Browser:
    """A werkzeug client that keeps cookies and reads each page's CSRF token, as a browser
    would send it back with the page's forms."""

    def __init__(self, app):
        self.client = Client(app)

    def get(self, path: str, **kwargs):
        return self.client.get(path, **kwargs)

    def token(self, page: str = "/login") -> str:
        """The session's CSRF token, as the forms of `page` carry it (the login page's is the
        cheapest to read)."""
        return csrf_of(self.get(page).text)

    def post(self, path: str, data: dict | list | None = None, page: str = "/login", **kwargs):
        """POST `data` with the session's CSRF token, as a form of the console sends it."""
        fields = list(data.items()) if isinstance(data, dict) else list(data or [])
        token = self.token(page)
        return self.client.post(path, data=MultiDict([("csrf_token", token), *fields]), **kwargs)

    def log_in(self, password: str = PASSWORD):
        response = self.post("/login", {"password": password})
        assert response.status_code == 303, response.text
        return response


@pytest.fixture
def browser(console) -> Browser:
    return Browser(console)
