"""The console's gate: login (password, one-time link, throttling), signed session cookies,
CSRF on every form, security headers on every response; and `serve` with or without webhooks."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from werkzeug.test import Client

from psabridge.cli import App, cli
from psabridge.console import auth
from psabridge.console.app import SECURITY_HEADERS, SESSION_COOKIE, ConsoleApp
from psabridge.console.server import ServedApp
from psabridge.core import webhooks
from psabridge.core.settings import client_address, trusted_proxies
from tests.console.conftest import PASSWORD, Browser


def assert_secure_headers(response):
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp


def test_every_page_but_the_login_needs_a_session(browser):
    for path in ("/", "/companies", "/devices", "/ticketing", "/tickets", "/journal"):
        response = browser.get(path)
        assert response.status_code == 303, path
        assert response.headers["Location"].startswith("/login?next=")
        assert_secure_headers(response)
    assert browser.get("/login").status_code == 200
    assert browser.get("/static/htmx.min.js").status_code == 200


def test_a_login_sets_a_signed_httponly_strict_cookie_and_goes_where_it_was_asked(browser):
    page = browser.get("/login?next=/ticketing")
    assert_secure_headers(page)
    response = browser.post("/login", {"password": PASSWORD, "next": "/ticketing"})
    assert response.status_code == 303 and response.headers["Location"] == "/ticketing"
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith(SESSION_COOKIE))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert PASSWORD not in cookie
    overview = browser.get("/")
    assert overview.status_code == 200 and "Overview" in overview.text
    assert_secure_headers(overview)


def test_behind_a_tls_proxy_the_session_cookie_is_secure(browser):
    token = browser.token()
    response = browser.client.post("/login", data={"csrf_token": token, "password": PASSWORD},
                                   headers={"X-Forwarded-Proto": "https"})
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith(SESSION_COOKIE))
    assert "Secure" in cookie


def test_a_login_never_redirects_off_the_console(browser):
    response = browser.post("/login", {"password": PASSWORD, "next": "//evil.example.com/x"})
    assert response.headers["Location"] == "/"


def test_a_wrong_password_is_refused_and_guessing_is_throttled(browser):
    for _ in range(5):
        refused = browser.post("/login", {"password": "not the password"})
        assert refused.status_code == 401 and "Wrong password." in refused.text
    throttled = browser.post("/login", {"password": PASSWORD})  # right, but too late
    assert throttled.status_code == 429 and "Too many failed logins" in throttled.text
    assert browser.get("/").status_code == 303


def test_a_post_without_the_sessions_csrf_token_changes_nothing(browser, console, store):
    browser.log_in()
    for token in (None, "forged-token"):
        data = {"auto_map": "on"} | ({"csrf_token": token} if token else {})
        response = browser.client.post("/devices/auto", data=data)
        assert response.status_code == 403 and "This form has expired" in response.text
    assert store.option("connectwise", "auto_map") is None
    accepted = browser.post("/devices/auto", {"auto_map": "on"})
    assert accepted.status_code == 303 and store.option("connectwise", "auto_map") is True


def test_a_login_needs_the_csrf_token_too(browser):
    response = browser.client.post("/login", data={"password": PASSWORD})
    assert response.status_code == 403
    assert browser.get("/").status_code == 303


def test_a_tampered_session_cookie_is_no_session(browser, console):
    browser.log_in()
    cookie = browser.client.get_cookie(SESSION_COOKIE)
    browser.client.set_cookie(SESSION_COOKIE, cookie.value[:-2] + "xx")
    assert browser.get("/").status_code == 303
    other = Browser(console)  # another browser never shares the session
    assert other.get("/").status_code == 303


def test_a_one_time_login_link_works_once(console):
    token = console.links.issue()
    browser = Browser(console)
    page = browser.get(f"/login/{token}")  # a GET (a link preview) does not use it up
    assert page.status_code == 200
    assert browser.post(f"/login/{token}", page=f"/login/{token}").status_code == 303
    assert browser.get("/").status_code == 200
    again = Browser(console)
    refused = again.post(f"/login/{token}", page=f"/login/{token}")
    assert refused.status_code == 401 and "used already or has expired" in refused.text


def test_logging_out_ends_the_session(browser):
    browser.log_in()
    assert browser.post("/logout").status_code == 303
    assert browser.get("/").status_code == 303


def test_bad_form_input_gets_a_specific_message_not_an_error_page(browser):
    browser.log_in()
    response = browser.post("/ticketing/save", {"repeat_minutes": "an hour"})
    assert response.status_code == 303
    page = browser.get("/ticketing")
    assert "Repeat window: &#39;an hour&#39; is not a whole number of minutes" in page.text
    nothing = browser.post("/companies/preview", {})
    assert nothing.status_code == 303
    assert "nothing to do: tick the rows" in browser.get("/companies").text


def test_forwarded_for_is_ignored_unless_it_comes_from_a_trusted_proxy(console, pm, store):
    def log_in(browser, password, forwarded_for):
        return browser.post("/login", {"password": password},
                            headers={"X-Forwarded-For": forwarded_for},
                            environ_overrides={"REMOTE_ADDR": "127.0.0.1"})

    # By default nobody is trusted: a guesser cannot dodge the brake by making up addresses.
    spoofer = Browser(console)
    for n in range(5):
        assert log_in(spoofer, "wrong", f"198.51.100.{n}").status_code == 401
    assert log_in(spoofer, PASSWORD, "198.51.100.99").status_code == 429

    # Behind the proxy (connecting from 127.0.0.1), each user is known by their own address.
    proxied = ConsoleApp(pm, store, console.bridges.transports,
                         trusted_proxies=trusted_proxies("127.0.0.1, 10.0.0.0/8"))
    guesser, colleague = Browser(proxied), Browser(proxied)
    for _ in range(5):
        assert log_in(guesser, "wrong", "203.0.113.7").status_code == 401
    assert log_in(guesser, PASSWORD, "203.0.113.7").status_code == 429
    # A made-up entry left of the one the proxy appended is not believed.
    assert log_in(guesser, PASSWORD, "192.0.2.1, 203.0.113.7").status_code == 429
    # Through two trusted proxies, a colleague is not locked out by the guesser.
    assert log_in(colleague, PASSWORD, "203.0.113.8, 10.1.2.3").status_code == 303
    assert colleague.get("/").status_code == 200


def test_a_trusted_proxy_that_is_not_an_address_stops_serve(pm, store, db_path):
    result = CliRunner().invoke(cli, ["--db", str(db_path), "serve"], obj=App(pm=pm),
                                env={"PSABRIDGE_TRUSTED_PROXIES": "127.0.0.1, proxy.lan"})
    assert result.exit_code == 1
    assert "PSABRIDGE_TRUSTED_PROXIES: 'proxy.lan' is not an IP address or network" in result.output
    assert client_address("10.0.0.5", "1.2.3.4", ()) == "10.0.0.5"
    assert client_address("10.0.0.5", "1.2.3.4", trusted_proxies("10.0.0.5")) == "1.2.3.4"


@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("localhost", False),
                                           ("::1", False), ("0.0.0.0", True), ("::", True),
                                           ("192.0.2.10", True), ("bridge.lan", True)])
def test_serve_warns_once_on_stderr_when_it_binds_beyond_loopback(
        pm, store, db_path, monkeypatch, host, warned):
    class NotServing:  # what `serve` would run, kept instead of run
        def run(self):
            pass

    monkeypatch.setattr(webhooks, "listen", lambda app, host, port: NotServing())
    result = CliRunner().invoke(cli, ["--db", str(db_path), "serve", "--host", host],
                                obj=App(pm=pm))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    if warned:
        assert warnings == [f"Warning: serving on {host}, reachable from other machines, over "
                            "plain HTTP: passwords and session cookies cross the network "
                            "unencrypted; put a TLS reverse proxy in front, or bind to "
                            "127.0.0.1."]
    else:
        assert warnings == []
    assert "Warning" not in result.stdout


def test_set_password_takes_it_from_the_environment_never_argv_and_stores_a_hash(
        pm, store, db_path):
    runner = CliRunner()
    refused = runner.invoke(cli, ["--db", str(db_path), "console", "set-password",
                                  "--password", "on-the-command-line"], obj=App(pm=pm))
    assert refused.exit_code != 0 and "would show in `ps`" in refused.output
    short = runner.invoke(cli, ["--db", str(db_path), "console", "set-password"], obj=App(pm=pm),
                          env={"PSABRIDGE_CONSOLE_PASSWORD": "short"})
    assert short.exit_code != 0 and "at least 12 characters" in short.output
    for blank in (" " * 12, "\t \u3000" * 6):
        spaces = runner.invoke(cli, ["--db", str(db_path), "console", "set-password"],
                               obj=App(pm=pm), env={"PSABRIDGE_CONSOLE_PASSWORD": blank})
        assert spaces.exit_code != 0, spaces.output
        assert "the console password is blank (only spaces" in spaces.output
        assert not auth.has_password(store)
    padded = runner.invoke(cli, ["--db", str(db_path), "console", "set-password"], obj=App(pm=pm),
                           env={"PSABRIDGE_CONSOLE_PASSWORD": "  short  " + " " * 8})
    assert padded.exit_code != 0 and "not counting spaces at either end" in padded.output
    done = runner.invoke(cli, ["--db", str(db_path), "console", "set-password"], obj=App(pm=pm),
                         env={"PSABRIDGE_CONSOLE_PASSWORD": PASSWORD})
    assert done.exit_code == 0, done.output
    stored = store.option(auth.OPTION_PLUGIN, auth.PASSWORD_OPTION)
    assert stored.startswith("$argon2") and PASSWORD not in stored
    assert auth.check_password(store, PASSWORD) and not auth.check_password(store, PASSWORD + "x")


def test_set_password_dry_run_checks_the_password_and_saves_nothing(pm, store, db_path):
    runner = CliRunner()
    short = runner.invoke(cli, ["--db", str(db_path), "console", "set-password", "--dry-run"],
                          obj=App(pm=pm), env={"PSABRIDGE_CONSOLE_PASSWORD": "short"})
    assert short.exit_code != 0 and "at least 12 characters" in short.output
    dry = runner.invoke(cli, ["--db", str(db_path), "console", "set-password", "--dry-run"],
                        obj=App(pm=pm), env={"PSABRIDGE_CONSOLE_PASSWORD": PASSWORD})
    assert dry.exit_code == 0 and "nothing saved" in dry.output, dry.output
    assert not auth.has_password(store)


def test_without_a_webhook_secret_the_hooks_are_off_and_the_console_is_served(console):
    served = Client(ServedApp(console))
    off = served.post("/hooks/rmm", json={"alertUid": "x"})
    assert off.status_code == 404 and "without a webhook secret" in off.json["error"]
    assert served.get("/health").json == {"status": "ok"}
    assert served.get("/").status_code == 303  # the console, asking for a login


def test_serve_prints_a_login_link_when_no_password_is_set(pm, store, db_path, monkeypatch):
    from psabridge.core import webhooks

    class NotServing:  # what `serve` would run, kept instead of run
        def __init__(self, app):
            self.app = app

        def run(self):
            pass

    served = {}
    monkeypatch.setattr(webhooks, "listen",
                        lambda app, host, port: served.setdefault("server", NotServing(app)))
    monkeypatch.setattr(App, "close", lambda self: None)  # the test's store: open for the browser
    result = CliRunner().invoke(cli, ["--db", str(db_path), "serve"], obj=App(pm=pm, store=store))
    assert result.exit_code == 0, result.output
    assert "webhooks are off: no webhook secret" in result.output
    link = next(line for line in result.output.splitlines() if "login link" in line).split()[-1]
    browser = Browser(served["server"].app)
    path = link.removeprefix("http://127.0.0.1:8787")
    assert browser.post(path, page=path).status_code == 303
    overview = browser.get("/")  # logged in; no PSA is enabled yet, and the page says so
    assert overview.status_code == 200 and "Not connected: no PSA plugin is enabled" in overview.text


def test_every_form_that_posts_carries_the_csrf_token():
    from importlib import resources

    folder = resources.files("psabridge.console") / "templates"
    posting = 0
    for template in folder.iterdir():
        text = template.read_text()
        for form in re.findall(r"<form[^>]*>.*?</form>", text, re.DOTALL):
            if 'method="post"' in form:
                posting += 1
                assert 'name="csrf_token" value="{{ csrf_token }}"' in form, template.name
    assert posting >= 12  # login, logout, and each page's forms
