"""The push side of the round trip (`psabridge serve`): PSA ticket callbacks and RMM alert
webhooks, received over HTTP and handed to the same functions as polling.

A callback is only a hint: its body says which record changed, and the handler re-reads that
record through the connector before acting. So a forged or stale body can at worst make us look
at a record, and the webhook and the polling path, seeing the same event, do the same thing once.

Authentication is a shared secret, compared in constant time, that a sender presents in a header
(`Authorization: Bearer SECRET` or `X-Psabridge-Token: SECRET`) where it can set one, or else in
the URL's `token` query parameter. A header keeps the secret out of proxy access logs, which
record URLs; but a ConnectWise callback is only a URL (CW sets no header of ours), and whether a
Datto RMM webhook may carry custom headers is not established (API-NOTES §7), so the query token
stays. In a URL it is percent-encoded (`callback_url`) and compared decoded, and every form of it
is known to the log redaction.

Neither sender signs with a secret of ours. ConnectWise does sign its callbacks
(`x-content-signature`: base64 HMAC-SHA256 of the body, keyed with the SHA-256 of a signing key
that must be fetched, per callback, from a `key_url` named inside the body), but checking that
takes an authenticated API call to a URL the body itself gives, and the simulator does not sign;
it is not checked here. Datto RMM webhooks carry no signature at all (API-NOTES §7).

Bodies are bounded in size and in nesting depth, and each must have its sender's shape (a
ticket callback's `Type` and a positive `ID`; an alert webhook's `alertUid`, a short identifier):
anything else is answered 400 with the reason, before anything is looked up or changed.

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
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

import attrs
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from psabridge.core import logs, ticketing
from psabridge.core.bridge import Bridge, LiveBridge, PluginDisabled  # noqa: F401 - serve's
from psabridge.core.errors import PsabridgeError
from psabridge.core.models import Alert

log = logs.get_logger(__name__)

MAX_BODY = 64 * 1024
# Both senders' bodies are flat: a ConnectWise callback nests one object (`Metadata`; its `Entity`
# is a string), a Datto RMM template what the admin writes. json.loads recurses once per level,
# so a 30,000-deep body would exhaust the stack: the depth is checked before parsing.
MAX_DEPTH = 32
# A Datto alert uid and a ConnectWise message id are GUIDs (36 characters).
MAX_IDENTIFIER = 128
TOKEN_HEADER = "X-Psabridge-Token"
MIN_SECRET_LENGTH = 16


def _json(code: int, **body) -> Response:
    return Response(json.dumps(body), code, content_type="application/json")


class BadSecret(PsabridgeError, ValueError):
    """The webhook secret is too short, or has characters a URL or a header would change."""


class InvalidEvent(ValueError):
    """A body that is not what its sender sends; the message says why (answered 400)."""


# -- what a request presents, and what its body says -------------------------------------------

_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


def nests_deeper_than(body: bytes, limit: int) -> bool:
    """Whether the JSON text `body` nests arrays and objects more than `limit` levels deep.

    Counts brackets outside strings, in one pass that stops at the first level too deep. An
    unterminated string runs to the end of the body (json.loads refuses it afterwards), so no
    input makes the scan start over: it stays linear."""
    depth = 0
    for token in _JSON_TOKEN.finditer(body):
        text = token.group()
        if text in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif text in (b"]", b"}"):
            depth -= 1
    return False


def parse_body(body: bytes) -> dict:
    """The body as a JSON object; InvalidEvent says why it is not one."""
    if nests_deeper_than(body, MAX_DEPTH):
        raise InvalidEvent(f"the body nests deeper than {MAX_DEPTH} levels")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError and too-long integers included
        raise InvalidEvent("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise InvalidEvent("the body is not a JSON object")
    return payload


_NOT_IN_IDENTIFIERS = re.compile(r"[\s/\\?#%]")


def identifier(value: Any, name: str) -> str:
    """`value` as an identifier the handlers can put in an API path: a non-empty string of at
    most MAX_IDENTIFIER printable characters, none of them a space or one of `/ \\ ? # %` (which
    would change what the API path means)."""
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{name} must be a non-empty string")
    if len(value) > MAX_IDENTIFIER:
        raise InvalidEvent(f"{name} is longer than {MAX_IDENTIFIER} characters")
    if not value.isprintable() or _NOT_IN_IDENTIFIERS.search(value):
        raise InvalidEvent(f"{name} must not contain control characters, spaces, or / \\ ? # %")
    return value


_DIGITS = re.compile(r"[0-9]{1,19}")


def positive_id(value: Any, name: str) -> str:
    """A record id as a PSA sends it, a positive integer or a string of digits, as a string."""
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return str(value)
    raise InvalidEvent(f"{name} must be a positive integer (or a string of digits)")


@attrs.frozen
class TicketCallback:
    """What a PSA ticket callback says: which ticket changed, and which event this delivery is
    (its MessageId, or for a callback without one, its body)."""

    ticket_id: str
    event: str

    @classmethod
    def from_payload(cls, payload: dict, body: bytes) -> TicketCallback | None:
        """The callback in `payload`, None when it is not about a ticket; InvalidEvent when it
        is not shaped as ConnectWise sends it:
        {"MessageId": "...", "Type": "ticket", "Action": "updated", "ID": 123, ...}."""
        kind = payload.get("Type")
        if not isinstance(kind, str):
            raise InvalidEvent('Type must be a string, e.g. "ticket"')
        if kind.lower() != "ticket":
            return None
        ticket_id = positive_id(payload.get("ID"), "ID")
        message_id = payload.get("MessageId")
        if message_id in (None, ""):
            return cls(ticket_id, f"psa:{hashlib.sha256(body).hexdigest()}")
        return cls(ticket_id, f"psa:{identifier(message_id, 'MessageId')}")


@attrs.frozen
class AlertWebhook:
    """What an RMM alert webhook says: the alert, and whether it was raised or resolved if the
    body says so (see `stated_alert_state`)."""

    alert_uid: str
    stated_state: str | None

    @classmethod
    def from_payload(cls, payload: dict) -> AlertWebhook:
        """The webhook in `payload`, a body template carrying at least
        {"alertUid": "[alert_uid]"}; InvalidEvent when it does not."""
        uid = payload.get("alertUid", payload.get("alert_uid"))
        if uid is None or uid == "":
            raise InvalidEvent('no alertUid in the body; use the template {"alertUid": "[alert_uid]"}')
        return cls(identifier(uid, "alertUid"), stated_alert_state(payload))


def presented_tokens(request: Request) -> list[tuple[str, ...]]:
    """Every token the request presents, each with the ways it may be read: `Authorization:
    Bearer`, `X-Psabridge-Token`, and the `token` query parameter, percent-decoded (as
    `callback_url` encodes it) and as written (a secret holding a `%`, typed into a URL by
    hand). A `+` stays a `+`: a secret has no spaces for it to stand for, and a base64 secret
    typed by hand is full of them."""
    tokens: list[tuple[str, ...]] = []
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        tokens.append((credentials.strip(),))
    if header := request.headers.get(TOKEN_HEADER, "").strip():
        tokens.append((header,))
    query = request.environ.get("QUERY_STRING", "")
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if unquote(name) == "token" and value:
            tokens.append((unquote(value), value))
    return tokens


def check_secret(secret: str) -> None:
    """Refuse a webhook secret that is short or that a URL or a header would change."""
    if len(secret) < MIN_SECRET_LENGTH:
        raise BadSecret(f"the webhook secret must be at least {MIN_SECRET_LENGTH} characters; "
                        "make one with: openssl rand -hex 32")
    if not (secret.isascii() and secret.isprintable()) or any(c.isspace() for c in secret):
        raise BadSecret("the webhook secret must be printable ASCII without spaces, as it travels "
                        "in URLs and headers; make one with: openssl rand -hex 32")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


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
    """WSGI app: POST /hooks/psa (ticket callbacks), POST /hooks/rmm (alert webhooks), GET /health.

    `bridge_factory` gives the bridge for each event (a LiveBridge in `serve`); when it raises
    PluginDisabled, the event is answered 202 and ignored.
    """

    def __init__(self, bridge_factory: Callable[[], Bridge], secret: str, max_body: int = MAX_BODY):
        check_secret(secret)
        logs.register_secret(secret)  # with its percent-encoded and base64 forms
        self.bridge_factory = bridge_factory
        self._secret_digest = _digest(secret)
        self.max_body = max_body
        self.urls = Map([
            Rule("/hooks/psa", endpoint="psa", methods=["POST"]),
            Rule("/hooks/rmm", endpoint="rmm", methods=["POST"]),
            Rule("/health", endpoint="health", methods=["GET"]),
        ])

    def __call__(self, environ, start_response):
        endpoint = None
        try:
            request = Request(environ)
            endpoint, _ = self.urls.bind_to_environ(environ).match()
            response = self.dispatch(endpoint, request)
        except HTTPException as exc:
            response = _json(exc.code or 500, error=exc.name)
        except Exception:  # noqa: BLE001 - answered 5xx, so the sender delivers the event again
            log.error("webhook failed; the event is processed when delivered again",
                      endpoint=endpoint, exc_info=True)
            response = _json(500, error="the event could not be processed; deliver it again")
        return response(environ, start_response)

    def authenticated(self, request: Request) -> bool:
        """Whether the one token the request presents is the secret. A request presenting several
        is refused: it could otherwise try a thousand guesses at once. Digests of equal length
        are compared, each in constant time, and every form is compared: the time taken tells
        neither which form came close nor the secret's length."""
        presented = presented_tokens(request)
        matches = [hmac.compare_digest(_digest(form), self._secret_digest)
                   for forms in presented for form in forms]
        return len(presented) == 1 and any(matches)

    def dispatch(self, endpoint: str, request: Request) -> Response:
        if endpoint == "health":
            return _json(200, status="ok")
        if not self.authenticated(request):
            log.warning("webhook refused: bad or missing token", endpoint=endpoint,
                        remote=request.remote_addr)
            return _json(401, error="missing or wrong token")
        if request.content_length is not None and request.content_length > self.max_body:
            return _json(413, error=f"body over {self.max_body} bytes")
        body = request.stream.read(self.max_body + 1)
        if len(body) > self.max_body:
            return _json(413, error=f"body over {self.max_body} bytes")
        try:
            payload = parse_body(body)
            event = (TicketCallback.from_payload(payload, body) if endpoint == "psa"
                     else AlertWebhook.from_payload(payload))
        except InvalidEvent as exc:
            log.warning("webhook refused: not the body its sender sends", endpoint=endpoint,
                        reason=str(exc))
            return _json(400, error=str(exc))
        if event is None:
            return _json(202, status="ignored", reason="not a ticket")
        try:
            bridge = self.bridge_factory()
        except PluginDisabled as exc:
            return _json(202, status="ignored", reason=str(exc))
        if isinstance(event, TicketCallback):
            response = self.handle_once(bridge, event.event,
                                        lambda: self.ticket_changed(bridge, event.ticket_id))
        else:
            response = self.on_alert_webhook(bridge, event)
        log.info("webhook_handled", endpoint=endpoint, status=response.status_code)
        return response

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

    def ticket_changed(self, bridge: Bridge, ticket_id: str) -> Response:
        ticket = bridge.psa.call("psa_get_ticket", ticket_id=ticket_id)
        if ticket is None:
            return _json(202, status="ignored", reason="ticket not found")
        resolved = ticketing.resolve_for_ticket(bridge, ticket)
        return _json(200, status="ok", alerts_resolved=len(resolved))

    def on_alert_webhook(self, bridge: Bridge, webhook: AlertWebhook) -> Response:
        alert = bridge.rmm.call("rmm_get_alert", alert_uid=webhook.alert_uid)
        if alert is None:
            return _json(202, status="ignored", reason="alert not found")
        state = webhook.stated_state or ("resolved" if alert.resolved else "raised")
        return self.handle_once(bridge, f"rmm:{webhook.alert_uid}:{state}",
                                lambda: self.alert_changed(bridge, alert))

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
    """The ticket callback URL to register with the PSA.

    The token is percent-encoded: written as it is, a `+` in it would be read back as a space and
    an `&` as the end of the token. ConnectWise appends the record id to a URL ending in `=`, so
    `recordId=` comes after the token, never the token last."""
    return f"{public_url.rstrip('/')}/hooks/psa?token={quote(secret, safe='')}&recordId="


def listen(app: WebhookApp, host: str, port: int, threads: int = 4):
    """A waitress server (a production WSGI server) bound to `host`:`port`; `.run()` serves
    until interrupted. Binding here, before anything says "listening", turns a taken port or a
    bad address into one clear error.

    waitress writes no access log, and its own messages name a request by its path, never its
    query string, so a token in the URL stays out of them; an error's traceback goes to our log
    (redacted), never to the client."""
    import waitress.server

    try:
        return waitress.server.create_server(
            app, host=host, port=port, threads=threads, ident="psabridge",
            max_request_body_size=app.max_body, expose_tracebacks=False)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PsabridgeError(f"cannot listen on {host}:{port}: {reason.rstrip('.').lower()}; "
                             "choose another --port or --host") from None
