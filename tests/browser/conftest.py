"""A real browser for the console: playwright driving Debian's chromium (never a downloaded
browser), and `psabridge serve` as a process of its own reaching both simulators on loopback.

Without chromium the browser tests are skipped, unless PSABRIDGE_REQUIRE_BROWSER=1 (CI sets it),
which makes a missing browser a failure. Screenshots go to PSABRIDGE_ARTIFACTS (default: a
folder under pytest's temporary directory)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import httpx
import pytest

from psabridge.console import auth
from psabridge.core.bridge import Bridge, open_bridge
from psabridge.core.plugins import configure_plugin, enable_plugin
from tests.e2e.conftest import make_sims
from tests.e2e.test_serve import free_port

PASSWORD = "a long console password"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture(scope="session")
def chromium():
    path = chromium_path()
    if path is None:
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("PSABRIDGE_REQUIRE_BROWSER") == "1":
            pytest.fail(message + "; PSABRIDGE_REQUIRE_BROWSER=1 asks for the browser tests")
        pytest.skip(message)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # the `test` extra brings it
        pytest.fail("playwright is not installed: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, headless=True,
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    from playwright.sync_api import expect

    # Generous waits: a page that reads both simulators can be slow on a busy CI machine.
    expect.set_options(timeout=30_000)
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    failed = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 500 else None)
    # A request the page makes after the test, once the server is stopped (tests tear the
    # server down before the page), is refused: that is the test's end, not an error of the page.
    page.on("console", lambda m: failed.append(f"console: {m.text}")
            if m.type == "error" and "ERR_CONNECTION_REFUSED" not in m.text else None)
    yield page
    context.close()
    assert failed == [], "server errors or script errors (a CSP violation?) in the browser"


@pytest.fixture
def artifacts(tmp_path_factory) -> Path:
    folder = os.environ.get("PSABRIDGE_ARTIFACTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("console-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@attrs.define
class Console:
    """`psabridge serve` on loopback, the simulators it reaches, and a bridge of the test's own
    onto the same store to look at what the console did."""

    url: str
    cw: object
    datto: object
    bridge: Bridge
    cw_url: str


@pytest.fixture
def console(pm, store, db_path, tmp_path) -> Iterator[Console]:
    cw, datto = make_sims()
    with contextlib.ExitStack() as stack:
        cw_server = stack.enter_context(cw.serve())
        datto_server = stack.enter_context(datto.serve())
        configure_plugin(pm, store, "connectwise", cw.settings(cw_server.url))
        configure_plugin(pm, store, "datto", datto.settings(datto_server.url))
        enable_plugin(pm, store, "connectwise")
        enable_plugin(pm, store, "datto")
        auth.set_password(store, PASSWORD)
        port = free_port()
        output = tmp_path / "serve.log"  # a file, not a pipe: a full pipe would block the server
        env = {**os.environ, "PSABRIDGE_LOAD_PLUGINS": "connectwise,datto,sqlite"}
        with output.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "psabridge", "--db", str(db_path), "serve", "--port",
                 str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
        stack.callback(lambda: (process.terminate(), process.wait(timeout=10)))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, output.read_text()
            try:
                httpx.get(f"{url}/health", timeout=1).raise_for_status()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, output.read_text()
                time.sleep(0.1)
        yield Console(url, cw, datto, open_bridge(pm, store), cw_server.url)
