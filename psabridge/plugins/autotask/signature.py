"""The signature of Autotask's webhook callouts (API-NOTES §7).

Autotask sends `X-Hook-Signature: sha1=<base64(HMAC-SHA1(secretKey, body))>`. Which bytes it
signs is not established: the documentation says the body, and one integration found that
Autotask signs a serialisation in which `& < > ' " \\ +` and every non-ASCII character inside
strings are `\\uXXXX` escapes. So the raw body is tried first, then that escaped form of it;
both comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

HEADER = "x-hook-signature"
_ESCAPE_IN_STRINGS = {"&": "\\u0026", "<": "\\u003c", ">": "\\u003e", "'": "\\u0027", "+": "\\u002b"}


def sign(secret_key: str, body: bytes) -> str:
    digest = hmac.new(secret_key.encode(), body, hashlib.sha1).digest()
    return "sha1=" + base64.b64encode(digest).decode()


def escaped_form(body: bytes) -> bytes | None:
    """The body re-serialised compactly with Autotask's escapes; None when it is not JSON."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char == "\\":  # an escape json.dumps wrote: keep it, unless it is \" or \\
            following = text[i + 1]
            out.append({'"': "\\u0022", "\\": "\\u005c"}.get(following, char + following))
            i += 2
            continue
        # & < > ' + occur only inside strings in json.dumps' output (floats are written
        # without a '+': 1e+20 is the one exception, and Autotask sends no such number).
        out.append(_ESCAPE_IN_STRINGS.get(char, char))
        i += 1
    return "".join(out).encode()


def verify(headers: dict[str, str], body: bytes, secret_key: str) -> str | None:
    """None when the signature holds; else the reason, in words."""
    given = (headers.get(HEADER) or "").strip()
    if not given:
        return "no X-Hook-Signature header: the callout is not signed"
    if not given.lower().startswith("sha1="):
        return "the X-Hook-Signature header is not of the form sha1=<base64>"
    candidates = [body]
    escaped = escaped_form(body)
    if escaped is not None and escaped != body:
        candidates.append(escaped)
    matched = False
    for candidate in candidates:
        # Every candidate is compared, so the time taken does not say which one matched.
        matched |= hmac.compare_digest(sign(secret_key, candidate).encode(),
                                       ("sha1=" + given[5:]).encode())
    return None if matched else "the X-Hook-Signature does not match the body signed with the secret"
