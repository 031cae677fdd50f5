"""The push path over real HTTP: the WebhookApp served by waitress on loopback, the PSA's
simulator POSTing its ticket callbacks to it, and Datto-style alert webhooks POSTed by the test;
the polling path (`sync.run_pass`) seeing the same events acts on none of them twice, and a
replay is told from a real event by what the event is, not by its bytes.

The PSA is reached through `sims.psa` (tests/e2e/psa_sims.py), except in the tests of
ConnectWise's own callback format and URL (their docstrings say so)."""

from __future__ import annotations

import base64
import contextlib
import copy
import io
import json
import threading
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

import httpx
import pytest
import waitress
from waitress import wasyncore

from psabridge.core import logs, sync
from psabridge.core.store_copy import COPIED_TABLES
from psabridge.core.webhooks import LiveBridge, WebhookApp, callback_url, signing_secret
from tests.e2e.conftest import connectwise_only

SECRET = "e2e-webhook-secret-0123456789"
MAX_BODY = 4096


class Hooks:
    def __init__(self, url: str):
        self.url = url
        self.http = httpx.Client(timeout=10)

    def post(self, path: str, body=None, token: str | None = SECRET, content: bytes | None = None,
             headers: dict | None = None):
        query = "" if token is None else f"?token={token}"
        return self.http.post(f"{self.url}{path}{query}", json=body if content is None else None,
                              content=content,
                              headers={"Content-Type": "application/json", **(headers or {})})

    def callback(self, desk, ticket_id: str, event_id: str, token: str | None = SECRET):
        """POST the PSA's own callback about `ticket_id`, as the event `event_id`."""
        headers, body = desk.psa.callback(ticket_id, event_id, signing_secret(SECRET))
        return self.post("/hooks/psa", content=body, headers=headers, token=token)

    def psa_url(self) -> str:
        return f"{self.url}/hooks/psa?token={SECRET}"


