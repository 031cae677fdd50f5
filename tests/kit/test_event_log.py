"""The event listener of docs/examples/event_log hears what the engine does, and a listener
that fails stops neither the others nor the work."""

from __future__ import annotations

import json
import pathlib
import sys

from psabridge.core import sync
from psabridge.core.hookspecs import hookimpl
from tests.core.test_mapping import psa, rmm  # noqa: F401 - fixtures
from tests.core.test_ticketing import bridge, ready  # noqa: F401 - fixtures

sys.path.insert(0, str(pathlib.Path(__file__).parents[2] / "docs" / "examples"))

import event_log  # noqa: E402 - lives in docs/examples, put on the path just above


def events(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_event_log_records_each_event(pm, bridge, psa, rmm, ready, tmp_path, monkeypatch):  # noqa: F811
    log_file = tmp_path / "events.jsonl"
    monkeypatch.setenv(event_log.ENV_FILE, str(log_file))
    pm.register(event_log, name="event_log")
    try:
        alert = rmm.raise_alert(ready, monitor="disk C:")
        assert sync.run_pass(bridge).tickets_created == 1
    finally:
        pm.unregister(event_log)
    (ticket_id,) = psa.tickets
    logged = events(log_file)
    assert [e["event"] for e in logged] == ["alert_raised", "ticket_created"]
    assert logged[0]["alert_uid"] == alert.uid and logged[0]["monitor"] == "disk C:"
    assert (logged[1]["ticket_id"], logged[1]["alert_uid"]) == (ticket_id, alert.uid)


class Broken:
    @hookimpl
    def on_alert_raised(self, rmm, alert):  # noqa: F811 - the hook's argument
        raise RuntimeError("the listener's own bug")


def test_a_failing_listener_stops_neither_the_others_nor_the_work(
        pm, bridge, psa, rmm, ready, tmp_path, monkeypatch, capsys, caplog):  # noqa: F811
    log_file = tmp_path / "events.jsonl"
    monkeypatch.setenv(event_log.ENV_FILE, str(log_file))
    pm.register(Broken(), name="broken")
    pm.register(event_log, name="event_log")
    try:
        rmm.raise_alert(ready)
        assert sync.run_pass(bridge).tickets_created == 1
    finally:
        pm.unregister(name="broken")
        pm.unregister(event_log)
    assert [e["event"] for e in events(log_file)] == ["alert_raised", "ticket_created"]
    captured = capsys.readouterr()  # where the log goes depends on how logging was set up
    assert "event listener failed" in captured.out + captured.err + caplog.text
