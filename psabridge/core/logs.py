"""structlog set up once, with secrets taken out of every event before it is rendered.

Every line on stderr is rendered by structlog, psabridge's events and other libraries' records
(httpx, httpcore, waitress, werkzeug, `warnings.warn`) alike: with `--log-format json`, each
line is one JSON object with `timestamp`, `level`, `logger` and `event` first.

Three nets catch secrets: keys that name one (`private_key`, `authorization`, `token`...) have
their value replaced; every secret value the process has seen (`register_secret`) is masked
wherever it appears, inside any string, exception text included; and in any URL, the value of a
query parameter named like a secret (`?token=...`) is masked, so that a process that never knew
the secret (a simulator delivering a callback to a URL carrying one) does not log it either.
Connectors register the secrets they read from settings and the tokens they receive.

A secret is masked in each form it can be written in, not only as it is: a secret that travels in a
URL shows up percent-encoded (and encoded twice when that URL is itself a query value, as when the
ConnectWise connector looks its callback up by URL), and one in a Basic header base64-encoded.
"""

from __future__ import annotations

import base64
import logging
import re
import sys
import threading
import warnings
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus

import structlog

MASK = "***"
SECRET_KEY = re.compile(
    r"(secret|password|passwd|private|token|authorization|api[_-]?key|signing[_-]?key|cookie)",
    re.IGNORECASE,
)

_secrets: tuple[str, ...] = ()  # every form of every registered secret, longest first
_lock = threading.Lock()


def _percent_encodings(value: str) -> set[str]:
    """`value` percent-encoded as URLs and forms do it: every reserved character (`quote` with
    nothing safe), `/` left alone (`quote`'s default), spaces as `+` (`quote_plus`); with
    upper-case hex digits, as encoders write them, and lower-case, as some proxies rewrite them."""
    encoded = {quote(value, safe=""), quote(value), quote_plus(value), quote_plus(value, safe="/")}
    lower = {re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), form) for form in encoded}
    return encoded | lower


def written_forms(value: str) -> set[str]:
    """Each way `value` can be written in a log line: as is, percent-encoded once or twice, and
    base64 (standard and URL-safe, with and without padding)."""
    once = _percent_encodings(value)
    twice = set().union(*(_percent_encodings(form) for form in once - {value}))
    raw = value.encode()
    b64 = {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    return {value} | once | twice | b64 | {form.rstrip("=") for form in b64}


def register_secret(value: str | None) -> None:
    """Remember a secret value so that it is masked, in any of its `written_forms`, wherever it
    shows up from now on."""
    global _secrets
    # Very short values would mask ordinary words; no real key or token is this short.
    if value and len(value) >= 6:
        with _lock:
            # Longest first, so that a secret containing another is masked whole.
            _secrets = tuple(sorted(set(_secrets) | written_forms(value), key=len, reverse=True))


# `?token=VALUE` or `&api_key=VALUE` in a URL: the parameter's name, then its value up to the
# next parameter, fragment, space or quote. A value masked already (`password=***: the server
# refused...`) is left as it is, so the punctuation after it stays.
SECRET_QUERY_PARAMETER = re.compile(
    r"(?P<name>[?&;][\w.-]*(?:secret|password|passwd|token|signature|api[_-]?key)=)"
    r"(?!\*\*\*(?:[:;,.)]|$))[^&#\s\"'<>]+",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """Mask every registered secret in `text`, and the value of every secret-named query
    parameter."""
    for secret in _secrets:  # a tuple, replaced whole: safe to read while another thread registers
        if secret in text:
            text = text.replace(secret, MASK)
    return SECRET_QUERY_PARAMETER.sub(lambda m: m.group("name") + MASK, text)


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


_rendering = "console"  # what configure_logging chose, for commands that must match it


def rendering() -> str:
    """"json" or "console": how log lines are written now."""
    return _rendering


class _ForeignRecordFilter(logging.Filter):
    """Libraries log at info what psabridge shows only at -vv (httpx's request lines, werkzeug's
    and waitress's chatter): below -vv, their records must be warnings to pass. psabridge's own
    events have been filtered by level already."""

    def __init__(self, verbosity: int):
        super().__init__()
        self.verbosity = verbosity

    def filter(self, record: logging.LogRecord) -> bool:
        return (self.verbosity >= 2 or record.levelno >= logging.WARNING
                or hasattr(record, "_logger"))  # set on records made by structlog


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    # Instead of a bare traceback on stderr, which no log reader would parse.
    if args.exc_type is SystemExit:
        return
    get_logger("psabridge").error(
        "uncaught_exception", thread=getattr(args.thread, "name", None),
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """`warnings.warn` as a log event (logging.captureWarnings's job, but set again by every
    configure_logging, where captureWarnings takes effect once a process)."""
    get_logger("py.warnings").warning(str(message), category=category.__name__,
                                      location=f"{filename}:{lineno}")


def _tidy_foreign(logger, method_name, event_dict):
    """A library's message without the newline some end with."""
    if not event_dict.get("_from_structlog") and isinstance(event_dict.get("event"), str):
        event_dict["event"] = event_dict["event"].rstrip()
    return event_dict


def _leading_fields_first(logger, method_name, event_dict):
    """timestamp, level, logger and event first, so that a JSON line reads from its start."""
    first = {k: event_dict.pop(k) for k in ("timestamp", "level", "logger", "event")
             if k in event_dict}
    return first | event_dict


def configure_logging(verbosity: int = 0, fmt: str = "auto", stream=None) -> None:
    """Configure structlog and the stdlib root logger. `fmt` is "console", "json" or "auto".

    "auto" renders for people on a terminal and JSON otherwise. Verbosity 0 shows warnings,
    1 psabridge's info events, 2 debug, other libraries' included (httpx's request lines, which
    carry no credentials).

    Every record, psabridge's (structlog) and any library's (stdlib logging, warnings.warn), goes
    through one stdlib handler and structlog's ProcessorFormatter: one format, one lock (lines of
    several threads never interleave), and the same secret masking for all.
    """
    global _rendering
    stream = stream or sys.stderr
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    _rendering = fmt
    # Added to psabridge's events as they are made, and to other libraries' records as they
    # are formatted.
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = (
        structlog.processors.JSONRenderer(default=str)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            _tidy_foreign,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.StackInfoRenderer(),
            _redact_event,
            _leading_fields_first,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(_ForeignRecordFilter(verbosity))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    warnings.showwarning = _log_warning
    if threading.excepthook is threading.__excepthook__:  # not when a test runner has its own
        threading.excepthook = _log_uncaught_in_thread


def get_logger(name: str | None = None):
    return structlog.get_logger(name)
