"""R1-R4: the plugin manager's enable, disable and remove, against a real SQLite store."""

from __future__ import annotations

import sqlite3

import pytest

from psabridge.core.errors import PluginError, SettingsError
from psabridge.core.models import (
    CompanySiteMapping,
    ConnectionReport,
    DeviceMapping,
    DeviceTypeMapping,
    JournalEntry,
    OutboxItem,
)
from psabridge.core.plugins import (
    configure_plugin,
    disable_plugin,
    enable_plugin,
    list_plugins,
    plugin_settings,
    remove_plugin,
)
from psabridge.core.store import PLUGIN_TABLES
from tests.core.fakes import OtherPsa

CW_SETTINGS = {
    "url": "https://cw.example.com",
    "company": "acme",
    "public_key": "pubkey1",
    "private_key": "privkey-secret-1",
}


@pytest.fixture
def other(pm):
    plugin = OtherPsa()
    pm.register(plugin, name="otherpsa")
    yield plugin
    pm.unregister(plugin)


def configure_both(pm, store):
    configure_plugin(pm, store, "connectwise", CW_SETTINGS)
    configure_plugin(pm, store, "otherpsa", {"url": "https://other.example.com", "token": "tok-123456"})


def populate(store, psa: str, rmm: str = "datto", suffix: str = "") -> None:
    """Give `psa` one row in every table a plugin owns."""
    store.save_company_mapping(CompanySiteMapping(psa, rmm, f"c1{suffix}", "Acme", f"s1{suffix}", "Acme"))
    store.save_device_type_mapping(DeviceTypeMapping(psa, rmm, "Desktop", "7", "Workstation"))
    store.save_device_mapping(DeviceMapping(psa, rmm, f"d1{suffix}", f"cfg1{suffix}", "c1", "s1"))
    store.add_warning(psa, "configuration", "type Server has required questions")
    store.set_cursor(psa, "tickets", "2026-01-01T00:00:00+00:00")
    store.set_option(psa, "auto_map", True)
    store.db.execute(
        "insert into alert_tickets (psa, rmm, alert_uid, ticket_id, state) values (?, ?, ?, ?, 'open')",
        (psa, rmm, f"a1{suffix}", f"t1{suffix}"),
    )
    store.enqueue(OutboxItem(f"{psa}:close:t1{suffix}", psa, "close_ticket", f"t1{suffix}"))


def test_r1_enabling_a_second_psa_fails_naming_the_first(pm, store, other):
    configure_both(pm, store)
    enable_plugin(pm, store, "connectwise", check=False)

    with pytest.raises(PluginError) as error:
        enable_plugin(pm, store, "otherpsa")
    assert "the PSA plugin connectwise is enabled" in str(error.value)
    assert "psabridge plugins disable connectwise" in str(error.value)
    assert store.plugin_state("otherpsa").enabled is False

    disable_plugin(pm, store, "connectwise")
    enable_plugin(pm, store, "otherpsa")
    assert store.plugin_state("otherpsa").enabled is True
    assert store.plugin_state("connectwise").enabled is False


def test_r1_an_rmm_does_not_count_against_the_one_psa_rule(pm, store):
    configure_plugin(pm, store, "connectwise", CW_SETTINGS)
    configure_plugin(pm, store, "datto", {
        "api_url": "https://merlot-api.centrastage.net", "api_key": "k", "api_secret": "s3cret-value",
    })
    enable_plugin(pm, store, "datto", check=False)
    enable_plugin(pm, store, "connectwise", check=False)
    assert {r.name for r in list_plugins(pm, store) if r.enabled} == {"connectwise", "datto"}


def test_r2_a_refused_connection_stops_enable_and_missing_permissions_become_warnings(pm, store, other):
    configure_both(pm, store)
    other.report = ConnectionReport(ok=False, detail="the private key was refused (401)")
    with pytest.raises(PluginError, match="private key was refused"):
        enable_plugin(pm, store, "otherpsa")
    assert store.plugin_state("otherpsa").enabled is False

    other.report = ConnectionReport(ok=True, missing_permissions=("Service Tickets: Add",))
    report = enable_plugin(pm, store, "otherpsa")
    assert report.missing_permissions == ("Service Tickets: Add",)
    assert [w.message for w in store.warnings("otherpsa")] == ["the API user lacks Service Tickets: Add"]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("url", "cw.example.com", "url: 'cw.example.com' has no protocol; write it with https://"),
        ("url", "ftp://cw.example.com", "url: 'ftp://cw.example.com' uses ftp://; write it with https://"),
        ("url", "https://www.cw.example.com", "url: 'https://www.cw.example.com' must not contain www"),
        ("url", "", "url: ConnectWise URL is required; set it with --url"),
        ("company", "", "company: Company is required; set it with --company"),
        ("public_key", "", "public_key: Public key is required; set it with --public-key"),
        ("private_key", "", "private_key: Private key is required; run `psabridge configure "
                            "connectwise` to be asked for it, or set PSABRIDGE_CONNECTWISE_PRIVATE_KEY "
                            "or --private-key-file PATH"),
    ],
)
def test_r2_each_invalid_setting_is_reported_by_field(pm, store, field, value, expected):
    store.save_settings("connectwise", {**CW_SETTINGS, field: value})
    with pytest.raises(SettingsError) as error:
        enable_plugin(pm, store, "connectwise", check=False)
    assert list(error.value.problems) == [field]
    assert expected in str(error.value)


