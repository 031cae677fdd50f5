"""The push side of the round trip (`psabridge serve`): PSA ticket callbacks and RMM alert
webhooks, received over HTTP and handed to the same functions as polling.

Core holds no sender's wire format: the enabled connector reads its own product's body (and
checks its signature, where the product signs) with `psa_parse_ticket_callback` or
`rmm_parse_alert_webhook`. What is kept here is what every sender shares: the secret check,
the bounds on size and nesting, refusing replays, and handing the event on.

A callback is only a hint: its body says which record changed, and the handler re-reads that
record through the connector before acting. So a forged or stale body can at worst make us look
at a record, and the webhook and the polling path, seeing the same event, do the same thing once.

Authentication is a shared secret, compared in constant time, that a sender presents in a header
(`Authorization: Bearer SECRET` or `X-Psabridge-Token: SECRET`) where it can set one, or else in
the URL's `token` query parameter. A header keeps the secret out of proxy access logs, which
record URLs; but some senders can only be given a URL (a PSA callback sets no header of ours),
so the query token stays. In a URL it is percent-encoded (`callback_url`) and compared decoded,
and every form of it is known to the log redaction. A PSA that signs its callbacks with a
secret it is given gets `signing_secret(secret)` at registration, and its connector checks the
signature with it.

Bodies are bounded in size and in nesting depth before the connector reads them; a body the
connector refuses (`InvalidCallback`) is answered 400 with the reason, before anything is looked
up or changed.

An event processed before is refused as a replay (409). What makes two deliveries the same event
is the event's identity, never the body's bytes: the connector gives it (`event_id`, e.g. a
message id), else a ticket callback is its body's hash, and an alert webhook is its alert and
whether the alert was raised or resolved, as the body says or, when it says nothing, as the
alert re-read from the API is (a raise and a resolve may have byte-identical bodies).

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
import math
import re
from collections.abc import Callable
from urllib.parse import quote, unquote

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from psabridge.core import coordination, logs, ticketing
from psabridge.core.bridge import Bridge, LiveBridge, PluginDisabled  # noqa: F401 - serve's
from psabridge.core.errors import InvalidCallback, PsabridgeError
from psabridge.core.models import Alert, AlertWebhook, TicketCallback

log = logs.get_logger(__name__)

MAX_BODY = 64 * 1024
# Callback bodies are flat, nesting an object or two. json.loads recurses once per level, so a
# 30,000-deep body would exhaust the stack: the depth is checked before any connector parses.
MAX_DEPTH = 32
TOKEN_HEADER = "X-Psabridge-Token"
MIN_SECRET_LENGTH = 16


def _json(code: int, **body) -> Response:
    return Response(json.dumps(body), code, content_type="application/json")


class BadSecret(PsabridgeError, ValueError):
    """The webhook secret is too short, or has characters a URL or a header would change."""


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


def check_bounds(body: bytes) -> None:
    """Refuse a body nesting deeper than MAX_DEPTH before any parser recurses into it."""
    if nests_deeper_than(body, MAX_DEPTH):
        raise InvalidCallback(f"the body nests deeper than {MAX_DEPTH} levels")


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


def signing_secret(secret: str) -> str:
    """The secret a PSA that signs its callbacks is given at registration (64 hex characters),
    derived from the webhook secret so that it is the same in every `serve` replica and after a
    restart, and so that the webhook secret itself never reaches the PSA's signing settings."""
    return hmac.new(secret.encode(), b"psabridge ticket callback signing", hashlib.sha256).hexdigest()


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
        self._signing_secret = signing_secret(secret)
        logs.register_secret(self._signing_secret)
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
            check_bounds(body)  # core's own bound, before anything is read for the event
        except InvalidCallback as exc:
            return _json(400, error=exc.reason)
        try:
            bridge = self.bridge_factory()
        except PluginDisabled as exc:
            return _json(202, status="ignored", reason=str(exc))
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            event = self.parse(bridge, endpoint, headers, body)
        except InvalidCallback as exc:
            log.warning("webhook refused: not the body its sender sends", endpoint=endpoint,
                        reason=exc.reason)
            return _json(400, error=exc.reason)
        if event is None:
            return _json(202, status="ignored",
                         reason="not about a ticket" if endpoint == "psa" else "not about an alert")
        try:
            if isinstance(event, TicketCallback):
                key = f"psa:{event.event_id or hashlib.sha256(body).hexdigest()}"
                response = self.handle_once(bridge, key,
                                            lambda: self.ticket_changed(bridge, event.ticket_id))
            else:
                response = self.on_alert_webhook(bridge, event)
        except PsabridgeError as exc:
            # A remote system or the store failed, not this request: its sender delivers it
            # again (nothing was remembered), and is told why. 503 when the failure is passing.
            reason = logs.redact_text(str(exc))
            log.warning("webhook not processed; its sender delivers it again", endpoint=endpoint,
                        error=reason)
            status = 503 if getattr(exc, "transient", False) else 502
            return _json(status, error=f"{reason}; deliver it again")
        log.info("webhook_handled", endpoint=endpoint, status=response.status_code)
        return response

    def parse(self, bridge: Bridge, endpoint: str, headers: dict[str, str],
              body: bytes) -> TicketCallback | AlertWebhook | None:
        """What the body says, as the enabled connector reads its own product's format."""
        connector = bridge.psa if endpoint == "psa" else bridge.rmm
        hook = "psa_parse_ticket_callback" if endpoint == "psa" else "rmm_parse_alert_webhook"
        if not connector.supports(hook):
            raise InvalidCallback(f"the {connector.name} connector cannot read callbacks "
                                  f"(it has no {hook})")
        if endpoint == "psa":
            return bridge.psa.parse_ticket_callback(headers, body, self._signing_secret)
        return bridge.rmm.parse_alert_webhook(headers, body)

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
        ticket = bridge.psa.get_ticket(ticket_id=ticket_id)
        if ticket is None:
            return _json(202, status="ignored", reason="ticket not found")
        resolved = ticketing.resolve_for_ticket(bridge, ticket)
        return _json(200, status="ok", alerts_resolved=len(resolved))

    def on_alert_webhook(self, bridge: Bridge, webhook: AlertWebhook) -> Response:
        alert = bridge.rmm.get_alert(alert_uid=webhook.alert_uid)
        if alert is None:
            return _json(202, status="ignored", reason="alert not found")
        state = webhook.state or ("resolved" if alert.resolved else "raised")
        event = webhook.event_id or f"{webhook.alert_uid}:{state}"
        return self.handle_once(bridge, f"rmm:{event}",
                                lambda: self.alert_changed(bridge, alert))

    def alert_changed(self, bridge: Bridge, alert: Alert) -> Response:
        if alert.resolved:
            row = ticketing.close_for_resolved_alert(bridge, alert.uid)
        else:
            row = ticketing.ticket_for_alert(bridge, alert)
        if row is None and (busy := self.alert_busy(bridge, alert)) is not None:
            return busy
        return _json(200, status="ok", state=row.state if row else None,
                     ticket=row.ticket_id if row else None)

    def alert_busy(self, bridge: Bridge, alert: Alert) -> Response | None:
        """The answer when the alert's claim was not ours to take, or None when it is free."""
        holder = ticketing.claim_holder(bridge, alert.uid)
        if (wait := coordination.waiting_out(holder)) is not None:
            # Nobody is on it: a write for it got no answer and is waited out before its
            # ticket is looked for. A 2xx would end the sender's deliveries: ask for one later.
            seconds = max(1, math.ceil(wait))
            response = _json(503, error=f"a write for this alert got no answer; it is settled in "
                                        f"{seconds} s: deliver it again then")
            response.headers["Retry-After"] = str(seconds)
            return response
        if alert.resolved and holder is None:
            return None  # no ticket to close: nothing was claimed
        # A sync pass or another delivery is on it now.
        return _json(202, status="in progress", reason="the alert is being handled elsewhere")


def callback_url(public_url: str, secret: str) -> str:
    """The ticket callback URL to register with the PSA (its connector may add to it).

    The token is percent-encoded: written as it is, a `+` in it would be read back as a space and
    an `&` as the end of the token."""
    return f"{public_url.rstrip('/')}/hooks/psa?token={quote(secret, safe='')}"


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
