"""The push side of the round trip (`psabridge serve`): PSA ticket callbacks and RMM alert
webhooks, received over HTTP and handed to the same functions as polling.

A callback is only a hint: its body says which record changed, and the handler re-reads that
record through the connector before acting. So a forged or stale body can at worst make us look
at a record, and the webhook and the polling path, seeing the same event, do the same thing once.

Authentication is a shared secret in the URL's `token` query parameter, compared in constant
time: ConnectWise lets the callback URL carry it, and Datto RMM webhooks have no signature of
their own (API-NOTES: not established). Bodies are bounded.

An event processed before is refused as a replay (409). What makes two deliveries the same event
is the event's identity, never the body's bytes: Datto's raise and resolve bodies can be
byte-identical (`{"alertUid":"[alert_uid]"}`), and its resolve must not be taken for a replay.

* A ConnectWise callback is its MessageId; one without a MessageId falls back to its body's hash.
* A Datto RMM webhook is its alert and whether the alert was raised or resolved, as the body says
  (see `stated_alert_state`) or, when it says nothing, as the alert re-read from the API is.

An event is remembered only after it was processed: a delivery that failed (we answered 5xx) is
processed again when the sender delivers it again. Two deliveries of one event arriving together
may both be processed; that is harmless, because the handlers are idempotent (the per-alert claim
and the alert's alert_tickets row decide what is done, and it is done once).

`serve` follows `plugins disable` and `plugins enable` while it runs: see `LiveBridge`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from psabridge.core import logs, ticketing
from psabridge.core.bridge import Bridge
from psabridge.core.errors import PsabridgeError
from psabridge.core.models import Alert, PluginState
from psabridge.core.plugins import Connector, connection_for, plugin_settings

log = logs.get_logger(__name__)

MAX_BODY = 64 * 1024


def _json(code: int, **body) -> Response:
    return Response(json.dumps(body), code, content_type="application/json")


class PluginDisabled(PsabridgeError):
    """The PSA or RMM an event is for has been disabled since `serve` started."""

    def __init__(self, plugin: str):
        super().__init__(f"{plugin} is disabled")
        self.plugin = plugin


class LiveBridge:
    """The bridge each event is handled with, as `plugins enable/disable/configure` left it.

    It serves the PSA and RMM of the bridge it starts from. Each event costs one store read, the
    plugins' states: while either plugin is disabled (or removed), asking for the bridge raises
    PluginDisabled; once enabled again, events are handled again. A plugin whose settings were
    changed is connected anew; otherwise its connector is reused, and with it the HTTP client
    and the tokens it holds.
    """

    def __init__(self, bridge: Bridge, transports: Mapping[str, Any] | None = None):
        self._bridge = bridge
        self._transports = transports or {}  # plugin name -> httpx transport, as for open_bridge
        self._lock = threading.Lock()  # waitress handles events on several threads

    def __call__(self) -> Bridge:
        states = {state.name: state for state in self._bridge.store.plugin_states()}
        with self._lock:
            bridge = self._bridge
            psa = self._connector(bridge.psa, states.get(bridge.psa.name))
            rmm = self._connector(bridge.rmm, states.get(bridge.rmm.name))
            if psa is not bridge.psa or rmm is not bridge.rmm:
                self._bridge = Bridge(pm=bridge.pm, store=bridge.store, psa=psa, rmm=rmm)
            return self._bridge

    def _connector(self, connector: Connector, state: PluginState | None) -> Connector:
        if state is None or not state.enabled:
            raise PluginDisabled(connector.name)
        pm, store = self._bridge.pm, self._bridge.store
        # Compared as a connection is built from them: the store keeps secrets sealed.
        if plugin_settings(pm, store, connector.name) == dict(connector.connection.settings):
            return connector
        log.info("plugin settings changed; connecting again", plugin=connector.name)
        return Connector(pm, connection_for(pm, store, connector.name,
                                            self._transports.get(connector.name)))


def stated_alert_state(payload: dict) -> str | None:
    """The alert's state as a Datto RMM webhook body says it: "raised", "resolved" or None.

    Datto's template variables include no such thing (API-NOTES §7), but the raise and the
    resolve can each have their own body, so an admin can write the state into it as a literal:
    `"event": "resolved"` (or `status`, `state`), or `"resolved": true`.
    """
    resolved = str(payload.get("resolved", "")).strip().lower()
    if resolved in ("true", "false"):
        return "resolved" if resolved == "true" else "raised"
    for field in ("event", "status", "state"):
        word = str(payload.get(field, "")).strip().lower()
        if word in ("raised", "resolved"):
            return word
    return None


class WebhookApp:
    """WSGI app: POST /hooks/psa?token=... (ticket callbacks), POST /hooks/rmm?token=... (alerts).

    `bridge_factory` gives the bridge for each event (a LiveBridge in `serve`); when it raises
    PluginDisabled, the event is answered 202 and ignored.
    """

    def __init__(self, bridge_factory: Callable[[], Bridge], secret: str, max_body: int = MAX_BODY):
        if len(secret) < 16:
            raise ValueError("the webhook secret must be at least 16 characters")
        logs.register_secret(secret)
        self.bridge_factory = bridge_factory
        self.secret = secret.encode()
        self.max_body = max_body
        self.urls = Map([
            Rule("/hooks/psa", endpoint="psa", methods=["POST"]),
            Rule("/hooks/rmm", endpoint="rmm", methods=["POST"]),
            Rule("/health", endpoint="health", methods=["GET"]),
        ])

    def __call__(self, environ, start_response):
        request = Request(environ)
        endpoint = None
        try:
            endpoint, _ = self.urls.bind_to_environ(environ).match()
            response = self.dispatch(endpoint, request)
        except HTTPException as exc:
            response = _json(exc.code or 500, error=exc.name)
        except Exception:  # noqa: BLE001 - answered 5xx, so the sender delivers the event again
            log.error("webhook failed; the event is processed when delivered again",
                      endpoint=endpoint, exc_info=True)
            response = _json(500, error="the event could not be processed; deliver it again")
        return response(environ, start_response)

    def dispatch(self, endpoint: str, request: Request) -> Response:
        if endpoint == "health":
            return _json(200, status="ok")
        token = request.args.get("token", "").encode()
        if not hmac.compare_digest(token, self.secret):
            log.warning("webhook refused: bad or missing token", endpoint=endpoint,
                        remote=request.remote_addr)
            return _json(401, error="missing or wrong token")
        if request.content_length is not None and request.content_length > self.max_body:
            return _json(413, error=f"body over {self.max_body} bytes")
        body = request.stream.read(self.max_body + 1)
        if len(body) > self.max_body:
            return _json(413, error=f"body over {self.max_body} bytes")
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except ValueError:
            return _json(400, error="the body is not a JSON object")
        try:
            bridge = self.bridge_factory()
        except PluginDisabled as exc:
            return _json(202, status="ignored", reason=str(exc))
        if endpoint == "psa":
            return self.on_psa_callback(bridge, payload, body)
        return self.on_rmm_webhook(bridge, payload)

    def handle_once(self, bridge: Bridge, event: str, handle: Callable[[], Response]) -> Response:
        """Handle `event` unless it was processed before, and remember it once it is.

        Only a 200 is remembered: after a 202 (nothing done here) or a failure, the same event
        delivered again is looked at again."""
        if bridge.store.message_seen(event):
            return _json(409, error="replayed message")
        response = handle()
        if response.status_code == 200:
            bridge.store.remember_message(event)
        return response

    def on_psa_callback(self, bridge: Bridge, payload: dict, body: bytes) -> Response:
        """ConnectWise: {"MessageId": "...", "Type": "ticket", "Action": "updated", "ID": 123, ...}."""
        if str(payload.get("Type", "")).lower() != "ticket":
            return _json(202, status="ignored", reason="not a ticket")
        ticket_id = str(payload.get("ID", ""))
        if not ticket_id:
            return _json(400, error="no ID in the callback")
        event = f"psa:{payload.get('MessageId') or hashlib.sha256(body).hexdigest()}"
        return self.handle_once(bridge, event, lambda: self.ticket_changed(bridge, ticket_id))

    def ticket_changed(self, bridge: Bridge, ticket_id: str) -> Response:
        ticket = bridge.psa.call("psa_get_ticket", ticket_id=ticket_id)
        if ticket is None:
            return _json(202, status="ignored", reason="ticket not found")
        resolved = ticketing.resolve_for_ticket(bridge, ticket)
        return _json(200, status="ok", alerts_resolved=len(resolved))

    def on_rmm_webhook(self, bridge: Bridge, payload: dict) -> Response:
        """Datto RMM: a webhook body template carrying at least {"alertUid": "[alert_uid]"}."""
        alert_uid = str(payload.get("alertUid") or payload.get("alert_uid") or "")
        if not alert_uid:
            return _json(400, error='no alertUid in the body; use the template {"alertUid": "[alert_uid]"}')
        alert = bridge.rmm.call("rmm_get_alert", alert_uid=alert_uid)
        if alert is None:
            return _json(202, status="ignored", reason="alert not found")
        state = stated_alert_state(payload) or ("resolved" if alert.resolved else "raised")
        return self.handle_once(bridge, f"rmm:{alert_uid}:{state}", lambda: self.alert_changed(bridge, alert))

    def alert_changed(self, bridge: Bridge, alert: Alert) -> Response:
        if alert.resolved:
            row = ticketing.close_for_resolved_alert(bridge, alert.uid)
        else:
            row = ticketing.ticket_for_alert(bridge, alert)
            if row is None:  # its claim is held: a sync pass or another delivery is on it now
                return _json(202, status="in progress", reason="the alert is being handled elsewhere")
        return _json(200, status="ok", state=row.state if row else None,
                     ticket=row.ticket_id if row else None)


def callback_url(public_url: str, secret: str) -> str:
    """The ticket callback URL to register with the PSA. ConnectWise appends the record id to a
    URL ending in `=`, so `recordId=` comes after the token, never the token last."""
    return f"{public_url.rstrip('/')}/hooks/psa?token={secret}&recordId="


def serve(app: WebhookApp, host: str, port: int, threads: int = 4) -> None:
    """Serve with waitress, a production WSGI server (blocks until interrupted)."""
    import waitress

    waitress.serve(app, host=host, port=port, threads=threads, ident="psabridge",
                   max_request_body_size=app.max_body)
