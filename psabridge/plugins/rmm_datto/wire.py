"""Turning Datto RMM's JSON into psabridge models, tolerant of what the live API really sends.

The OpenAPI document types times as date-time strings, marks nothing nullable and closes enums;
the live API sends epoch milliseconds, nulls almost anywhere and values like `rmmnetworkdevice`
(API-NOTES §5, SOURCE.md). Every reader here accepts null, and every enum stays open.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from psabridge.core.models import Alert, Device, DeviceDetails, Site

DELETED_DEVICES_SITE = "Deleted Devices"
# .NET's DateTime.MinValue in epoch ms: what Datto sends for "never" (ts-core treats it as null).
DOTNET_MIN_MS = -62135596800000

# deviceClass values with no deviceType.category of their own (API-NOTES §5 "Device").
CLASS_TYPES = {"printer": "Printer", "esxihost": "ESXi Host", "rmmnetworkdevice": "Network Device"}


# -- scalars -------------------------------------------------------------------------------------


def epoch_ms(value: Any) -> dt.datetime | None:
    """A Datto time: epoch ms (the live form) or an ISO string (reported once); 0/min are None."""
    if value in (None, "", 0, DOTNET_MIN_MS):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    if isinstance(value, str):
        if value.lstrip("-").isdigit():
            return epoch_ms(int(value))
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
        return None if parsed.year <= 1 else parsed
    return None


def iso_date(value: Any) -> dt.date | None:
    """`warrantyDate` is "yyyy-mm-dd" or null; anything unreadable counts as no date."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        return None


def is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


