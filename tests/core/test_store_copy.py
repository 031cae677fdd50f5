"""`psabridge store copy SRC DST`: a whole store moved between engines, secrets included."""

from __future__ import annotations

import datetime as dt
import json
from importlib import resources
from urllib.parse import urlsplit

import jsonschema
import pytest
from click.testing import CliRunner

from psabridge.cli import App, cli
from psabridge.core.errors import StoreError
from psabridge.core.models import (
    AlertTicket,
    CompanySiteMapping,
    DeviceDetails,
    DeviceMapping,
    DeviceTypeMapping,
    JournalEntry,
    OutboxItem,
)
from psabridge.core.plugins import configure_plugin, plugin_settings
from psabridge.core.store import open_store
from psabridge.core.store_copy import COPIED_TABLES, copy_store
from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator

SECRET = "copied-private-key-7788"


def fill(pm, store) -> None:
    """A row or more in every table an installation keeps."""
    settings = ConnectWiseSimulator(seed=1).settings("http://connectwise.simulator")
    configure_plugin(pm, store, "connectwise", {**settings, "private_key": SECRET})
    store.set_enabled("connectwise", True)
    store.save_company_mapping(CompanySiteMapping("connectwise", "datto", "c1", "Acme", "s1",
                                                  "Acme HQ", "Client"))
    store.save_device_type_mapping(DeviceTypeMapping("connectwise", "datto", "Server", "7", "Srv"))
    store.save_device_mapping(DeviceMapping("connectwise", "datto", "d1", "cfg1", "c1", "s1"))
    store.save_device_mapping(DeviceMapping("connectwise", "datto", "d2", "cfg2", "c1", "s1"))
    store.save_alert_ticket(AlertTicket("connectwise", "datto", "a1", "open", marker="m1",
                                        monitor="disk", device_uid="d1", ticket_id="t1"))
    store.save_alert_ticket(AlertTicket("connectwise", "datto", "a2", "skipped", note="excluded"))
    store.add_warning("connectwise", "d3", "no configuration type")
    store.set_cursor("datto", "resolved", "2026-11-30T10:00:00Z")
    store.set_option("connectwise", "ticketing", {"on": True, "repeat_minutes": 30})
    store.save_device_details("datto", "d1", dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
                              DeviceDetails("SN1", "Dell", "R740"))
    store.enqueue(OutboxItem("connectwise:close:t1", "connectwise", "close", "t1", {"status": 5}))
    store.record(JournalEntry("connectwise", "create_ticket", "a1", "ok", {"ticket_id": "t1"}))
    store.remember_message("cw-message-1")


def contents(store) -> dict[str, list[dict]]:
    return {table: list(store.table_rows(table)) for table in COPIED_TABLES}


def test_a_round_trip_sqlite_postgresql_sqlite_leaves_every_table_equal(pm, tmp_path, postgres_db):
    first = open_store(pm, f"sqlite://{tmp_path / 'first.db'}")
    middle = open_store(pm, postgres_db)
    last = open_store(pm, f"sqlite://{tmp_path / 'last.db'}")
    try:
        fill(pm, first)
        original = contents(first)
        assert all(original.values()), "every table has rows"

        there = copy_store(first, middle, "first", "middle")
        back = copy_store(middle, last, "middle", "last")

        assert there.rows == back.rows == {table: len(rows) for table, rows in original.items()}
        assert contents(middle) == original
        assert contents(last) == original
        # The secret went across sealed, and opens on the new engine.
        assert SECRET not in json.dumps(contents(middle))
        assert plugin_settings(pm, middle, "connectwise")["private_key"] == SECRET
        # New rows on the copy take new ids, never one of the copied rows'.
        copied = max(row["id"] for row in original["warnings"])
        assert middle.add_warning("datto", "s", "m").id > copied
        assert middle.record(JournalEntry("datto", "x", "y", "ok")).id > \
            max(row["id"] for row in original["journal"])
    finally:
        for store in (first, middle, last):
            store.close()


@pytest.fixture
def runner(pm):
    def run(*args):
        return CliRunner().invoke(cli, list(args), obj=App(pm=pm))
    return run


