"""Secrets are masked by key name and by value, in structlog events and stdlib records alike."""

from __future__ import annotations

import io
import json
import logging

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
    assert lines[2] == "WARNING httpx: sent Bearer ***"
    assert "tok-ABCDEF-123" not in stream.getvalue()
