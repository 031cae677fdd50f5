"""ConnectWise's error answers as typed exceptions.

CW answers errors with ``{"code", "message", "errors": [{code, message, resource, field}]}``;
a 429 uses ``{"error", "message"}`` instead. Each exception keeps those parts so callers can
decide on the code (e.g. ``ObjectExists``) instead of parsing text. Messages never contain a
credential: they are built from CW's answer and our own words only, and redacted on top.
"""

from __future__ import annotations

from typing import Any

import httpx

from psabridge.core import logs
from psabridge.core.errors import RemoteError
from psabridge.core.http import remote_text


class ConnectWiseError(RemoteError):
    """ConnectWise refused or failed a request."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 cw_message: str | None = None, errors: list[dict[str, Any]] | None = None):
        super().__init__(logs.redact_text(message))
        self.status = status
        self.code = code
        self.cw_message = cw_message
        self.errors = list(errors or [])

    def has_error_code(self, code: str) -> bool:
        """True when one of CW's validation errors carries `code` (e.g. "ObjectExists")."""
        return any(e.get("code") == code for e in self.errors)


class BadRequest(ConnectWiseError):
    """400: the request is malformed or the object invalid; retrying will not help."""


class AuthenticationFailed(ConnectWiseError):
    """401: company id, public key or private key rejected."""


class PermissionDenied(ConnectWiseError):
    """403: the API member's security role lacks a permission."""


class NotFound(ConnectWiseError):
    """404: the record (or the endpoint, with a wrong codebase) does not exist."""


class Conflict(ConnectWiseError):
    """409: the record is in use."""


class RateLimited(ConnectWiseError):
    """429 after every retry: ConnectWise keeps throttling."""

    transient = True


class ServerError(ConnectWiseError):
    """5xx after every retry."""

    transient = True


class ConnectionFailed(ConnectWiseError):
    """No HTTP answer at all (refused, timed out, dropped) after every retry."""

    transient = True


class TooSlow(ConnectionFailed):
    """An answer that did not finish within the deadline of every attempt (a trickling server,
    or something on the way holding the connection open)."""


class UnexpectedAnswer(ConnectWiseError):
    """A 2xx whose body is not what the API documents (e.g. not JSON)."""


_BY_STATUS: dict[int, type[ConnectWiseError]] = {
    400: BadRequest, 401: AuthenticationFailed, 403: PermissionDenied, 404: NotFound,
    409: Conflict, 429: RateLimited,
}


def _body(response: httpx.Response) -> dict[str, Any]:
    """CW's error body; the start of the text when it is not JSON (an HTML page from a proxy)."""
    try:
        body = response.json()
    except ValueError:
        return {"message": response.text}
    return body if isinstance(body, dict) else {}


def _text(value: Any) -> str | None:
    """A string part of CW's answer made safe to quote (see `remote_text`); None when empty."""
    return None if value is None else remote_text(value) or None


def _validation_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    """`errors[]`, keeping only what is shaped like CW's ValidationError objects."""
    errors = body.get("errors")
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _describe(errors: list[dict[str, Any]]) -> str:
    parts = []
    for error in errors:
        where = ".".join(p for p in (_text(error.get("resource")), _text(error.get("field"))) if p)
        said = _text(error.get("message")) or _text(error.get("code"))
        parts.append(f"{where}: {said}" if where else str(said))
    return "; ".join(parts)


def _hint(status: int, what: str) -> str:
    if status == 401:
        return ("ConnectWise rejected the credentials: check the company id, the public key and "
                "the private key (settings company, public_key, private_key), and that the API "
                "member is active")
    if status == 403:
        return (f"the API member's security role does not allow {what}: grant it in System > "
                "Security Roles (see the role table in docs/connectors/connectwise.md)")
    return ""


def error_for(response: httpx.Response, what: str) -> ConnectWiseError:
    """The typed exception for an error `response` to the request described by `what`."""
    status = response.status_code
    body = _body(response)
    code = _text(body.get("code") or body.get("error"))
    cw_message = _text(body.get("message"))
    errors = _validation_errors(body)
    details = _describe(errors)
    hint = _hint(status, what)
    text = f"ConnectWise answered {status} to {what}"
    if code or cw_message:
        text += f": {code or ''}{' - ' if code and cw_message else ''}{cw_message or ''}"
    if details:
        text += f" ({details})"
    if hint:
        text += f". {hint}"
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ConnectWiseError)
    return kind(text, status=status, code=code, cw_message=cw_message, errors=errors)
