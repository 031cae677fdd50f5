"""The push side of the round trip (`psabridge serve`): PSA ticket callbacks and RMM alert
webhooks, received over HTTP and handed to the same functions as polling.

A callback is only a hint: its body says which record changed, and the handler re-reads that
record through the connector before acting. So a forged or stale body can at worst make us look
at a record, and the webhook and the polling path, seeing the same event, do the same thing once.

Authentication is a shared secret in the URL's `token` query parameter, compared in constant
time: ConnectWise lets the callback URL carry it, and Datto RMM webhooks have no signature of
their own (API-NOTES: not established). Bodies are bounded, and a body seen before (by
ConnectWise's MessageId, or by its hash) is refused as a replay.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from psabridge.core import logs, ticketing
from psabridge.core.bridge import Bridge

log = logs.get_logger(__name__)

MAX_BODY = 64 * 1024


def _json(code: int, **body) -> Response:
    return Response(json.dumps(body), code, content_type="application/json")


class WebhookApp:
    """WSGI app: POST /hooks/psa?token=... (ticket callbacks), POST /hooks/rmm?token=... (alerts)."""

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
        try:
            endpoint, _ = self.urls.bind_to_environ(environ).match()
            response = self.dispatch(endpoint, request)
        except HTTPException as exc:
            response = _json(exc.code or 500, error=exc.name)
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
        bridge = self.bridge_factory()
        message_id = str(payload.get("MessageId") or hashlib.sha256(body).hexdigest())
        if not bridge.store.remember_message(f"{endpoint}:{message_id}"):
            return _json(409, error="replayed message")
        handler = self.on_psa_callback if endpoint == "psa" else self.on_rmm_webhook
        return handler(bridge, payload)

    def on_psa_callback(self, bridge: Bridge, payload: dict) -> Response:
        """ConnectWise: {"Type": "ticket", "Action": "updated", "ID": 123, ...}."""
        if str(payload.get("Type", "")).lower() != "ticket":
            return _json(202, status="ignored", reason="not a ticket")
        ticket_id = str(payload.get("ID", ""))
        if not ticket_id:
            return _json(400, error="no ID in the callback")
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
        if alert.resolved:
            row = ticketing.close_for_resolved_alert(bridge, alert.uid)
        else:
            row = ticketing.ticket_for_alert(bridge, alert)
        return _json(200, status="ok", state=row.state if row else "in progress",
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