@contextlib.contextmanager
def waitress_serving(app: WebhookApp) -> Iterator[str]:
    """`app` under waitress, as `webhooks.listen` configures it, on a free loopback port; its URL.
    Stopped when the block ends."""
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=4, ident="psabridge",
                                    max_request_body_size=app.max_body, expose_tracebacks=False,
                                    asyncore_loop_timeout=0.05)
    thread = threading.Thread(target=server.run, name="webhooks", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        # Close the sockets from the server's own loop (closing them from here races its
        # select); with its map empty the loop returns, then the worker threads are stopped.
        try:
            server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        except OSError:  # the trigger's pipe is gone (its fd closed under it): close from here
            wasyncore.close_all(server._map)
        thread.join(timeout=5)
        server.task_dispatcher.shutdown()
        assert not thread.is_alive()


@pytest.fixture
def hooks(desk) -> Iterator[Hooks]:
    """`psabridge serve`'s app under waitress on loopback, with a small body limit."""
    app = WebhookApp(LiveBridge(desk.bridge, desk.sims.transports), SECRET, max_body=MAX_BODY)
    with waitress_serving(app) as url:
        client = Hooks(url)
        try:
            yield client
        finally:
            client.http.close()


def deliveries_to_us(desk, hooks: Hooks, count: int) -> list:
    """Wait (bounded) for the PSA simulator's callbacks; return its POSTs to our hook."""
    mine = [d for d in desk.psa.deliveries(timeout=10) if d.url.startswith(hooks.url)]
    assert len(mine) == count, mine
    return mine


def register(desk, url: str, secret: str = SECRET) -> str:
    """What `serve --public-url` does: register the callback with the signing secret."""
    return desk.bridge.psa.register_ticket_callback(url, signing_secret(secret))


def test_webhook_and_polling_see_the_same_events_one_ticket_one_resolution(desk, hooks):
    desk.enable()
    datto = desk.sims.datto
    registration = register(desk, hooks.psa_url())
    assert register(desk, hooks.psa_url()) == registration
    (registered,) = desk.psa.callback_registrations()
    assert registered.startswith(hooks.psa_url())

    # 1. An alert is raised: Datto's webhook arrives first, then the polling pass.
    first = desk.raise_alert(desk.devices[0])
    answer = hooks.post("/hooks/rmm", {"alertUid": first, "event": "raised"})
    assert answer.status_code == 200 and answer.json()["state"] == "open"
    ticket = desk.ticket_for(first)
    assert answer.json()["ticket"] == ticket.id
    # The PSA tells us about the new ticket: nothing to do.
    (added,) = deliveries_to_us(desk, hooks, 1)
    assert (added.ticket_id, added.status) == (ticket.id, 200)
    assert sync.run_pass(desk.bridge).tickets_created == 0

    # 2. Another alert: polling first, then the webhook for the same alert.
    second = desk.raise_alert(desk.devices[1])
    assert sync.run_pass(desk.bridge).tickets_created == 1
    late = hooks.post("/hooks/rmm", {"alertUid": second, "event": "raised"})
    assert late.json()["ticket"] == desk.ticket_for(second).id
    deliveries_to_us(desk, hooks, 2)

    # 3. The first ticket is closed in the PSA: its callback resolves the alert in Datto, once.
    desk.close_in_psa(ticket, desk.psa.technician_closed_status)
    (closed,) = deliveries_to_us(desk, hooks, 3)[2:]
    assert (closed.ticket_id, closed.status) == (ticket.id, 200)
    assert datto.alerts[first]["resolved"] and datto.alerts[first]["resolvedBy"] == "api-user"
    report = sync.run_pass(desk.bridge)
    assert (report.alerts_resolved, report.tickets_closed) == (0, 0)  # the poll sees it done

    # 4. The second alert is resolved in Datto: its webhook closes the ticket; the PSA's callback
    #    about that close, and the next poll, change nothing more.
    datto.resolve_alert(second)
    answer = hooks.post("/hooks/rmm", {"alertUid": second, "event": "resolved"})
    assert answer.status_code == 200 and answer.json()["state"] == "closed"
    deliveries_to_us(desk, hooks, 4)
    report = sync.run_pass(desk.bridge)
    assert (report.alerts_resolved, report.tickets_closed, report.errors) == (0, 0, [])

    for uid in (first, second):
        assert len(desk.tickets_for(uid)) == 1 and desk.ticket_for(uid).closed is True
    # The origin's closed status.
    assert desk.ticket_for(second).status == desk.psa.alert_route.closed_status
    assert datto.counts["POST /api/v2/alert/{uid}/resolve"] == 1
    assert desk.psa.ticket_creates() == 2


def test_bad_token_oversized_body_and_replay_over_http(desk, hooks):
    desk.enable()
    alert = desk.raise_alert(desk.devices[0])
    assert hooks.post("/hooks/rmm", {"alertUid": alert}, token="wrong-token").status_code == 401
    assert hooks.post("/hooks/rmm", {"alertUid": alert}, token=None).status_code == 401
    assert hooks.callback(desk, "1", "psa-event-0", token=SECRET[:-1]).status_code == 401
    assert hooks.post("/hooks/rmm", content=b'{"alertUid": "' + b"x" * MAX_BODY + b'"}').status_code == 413
    assert desk.tickets_for(alert) == []  # none of those got through

    body = {"alertUid": alert}
    assert hooks.post("/hooks/rmm", body).status_code == 200
    replay = hooks.post("/hooks/rmm", body)
    assert replay.status_code == 409 and replay.json() == {"error": "replayed message"}
    ticket_id = desk.ticket_for(alert).id
    assert hooks.callback(desk, ticket_id, "psa-event-1").status_code == 200
    assert hooks.callback(desk, ticket_id, "psa-event-1").status_code == 409
    assert len(desk.tickets_for(alert)) == 1


def test_raise_and_resolve_with_byte_identical_bodies_open_then_close_the_ticket(desk, hooks):
    desk.enable()
    alert = desk.raise_alert(desk.devices[0])
    body = b'{"alertUid":"%s"}' % alert.encode()  # the documented template, for both events
    raised = hooks.post("/hooks/rmm", content=body)
    assert raised.status_code == 200 and raised.json()["state"] == "open"
    ticket, route = desk.ticket_for(alert), desk.psa.alert_route
    assert (ticket.status, ticket.closed) == (route.open_status, False)

    desk.sims.datto.resolve_alert(alert)
    resolved = hooks.post("/hooks/rmm", content=body)
    assert resolved.status_code == 200, resolved.text
    assert resolved.json() == {"status": "ok", "state": "closed", "ticket": ticket.id}
    ticket = desk.ticket_for(alert)
    assert (ticket.status, ticket.closed) == (route.closed_status, True)


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_delivery_that_failed_is_processed_when_delivered_again(desk, hooks, when):
    """The PSA answers 500 to the ticket's create, having made the ticket or not: the webhook
    answers 502 or 503 (as the connector judges the failure) saying what failed, remembers
    nothing, and the redelivery of the same body leaves one ticket."""
    desk.enable()
    alert = desk.raise_alert(desk.devices[0])
    body = {"alertUid": alert}
    desk.psa.fail_ticket_creates("error", when, status=500)
    failed = hooks.post("/hooks/rmm", body)
    assert failed.status_code in (502, 503), failed.text
    assert "500" in failed.json()["error"] and failed.json()["error"].endswith("deliver it again")
    assert len(desk.tickets_for(alert)) == (1 if when == "after" else 0)

    again = hooks.post("/hooks/rmm", body)
    assert again.status_code == 200, again.text
    assert again.json()["ticket"] == desk.ticket_for(alert).id  # exactly one
    assert desk.psa.ticket_creates() == (1 if when == "after" else 2)


def test_a_replay_of_a_processed_event_is_refused_and_changes_nothing(desk, hooks):
    desk.enable()
    alert = desk.raise_alert(desk.devices[0])
    assert hooks.post("/hooks/rmm", {"alertUid": alert}).status_code == 200
    desk.sims.datto.resolve_alert(alert)
    assert hooks.post("/hooks/rmm", {"alertUid": alert}).json()["state"] == "closed"
    ticket_id = desk.ticket_for(alert).id
    assert hooks.callback(desk, ticket_id, "psa-event-7").status_code == 200
    writes, tickets = desk.sims.writes(), desk.psa.tickets()

    replays = [hooks.post("/hooks/rmm", {"alertUid": alert}),
               hooks.callback(desk, ticket_id, "psa-event-7"),
               hooks.post("/hooks/rmm", {"alertUid": alert, "event": "resolved"})]
    for replay in replays:
        assert replay.status_code == 409 and replay.json() == {"error": "replayed message"}
    assert desk.sims.writes() == writes and desk.psa.tickets() == tickets


def store_contents(store) -> dict[str, list]:
    """Every row of every table of the store, whichever engine keeps it."""
    return {table: sorted(map(repr, store.table_rows(table)))
            for table in (*COPIED_TABLES, "leases")}


DEEP = b"[" * 30_000 + b"]" * 30_000  # 60,000 bytes: under the 64 KiB limit


@pytest.mark.parametrize("sims", ["loopback"], indirect=True)
def test_hostile_bodies_with_a_valid_token_are_answered_400_and_change_nothing(desk):
    """What used to crash the handler (500 or a traceback): a callback ID of "abc", 1.5 or {};
    an alertUid with a NUL; JSON nested 30,000 deep. Sent over loopback to waitress with the
    right token, each is answered 400 with the reason, and neither the store nor either
    simulator sees anything: not a write, not even a read. The callbacks are ConnectWise's."""
    desk.enable()
    alert = desk.raise_alert(desk.devices[0])
    ticket_id = 1  # a real ticket's id, were the ID read as one
    hostile = [
        ("/hooks/psa", {"MessageId": "m-1", "Type": "ticket", "Action": "updated", "ID": "abc"},
         "ID must be a positive integer"),
        ("/hooks/psa", {"MessageId": "m-2", "Type": "ticket", "Action": "updated", "ID": 1.5},
         "ID must be a positive integer"),
        ("/hooks/psa", {"MessageId": "m-3", "Type": "ticket", "Action": "updated", "ID": {}},
         "ID must be a positive integer"),
        ("/hooks/psa", {"MessageId": "m-4", "Type": {"ticket": True}, "ID": ticket_id},
         "Type must be a string"),
        ("/hooks/rmm", {"alertUid": alert + "\x00"}, "alertUid must not contain control characters"),
        ("/hooks/rmm", {"alertUid": "\x00"}, "alertUid must not contain control characters"),
        ("/hooks/rmm", b'{"alertUid": "' + alert.encode() + b'", "x": ' + DEEP + b"}",
         "the body nests deeper than 32 levels"),
        ("/hooks/psa", b'{"Type": "ticket", "ID": 1, "Entity": ' + DEEP + b"}",
         "the body nests deeper than 32 levels"),
        ("/hooks/rmm", DEEP, "the body nests deeper than 32 levels"),
    ]
    app = WebhookApp(LiveBridge(desk.bridge, desk.sims.transports), SECRET)  # the 64 KiB limit
    stored, requests = store_contents(desk.bridge.store), desk.sims.request_counts()
    tickets, alerts = copy.deepcopy(desk.sims.cw.db.tickets), copy.deepcopy(desk.sims.datto.alerts)
    with waitress_serving(app) as url, httpx.Client(timeout=10) as http:
        for path, body, reason in hostile:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            assert len(content) < app.max_body
            answer = http.post(f"{url}{path}", content=content,
                               headers={"X-Psabridge-Token": SECRET, "Content-Type": "application/json"})
            assert (answer.status_code, answer.headers["content-type"]) == (400, "application/json"), (
                path, content[:80], answer.text)
            assert reason in answer.json()["error"], answer.text
            assert "Traceback" not in answer.text
        assert http.get(f"{url}/health").json() == {"status": "ok"}  # still serving
    assert store_contents(desk.bridge.store) == stored
    assert desk.sims.request_counts() == requests
    assert desk.sims.cw.db.tickets == tickets and desk.sims.datto.alerts == alerts


@pytest.fixture
def verbose_log() -> Iterator[io.StringIO]:
    """Everything psabridge logs at -vv, as JSON lines, in a string; the usual set-up after."""
    stream = io.StringIO()
    logs.configure_logging(2, "json", stream)
    yield stream
    logs.configure_logging()


ODD_SECRET = "cw+call/back=secret&more-0123"


def every_written_form(secret: str) -> dict[str, str]:
    once = quote(secret, safe="")
    return {"raw": secret, "quote": once, "quote keeping /": quote(secret),
            "quote_plus": quote_plus(secret), "lower-case hex": once.lower(),
            "encoded twice": quote(once, safe=""), "encoded twice, plus": quote_plus(once),
            "base64": base64.b64encode(secret.encode()).decode(),
            "url-safe base64": base64.urlsafe_b64encode(secret.encode()).decode()}


@pytest.mark.parametrize("sims", ["loopback"], indirect=True)
def test_a_secret_with_url_characters_works_in_the_callback_url_and_no_form_of_it_is_logged(
        desk, verbose_log):
    """`+ / = &` in the secret: `serve --public-url` registers the callback URL with the token
    percent-encoded; the ConnectWise simulator POSTs each callback to that URL as CW does (the
    record id appended); every one is accepted, and the -vv log (httpx's request lines
    included, where the connector looks its callback up by URL) shows the secret in no form.
    ConnectWise's own: its URL quirk."""
    connectwise_only(desk.sims, "the record id appended to the callback URL")
    app = WebhookApp(LiveBridge(desk.bridge, desk.sims.transports), ODD_SECRET)
    with waitress_serving(app) as url:
        desk.enable()
        registered = callback_url(url, ODD_SECRET)  # what serve --public-url registers
        register(desk, registered, ODD_SECRET)
        assert register(desk, registered, ODD_SECRET)  # found again
        alert = desk.raise_alert(desk.devices[0])
        raised = httpx.post(f"{url}/hooks/rmm", json={"alertUid": alert},
                            headers={"Authorization": f"Bearer {ODD_SECRET}"}, timeout=10)
        assert raised.status_code == 200 and raised.json()["state"] == "open"
        ticket = desk.ticket_for(alert)
        desk.close_in_psa(ticket, "Closed (Auto)")  # CW calls back: the alert is resolved
        mine = deliveries_to_us(desk, Hooks(url), 2)
    assert [d.status for d in mine] == [200, 200]
    assert mine[1].url == f"{registered}&recordId={ticket.id}"
    assert desk.alert(alert)["resolved"] and desk.alert(alert)["resolvedBy"] == "api-user"

    log = verbose_log.getvalue()
    assert "system/callbacks?conditions=" in log and "webhook_handled" in log  # -vv did log
    for name, form in every_written_form(ODD_SECRET).items():
        assert form not in log, f"the secret, {name}, is in the -vv log"


# What one alert webhook costs the store, pinned so that a change shows. The commits, in order:
# the alert's claim taken; its row saved `pending` with the create's intent and the in-flight
# mark (the configuration's POST, ConnectWise's second, is covered by the same mark); the
# create's outcome with the row saved `open` (the answer's clearing with it); the claim given
# up; the event remembered. None of it reads more than the alert's own rows, whatever the
# estate or the history. Autotask creates the ticket with its configuration in one POST.
WEBHOOK_STATEMENTS = {"connectwise": 29, "autotask": 29}
WEBHOOK_COMMITS = {"connectwise": 5, "autotask": 5}


@pytest.mark.parametrize("sims", ["in-process"], indirect=True)
@pytest.mark.parametrize("store_engine", ["sqlite"], indirect=True)  # counts SQLite's statements
def test_one_alert_webhook_makes_a_fixed_number_of_statements_and_commits(desk):
    from werkzeug.test import Client

    desk.enable()
    client = Client(WebhookApp(LiveBridge(desk.bridge, desk.sims.transports), SECRET))
    url = f"/hooks/rmm?token={SECRET}"
    client.post(url, json={"alertUid": "no-such-alert"})  # connectors' tokens, fetched once
    desk.bridge.ticket_options()  # and the PSA's ticket options, kept in the store once
    alert = desk.raise_alert(desk.devices[0])
    statements: list[str] = []
    connection = desk.bridge.store.db.conn  # this thread's: the webhook is handled on it
    connection.set_trace_callback(statements.append)
    try:
        answer = client.post(url, json={"alertUid": alert})
    finally:
        connection.set_trace_callback(None)
    assert answer.status_code == 200 and answer.json["state"] == "open"
    assert len(desk.tickets_for(alert)) == 1
    commits = [s for s in statements if s.strip().upper() == "COMMIT"]
    shown = "\n".join(" ".join(s.split())[:120] for s in statements)
    psa = desk.sims.psa.plugin
    assert (len(statements), len(commits)) == (WEBHOOK_STATEMENTS[psa], WEBHOOK_COMMITS[psa]), shown
