"""Autotask's error answers as typed exceptions.

Autotask answers most failures, validation and business rules included, with HTTP 500 and
``{"errors": ["text", ...]}``; the web framework answers a wrong verb with ``{"Message": ...}``.
So the status alone says little: the words decide whether a 500 is a refusal (fix the data or
the settings), a permission problem, or the thread and hourly limits (wait and try again).
Messages never contain a credential: they are built from Autotask's words and ours, and
redacted on top.
"""

from __future__ import annotations

import re

import httpx

from psabridge.core import logs
from psabridge.core.errors import RemoteError
from psabridge.core.http import remote_text


class AutotaskError(RemoteError):
    """Autotask refused or failed a request."""

    def __init__(self, message: str, *, status: int | None = None, errors: list[str] | None = None):
        super().__init__(logs.redact_text(message))
        self.status = status
        self.errors = list(errors or [])


class Refused(AutotaskError):
    """Autotask refused what was asked (a 400 or 500 naming a validation or business rule);
    sending it again will not help."""


class AuthenticationFailed(AutotaskError):
    """The API user name, secret or tracking identifier was rejected."""


class PermissionDenied(AutotaskError):
    """The API user's security level does not allow the request."""


class NotFound(AutotaskError):
    """404: the record does not exist."""


class RateLimited(AutotaskError):
    """The hourly request threshold or the thread limit, still refusing after every retry."""

    transient = True


class ServerError(AutotaskError):
    """A 5xx that is not a refusal (no `errors` in it), after every retry."""

    transient = True


class ConnectionFailed(AutotaskError):
    """No HTTP answer at all (refused, timed out, dropped) after every retry."""

    transient = True


class TooSlow(ConnectionFailed):
    """An answer that did not finish within the deadline of every attempt."""


class UnexpectedAnswer(AutotaskError):
    """A 2xx whose body is not what the API documents (e.g. not JSON)."""


# Autotask does not document how it refuses a request over the hourly threshold or the thread
# limit (API-NOTES §12): any answer whose words mention them counts, whatever its status.
_THROTTLED = re.compile(r"thread threshold|itgenatr005|request threshold|threshold.*exceeded"
                        r"|rate limit|too many requests", re.IGNORECASE)
_NO_ZONE = re.compile(r"zone information could not be determined", re.IGNORECASE)
_BAD_CODE = re.compile(r"integrationcode is invalid|integration code is invalid", re.IGNORECASE)
_NO_UDF = re.compile(r"unable to find user-defined field", re.IGNORECASE)
_NO_PERMISSION = re.compile(r"adequate permission|not have permission|access denied", re.IGNORECASE)


def error_texts(response: httpx.Response) -> list[str]:
    """The messages of an error answer: `errors[]`, else `Message`, else the start of the text."""
    try:
        body = response.json()
    except ValueError:
        text = remote_text(response.text)
        return [text] if text else []
    if isinstance(body, dict):
        errors = body.get("errors") or body.get("Errors")
        if isinstance(errors, list):
            return [remote_text(e.get("message", e) if isinstance(e, dict) else e) for e in errors]
        message = body.get("Message") or body.get("message")
        if message:
            return [remote_text(message)]
    return []


def is_throttled(response: httpx.Response) -> bool:
    """True for a refusal by the hourly threshold or the thread limit (429, or words saying so)."""
    if response.status_code == 429:
        return True
    if response.status_code < 400:
        return False
    return any(_THROTTLED.search(text) for text in error_texts(response))


def error_for(response: httpx.Response, what: str) -> AutotaskError:
    """The typed exception for an error `response` to the request described by `what`."""
    status = response.status_code
    texts = error_texts(response)
    said = "; ".join(t for t in texts if t)
    text = f"Autotask answered {status} to {what}" + (f": {said.rstrip('.')}" if said else "")
    kind: type[AutotaskError]
    if any(_NO_ZONE.search(t) for t in texts):
        # Zone discovery asks by user name alone: an unknown user fails here, before any secret.
        kind = AuthenticationFailed
        text += (". Autotask does not know this API user: check the username setting (the API-only "
                 "user's user name, e.g. name@example.com)")
    elif status == 401:
        kind = AuthenticationFailed
        text += (". Autotask did not accept the API user: check the username and secret settings "
                 "(an API-only user's user name and secret), and that the user is active")
    elif any(_BAD_CODE.search(t) for t in texts):
        kind = AuthenticationFailed
        text += (". Check the integration_code setting: the tracking identifier of the API user's "
                 "custom integration (Admin > Resources > the API user > Security)")
    elif any(_NO_UDF.search(t) for t in texts):
        error = Refused(text + ". Check the device_link_field setting: it names a user-defined "
                        "field Autotask does not have (create it as a text field of configuration "
                        "items, or set device_link_field to referenceNumber)",
                        status=status, errors=texts)
        error.setting = "device_link_field"
        return error
    elif status == 403 or any(_NO_PERMISSION.search(t) for t in texts):
        kind = PermissionDenied
        text += (". The API user's security level does not allow this: give it the API User "
                 "(API-only) level (see docs/connectors/autotask.md)")
    elif is_throttled(response):
        kind = RateLimited
        text += (". Autotask's request limits are in use by this and other integrations; "
                 "psabridge tries again on its next pass")
    elif status == 404:
        kind = NotFound
    elif status in (400, 405, 409) or (status == 500 and texts and _is_json(response)):
        kind = Refused
    elif status >= 500:
        kind = ServerError
    else:
        kind = AutotaskError
    return kind(text, status=status, errors=texts)


def _is_json(response: httpx.Response) -> bool:
    try:
        response.json()
    except ValueError:
        return False
    return True
