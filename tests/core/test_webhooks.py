"""The webhook endpoint: authentication, bounds, replays told from real events, one outcome
with polling, and plugins disabled while serving."""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

import pytest
from werkzeug.test import Client

from psabridge.core import http, secrets, sync, ticketing
from psabridge.core.bridge import open_bridge
from psabridge.core.coordination import mark_unanswered
from psabridge.core.errors import RemoteError
from psabridge.core.hookspecs import hookimpl
from psabridge.core.models import ConnectorInfo, Setting
from psabridge.core.plugins import configure_plugin, disable_plugin, enable_plugin
from psabridge.core.webhooks import (
    BadSecret,
    LiveBridge,
    PluginDisabled,
    WebhookApp,
    callback_url,
    nests_deeper_than,
    signing_secret,
)
from psabridge.plugins.rmm_datto.hooks import stated_alert_state
from tests.core.memory import MemoryRmm, ServerError
from tests.core.test_mapping import bridge, psa, rmm  # noqa: F401 - fixtures
from tests.core.test_ticketing import ready  # noqa: F401 - fixture

SECRET = "s3cret-webhook-token-0123"


@pytest.fixture
def client(bridge):  # noqa: F811
    return Client(WebhookApp(lambda: bridge, SECRET, max_body=2048))


def post(client, path, body, token=SECRET):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(f"{path}?token={token}", data=data, content_type="application/json")


def test_requests_without_the_right_token_are_refused(client):
    assert post(client, "/hooks/rmm", {"alertUid": "x"}, token="wrong").status_code == 401
    assert client.post("/hooks/rmm", json={"alertUid": "x"}).status_code == 401


def test_oversized_malformed_and_replayed_bodies_are_refused(client, ready, rmm):  # noqa: F811
    assert post(client, "/hooks/rmm", b"x" * 4096).status_code == 413
    assert post(client, "/hooks/rmm", b"{not json").status_code == 400
    assert post(client, "/hooks/rmm", {"nothing": 1}).status_code == 400
    alert = rmm.raise_alert(ready)
    first = post(client, "/hooks/rmm", {"alertUid": alert.uid})
    assert first.status_code == 200 and first.json["state"] == "open"
    assert post(client, "/hooks/rmm", {"alertUid": alert.uid}).status_code == 409


def test_webhook_and_polling_seeing_the_same_alert_make_one_ticket(bridge, client, ready, psa, rmm):  # noqa: F811
    alert = rmm.raise_alert(ready)
    assert post(client, "/hooks/rmm", {"alertUid": alert.uid, "at": 1}).json["state"] == "open"
    sync.run_pass(bridge)
    rmm.resolve(alert.uid)
    assert post(client, "/hooks/rmm", {"alertUid": alert.uid, "at": 2}).json["state"] == "closed"
    report = sync.run_pass(bridge)
    assert len(psa.tickets) == 1 and psa.calls["close_ticket"] == 1
    assert (report.tickets_created, report.tickets_closed) == (0, 0)


def test_webhook_and_polling_at_the_same_moment_make_one_ticket(bridge, client, ready, psa, rmm):  # noqa: F811
    alerts = [rmm.raise_alert(ready, monitor=f"m{i}") for i in range(20)]
    hooks = threading.Thread(target=lambda: [post(client, "/hooks/rmm", {"alertUid": a.uid})
                                             for a in alerts])
    hooks.start()
    sync.run_pass(bridge)
    hooks.join()
    sync.run_pass(bridge)
    assert psa.calls["create_ticket"] == 20 == len(psa.tickets)


def test_a_psa_callback_for_a_closed_ticket_resolves_its_alert(bridge, client, ready, psa, rmm):  # noqa: F811
    alert = rmm.raise_alert(ready)
    row = ticketing.ticket_for_alert(bridge, alert)
    psa.close(row.ticket_id, "done")
    callback = {"MessageId": "m-1", "Type": "ticket", "Action": "updated", "ID": int(row.ticket_id),
                "Entity": "{}"}
    answer = post(client, "/hooks/psa", callback)
    assert answer.status_code == 200 and answer.json["alerts_resolved"] == 1
    assert rmm.alerts[alert.uid].resolved
    assert post(client, "/hooks/psa", callback).status_code == 409  # same MessageId: a replay
    assert sync.run_pass(bridge).alerts_resolved == 0 and rmm.calls["resolve_alert"] == 1


