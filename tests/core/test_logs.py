"""Secrets are masked by key name and by value, in structlog events and stdlib records alike."""

from __future__ import annotations

import base64
import io
import json
import logging
import warnings
from urllib.parse import quote, quote_plus

from psabridge.core import logs


def test_secret_keys_and_registered_values_are_masked_in_json_logs():
    stream = io.StringIO()
    logs.configure_logging(verbosity=1, fmt="json", stream=stream)
    logs.register_secret("tok-ABCDEF-123")
    log = logs.get_logger("t")
    log.info("request", authorization="Basic abc", private_key="k", headers={"Authorization": "x"},
             url="https://x/?token=tok-ABCDEF-123", public_key="visible")
    try:
        raise ValueError("bad token tok-ABCDEF-123")
    except ValueError:
        log.exception("failed")
    logging.getLogger("httpx").warning("sent Bearer tok-ABCDEF-123")

    lines = stream.getvalue().splitlines()
    event = json.loads(lines[0])
    assert event["authorization"] == event["private_key"] == "***"
    assert event["headers"] == {"Authorization": "***"}
    assert event["url"] == "https://x/?token=***"
    assert event["public_key"] == "visible"
    assert "ValueError: bad token ***" in json.loads(lines[1])["exception"]
    assert json.loads(lines[2])["event"] == "sent Bearer ***"
    assert "tok-ABCDEF-123" not in stream.getvalue()


def test_a_secret_is_masked_in_every_form_a_url_or_header_gives_it():
    """Percent-encoded (as a callback URL carries it, and again when that URL is a query value
    of its own), in lower-case hex as a proxy may rewrite it, and base64 as in a Basic header."""
    secret = "wh+sec/ret=with&odd chars"
    stream = io.StringIO()
    logs.configure_logging(verbosity=2, fmt="console", stream=stream)
    logs.register_secret(secret)
    once = quote(secret, safe="")
    forms = {
        "raw": secret, "quote": once, "quote keeping /": quote(secret),
        "quote_plus": quote_plus(secret), "lower-case hex": once.lower(),
        "twice": quote(once, safe=""), "twice, plus": quote_plus(once),
        "base64": base64.b64encode(secret.encode()).decode(),
        "url-safe base64, unpadded": base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="),
    }
    for name, form in forms.items():
        logs.get_logger("t").debug("seen", where=f"https://cw/x?conditions=url%3D{form}%26id%3D1")
        logging.getLogger("httpx").debug("HTTP Request: GET https://x/?a=%s", form)
        assert form not in stream.getvalue(), name
    assert stream.getvalue().count(logs.MASK) == 2 * len(forms)


def test_a_secret_named_query_parameter_is_masked_even_when_its_value_was_never_registered():
    """A process that never knew the secret (a simulator POSTing a callback to a URL carrying
    one) logs that URL without it."""
    stream = io.StringIO()
    logs.configure_logging(verbosity=2, fmt="json", stream=stream)
    logging.getLogger("httpx").info(
        'HTTP Request: POST http://127.0.0.1:8787/hooks/psa?token=never%2Bseen%26x&recordId=42 '
        '"HTTP/1.1 200 OK"')
    logs.get_logger("t").info("asked", url="https://x/cb?a=1&API_KEY=k3y-never-seen#top",
                              note="a token=word in prose stays")
    lines = stream.getvalue().splitlines()
    assert json.loads(lines[0])["event"] == (
        'HTTP Request: POST http://127.0.0.1:8787/hooks/psa?token=***&recordId=42 "HTTP/1.1 200 OK"')
    event = json.loads(lines[1])
    assert event["url"] == "https://x/cb?a=1&API_KEY=***#top"
    assert event["note"] == "a token=word in prose stays"


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_record_psabridge_s_or_a_library_s_is_one_json_line_of_the_same_shape():
    """httpx, werkzeug, waitress, `warnings.warn` and psabridge's own events alike: one JSON
    object a line, with timestamp, level, logger and event, and the secrets masked."""
    stream = io.StringIO()
    logs.configure_logging(verbosity=2, fmt="json", stream=stream)
    logs.register_secret("hx-secret-value-42")
    logs.get_logger("psabridge.core.sync").info("pass_finished", tickets_created=2)
    logging.getLogger("httpx").info("HTTP Request: GET https://api.example/x?key=%s",
                                    "hx-secret-value-42")
    logging.getLogger("httpcore.connection").debug("connect_tcp.started port=%d", 443)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logs.configure_logging(verbosity=2, fmt="json", stream=stream)  # inside pytest's own hook
        warnings.warn("an old way of doing it", UserWarning, stacklevel=1)
    try:
        raise RuntimeError("boom with hx-secret-value-42")
    except RuntimeError:
        logging.getLogger("waitress").exception("task failed")

    lines = json_lines(stream)
    assert [(line["logger"], line["level"], line["event"]) for line in lines] == [
        ("psabridge.core.sync", "info", "pass_finished"),
        ("httpx", "info", "HTTP Request: GET https://api.example/x?key=***"),
        ("httpcore.connection", "debug", "connect_tcp.started port=443"),
        ("py.warnings", "warning", "an old way of doing it"),
        ("waitress", "error", "task failed"),
    ]
    assert all(list(line)[:4] == ["timestamp", "level", "logger", "event"] for line in lines)
    assert lines[0]["tickets_created"] == 2
    assert lines[3]["category"] == "UserWarning"
    assert lines[3]["location"].startswith(f"{__file__}:")
    assert "RuntimeError: boom with ***" in lines[4]["exception"]
    assert "hx-secret-value-42" not in stream.getvalue()


def test_v_shows_psabridge_s_info_events_and_only_the_libraries_warnings():
    stream = io.StringIO()
    logs.configure_logging(verbosity=1, fmt="json", stream=stream)
    logs.get_logger("psabridge.core.ticketing").info("ticket_created", ticket_id="1")
    logs.get_logger("psabridge.core.http").debug("a detail")
    logging.getLogger("httpx").info("HTTP Request: GET https://api.example/")
    logging.getLogger("waitress").info("Serving on http://127.0.0.1:8787")
    logging.getLogger("httpx").warning("something odd")
    assert [line["event"] for line in json_lines(stream)] == ["ticket_created", "something odd"]

    stream = io.StringIO()
    logs.configure_logging(verbosity=0, fmt="json", stream=stream)
    logs.get_logger("psabridge.core.ticketing").info("ticket_created", ticket_id="1")
    logs.get_logger("psabridge.core.sync").warning("sync step failed", step="alerts")
    logging.getLogger("httpx").info("HTTP Request: GET https://api.example/")
    assert [line["event"] for line in json_lines(stream)] == ["sync step failed"]


def test_console_lines_look_the_same_for_psabridge_and_for_libraries():
    stream = io.StringIO()
    logs.configure_logging(verbosity=2, fmt="console", stream=stream)
    logs.get_logger("psabridge.core.sync").info("pass_finished", tickets_created=2)
    logging.getLogger("httpx").info("HTTP Request: GET %s", "https://api.example/")
    ours, theirs = stream.getvalue().splitlines()
    assert "[info     ] pass_finished" in ours and "[psabridge.core.sync]" in ours
    assert "tickets_created=2" in ours
    assert "[info     ] HTTP Request: GET https://api.example/" in theirs and "[httpx]" in theirs
    assert logs.rendering() == "console"


def test_a_value_masked_already_keeps_the_punctuation_after_it():
    shown = "cannot open the store postgresql://h/db?password=***: the server refused the user"
    assert logs.redact_text(shown) == shown
    assert logs.redact_text("x?password=hunter2 y") == "x?password=*** y"
