"""`psabridge demo --psa autotask`: the whole story on the Autotask and Datto RMM simulators."""

from __future__ import annotations

from click.testing import CliRunner

from psabridge.cli import cli
from psabridge.core.store import open_store


def test_demo_runs_the_round_trip_on_autotask(tmp_path, pm):
    db = tmp_path / "demo.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "demo", "--psa", "autotask", "--seed", "7"])
    assert result.exit_code == 0, result.output
    for line in ("Enabled autotask: connected to Autotask",
                 "Alerts raised in Datto RMM -> tickets in Autotask",
                 "companies mapped                                    12",
                 "tickets closed after their alert was resolved        3",
                 "alerts resolved after their ticket was closed        3",
                 "Closed in Autotask -> 3 alerts resolved in Datto RMM (3 of 3 now show resolved)",
                 "A further pass changes nothing: 0 created, 0 closed, 0 resolved."):
        assert line in result.output
    store = open_store(pm, f"sqlite://{db}")
    rows = store.alert_tickets("autotask", "datto")
    assert {r.state for r in rows} >= {"open", "closed", "resolved", "skipped"}
    assert store.alert_tickets("connectwise", "datto") == []
    store.close()


def test_demo_refuses_a_psa_it_does_not_have(tmp_path):
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "x.db"), "demo", "--psa", "halo"])
    assert result.exit_code == 2 and "'halo' is not one of" in result.output