def test_a_resolve_with_the_same_bytes_as_the_raise_closes_the_ticket(client, ready, psa, rmm):  # noqa: F811
    alert = rmm.raise_alert(ready)
    body = json.dumps({"alertUid": alert.uid}).encode()  # Datto's one template for both events
    assert post(client, "/hooks/rmm", body).json["state"] == "open"
    rmm.resolve(alert.uid)
    answer = post(client, "/hooks/rmm", body)
    assert answer.status_code == 200 and answer.json["state"] == "closed"
    (ticket,) = psa.tickets.values()
    assert ticket.closed
    assert post(client, "/hooks/rmm", body).status_code == 409  # the resolve, delivered again


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_delivery_that_failed_is_processed_when_delivered_again(client, ready, psa, rmm, when):  # noqa: F811
    """The PSA fails the create, before or after making the ticket: we answer 502 saying so and
    remember nothing, so the sender's redelivery makes (or adopts) the one ticket."""
    alert = rmm.raise_alert(ready)
    psa.fail_next_create = (RemoteError("ConnectWise answered 500"), when)
    failed = post(client, "/hooks/rmm", {"alertUid": alert.uid})
    assert failed.status_code == 502
    assert failed.json["error"] == "ConnectWise answered 500; deliver it again"
    again = post(client, "/hooks/rmm", {"alertUid": alert.uid})
    assert again.status_code == 200 and again.json["state"] == "open"
    assert len(psa.tickets) == 1 and again.json["ticket"] in psa.tickets
    assert post(client, "/hooks/rmm", {"alertUid": alert.uid}).status_code == 409


def test_a_delivery_while_the_alert_is_claimed_elsewhere_is_not_remembered(bridge, client, ready, psa, rmm):  # noqa: F811
    alert = rmm.raise_alert(ready)
    claim = f"alert:{bridge.psa.name}:{alert.uid}"  # as a sync pass in another process holds it
    held = bridge.store.acquire_lease(claim, "another-process", ttl=60)
    assert held
    busy = post(client, "/hooks/rmm", {"alertUid": alert.uid})
    assert busy.status_code == 202 and busy.json["status"] == "in progress"
    bridge.store.release_lease(held)  # it died before making the ticket
    assert post(client, "/hooks/rmm", {"alertUid": alert.uid}).json["state"] == "open"
    assert len(psa.tickets) == 1


@pytest.mark.parametrize(("body", "state"), [
    ({"alertUid": "a"}, None),
    ({"alertUid": "a", "event": "resolved"}, "resolved"),
    ({"alertUid": "a", "status": "Raised"}, "raised"),
    ({"alertUid": "a", "state": "resolved"}, "resolved"),
    ({"alertUid": "a", "resolved": True}, "resolved"),
    ({"alertUid": "a", "resolved": "false"}, "raised"),
    ({"alertUid": "a", "status": "Critical"}, None),  # not a state: the API is asked instead
])
def test_what_a_datto_body_says_about_the_alerts_state(body, state):
    assert stated_alert_state(body) == state


def test_a_body_stating_its_event_tells_a_raise_delivered_again_from_the_resolve(client, ready, psa, rmm):  # noqa: F811
    """The raise delivered again (other bytes, the alert resolved meanwhile) is a replay; the
    resolve is not."""
    alert = rmm.raise_alert(ready)
    post(client, "/hooks/rmm", {"alertUid": alert.uid, "event": "raised"})
    rmm.resolve(alert.uid)
    late = post(client, "/hooks/rmm", {"alertUid": alert.uid, "event": "raised", "try": 2})
    assert late.status_code == 409  # the same raise, delivered again with other bytes
    resolve = post(client, "/hooks/rmm", {"alertUid": alert.uid, "event": "resolved"})
    assert resolve.status_code == 200 and resolve.json["state"] == "closed"
    assert psa.calls["close_ticket"] == 1


