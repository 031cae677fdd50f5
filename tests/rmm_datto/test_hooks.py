"""The rmm_* hooks against the simulator, in-process and over loopback (the `connection` fixture)."""

from __future__ import annotations

import datetime as dt

import pytest

from psabridge.core.models import Alert, Connection, Device, Site
from psabridge.core.plugins import Connector
from psabridge.plugins.rmm_datto import hooks
from psabridge.plugins.rmm_datto.client import DattoNotFound
from psabridge.plugins.rmm_datto.simulator import DattoSimulator, SimOptions
from psabridge.plugins.rmm_datto.simulator.data import DELETED_DEVICES_SITE_UID, UNKNOWN_CONTEXT_CLASS
from psabridge.simulation import ScriptedFault
from tests.rmm_datto.conftest import connect


def test_the_plugin_is_registered_and_answers_through_core(pm, connection):
    connector = Connector(pm, connection)
    assert connector.call("rmm_check_connection").ok
    hooknames = [name for name in dir(hooks) if name.startswith("rmm_")]
    assert all(connector.supports(name) for name in hooknames) and len(hooknames) == 12


def test_check_connection_names_the_setting_at_fault_without_the_secret(sim, reach, options):
    url, transport = reach(sim)
    wrong = Connection("datto", {**sim.settings(url), "api_secret": "not-the-secret-123"},
                       transport=transport)
    report = hooks.rmm_check_connection(wrong)
    assert not report.ok and "api_secret" in report.detail and "not-the-secret-123" not in report.detail


def test_check_connection_reports_an_unreachable_url(options):
    closed = Connection("datto", {"api_url": "http://127.0.0.1:9", "api_key": "k",
                                  "api_secret": "s-123456"})
    from psabridge.plugins.rmm_datto.client import client_for

    client_for(closed, options)
    report = hooks.rmm_check_connection(closed)
    assert not report.ok and "cannot reach" in report.detail


# -- sites -------------------------------------------------------------------------------------


def test_sites_are_listed_with_links_and_the_system_site_marked(connection, sim):
    sites = list(hooks.rmm_list_sites(connection))
    assert {s.uid for s in sites} == set(sim.sites)
    system = [s for s in sites if s.system]
    assert [s.uid for s in system] == [DELETED_DEVICES_SITE_UID]
    assert all(s.url and s.id for s in sites)


def test_create_new_makes_a_site_once(connection, sim):
    site = hooks.rmm_create_site(connection, "Brand New Dental LLC")
    assert site.name == "Brand New Dental LLC" and not site.system
    assert sim.sites[site.uid]["name"] == "Brand New Dental LLC"
    assert sim.counts["PUT /api/v2/site"] == 1
    assert sim.quota.count("site-create") == 1


# -- devices -------------------------------------------------------------------------------------


def test_devices_of_one_site_and_of_the_account(connection, sim):
    site_uid = next(iter(sim.sites))
    in_site = list(hooks.rmm_list_devices(connection, site_uid))
    assert in_site and {d.site_uid for d in in_site} == {site_uid}
    everything = list(hooks.rmm_list_devices(connection, None))
    assert {d.uid for d in everything} == set(sim.devices)


def test_devices_carry_type_audit_date_deleted_state_and_warranty(connection, sim):
    devices = {d.uid: d for d in hooks.rmm_list_devices(connection, None)}
    assert {"Desktop", "Laptop", "Server", "Printer", "ESXi Host", "Network Device"} <= \
        {d.device_type for d in devices.values()}
    unaudited = [d for d in devices.values() if d.last_audit is None]
    assert unaudited and all(sim.devices[d.uid]["lastAuditDate"] in (None, 0, -62135596800000)
                             for d in unaudited)
    audited = next(d for d in devices.values() if d.last_audit)
    assert audited.last_audit == dt.datetime.fromtimestamp(
        sim.devices[audited.uid]["lastAuditDate"] / 1000, dt.UTC)
    assert {d.uid for d in devices.values() if d.deleted} == \
        {u for u, d in sim.devices.items() if d["deleted"]}
    assert any(d.warranty_date for d in devices.values())