def test_r2_all_problems_are_reported_together(pm, store):
    store.save_settings("connectwise", {"url": "www.cw.example.com"})
    with pytest.raises(SettingsError) as error:
        enable_plugin(pm, store, "connectwise", check=False)
    assert set(error.value.problems) == {"url", "company", "public_key", "private_key"}


def test_configure_rejects_a_bad_url_at_once_and_unknown_settings(pm, store):
    with pytest.raises(SettingsError, match="url: 'https://www.x.com' must not contain www"):
        configure_plugin(pm, store, "connectwise", {"url": "https://www.x.com"})
    with pytest.raises(PluginError, match="connectwise has no setting colour"):
        configure_plugin(pm, store, "connectwise", {"colour": "blue"})
    assert store.plugin_state("connectwise") is None


def dump_tables(db_file) -> dict[str, list[tuple]]:
    """Every row of every table, straight from the file, with the enabled flag left out."""
    conn = sqlite3.connect(db_file)
    try:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type='table'")]
        dump = {t: sorted(conn.execute(f"select * from {t}").fetchall(), key=repr) for t in tables}
    finally:
        conn.close()
    dump["plugins"] = [(name, settings, updated) for name, _enabled, settings, updated in dump["plugins"]]
    return dump


def test_r3_disable_then_enable_keeps_settings_and_mappings_byte_for_byte(pm, store, db_path):
    configure_plugin(pm, store, "connectwise", CW_SETTINGS)
    enable_plugin(pm, store, "connectwise", check=False)
    populate(store, "connectwise")
    before = dump_tables(db_path)

    disable_plugin(pm, store, "connectwise")
    assert store.plugin_state("connectwise").enabled is False
    assert dump_tables(db_path) == before

    enable_plugin(pm, store, "connectwise", check=False)
    assert store.plugin_state("connectwise").enabled is True
    assert dump_tables(db_path) == before
    assert plugin_settings(pm, store, "connectwise") == CW_SETTINGS


def test_r4_remove_purges_exactly_that_plugins_rows_and_unmaps_its_configurations(
    pm, store, other
):
    configure_both(pm, store)
    populate(store, "connectwise")
    populate(store, "otherpsa", suffix="-o")
    store.record(JournalEntry("otherpsa", "create_configuration", "cfg1-o", "ok"))
    kept = {table: [r for r in store.table_rows(table) if "connectwise" in r.values()]
            for table in PLUGIN_TABLES}

    deleted = remove_plugin(pm, store, "otherpsa")

    assert other.unmapped == [["cfg1-o"]]
    assert deleted == {table: 1 for table in PLUGIN_TABLES} | {"device_details": 0}
    for table in PLUGIN_TABLES:
        rows = list(store.table_rows(table))
        assert all("otherpsa" not in row.values() for row in rows), table
        assert [r for r in rows if "connectwise" in r.values()] == kept[table], table
    # The journal is the record of what was done remotely; removing a plugin keeps it.
    actions = [(e.plugin, e.action) for e in store.journal()]
    assert actions == [("otherpsa", "create_configuration"), ("otherpsa", "unmap_configurations")]


def test_r4_a_failing_remote_unmap_purges_nothing(pm, store, other):
    configure_both(pm, store)
    populate(store, "otherpsa")

    other.fail_unmap_with = RuntimeError("PSA unreachable")
    with pytest.raises(RuntimeError):
        remove_plugin(pm, store, "otherpsa")
    assert len(store.device_mappings("otherpsa", "datto")) == 1
    assert store.plugin_state("otherpsa") is not None


def test_unknown_and_non_connector_plugins_get_clear_errors(pm, store):
    with pytest.raises(PluginError, match="no plugin named 'nope' is installed"):
        enable_plugin(pm, store, "nope")
    with pytest.raises(PluginError, match="sqlite is a storage plugin"):
        disable_plugin(pm, store, "sqlite")


def test_a_setting_with_a_default_is_never_missing_and_reaches_the_connection(pm, store):
    from psabridge.core.hookspecs import hookimpl
    from psabridge.core.models import ConnectorInfo, Setting
    from psabridge.core.plugins import configure_plugin, connection_for, enable_plugin

    class Defaulted:
        @hookimpl
        def connector_info(self):
            return ConnectorInfo(kind="rmm", title="Defaulted", settings=(
                Setting("url", "URL", kind="url"),
                Setting("region", "Region", default="eu")))

    pm.register(Defaulted(), name="defaulted")
    configure_plugin(pm, store, "defaulted", {"url": "https://rmm.example.com"})
    enable_plugin(pm, store, "defaulted", check=False)  # region is not missing: it has a default
    assert connection_for(pm, store, "defaulted").settings["region"] == "eu"
    configure_plugin(pm, store, "defaulted", {"region": "us"})
    assert connection_for(pm, store, "defaulted").settings["region"] == "us"