def test_a_callback_without_a_message_id_is_known_by_its_body(bridge, client, ready, psa, rmm):  # noqa: F811
    row = ticketing.ticket_for_alert(bridge, rmm.raise_alert(ready))
    psa.close(row.ticket_id, "done")
    callback = {"Type": "ticket", "Action": "updated", "ID": int(row.ticket_id)}
    assert post(client, "/hooks/psa", callback).json["alerts_resolved"] == 1
    assert post(client, "/hooks/psa", callback).status_code == 409
    assert post(client, "/hooks/psa", {**callback, "Action": "deleted"}).status_code == 200


def test_events_are_ignored_while_their_plugin_is_disabled(pm, store, bridge, ready, psa, rmm):  # noqa: F811
    client = Client(WebhookApp(LiveBridge(bridge), SECRET))
    alert = rmm.raise_alert(ready)
    disable_plugin(pm, store, "mempsa")
    ignored = post(client, "/hooks/rmm", {"alertUid": alert.uid})
    assert ignored.status_code == 202
    assert ignored.json == {"status": "ignored", "reason": "mempsa is disabled"}
    assert psa.tickets == {} and store.alert_ticket(*bridge.pair, alert.uid) is None
    enable_plugin(pm, store, "mempsa", check=False)
    assert post(client, "/hooks/rmm", {"alertUid": alert.uid}).json["state"] == "open"
    disable_plugin(pm, store, "memrmm")
    rmm.resolve(alert.uid)
    assert post(client, "/hooks/rmm", {"alertUid": alert.uid}).json["reason"] == "memrmm is disabled"
    assert psa.calls["close_ticket"] == 0


def test_the_live_bridge_keeps_its_connectors_until_their_settings_change(pm, store, bridge):  # noqa: F811
    live = LiveBridge(bridge)
    assert live() is bridge and live() is bridge  # nothing changed: connections are kept
    configure_plugin(pm, store, "memrmm", {"url": "https://rmm.example.org"})
    changed = live()
    assert changed.psa is bridge.psa  # the PSA's client and tokens are kept
    assert changed.rmm.connection.settings["url"] == "https://rmm.example.org"
    assert live() is changed
    disable_plugin(pm, store, "memrmm")
    with pytest.raises(PluginDisabled, match="memrmm is disabled"):
        live()


def test_the_callback_url_carries_the_token():
    assert callback_url("https://bridge.example.com/", SECRET) == (
        f"https://bridge.example.com/hooks/psa?token={SECRET}")


def test_the_signing_secret_is_stable_for_a_secret_and_is_not_the_secret():
    derived = signing_secret(SECRET)
    assert len(derived) == 64 and int(derived, 16) >= 0
    assert derived == signing_secret(SECRET) != signing_secret(SECRET + "x")
    assert SECRET not in derived


ODD_SECRET = "wh+sec/ret=with&more-0123"  # what `openssl rand -base64` and humans produce


def test_the_callback_url_percent_encodes_a_token_that_a_url_would_change():
    url = callback_url("https://bridge.example.com", ODD_SECRET)
    assert url == "https://bridge.example.com/hooks/psa?token=wh%2Bsec%2Fret%3Dwith%26more-0123"
    query = parse_qs(urlsplit(url + "&recordId=4711").query)  # as a PSA may add to it
    assert query == {"token": [ODD_SECRET], "recordId": ["4711"]}


def refuse_lookups():
    pytest.fail("the request got past authentication and validation: something was looked up")


