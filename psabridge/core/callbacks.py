"""Helpers for connectors reading the callbacks and webhooks their product POSTs to psabridge.

`psa_parse_ticket_callback` and `rmm_parse_alert_webhook` receive the body as bytes, already
bounded in size and nesting by core. These turn a JSON body into a dict and a field into an
identifier safe to put in an API path, raising `InvalidCallback` with a reason the sender
can act on. Core itself knows no sender's format.
"""

from __future__ import annotations

import json
import re
from typing import Any

from psabridge.core.errors import InvalidCallback

# Long enough for any GUID or record id a sender puts in a body (a GUID is 36 characters).
MAX_IDENTIFIER = 128


def json_object(body: bytes) -> dict:
    """The body as a JSON object; InvalidCallback says why it is not one."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError and too-long integers included
        raise InvalidCallback("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise InvalidCallback("the body is not a JSON object")
    return payload


_NOT_IN_IDENTIFIERS = re.compile(r"[\s/\\?#%]")


def identifier(value: Any, name: str) -> str:
    """`value` as an identifier a connector can put in an API path: a non-empty string of at
    most MAX_IDENTIFIER printable characters, none of them a space or one of `/ \\ ? # %` (which
    would change what the API path means)."""
    if not isinstance(value, str) or not value:
        raise InvalidCallback(f"{name} must be a non-empty string")
    if len(value) > MAX_IDENTIFIER:
        raise InvalidCallback(f"{name} is longer than {MAX_IDENTIFIER} characters")
    if not value.isprintable() or _NOT_IN_IDENTIFIERS.search(value):
        raise InvalidCallback(f"{name} must not contain control characters, spaces, or / \\ ? # %")
    return value


_DIGITS = re.compile(r"[0-9]{1,19}")


def positive_id(value: Any, name: str) -> str:
    """A record id as a PSA sends it, a positive integer or a string of digits, as a string."""
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return str(value)
    raise InvalidCallback(f"{name} must be a positive integer (or a string of digits)")
