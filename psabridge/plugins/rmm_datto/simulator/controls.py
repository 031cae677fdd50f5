"""What a person does in Datto RMM's own interface, for `psabridge simulate raise-alert`,
`resolve-alert` and `add-device`: served under /_simulator/ beside the simulated API (never part
of it), by `DattoSimulator.serve(control_token=...)`.

Each action takes a JSON object and answers one with snake_case keys; a request that cannot be
done is a `ControlError` that says which field is wrong and what to give instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from psabridge.simulation import ControlAction, ControlError

if TYPE_CHECKING:
    from psabridge.plugins.rmm_datto.simulator.app import DattoSimulator

# What `--kind` names: a monitor's alert context in Datto's wire shape (API-NOTES §5).
ALERT_KINDS: dict[str, dict] = {
    "disk": {"@class": "perf_disk_usage_ctx", "diskName": "C:", "diskNameDesignation": "C:",
             "freeSpace": 2.1, "totalVolume": 237.9, "unitOfMeasure": "GB"},
    "offline": {"@class": "online_offline_status_ctx", "status": "OFFLINE"},
    "eventlog": {"@class": "eventlog_ctx", "logName": "System", "code": "7036", "type": "Error",
                 "source": "Service Control Manager",
                 "description": "The Print Spooler service terminated unexpectedly."},
    "antivirus": {"@class": "antivirus_ctx", "status": "NotRunning",
                  "productName": "Microsoft Defender Antivirus"},
    "cpu": {"@class": "perf_resource_usage_ctx", "type": "CPU", "percentage": 97.5},
    "service": {"@class": "srvc_status_ctx", "serviceName": "Spooler", "status": "STOPPED"},
    "script": {"@class": "comp_script_ctx", "samples": {"Result": "Backup job failed"}},
    "patch": {"@class": "patch_ctx", "patchUid": None, "policyUid": "5f0c2b0e-patch-policy",
              "result": "FAILED", "info": "2 updates failed to install"},
}
ALERT_PRIORITIES = ("Critical", "High", "Moderate", "Low", "Information")
DEVICE_KINDS = ("desktop", "laptop", "server", "printer", "esxi", "network")


def actions(sim: DattoSimulator) -> dict[str, ControlAction]:
    return {"raise-alert": lambda body: raise_alert(sim, body),
            "resolve-alert": lambda body: resolve_alert(sim, body),
            "add-device": lambda body: add_device(sim, body)}


def raise_alert(sim: DattoSimulator, body: dict) -> dict:
    """{"device": uid or hostname, "priority": "High", "kind": "disk"}: a monitor fires."""
    kind = _choice(body, "kind", ALERT_KINDS, "disk")
    priority = _choice(body, "priority", ALERT_PRIORITIES, "High")
    with sim._lock:
        device = _device(sim, _text(body, "device"))
        alert = sim.raise_alert(device["uid"], dict(ALERT_KINDS[kind]), priority)
        return alert_result(alert)


def resolve_alert(sim: DattoSimulator, body: dict) -> dict:
    """{"alert": uid}: the monitor recovers, or a technician resolves the alert."""
    uid = _text(body, "alert")
    with sim._lock:
        alert = sim.alerts.get(uid)
        if alert is None:
            raise ControlError(404, f"no alert with uid {uid}: `psabridge tickets list` shows the "
                                    "alerts psabridge has seen")
        if alert["resolved"]:
            raise ControlError(409, f"alert {uid} is already resolved")
        sim.resolve_alert(uid)
        return alert_result(alert)


def add_device(sim: DattoSimulator, body: dict) -> dict:
    """{"site": uid or name, "hostname": "...", "kind": "desktop", "serial": optional}: an agent
    is installed on a new machine."""
    hostname = _text(body, "hostname")
    if len(hostname) > 63 or any(c.isspace() for c in hostname):
        raise ControlError(400, f"hostname {hostname!r} is not a machine name: at most 63 "
                                "characters, no spaces")
    kind = _choice(body, "kind", DEVICE_KINDS, "desktop")
    serial = body.get("serial")
    if serial is not None and (not isinstance(serial, str) or not serial.strip()):
        raise ControlError(400, "serial must be text (leave it out for a generated one)")
    with sim._lock:
        site = _site(sim, _text(body, "site"))
        device = sim.add_device(site["uid"], hostname, kind=kind, serial=serial)
        audit = sim.audits[device["uid"]]
        return {"device_uid": device["uid"], "hostname": device["hostname"], "kind": kind,
                "site_uid": site["uid"], "site_name": site["name"],
                "serial_number": _serial_of(audit)}


def alert_result(alert: dict) -> dict:
    source = alert["alertSourceInfo"]
    return {"alert_uid": alert["alertUid"], "priority": alert["priority"],
            "monitor": alert["alertContext"].get("@class"), "resolved": alert["resolved"],
            "device_uid": source["deviceUid"], "hostname": source["deviceName"],
            "site_uid": source["siteUid"], "site_name": source["siteName"]}


def _text(body: dict, field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value.strip():
        raise ControlError(400, f"{field} is required, as text")
    return value.strip()


def _choice(body: dict, field: str, allowed, default: str) -> str:
    value = body.get(field) or default
    for option in allowed:
        if isinstance(value, str) and option.casefold() == value.casefold():
            return option
    raise ControlError(400, f"{field} {value!r} is not one of: {', '.join(allowed)}")


def _device(sim: DattoSimulator, wanted: str) -> dict:
    if wanted in sim.devices and not sim.devices[wanted]["deleted"]:
        return sim.devices[wanted]
    named = [d for d in sim.devices.values()
             if not d["deleted"] and (d["hostname"] or "").casefold() == wanted.casefold()]
    if len(named) == 1:
        return named[0]
    if not named:
        raise ControlError(404, f"no device with uid or hostname {wanted!r}: `psabridge rmm devices` "
                                "lists them")
    which = ", ".join(f"{d['uid']} in {d['siteName']}" for d in named)
    raise ControlError(409, f"{len(named)} devices are named {wanted!r}: give the uid of one of "
                            f"them ({which})")


def _site(sim: DattoSimulator, wanted: str) -> dict:
    from psabridge.plugins.rmm_datto.simulator.data import DELETED_DEVICES_SITE_UID

    sites = {uid: s for uid, s in sim.sites.items() if uid != DELETED_DEVICES_SITE_UID}
    if wanted in sites:
        return sites[wanted]
    named = [s for s in sites.values() if s["name"].casefold() == wanted.casefold()]
    if len(named) == 1:
        return named[0]
    if not named:
        raise ControlError(404, f"no site with uid or name {wanted!r}: `psabridge rmm sites` lists them")
    raise ControlError(409, f"{len(named)} sites are named {wanted!r}: give the uid of one of them "
                            f"({', '.join(s['uid'] for s in named)})")


def _serial_of(audit: dict) -> str | None:
    for section, field in (("bios", "serialNumber"), ("snmpInfo", "snmpSerial"),
                           ("systemInfo", "serviceTag")):
        value = (audit.get(section) or {}).get(field)
        if value:
            return value
    return None