def test_a_device_deleted_in_the_rmm_shows_as_deleted(connection, sim):
    uid = next(u for u, d in sim.devices.items() if not d["deleted"])
    sim.delete_device(uid)
    device = next(d for d in hooks.rmm_list_devices(connection, None) if d.uid == uid)
    assert device.deleted and device.site_uid == DELETED_DEVICES_SITE_UID


def test_details_come_from_the_audit_of_each_device_class(connection, sim):
    devices = list(hooks.rmm_list_devices(connection, None))
    by_class = {sim.devices[d.uid]["deviceClass"]: d for d in devices if d.last_audit}
    desktop = hooks.rmm_device_details(connection, by_class["device"])
    audit = sim.audits[by_class["device"].uid]
    assert (desktop.serial_number, desktop.manufacturer, desktop.model) == (
        audit["bios"]["serialNumber"], audit["systemInfo"]["manufacturer"], audit["systemInfo"]["model"])
    printer = hooks.rmm_device_details(connection, by_class["printer"])
    assert printer.serial_number == sim.audits[by_class["printer"].uid]["snmpInfo"]["snmpSerial"]
    esxi = hooks.rmm_device_details(connection, by_class["esxihost"])
    assert esxi.serial_number == sim.audits[by_class["esxihost"].uid]["systemInfo"]["serviceTag"]
    before = sum(sim.counts.values())
    network = hooks.rmm_device_details(connection, by_class["rmmnetworkdevice"])
    assert network.serial_number is None and sum(sim.counts.values()) == before  # nothing to read


def test_details_of_a_device_not_listed_in_this_run_look_its_class_up(sim, reach, options):
    url, transport = reach(sim)
    fresh = connect(sim, url, transport, options)
    printer = next(d for d in sim.devices.values() if d["deviceClass"] == "printer")
    device = Device(uid=printer["uid"], hostname=printer["hostname"], site_uid=printer["siteUid"])
    assert hooks.rmm_device_details(fresh, device).serial_number == \
        sim.audits[printer["uid"]]["snmpInfo"]["snmpSerial"]
    assert sim.counts["GET /api/v2/device/{uid}"] == 1


def test_details_of_an_unknown_device_are_not_found(connection):
    with pytest.raises(DattoNotFound):
        hooks.rmm_device_details(connection, Device(uid="9b1f1b52-0000-4000-8000-000000000000",
                                                    hostname="ghost", site_uid="s"))


# -- alerts ----------------------------------------------------------------------------------------


def test_open_and_resolved_alerts_are_mapped(connection, sim):
    opened = list(hooks.rmm_list_alerts(connection, False, None))
    resolved = list(hooks.rmm_list_alerts(connection, True, None))
    assert {a.uid for a in opened} == {u for u, a in sim.alerts.items() if not a["resolved"]}
    assert {a.uid for a in resolved} == {u for u, a in sim.alerts.items() if a["resolved"]}
    assert all(a.resolved and a.resolved_at for a in resolved)
    assert any(a.monitor == UNKNOWN_CONTEXT_CLASS for a in opened + resolved)
    sample = opened[0]
    wire_alert = sim.alerts[sample.uid]
    assert sample.device_uid == wire_alert["alertSourceInfo"]["deviceUid"]
    assert sample.site_uid == wire_alert["alertSourceInfo"]["siteUid"]
    assert sample.priority == wire_alert["priority"] and sample.raised_at
    assert {a.creates_ticket for a in opened} == {True, False}


def test_alerts_since_a_cursor_are_only_the_newer_ones(connection, sim, sim_clock):
    cursor = dt.datetime.fromtimestamp(sim_clock(), dt.UTC)
    sim_clock.advance(60)
    device_uid = next(u for u, d in sim.devices.items() if d["deviceClass"] == "device")
    new = sim.raise_alert(device_uid, {"@class": "srvc_status_ctx", "serviceName": "Spooler"})
    old_open = next(u for u, a in sim.alerts.items() if not a["resolved"] and u != new["alertUid"])
    sim.resolve_alert(old_open)
    assert [a.uid for a in hooks.rmm_list_alerts(connection, False, cursor)] == [new["alertUid"]]
    assert [a.uid for a in hooks.rmm_list_alerts(connection, True, cursor)] == [old_open]