def test_the_command_copies_into_an_empty_store_and_refuses_a_non_empty_one(
        pm, tmp_path, postgres_db, runner):
    source = tmp_path / "state.db"
    store = open_store(pm, f"sqlite://{source}")
    fill(pm, store)
    store.close()
    password = urlsplit(postgres_db).password

    copied = runner("store", "copy", str(source), postgres_db, "--json")
    assert copied.exit_code == 0, copied.output
    document = json.loads(copied.stdout)
    schema = json.loads((resources.files("psabridge") / "schemas" / "store-copy.json").read_text())
    jsonschema.validate(document, schema)
    assert document["source"] == f"sqlite://{source}" and document["replaced"] is False
    assert password not in copied.output and ":***@" in document["destination"]
    assert {t["table"]: t["rows"] for t in document["tables"]}["device_configurations"] == 2
    assert document["total_rows"] == sum(t["rows"] for t in document["tables"])

    again = runner("store", "copy", str(source), postgres_db)
    assert again.exit_code == 1
    assert "is not empty (rows: plugins 1, company_sites 1," in again.output
    assert "pass --replace" in again.output
    assert password not in again.output and "Traceback" not in again.output
    assert len(again.output.strip().splitlines()) == 1

    replaced = runner("store", "copy", str(source), postgres_db, "--replace")
    assert replaced.exit_code == 0, replaced.output
    assert replaced.output.startswith(f"Copied {document['total_rows']} rows from sqlite://{source} to postgresql://")

    back = tmp_path / "back.db"
    assert runner("store", "copy", postgres_db, str(back)).exit_code == 0
    a, b = open_store(pm, f"sqlite://{source}"), open_store(pm, f"sqlite://{back}")
    try:
        assert contents(a) == contents(b)
    finally:
        a.close()
        b.close()


def test_a_copy_that_fails_leaves_the_destination_as_it_was(pm, tmp_path, monkeypatch):
    source = open_store(pm, f"sqlite://{tmp_path / 'a.db'}")
    destination = open_store(pm, f"sqlite://{tmp_path / 'b.db'}")
    try:
        fill(pm, source)
        destination.set_cursor("datto", "resolved", "kept")
        real = destination.replace_rows

        def failing(table, rows):
            real(table, rows)
            if table == "journal":
                raise StoreError("disk full")

        monkeypatch.setattr(destination, "replace_rows", failing)
        with pytest.raises(StoreError, match="disk full"):
            copy_store(source, destination, "a", "b", replace=True)
        assert [row["value"] for row in destination.table_rows("cursors")] == ["kept"]
        assert list(destination.table_rows("plugins")) == []
    finally:
        source.close()
        destination.close()


def test_copying_a_store_onto_itself_is_refused(runner, tmp_path):
    result = runner("store", "copy", str(tmp_path / "a.db"), f"sqlite://{tmp_path / 'a.db'}")
    assert result.exit_code == 2 and "SRC and DST are the same store" in result.output


def test_a_dry_run_counts_what_would_be_copied_and_writes_nothing(pm, tmp_path, runner):
    source = tmp_path / "state.db"
    store = open_store(pm, f"sqlite://{source}")
    fill(pm, store)
    expected = {table: len(rows) for table, rows in contents(store).items()}
    store.close()
    destination = tmp_path / "new.db"
    planned = runner("store", "copy", str(source), str(destination), "--dry-run", "--json")
    assert planned.exit_code == 0, planned.output
    document = json.loads(planned.stdout)
    schema = json.loads((resources.files("psabridge") / "schemas" / "store-copy.json").read_text())
    jsonschema.validate(document, schema)
    assert document["dry_run"] is True
    assert {t["table"]: t["rows"] for t in document["tables"]} == expected
    assert not destination.exists()
    said = runner("store", "copy", str(source), str(destination), "--dry-run")
    assert said.exit_code == 0 and "nothing written" in said.output
    assert f"Would copy {sum(expected.values())} rows" in said.output

    # A dry run refuses what the copy would refuse: a destination holding rows.
    assert runner("store", "copy", str(source), str(destination)).exit_code == 0
    refused = runner("store", "copy", str(source), str(destination), "--dry-run")
    assert refused.exit_code == 1 and "is not empty" in refused.output


def test_a_destination_in_a_missing_folder_is_named_dst(runner, tmp_path):
    source = tmp_path / "state.db"
    result = runner("store", "copy", str(source), str(tmp_path / "no" / "dir" / "x.db"))
    assert result.exit_code == 1
    assert f"DST {tmp_path / 'no' / 'dir' / 'x.db'}: its folder" in result.output
    assert "--db" not in result.output
