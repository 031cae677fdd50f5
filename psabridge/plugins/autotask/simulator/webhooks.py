"""Webhook callouts (API-NOTES §7): what a TicketWebhook sends when a ticket changes.

A change to a ticket queues one event per ready, active webhook subscribed to it (not for the
resources it excludes, and not twice to the same URL). Each webhook's events are delivered in
order, one at a time: a 2xx ends an event; a failure (an error status, no answer within the
timeout) is retried after the retry interval, at most `attempts` times, then the event is
dropped and logged in WebhookEventErrorLogs. After `failures_to_disable` dropped events in a row
the webhook is deactivated and its deactivation URL is called.

Bodies are signed as Autotask signs them: `X-Hook-Signature: sha1=<base64 HMAC-SHA1(secretKey,
body)>`, over a serialisation in which `& < > ' " \\ +` and every non-ASCII character inside
strings are `\\uXXXX` escapes; the body sent is that serialisation, so a receiver verifying the
raw bytes and one re-escaping them (as n8n does) both agree.

`deliver_pending()` makes every attempt that is due and returns; a background thread
(`start()`) calls it in a loop for a served simulator. With the simulator's clock a test decides
when retries fall due.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import httpx

from psabridge.plugins.autotask.simulator.data import now_text, webhook_field_ids

if TYPE_CHECKING:
    from psabridge.plugins.autotask.simulator.app import Options
    from psabridge.plugins.autotask.simulator.data import Database

_ESCAPED = set("&<>'\"\\+")
_SHORT = {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _string(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _SHORT:
            out.append(_SHORT[char])
        elif char in _ESCAPED or code < 0x20 or code > 0x7E:
            if code > 0xFFFF:  # outside the BMP: a surrogate pair, as JSON writes it
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
            else:
                out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def escaped_json(value: Any) -> str:
    """`value` as compact JSON with strings escaped the way Autotask signs them."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{_string(str(k))}:{escaped_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(escaped_json(v) for v in value) + "]"
    if isinstance(value, str):
        return _string(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def signature(secret_key: str, body: bytes) -> str:
    digest = hmac.new(secret_key.encode(), body, hashlib.sha1).digest()
    return "sha1=" + base64.b64encode(digest).decode()


def wire_key(field: str) -> str:
    """A field's key in a payload's `Fields`: "ticketNumber" -> "TicketNumber"."""
    return field[:1].upper() + field[1:]


@attrs.define
class Event:
    webhook_id: int
    sequence_number: int
    body: bytes
    due: float
    attempts: int = 0
    last_error: str = ""


@attrs.define
class Attempt:
    """One POST made (for tests and `psabridge simulate autotask`'s output)."""

    webhook_id: int
    url: str
    body: bytes
    headers: dict[str, str]
    status: int | None  # None: no answer
    error: str = ""


class Deliverer:
    def __init__(self, db: Database, options: Options, clock: Callable[[], float],
                 transport: httpx.BaseTransport | None = None):
        self.db, self.options, self.clock = db, options, clock
        self.transport = transport
        self.queues: dict[int, collections.deque[Event]] = collections.defaultdict(collections.deque)
        self.sequence: collections.Counter[int] = collections.Counter()
        self.failed_in_a_row: collections.Counter[int] = collections.Counter()
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()  # the queues
        self._delivering = threading.Lock()  # one deliver_pending at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    # -- events ---------------------------------------------------------------------------------

    def ticket_changed(self, action: str, before: dict | None, after: dict, person_id: int | None) -> int:
        """Queue the callouts a ticket change fires; how many were queued."""
        changed = {name for name, value in after.items() if before is None or before.get(name) != value}
        names = webhook_field_ids()
        queued, urls = 0, set()
        for webhook in sorted(self.db.table("TicketWebhooks").values(), key=lambda w: w["id"]):
            if not (webhook["isActive"] and webhook["isReady"]):
                continue
            if not webhook[f"isSubscribedTo{action}Events"]:
                continue
            fields = self.db.by("TicketWebhookFields", webhookID=webhook["id"])
            subscribed = {names.get(f["fieldID"]) for f in fields if f["isSubscribedField"]}
            always = {names.get(f["fieldID"]) for f in fields if f["isDisplayAlwaysField"]}
            if action == "Update" and not subscribed & changed:
                continue
            excluded = {r["resourceID"] for r in self.db.by("TicketWebhookExcludedResources",
                                                             webhookID=webhook["id"])}
            if person_id in excluded or webhook["webhookUrl"] in urls:
                continue
            urls.add(webhook["webhookUrl"])
            shown = (subscribed & changed if action == "Update" else subscribed) | always
            self.sequence[webhook["id"]] += 1
            payload = {"Action": action, "Guid": webhook["webhookGUID"], "EntityType": "Ticket",
                       "Id": after["id"],
                       "Fields": {wire_key(n): after.get(n) for n in sorted(shown - {None})},
                       "EventTime": now_text(self.clock())[:19] + "Z",
                       "SequenceNumber": self.sequence[webhook["id"]], "PersonID": person_id}
            with self._lock:
                self.queues[webhook["id"]].append(Event(webhook["id"], self.sequence[webhook["id"]],
                                                        escaped_json(payload).encode(), self.clock()))
            queued += 1
        if queued:
            self._wake.set()
        return queued

    def pending(self) -> int:
        with self._lock:
            return sum(len(q) for q in self.queues.values())

    # -- delivery -------------------------------------------------------------------------------

    def deliver_pending(self) -> int:
        """Make every attempt that is due now (each webhook's first queued event); how many."""
        made = 0
        with self._delivering:
            while True:
                with self._lock:
                    now = self.clock()
                    due = [q[0] for q in self.queues.values() if q and q[0].due <= now]
                if not due:
                    return made
                for event in due:
                    self._attempt(event)
                    made += 1

    def _post(self, webhook_id: int, url: str, secret: str, body: bytes) -> tuple[int | None, str]:
        headers = {"Content-Type": "application/json", "X-Hook-Signature": signature(secret, body)}
        try:
            with httpx.Client(transport=self.transport, timeout=self.options.webhook_timeout) as client:
                response = client.post(url, content=body, headers=headers)
            status, error = response.status_code, ("" if 200 <= response.status_code < 300
                                                   else f"HTTP {response.status_code}")
        except httpx.TimeoutException:
            status, error = None, f"no answer within {self.options.webhook_timeout:g} s"
        except httpx.HTTPError as exc:
            status, error = None, f"{type(exc).__name__}: {exc}"
        self.attempts.append(Attempt(webhook_id, url, body, headers, status, error))
        return status, error

    def _attempt(self, event: Event) -> None:
        webhook = self.db.get("TicketWebhooks", event.webhook_id)
        if webhook is None or not webhook["isActive"]:
            self._drop(event)
            return
        status, error = self._post(event.webhook_id, webhook["webhookUrl"], webhook["secretKey"], event.body)
        event.attempts += 1
        if not error:
            self.failed_in_a_row[event.webhook_id] = 0
            self._drop(event)
            return
        event.last_error = error
        if event.attempts < self.options.webhook_attempts:
            event.due = self.clock() + self.options.webhook_retry_interval
            return
        self._drop(event)
        with self.db.lock:
            self.db.insert("WebhookEventErrorLogs", {
                "errorMessage": f"Delivery to {webhook['webhookUrl']} failed {event.attempts} times: {error}",
                "payload": event.body.decode(), "sequenceNumber": event.sequence_number,
                "createDateTime": now_text(self.clock())})
        self.failed_in_a_row[event.webhook_id] += 1
        if self.failed_in_a_row[event.webhook_id] >= self.options.webhook_failures_to_disable:
            with self.db.lock:
                webhook["isActive"] = False
            self.deactivated(webhook)

    def _drop(self, event: Event) -> None:
        with self._lock:
            queue = self.queues.get(event.webhook_id)
            if queue and queue[0] is event:
                queue.popleft()

    def deactivated(self, webhook: dict) -> None:
        """Tell the webhook's deactivation URL (once, no retries) and forget its queued events."""
        with self._lock:
            self.queues.pop(webhook["id"], None)
        if not webhook.get("deactivationUrl"):
            return
        payload = {"Action": "Deactivated", "Guid": webhook["webhookGUID"], "EntityType": "Ticket",
                   "Id": webhook["id"], "EventTime": now_text(self.clock())[:19] + "Z"}
        self._post(webhook["id"], webhook["deactivationUrl"], webhook["secretKey"],
                   escaped_json(payload).encode())

    # -- background thread ---------------------------------------------------------------------

    def start(self, interval: float = 0.05) -> None:
        if self._thread is not None:
            return
        self._stop.clear()

        def run() -> None:
            while not self._stop.is_set():
                self.deliver_pending()
                self._wake.wait(interval)
                self._wake.clear()

        self._thread = threading.Thread(target=run, daemon=True, name="autotask-webhooks")
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=15)
        self._thread = None


def new_guid() -> str:
    return str(uuid.uuid4())