def test_a_repeating_alert_has_the_same_monitor_identity(connection, sim):
    device_uid = next(u for u, d in sim.devices.items() if d["deviceClass"] == "device")
    context = {"@class": "perf_disk_usage_ctx", "diskName": "C:", "freeSpace": 3.0}
    first = sim.raise_alert(device_uid, context)
    second = sim.raise_alert(device_uid, {**context, "freeSpace": 1.2})
    one, two = (hooks.rmm_get_alert(connection, a["alertUid"]) for a in (first, second))
    assert one.monitor == two.monitor == "perf_disk_usage_ctx:diskName=C:"


def test_get_alert_returns_none_for_an_unknown_uid(connection):
    assert hooks.rmm_get_alert(connection, "9b1f1b52-0000-4000-8000-000000000000") is None


@pytest.mark.parametrize("second_answer", [400, 200])
def test_resolving_resolves_and_resolving_again_does_not_fail(sim_clock, reach, options, second_answer):
    sim = DattoSimulator(seed=0, clock=sim_clock,
                         options=SimOptions(already_resolved_status=second_answer))
    url, transport = reach(sim)
    connection = connect(sim, url, transport, options)
    uid = next(u for u, a in sim.alerts.items() if not a["resolved"])
    hooks.rmm_resolve_alert(connection, uid)
    assert sim.alerts[uid]["resolved"] and sim.alerts[uid]["resolvedOn"] == int(sim_clock() * 1000)
    hooks.rmm_resolve_alert(connection, uid)
    assert hooks.rmm_get_alert(connection, uid).resolved


# -- links ---------------------------------------------------------------------------------------


def test_links_prefer_the_apis_portal_url_else_the_platforms_web_ui(connection, sim):
    device = next(d for d in hooks.rmm_list_devices(connection, None) if d.url)
    assert hooks.rmm_device_url(connection, device) == device.url
    site = next(iter(hooks.rmm_list_sites(connection)))
    assert hooks.rmm_site_url(connection, site) == site.url
    alert = next(iter(hooks.rmm_list_alerts(connection, False, None)))
    assert hooks.rmm_alert_url(connection, alert) == f"{connection.settings['portal_url']}/alert/{alert.uid}"


def test_links_are_built_for_the_platform_when_the_api_gives_none():
    real = Connection("datto", {"api_url": "https://merlot-api.centrastage.net"})
    device = Device(uid="u1", hostname="PC", site_uid="s1", id="4242")
    alert = Alert(uid="a-1", priority="High", device_uid="u1", site_uid="s1", monitor="m")
    assert hooks.rmm_device_url(real, device) == "https://merlot.rmm.datto.com/device/4242"
    assert hooks.rmm_alert_url(real, alert) == "https://merlot.rmm.datto.com/alert/a-1"
    assert hooks.rmm_site_url(real, Site(uid="s1", name="S", id="77")) == \
        "https://merlot.rmm.datto.com/site/77"
    custom = Connection("datto", {"api_url": "https://x.example", "portal_url": "https://ui.example/"})
    assert hooks.rmm_alert_url(custom, alert) == "https://ui.example/alert/a-1"


def test_the_simulator_serves_itself_over_loopback(sim, options):
    with sim.serve() as server:
        connection = connect(sim, server.url, None, options)
        assert hooks.rmm_check_connection(connection).ok
        assert server.url.startswith("http://127.0.0.1:")


def test_a_site_whose_creation_answer_is_lost_is_found_not_created_twice(sim, reach, options):
    sim.injector.faults.add(ScriptedFault("drop", method="PUT", path="^/api/v2/site$", when="after"))
    url, transport = reach(sim)
    connection = connect(sim, url, transport, options)
    site = hooks.rmm_create_site(connection, "Lost Answer LLC")
    assert [s["uid"] for s in sim.sites.values() if s["name"] == "Lost Answer LLC"] == [site.uid]
    assert sim.counts["PUT /api/v2/site"] == 1