def test_the_token_is_accepted_from_a_header_or_the_query_decoded_or_as_written(bridge):  # noqa: F811
    client = Client(WebhookApp(lambda: bridge, ODD_SECRET))
    bad_body = {"alertUid": ""}  # past authentication, a 400; refused by it, a 401

    def status(path="/hooks/rmm", **headers):
        return client.post(path, json=bad_body, headers=headers).status_code

    assert status(Authorization=f"Bearer {ODD_SECRET}") == 400
    assert status(Authorization=f"bearer  {ODD_SECRET} ") == 400
    assert status(**{"X-Psabridge-Token": ODD_SECRET}) == 400
    assert status(f"/hooks/rmm?token={quote(ODD_SECRET, safe='')}") == 400
    assert status(f"/hooks/rmm?token={quote_plus(ODD_SECRET)}") == 400
    base64_secret = "k2V+9/aZ0qw8xYb1L3mN7p=="  # a URL typed by hand with a base64 secret
    typed = Client(WebhookApp(lambda: bridge, base64_secret))
    assert typed.post(f"/hooks/rmm?token={base64_secret}", json=bad_body).status_code == 400

    assert status(Authorization=f"Basic {ODD_SECRET}") == 401  # not a bearer token
    assert status(Authorization=f"Bearer {ODD_SECRET[:-1]}") == 401
    assert status(**{"X-Psabridge-Token": ODD_SECRET + "x"}) == 401
    assert status(f"/hooks/rmm?token={ODD_SECRET}") == 401  # its & ends the token early
    assert status(f"/hooks/rmm?tok={quote(ODD_SECRET, safe='')}") == 401
    assert status() == 401
    # One token a request: several would let a caller try many guesses at once.
    right = quote(ODD_SECRET, safe="")
    assert status(f"/hooks/rmm?token=guess&token={right}") == 401
    assert status(f"/hooks/rmm?token={right}&token=guess") == 401
    assert status(f"/hooks/rmm?token={right}", Authorization="Bearer guess") == 401


@pytest.mark.parametrize("secret", ["short-secret", "sixteen chars ok?", "tab\tin-the-secret-0123",
                                    "non-ascii-sécret-0123456"])
def test_a_secret_a_url_or_header_would_change_is_refused(secret):
    with pytest.raises(BadSecret, match="openssl rand -hex 32"):
        WebhookApp(refuse_lookups, secret)


DEEP = b"[" * 30_000 + b"]" * 30_000


@pytest.mark.parametrize(("path", "body", "reason"), [
    ("/hooks/psa", {"Type": "ticket", "ID": "abc"}, "ID must be a positive integer"),
    ("/hooks/psa", {"Type": "ticket", "ID": 1.5}, "ID must be a positive integer"),
    ("/hooks/psa", {"Type": "ticket", "ID": {}}, "ID must be a positive integer"),
    ("/hooks/psa", {"Type": "ticket", "ID": 0}, "ID must be a positive integer"),
    ("/hooks/psa", {"Type": "ticket", "ID": -5}, "ID must be a positive integer"),
    ("/hooks/psa", {"Type": "ticket", "ID": True}, "ID must be a positive integer"),
    ("/hooks/psa", {"Type": "ticket", "ID": "12" * 20}, "ID must be a positive integer"),
    ("/hooks/psa", {"Type": "ticket"}, "ID must be a positive integer"),
    ("/hooks/psa", {"Type": ["ticket"], "ID": 1}, "Type must be a string"),
    ("/hooks/psa", {"ID": 1}, "Type must be a string"),
    ("/hooks/psa", {"Type": "ticket", "ID": 1, "MessageId": {"a": 1}}, "MessageId must be"),
    ("/hooks/rmm", {"alertUid": "abc\x00def"}, "alertUid must not contain control characters"),
    ("/hooks/rmm", {"alertUid": "../../account/sites"}, "alertUid must not contain"),
    ("/hooks/rmm", {"alertUid": "a" * 129}, "alertUid is longer than 128 characters"),
    ("/hooks/rmm", {"alertUid": 42}, "alertUid must be a non-empty string"),
    ("/hooks/rmm", {"alertUid": ["x"]}, "alertUid must be a non-empty string"),
    ("/hooks/rmm", {"alertUid": "\ud800"}, "alertUid must not contain control characters"),
    ("/hooks/rmm", {"nothing": 1}, "no alertUid in the body"),
    ("/hooks/rmm", DEEP, "the body nests deeper than 32 levels"),
    ("/hooks/psa", b'{"Type": "ticket", "ID": 1, "x": ' + DEEP + b"}", "nests deeper than 32"),
    ("/hooks/rmm", b'{"alertUid": "' + b"[" * 40_000 + b'"}', "alertUid is longer"),
    ("/hooks/rmm", b"{not json", "the body is not JSON"),
    ("/hooks/rmm", b"\xff\xfe{}", "the body is not JSON"),
    ("/hooks/rmm", b'{"alertUid": ' + b"9" * 5000 + b"}", "the body is not JSON"),
    ("/hooks/rmm", b"[1, 2]", "the body is not a JSON object"),
    ("/hooks/psa", b"", "the body is not JSON"),
])
def test_a_body_not_shaped_as_its_sender_sends_it_is_answered_400_with_the_reason(
        bridge, psa, rmm, path, body, reason):  # noqa: F811
    """Core bounds the body; the connector reads it (here the memory connectors, which read
    ConnectWise's and Datto RMM's bodies) and refuses one its product does not send."""
    client = Client(WebhookApp(lambda: bridge, SECRET, max_body=64 * 1024))
    answer = post(client, path, body)
    assert answer.status_code == 400, answer.text
    assert reason in answer.json["error"]
    assert not psa.calls["get_ticket"] and not rmm.calls["get_alert"], "something was looked up"


