"""One PSA at a time: Autotask and ConnectWise exclude each other, and removing either purges
only its own data (and unmaps only its own configuration items)."""

from __future__ import annotations

import pytest

from psabridge.core.errors import PluginError, PsabridgeError
from psabridge.core.models import CompanySiteMapping, DeviceMapping
from psabridge.core.plugins import configure_plugin, enable_plugin, remove_plugin
from psabridge.core.store import PLUGIN_TABLES
from psabridge.plugins.autotask.simulator import AutotaskSimulator
from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator


@pytest.fixture
def autotask_sim():
    return AutotaskSimulator(seed=2, companies=2)


@pytest.fixture
def connectwise_sim():
    return ConnectWiseSimulator(seed=2, companies=2)


@pytest.fixture
def configured(pm, store, autotask_sim, connectwise_sim):
    configure_plugin(pm, store, "autotask", autotask_sim.settings())
    configure_plugin(pm, store, "connectwise", connectwise_sim.settings())


def test_enabling_autotask_while_connectwise_is_enabled_fails_naming_connectwise(
        pm, store, configured, autotask_sim):
    enable_plugin(pm, store, "connectwise", check=False)
    with pytest.raises(PluginError, match="connectwise is enabled.*plugins disable connectwise"):
        enable_plugin(pm, store, "autotask", transport=autotask_sim.transport())
    assert store.plugin_state("autotask").enabled is False


def test_enabling_connectwise_while_autotask_is_enabled_fails_naming_autotask(
        pm, store, configured, autotask_sim):
    enable_plugin(pm, store, "autotask", transport=autotask_sim.transport())  # checks the simulator
    with pytest.raises(PluginError, match="autotask is enabled"):
        enable_plugin(pm, store, "connectwise", check=False)


def mapped_item(sim: AutotaskSimulator) -> str:
    company = next(c for c in sim.companies() if c["id"] != 0)
    item = sim.configurations()[0]
    item["companyID"], item["referenceNumber"] = company["id"], "https://rmm.example/device/1"
    return str(item["id"])


def populate(store, psa: str, configuration_id: str) -> None:
    store.save_company_mapping(CompanySiteMapping(psa, "datto", f"c-{psa}", "Acme", f"s-{psa}", "Acme"))
    store.save_device_mapping(DeviceMapping(psa, "datto", f"d-{psa}", configuration_id, f"c-{psa}",
                                            f"s-{psa}"))
    store.set_cursor(psa, "changed_tickets", "2026-01-01T00:00:00+00:00")


def rows_of(store, psa: str) -> dict[str, list[dict]]:
    return {table: [r for r in store.table_rows(table) if psa in r.values()] for table in PLUGIN_TABLES}


def test_removing_autotask_unmaps_its_items_and_purges_only_its_rows(
        pm, store, configured, autotask_sim, connectwise_sim):
    item_id = mapped_item(autotask_sim)
    populate(store, "autotask", item_id)
    populate(store, "connectwise", "1")  # not touched: no request may reach ConnectWise
    kept = rows_of(store, "connectwise")

    remove_plugin(pm, store, "autotask", transport=autotask_sim.transport())

    assert autotask_sim.db.table("ConfigurationItems")[int(item_id)]["referenceNumber"] is None
    assert autotask_sim.db.table("ConfigurationItems")[int(item_id)]["isActive"] is True
    assert all(rows == [] for rows in rows_of(store, "autotask").values())
    assert rows_of(store, "connectwise") == kept
    assert store.plugin_state("autotask") is None


def test_removing_connectwise_leaves_autotask_rows_and_items_alone(
        pm, store, configured, autotask_sim, connectwise_sim):
    item_id = mapped_item(autotask_sim)
    populate(store, "autotask", item_id)
    kept = rows_of(store, "autotask")
    remove_plugin(pm, store, "connectwise", transport=connectwise_sim.transport())

    assert rows_of(store, "autotask") == kept
    assert autotask_sim.db.table("ConfigurationItems")[int(item_id)]["referenceNumber"] == \
        "https://rmm.example/device/1"
    assert all(rows == [] for rows in rows_of(store, "connectwise").values())


@pytest.mark.parametrize("psa", ["autotask", "connectwise"])
def test_removing_a_psa_unregisters_the_ticket_callback_first_and_a_rerun_finishes(
        pm, store, configured, autotask_sim, connectwise_sim, psa):
    from types import SimpleNamespace

    import httpx

    from psabridge.core.connectors import PsaConnector
    from psabridge.core.plugins import connection_for, register_ticket_callback

    sim = {"autotask": autotask_sim, "connectwise": connectwise_sim}[psa]

    def registrations() -> list[str]:
        if psa == "autotask":
            return [w["webhookUrl"] for w in sim.db.table("TicketWebhooks").values()]
        return [c["url"] for c in sim.db.callbacks.values()]

    connector = PsaConnector(pm, connection_for(pm, store, psa, sim.transport()))
    register_ticket_callback(SimpleNamespace(psa=connector, store=store),
                             "https://bridge.example.com/hooks/psa?token=s3cret", "ab" * 32)
    assert len(registrations()) == 1

    def unreachable(request):
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(PsabridgeError, match="(?i)connect|reach"):
        remove_plugin(pm, store, psa, transport=httpx.MockTransport(unreachable))
    assert len(registrations()) == 1 and store.plugin_state(psa) is not None  # nothing purged

    remove_plugin(pm, store, psa, transport=sim.transport())
    assert registrations() == [] and store.plugin_state(psa) is None
    (entry,) = [e for e in store.journal(psa) if e.action == "unregister_ticket_callback"]
    assert entry.target == "https://bridge.example.com/hooks/psa" and "s3cret" not in str(entry)