def _text(value: Any) -> str | None:
    """A string field, with blanks as None."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


# -- sites and devices -------------------------------------------------------------------------


def site(row: Mapping[str, Any]) -> Site:
    uid = str(row["uid"])
    return Site(
        uid=uid,
        name=row.get("name") or "",
        id=_text(row.get("id")),
        url=_text(row.get("portalUrl")),
        # Real sites have GUID uids; the system "Deleted Devices" site does not (§5).
        system=not is_guid(uid),
    )


def device_type(row: Mapping[str, Any]) -> str:
    """`deviceType.category` ("Desktop", "Laptop", "Server"...), else a name for the class."""
    category = _text((row.get("deviceType") or {}).get("category"))
    if category:
        return category
    device_class = row.get("deviceClass") or "unknown"
    return CLASS_TYPES.get(device_class, device_class.capitalize())


def in_deleted_devices_site(row: Mapping[str, Any]) -> bool:
    return row.get("siteName") == DELETED_DEVICES_SITE and not is_guid(str(row.get("siteUid")))


def device(row: Mapping[str, Any]) -> Device:
    return Device(
        uid=str(row["uid"]),
        hostname=row.get("hostname") or "",
        site_uid=str(row.get("siteUid") or ""),
        device_type=device_type(row),
        id=_text(row.get("id")),
        url=_text(row.get("portalUrl")),
        last_audit=epoch_ms(row.get("lastAuditDate")),
        deleted=bool(row.get("deleted")) or in_deleted_devices_site(row),
        warranty_date=iso_date(row.get("warrantyDate")),
    )


def device_details(audit: Mapping[str, Any], device_class: str) -> DeviceDetails:
    """Serial, make and model from an audit of the given class (§5 "Hardware identity")."""
    system = audit.get("systemInfo") or {}
    if device_class == "printer":
        serial = (audit.get("snmpInfo") or {}).get("snmpSerial")
    elif device_class == "esxihost":
        serial = system.get("serviceTag")
    else:
        serial = (audit.get("bios") or {}).get("serialNumber")
    return DeviceDetails(serial_number=_text(serial), manufacturer=_text(system.get("manufacturer")),
                         model=_text(system.get("model")))


# -- alerts --------------------------------------------------------------------------------------

# Some contexts are reported under two names (aaron vs ts-core mappings, §5); one name each
# keeps a monitor's identity stable whichever the account sends.
CONTEXT_ALIASES = {
    "disk_usage_ctx": "perf_disk_usage_ctx",
    "resource_usage_ctx": "process_resource_usage_ctx",
    "status_ctx": "process_status_ctx",
    "filesystem_ctx": "fs_object_ctx",
    "security_management_ctx": "sec_management_ctx",
    "action_ctx": "sw_action_ctx",
    "windows_performance_ctx": "perf_mon_ctx",
}

# The fields that tell one monitor of a class from another on the same device. Measurements
# (free space, percentages, samples, counts, times, status) change between alerts of the same
# monitor and are left out on purpose. Classes not listed are identified by their class alone.
IDENTIFYING_FIELDS = {
    "eventlog_ctx": ("logName", "source", "code"),
    "perf_disk_usage_ctx": ("diskName",),
    "patch_ctx": ("policyUid",),
    "antivirus_ctx": ("productName",),
    "perf_resource_usage_ctx": ("type",),
    "process_resource_usage_ctx": ("processName", "type"),
    "process_status_ctx": ("processName",),
    "srvc_status_ctx": ("serviceName",),
    "srvc_resource_usage_ctx": ("serviceName", "type"),
    "fs_object_ctx": ("path", "objectType"),
    "ping_ctx": ("instanceName",),
    "sec_management_ctx": ("productName",),
    "sw_action_ctx": ("packageName",),
}


def context_class(context: Mapping[str, Any] | None) -> str:
    raw = str((context or {}).get("@class") or "unknown_ctx")
    return CONTEXT_ALIASES.get(raw, raw)


def monitor_identity(context: Mapping[str, Any] | None) -> str:
    """A stable name for the monitor that raised an alert, from its `alertContext`.

    Datto gives alerts no monitor uid, so the monitor is named by what it watches: the context's
    `@class` plus the class's identifying fields, e.g. `eventlog_ctx:logName=System;code=7036;
    source=Service Control Manager` or `perf_disk_usage_ctx:diskName=C:`. An unknown class is
    named by its class alone. Together with the device this is what
    monitor overrides and repeating alerts key on.
    """
    context = context or {}
    kind = context_class(context)
    fields = IDENTIFYING_FIELDS.get(kind, ())
    parts = [f"{name}={context.get(name)}" for name in sorted(fields) if _text(context.get(name))]
    return f"{kind}:{';'.join(parts)}" if parts else kind


def describe_context(context: Mapping[str, Any] | None) -> str:
    """A one-line, human summary of what the monitor saw."""
    context = context or {}
    kind = context_class(context)
    get = context.get
    if kind == "eventlog_ctx":
        return f"Event {get('code')} from {get('source')} in the {get('logName')} log: " \
               f"{get('description') or ''}".rstrip(": ")
    if kind == "perf_disk_usage_ctx":
        unit = get("unitOfMeasure") or ""
        return f"Disk {get('diskName')} has {get('freeSpace')} {unit} free of " \
               f"{get('totalVolume')} {unit}".replace("  ", " ").strip()
    if kind == "online_offline_status_ctx":
        return f"Device is {str(get('status') or 'offline').lower()}"
    if kind == "comp_script_ctx":
        samples = get("samples") or {}
        first = next(iter(samples.values()), None) if isinstance(samples, Mapping) else None
        return f"Component monitor: {first}" if first is not None else "Component monitor alert"
    values = ", ".join(f"{k}={v}" for k, v in context.items()
                       if k != "@class" and v not in (None, "", [], {}))
    return f"{kind}: {values}" if values else kind


def alert(row: Mapping[str, Any]) -> Alert:
    source = row.get("alertSourceInfo") or {}
    monitor_info = row.get("alertMonitorInfo") or {}
    context = row.get("alertContext") or {}
    creates_ticket = monitor_info.get("createsTicket")
    return Alert(
        uid=str(row["alertUid"]),
        priority=row.get("priority") or "Unknown",
        device_uid=str(source.get("deviceUid") or ""),
        site_uid=str(source.get("siteUid") or ""),
        monitor=monitor_identity(context),
        message=describe_context(context),
        diagnostics=row.get("diagnostics") or "",
        raised_at=epoch_ms(row.get("timestamp")),
        resolved=bool(row.get("resolved")),
        resolved_at=epoch_ms(row.get("resolvedOn")),
        # Unknown (null) means "as the monitor is set up in psabridge", the model's default.
        creates_ticket=True if creates_ticket is None else bool(creates_ticket),
        device_name=source.get("deviceName") or "",
        site_name=source.get("siteName") or "",
    )