def test_a_connector_that_cannot_read_callbacks_has_them_refused(pm, bridge, psa):  # noqa: F811
    pm.unregister(psa)
    try:
        plain = type("NoCallbacks", (), {n: getattr(psa, n) for n in (
            "connector_info", "psa_get_ticket")})()
        pm.register(plain, name="mempsa")
        answer = post(Client(WebhookApp(lambda: bridge, SECRET)), "/hooks/psa",
                      {"Type": "ticket", "ID": 1})
    finally:
        pm.unregister(name="mempsa")
        pm.register(psa, name="mempsa")
    assert answer.status_code == 400
    assert "mempsa connector cannot read callbacks" in answer.json["error"]


def test_depth_is_counted_outside_strings_and_the_count_stays_linear():
    assert not nests_deeper_than(b'{"a": "[[[[[[[[[[", "b": [[1]]}', 3)
    assert not nests_deeper_than(b'{"a": "\\"[[[[", "b": [1]}', 2)  # an escaped quote
    assert nests_deeper_than(b"[" * 5 + b'"' + b"[" * 10, 4)
    started = time.monotonic()
    # Every quote after the first is escaped: a scanner that tried each one as the start of a
    # string would read to the end 30,000 times.
    assert not nests_deeper_than(b'"' + b'\\"' * 30_000, 1)
    assert time.monotonic() - started < 0.5


def test_a_taken_port_or_a_bad_address_is_one_clear_error_before_listening_is_announced():
    import socket

    from psabridge.core.errors import PsabridgeError
    from psabridge.core.webhooks import listen

    app = WebhookApp(refuse_lookups, ODD_SECRET)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PsabridgeError, match=f"cannot listen on 127.0.0.1:{port}: address "
                                                 "already in use; choose another --port"):
            listen(app, "127.0.0.1", port)
    with pytest.raises(PsabridgeError, match="cannot listen on 999.1.1.1:8787: "):
        listen(app, "999.1.1.1", 8787)


class SecretRmm(MemoryRmm):
    """A memory RMM whose connection needs a secret, stored sealed or named by reference."""

    @hookimpl
    def connector_info(self):
        return ConnectorInfo("rmm", "Memory RMM with a token", (
            Setting("url", "URL", kind="url"), Setting("token", "Token", secret=True)))


