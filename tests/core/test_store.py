"""The SQLite store: private file, migrations, atomic changes, and R14 in the schema."""

from __future__ import annotations

import sqlite3
import stat

import pytest

from psabridge.core.errors import StoreError
from psabridge.core.models import CompanySiteMapping, DeviceMapping, JournalEntry
from psabridge.core.store import open_store, store_url
from psabridge.plugins.storage_sqlite.store import SCHEMA_VERSION


def test_store_file_is_created_readable_by_its_owner_only(store, db_path):
    store.set_cursor("datto", "alerts", "x")
    for path in db_path.parent.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_store_is_in_wal_mode_and_versioned(store, db_path):
    conn = sqlite3.connect(db_path)
    assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert conn.execute("pragma user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_store_from_a_newer_schema_is_refused(pm, db_path):
    open_store(pm, f"sqlite://{db_path}").close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"pragma user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="written by a newer psabridge"):
        open_store(pm, f"sqlite://{db_path}")


def test_a_corrupt_store_is_refused_with_advice(pm, tmp_path):
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="move it away and restore a backup"):
        open_store(pm, f"sqlite://{path}")


def test_a_failed_logical_change_leaves_nothing_half_written(store):
    with pytest.raises(RuntimeError), store.transaction():
        store.set_cursor("datto", "alerts", "1")
        store.record(JournalEntry("datto", "resolve_alert", "a1", "ok"))
        raise RuntimeError("crash in the middle")
    assert store.cursor("datto", "alerts") is None
    assert store.journal() == []


def test_r14_one_device_per_configuration_is_enforced_by_the_schema(store):
    store.save_device_mapping(DeviceMapping("connectwise", "datto", "d1", "cfg1", "c1", "s1"))
    with pytest.raises(StoreError, match="configuration cfg1 is already mapped to another device"):
        store.save_device_mapping(DeviceMapping("connectwise", "datto", "d2", "cfg1", "c1", "s1"))
    # Re-mapping the same device to another configuration replaces its row (one per device).
    store.save_device_mapping(DeviceMapping("connectwise", "datto", "d1", "cfg2", "c1", "s1"))
    assert [m.configuration_id for m in store.device_mappings("connectwise", "datto")] == ["cfg2"]


def test_one_alert_looks_up_its_own_mappings_through_an_index(store):
    """A webhook's alert costs the same at 100 and at 20,000 mapped devices: its device's and its
    site's rows are found through an index, never by reading the pair's whole table."""
    for n in range(50):
        store.save_company_mapping(CompanySiteMapping("connectwise", "datto", f"c{n}", f"Co {n}",
                                                      f"s{n}", f"Site {n}", "Client"))
        store.save_device_mapping(DeviceMapping("connectwise", "datto", f"d{n}", f"cfg{n}", f"c{n}",
                                                f"s{n}"))
    statements: list[str] = []
    store.db.conn.set_trace_callback(statements.append)
    device = store.device_mapping("connectwise", "datto", "d7")
    company = store.company_mapping_of_site("connectwise", "datto", "s9")
    store.db.conn.set_trace_callback(None)
    assert (device.configuration_id, company.company_id) == ("cfg7", "c9")
    assert store.device_mapping("connectwise", "datto", "nope") is None
    assert store.company_mapping_of_site("autotask", "datto", "s9") is None
    selects = [sql for sql in statements if sql.lstrip().lower().startswith("select")]
    assert len(selects) == 2
    for sql in selects:
        plan = " ".join(row[-1] for row in store.db.execute(f"explain query plan {sql}"))
        assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan


def test_unknown_store_url_scheme_is_a_clear_error(pm):
    with pytest.raises(StoreError, match="no storage plugin understands mysql:// URLs"):
        open_store(pm, "mysql://localhost/psabridge")


def test_store_url_resolves_paths_and_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PSABRIDGE_DB", str(tmp_path / "env.db"))
    assert store_url(None) == f"sqlite://{tmp_path}/env.db"
    assert store_url(tmp_path / "flag.db") == f"sqlite://{tmp_path}/flag.db"
    assert store_url("sqlite:///elsewhere.db") == "sqlite:///elsewhere.db"
