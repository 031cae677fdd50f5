"""`psabridge demo`, the README's first command, runs the whole job and exits 0."""

from __future__ import annotations

from click.testing import CliRunner

from psabridge.cli import cli
from psabridge.core.store import open_store


def test_demo_maps_tickets_and_round_trips_on_a_fresh_store(tmp_path, pm):
    db = tmp_path / "demo.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "demo", "--seed", "7"])
    assert result.exit_code == 0, result.output
    for line in ("companies mapped                                    12",
                 "tickets closed after their alert was resolved        3",
                 "alerts resolved after their ticket was closed        3",
                 "A further pass changes nothing: 0 created, 0 closed, 0 resolved."):
        assert line in result.output
    store = open_store(pm, f"sqlite://{db}")
    rows = store.alert_tickets("connectwise", "datto")
    assert {r.state for r in rows} >= {"open", "closed", "resolved", "skipped"}
    created = [e for e in store.journal() if e.action == "create_ticket" and e.outcome == "ok"]
    assert len(created) == len({r.ticket_id for r in rows if r.ticket_id}) >= 1
    store.close()


def test_demo_refuses_an_existing_store(tmp_path):
    db = tmp_path / "used.db"
    db.write_bytes(b"")
    result = CliRunner().invoke(cli, ["--db", str(db), "demo"])
    assert result.exit_code == 1
    assert "already exists; the demo starts from a fresh store" in result.output
