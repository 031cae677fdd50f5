"""Reading Datto's JSON: epoch-ms times, nulls, open enums, and the monitor identity rule."""

from __future__ import annotations

import datetime as dt

import pytest

from psabridge.plugins.rmm_datto import wire

UTC = dt.UTC


@pytest.mark.parametrize("value, expected", [
    (1721131260000, dt.datetime(2024, 7, 16, 12, 1, tzinfo=UTC)),
    ("1721131260000", dt.datetime(2024, 7, 16, 12, 1, tzinfo=UTC)),
    ("2024-07-16T12:01:00Z", dt.datetime(2024, 7, 16, 12, 1, tzinfo=UTC)),
    (None, None), (0, None), (-62135596800000, None), ("0001-01-01T00:00:00", None), ("soon", None),
])
def test_times_are_epoch_ms_with_every_never_form_as_none(value, expected):
    assert wire.epoch_ms(value) == expected


def test_a_device_row_maps_type_site_audit_deleted_and_warranty():
    row = {"uid": "d1", "id": 42, "hostname": "PC1", "siteUid": "s1", "siteName": "Acme",
           "deviceType": {"category": "Laptop", "type": "Laptop"}, "deviceClass": "device",
           "lastAuditDate": 1721131260000, "deleted": None, "warrantyDate": "2027-03-31",
           "portalUrl": "https://merlot.rmm.datto.com/device/42"}
    device = wire.device(row)
    assert (device.device_type, device.id, device.site_uid, device.deleted) == ("Laptop", "42", "s1", False)
    assert device.last_audit == dt.datetime(2024, 7, 16, 12, 1, tzinfo=UTC)
    assert device.warranty_date == dt.date(2027, 3, 31)
    assert device.url.endswith("/device/42")


def test_devices_without_a_category_are_typed_by_their_class_and_unknown_classes_pass():
    assert wire.device_type({"deviceType": None, "deviceClass": "rmmnetworkdevice"}) == "Network Device"
    assert wire.device_type({"deviceClass": "printer"}) == "Printer"
    assert wire.device_type({"deviceClass": "hologram"}) == "Hologram"
    assert wire.device_type({}) == "Unknown"


def test_a_device_in_the_deleted_devices_system_site_counts_as_deleted():
    row = {"uid": "d1", "siteUid": "deleted-devices", "siteName": "Deleted Devices", "deleted": False}
    assert wire.device(row).deleted
    named_like_it = {"uid": "d2", "siteUid": "8f3c2a4e-1b7d-4c1e-9a0b-2f6e5d4c3b2a",
                     "siteName": "Deleted Devices"}
    assert not wire.device(named_like_it).deleted


def test_system_sites_are_those_without_a_guid():
    assert wire.site({"uid": "deleted-devices", "name": "Deleted Devices"}).system
    assert not wire.site({"uid": "8f3c2a4e-1b7d-4c1e-9a0b-2f6e5d4c3b2a", "name": "Acme"}).system


def test_details_come_from_the_audit_field_of_each_class():
    assert wire.device_details({"bios": {"serialNumber": " ABC123 "},
                                "systemInfo": {"manufacturer": "Dell Inc.", "model": "R740"}},
                               "device") == wire.DeviceDetails("ABC123", "Dell Inc.", "R740")
    assert wire.device_details({"snmpInfo": {"snmpSerial": "PRN9"}, "systemInfo": None},
                               "printer").serial_number == "PRN9"
    assert wire.device_details({"systemInfo": {"serviceTag": "TAG7"}}, "esxihost").serial_number == "TAG7"
    assert wire.device_details({"bios": None, "systemInfo": None}, "device") == wire.DeviceDetails()


def test_the_monitor_identity_ignores_measurements_and_keeps_what_is_watched():
    first = {"@class": "perf_disk_usage_ctx", "diskName": "C:", "freeSpace": 2.1, "totalVolume": 200}
    again = {"@class": "perf_disk_usage_ctx", "diskName": "C:", "freeSpace": 1.4, "totalVolume": 200}
    other_disk = {**first, "diskName": "D:"}
    assert wire.monitor_identity(first) == wire.monitor_identity(again) == "perf_disk_usage_ctx:diskName=C:"
    assert wire.monitor_identity(other_disk) != wire.monitor_identity(first)
    eventlog = {"@class": "eventlog_ctx", "logName": "System", "code": "7036", "source": "SCM",
                "triggerCount": 3, "description": "x"}
    assert wire.monitor_identity(eventlog) == "eventlog_ctx:code=7036;logName=System;source=SCM"


def test_alias_classes_share_an_identity_and_unknown_classes_are_named_by_class():
    assert wire.monitor_identity({"@class": "disk_usage_ctx", "diskName": "C:"}) == \
        wire.monitor_identity({"@class": "perf_disk_usage_ctx", "diskName": "C:"})
    assert wire.monitor_identity({"@class": "quantum_ctx", "reading": 7}) == "quantum_ctx"
    assert wire.monitor_identity(None) == "unknown_ctx"


def test_an_alert_with_nulls_everywhere_still_maps():
    alert = wire.alert({"alertUid": "a1", "priority": None, "alertMonitorInfo": None,
                        "alertSourceInfo": None, "alertContext": None, "timestamp": None})
    assert (alert.priority, alert.monitor, alert.creates_ticket, alert.raised_at) == \
        ("Unknown", "unknown_ctx", True, None)


def test_an_alert_maps_source_times_ticket_switch_and_message():
    alert = wire.alert({
        "alertUid": "a1", "priority": "Critical", "diagnostics": "free 1%", "resolved": True,
        "timestamp": 1721131260000, "resolvedOn": 1721131320000,
        "alertMonitorInfo": {"sendsEmails": True, "createsTicket": False},
        "alertSourceInfo": {"deviceUid": "d1", "deviceName": "SRV01", "siteUid": "s1", "siteName": "Acme"},
        "alertContext": {"@class": "srvc_status_ctx", "serviceName": "Spooler", "status": "STOPPED"}})
    assert (alert.device_uid, alert.site_uid) == ("d1", "s1")
    assert (alert.device_name, alert.site_name) == ("SRV01", "Acme")
    assert alert.creates_ticket is False and alert.resolved
    assert alert.resolved_at - alert.raised_at == dt.timedelta(minutes=1)
    assert alert.monitor == "srvc_status_ctx:serviceName=Spooler"
    assert "Spooler" in alert.message and alert.diagnostics == "free 1%"
