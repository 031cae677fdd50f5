"""structlog set up once, with secrets taken out of every event before it is rendered.

Two nets catch secrets: keys that name one (`private_key`, `authorization`, `token`...) have their
value replaced, and every secret value the process has seen (`register_secret`) is masked wherever
it appears, inside any string, exception text included. Connectors register the secrets they read
from settings and the tokens they receive.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Mapping
from typing import Any

import structlog

MASK = "***"
SECRET_KEY = re.compile(
    r"(secret|password|passwd|private|token|authorization|api[_-]?key|signing[_-]?key|cookie)",
    re.IGNORECASE,
)

_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret value so that it is masked wherever it shows up from now on."""
    # Very short values would mask ordinary words; no real key or token is this short.
    if value and len(value) >= 6:
        with _lock:
            _secrets.add(value)


def redact_text(text: str) -> str:
    """Mask every registered secret in `text`."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact(value: Any, key: str = "") -> Any:
    """Return `value` with secrets masked, recursing through mappings and sequences."""
    if key and SECRET_KEY.search(key) and value not in (None, "", False):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    if isinstance(value, BaseException):
        return redact_text(repr(value))
    return value


def _redact_event(logger, method_name, event_dict):
    return {k: redact(v, k) for k, v in event_dict.items()}


class _RedactingFormatter(logging.Formatter):
    """For stdlib records (httpx, werkzeug): masks secrets in the final line, traceback included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def configure_logging(verbosity: int = 0, fmt: str = "auto", stream=None) -> None:
    """Configure structlog and the stdlib root logger. `fmt` is "console", "json" or "auto".

    "auto" renders for people on a terminal and JSON otherwise. Verbosity 0 shows warnings,
    1 info, 2 debug (including httpx's request lines, which carry no credentials).
    """
    stream = stream or sys.stderr
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact_event,
    ]
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    # Libraries that set their own logger's level (werkzeug sets INFO) must not talk past -v.
    handler.setLevel(level if verbosity >= 2 else logging.WARNING)
    handler.setFormatter(_RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if verbosity >= 2 else logging.WARNING)


def get_logger(name: str | None = None):
    return structlog.get_logger(name)