@pytest.fixture
def secret_bridge(pm, store, psa):  # noqa: F811
    plugin = SecretRmm()
    pm.register(plugin, name="secretrmm")
    configure_plugin(pm, store, "mempsa", {"url": "https://x.example.com"})
    enable_plugin(pm, store, "mempsa", check=False)
    yield lambda token: (configure_plugin(pm, store, "secretrmm",
                                          {"url": "https://rmm.example.com", "token": token}),
                         enable_plugin(pm, store, "secretrmm", check=False),
                         open_bridge(pm, store))[-1]
    pm.unregister(plugin)


def test_the_live_bridge_unseals_a_stored_secret_once_not_for_every_event(secret_bridge,
                                                                          monkeypatch):
    started = secret_bridge("sealed-token-value")
    assert started.rmm.connection.settings["token"] == "sealed-token-value"
    keys_read = []
    real_secret_key = secrets.secret_key
    monkeypatch.setattr(secrets, "secret_key",
                        lambda *a, **k: keys_read.append(1) or real_secret_key(*a, **k))
    live = LiveBridge(started)
    assert all(live() is started for _ in range(5))
    assert len(keys_read) == 1  # found current once; the same stored settings since


def test_the_live_bridge_reads_a_secret_named_by_file_for_every_event(secret_bridge, tmp_path):
    token = tmp_path / "token"
    token.write_text("first-token-value\n")
    started = secret_bridge(f"file:{token}")
    live = LiveBridge(started)
    assert live() is started and live() is started
    token.write_text("second-token-value\n")  # rotated in its file: no store write says so
    rotated = live()
    assert rotated.rmm is not started.rmm
    assert rotated.rmm.connection.settings["token"] == "second-token-value"
    assert rotated.psa is started.psa


def test_a_delivery_whose_create_got_no_answer_is_asked_again_until_its_ticket_is_found(
        client, bridge, ready, psa, rmm, monkeypatch):  # noqa: F811
    """The create's answer is lost: nobody works on the alert while that write is waited out,
    so a redelivery is answered 503 with Retry-After, not a 2xx that would end the sender's
    deliveries; once waited out, a redelivery adopts the ticket the PSA made."""
    monkeypatch.setattr(http, "IN_FLIGHT_WINDOW", 60.0)
    facade = type(bridge.psa)
    real_create = facade.create_ticket

    def answer_lost(self, draft):
        real_create(self, draft=draft)
        mark_unanswered()  # as the HTTP layer does when the connection drops
        raise ServerError("no answer from the PSA; the request may or may not have been applied")

    alert = rmm.raise_alert(ready)
    monkeypatch.setattr(facade, "create_ticket", answer_lost)
    failed = post(client, "/hooks/rmm", {"alertUid": alert.uid})
    assert failed.status_code == 503 and "deliver it again" in failed.json["error"]
    monkeypatch.setattr(facade, "create_ticket", real_create)

    waiting = post(client, "/hooks/rmm", {"alertUid": alert.uid})
    assert waiting.status_code == 503 and "got no answer" in waiting.json["error"]
    assert 60 <= int(waiting.headers["Retry-After"]) <= 75  # the window, and its headroom
    # The window passes (the store's clock is SQLite's own: moved by hand here).
    bridge.store.db.execute("update leases set quiet_until = 0 where name = ?",
                            (f"alert:{bridge.psa.name}:{alert.uid}",))
    again = post(client, "/hooks/rmm", {"alertUid": alert.uid})
    assert again.status_code == 200 and again.json["state"] == "open"
    assert len(psa.tickets) == 1 and again.json["ticket"] in psa.tickets  # adopted, not made again


def test_a_resolve_delivered_while_another_process_holds_the_alert_is_in_progress(
        client, bridge, ready, rmm):  # noqa: F811
    alert = rmm.raise_alert(ready)
    assert post(client, "/hooks/rmm", {"alertUid": alert.uid}).json["state"] == "open"
    rmm.resolve(alert.uid)
    bridge.store.acquire_lease(f"alert:{bridge.psa.name}:{alert.uid}", "another process", 60)
    answer = post(client, "/hooks/rmm", {"alertUid": alert.uid})
    assert answer.status_code == 202 and answer.json["status"] == "in progress"
