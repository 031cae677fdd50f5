"""Seeded, realistic Datto RMM data: sites named like an MSP's PSA companies, devices, alerts.

Everything is a plain dict in Datto's wire shape (API-NOTES §5), so the simulator serves it as is.
The same seed always gives the same estate.

Sites and their devices come from `psabridge.simulated_msp`, the MSP's client companies and their
machines, which the ConnectWise simulator reads too (started with the same seed and number of
companies, the two describe the same customers). Site names are the company names with the
distortions real estates show between the PSA's company name and the RMM's site name: a dropped
or swapped legal suffix, a change of case, "&" for "and", a typo, a location tag. Some sites have
no company at all (internal or lab sites). `Estate.site_origins` records which company and which distortion
each site came from, so matching tests can check their answers.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable

import attrs

from psabridge import simulated_msp

DELETED_DEVICES_SITE_UID = "deleted-devices"  # the system site's uid is not a GUID (§5)
UDF_COUNT = 300
PRIORITIES = ("Critical", "High", "Moderate", "Low", "Information", "Unknown")
UNKNOWN_CONTEXT_CLASS = "future_sensor_ctx"  # a class no client knows (checklist §9.7)
# Real serial numbers that many machines share: unflashed boards and white-box builds.
SHARED_SERIALS = ("To Be Filled By O.E.M.", "System Serial Number")

# -- site names --------------------------------------------------------------------------------

LEGAL_SUFFIXES = ("Inc.", "LLC", "Ltd", "Corp.", "Co.", "LLP")
_UNMATCHED_SITES = (
    "Internal IT", "Staging Lab", "Onboarding - New Clients", "Home Office Users",
    "Disaster Recovery Lab", "Training Room", "Spare Hardware", "Test Bench",
)


# -- distorting a company name into a site name -------------------------------------------------


def _strip_suffix(name: str) -> str:
    for suffix in LEGAL_SUFFIXES:
        if name.endswith(" " + suffix):
            return name[: -len(suffix) - 1]
    return name


def _swap_suffix(name: str, rng: random.Random) -> str:
    bare = _strip_suffix(name)
    current = name[len(bare):].strip()
    return f"{bare} {rng.choice([s for s in LEGAL_SUFFIXES if s != current])}"


def _change_case(name: str, rng: random.Random) -> str:
    variants = [v for v in (name.upper(), name.lower(), name.title().replace("Llc", "LLC")) if v != name]
    return rng.choice(variants) if variants else name


def _swap_ampersand(name: str, rng: random.Random) -> str:
    if " & " in name:
        return name.replace(" & ", " and ")
    if " and " in name:
        return name.replace(" and ", " & ")
    return _change_case(name, rng)  # nothing to swap: still a distortion, never an identity


def _typo(name: str, rng: random.Random) -> str:
    words = name.split(" ")
    candidates = [i for i, word in enumerate(words) if len(word) >= 5 and word.isalpha()]
    if not candidates:
        return name + "s"
    i = rng.choice(candidates)
    word = words[i]
    at = rng.randrange(1, len(word) - 2)
    edit = rng.choice(("swap", "drop", "double"))
    if edit == "swap":
        word = word[:at] + word[at + 1] + word[at] + word[at + 2:]
    elif edit == "drop":
        word = word[:at] + word[at + 1:]
    else:
        word = word[:at] + word[at] + word[at:]
    words[i] = word
    return " ".join(words)


def _location(name: str, rng: random.Random) -> str:
    return f"{_strip_suffix(name)}{rng.choice((' - Main Office', ' (HQ)', ' - Downtown'))}"


DISTORTIONS: dict[str, Callable[[str, random.Random], str]] = {
    "exact": lambda name, rng: name,
    "drop_suffix": lambda name, rng: _strip_suffix(name),
    "swap_suffix": _swap_suffix,
    "case": _change_case,
    "ampersand": _swap_ampersand,
    "typo": _typo,
    "location": _location,
}


def distort(name: str, distortion: str, rng: random.Random) -> str:
    return DISTORTIONS[distortion](name, rng)


# -- the estate ---------------------------------------------------------------------------------


@attrs.define
class Estate:
    account: dict
    sites: list[dict]
    devices: list[dict]
    audits: dict[str, dict]  # device uid -> audit (without portalUrl, added when served)
    alerts: list[dict]
    # site uid -> (company name it was derived from or None, distortion applied or "unmatched")
    site_origins: dict[str, tuple[str | None, str]] = attrs.field(factory=dict)


class _Ids:
    """Deterministic GUIDs and numeric ids from the seed."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.next_id = 1000

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def id(self) -> int:
        self.next_id += self.rng.randint(1, 40)
        return self.next_id


def empty_udfs() -> dict[str, None]:
    """All 300 udf keys, unset (the API always sends every key, §5)."""
    return {f"udf{i}": None for i in range(1, UDF_COUNT + 1)}


def make_site(ids: _Ids, account_uid: str, name: str, uid: str | None = None) -> dict:
    return {
        "id": ids.id(), "uid": uid or ids.uid(), "accountUid": account_uid, "name": name,
        "description": None, "notes": None, "onDemand": False, "splashtopAutoInstall": True,
        "proxySettings": None, "devicesStatus": None, "autotaskCompanyName": None,
        "autotaskCompanyId": None, "portalUrl": None,
    }


# kind (simulated_msp's) -> (deviceClass, deviceType.category or None, deviceType.type)
DEVICE_KINDS = {
    "desktop": ("device", "Desktop", "Desktop"),
    "laptop": ("device", "Laptop", "Laptop"),
    "server": ("device", "Server", "Server"),
    "printer": ("printer", "Printer", "Printer"),
    "esxi": ("esxihost", "ESXi Host", "ESXi Host"),
    # Network devices send most fields null, deviceType included (pncit, §5).
    "network": ("rmmnetworkdevice", None, None),
}
_OS = {
    "desktop": "Microsoft Windows 11 Pro 23H2", "laptop": "Microsoft Windows 10 Pro 22H2",
    "server": "Microsoft Windows Server 2022 Standard", "esxi": "VMware ESXi 7.0.3",
}


def _stem(kind: str) -> str:
    return simulated_msp.MACHINE_KINDS[kind][0]


@attrs.define
class _Builder:
    rng: random.Random
    ids: _Ids
    now_ms: int
    account_uid: str
    estate: Estate

    def machine(self, site: dict, machine: simulated_msp.Machine) -> dict:
        return self.device(site, machine.kind, machine.hostname, audited=machine.audited,
                           serial=machine.serial, hardware=(machine.manufacturer, machine.model))

    def device(self, site: dict, kind: str, hostname: str, audited: bool = True,
               deleted: bool = False, serial: str | None = None,
               hardware: tuple[str, str] | None = None) -> dict:
        rng = self.rng
        device_class, category, type_ = DEVICE_KINDS[kind]
        manufacturer, model = hardware or rng.choice(simulated_msp.HARDWARE[kind])
        day = 86_400_000
        created = self.now_ms - rng.randint(30, 900) * day
        never = rng.choice((None, 0, -62135596800000))  # every "never" form the API is known to use
        row = {
            "id": self.ids.id(), "uid": self.ids.uid(), "siteId": site["id"], "siteUid": site["uid"],
            "siteName": site["name"],
            "deviceType": {"category": category, "type": type_} if category else None,
            "hostname": hostname,
            "intIpAddress": f"10.{rng.randint(0, 20)}.{rng.randint(0, 9)}.{rng.randint(2, 250)}",
            "operatingSystem": _OS.get(kind), "lastLoggedInUser": None if kind in ("printer", "network") else
            f"{site['name'].split()[0].upper()}\\user{rng.randint(1, 40)}",
            "domain": None, "cagVersion": None if kind == "network" else "4.4.2210.2210",
            "displayVersion": None, "extIpAddress": f"203.0.113.{rng.randint(1, 254)}",
            "description": None, "a64Bit": None if kind == "network" else True,
            "rebootRequired": rng.random() < 0.2, "online": rng.random() < 0.85, "suspended": False,
            "deleted": deleted, "lastSeen": self.now_ms - rng.randint(0, 3 * day),
            "lastReboot": self.now_ms - rng.randint(day, 20 * day),
            "lastAuditDate": self.now_ms - rng.randint(1, 10) * day if audited else never,
            "creationDate": created, "udf": empty_udfs(), "snmpEnabled": kind in ("printer", "network"),
            "deviceClass": device_class, "portalUrl": None,
            "warrantyDate": f"{2025 + rng.randint(0, 4)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            if kind in ("desktop", "laptop", "server") and rng.random() < 0.6 else None,
            "antivirus": None if kind in ("printer", "network", "esxi") else {
                "antivirusProduct": "Microsoft Defender Antivirus", "antivirusStatus": "RunningAndUpToDate"},
            "patchManagement": None if kind in ("printer", "network", "esxi") else {
                "patchStatus": "FullyPatched", "patchesApprovedPending": 0, "patchesNotApproved": 0,
                "patchesInstalled": rng.randint(20, 200)},
            "softwareStatus": None, "webRemoteUrl": None, "networkProbe": False,
            "onboardedViaNetworkMonitor": kind == "network",
        }
        row["udf"]["udf1"] = site["name"]  # MSPs commonly keep a client tag in a UDF
        self.estate.devices.append(row)
        self.estate.audits[row["uid"]] = make_audit(
            device_class, manufacturer, model, serial or simulated_msp.serial_number(rng, manufacturer),
            hostname, rng)
        return row


def make_audit(device_class: str, manufacturer: str | None, model: str | None, serial: str | None,
               hostname: str = "", rng: random.Random | None = None) -> dict:
    """An audit in the shape of the class's endpoint (DeviceAudit, PrinterAudit, ESXiHostAudit)."""
    rng = rng or random.Random(0)
    mac = ":".join(f"{rng.randint(0, 255):02X}" for _ in range(6))
    nics = [{"instance": "Ethernet", "ipv4": None, "ipv6": None, "macAddress": mac, "type": None}]
    if device_class == "printer":
        return {"snmpInfo": {"snmpName": hostname, "snmpContact": None, "snmpDescription": model,
                             "snmpLocation": None, "snmpUptime": None, "nicManufacturer": None,
                             "objectId": "1.3.6.1.4.1.11.2.3.9.1", "snmpSerial": serial},
                "printerMarkerSupplies": [], "printer": None,
                "systemInfo": {"manufacturer": manufacturer, "model": model}, "nics": nics}
    if device_class == "esxihost":
        return {"systemInfo": {"manufacturer": manufacturer, "model": model, "name": hostname,
                               "numberOfSnapshots": 0, "serviceTag": serial},
                "guests": [], "processors": [], "nics": nics, "physicalMemory": [], "datastores": []}
    return {
        "webRemoteUrl": None,
        "systemInfo": {"manufacturer": manufacturer, "model": model, "totalPhysicalMemory": 17179869184,
                       "username": None, "dotNetVersion": "4.8", "totalCpuCores": 8},
        "nics": nics,
        "bios": {"instance": None, "releaseDate": None, "serialNumber": serial, "smBiosVersion": "3.3"},
        "baseBoard": {"manufacturer": manufacturer, "product": model},
        "displays": [], "logicalDisks": [], "mobileInfo": [], "processors": [], "videoBoards": [],
        "attachedDevices": [], "snmpInfo": None, "physicalMemory": [],
    }


# -- alerts -------------------------------------------------------------------------------------


def alert_contexts(rng: random.Random) -> list[dict]:
    """One context of each kind the generator raises; fields as API-NOTES §5 lists them."""
    return [
        {"@class": "eventlog_ctx", "logName": "System", "code": rng.choice(("7036", "41", "1014")),
         "type": "Error", "source": rng.choice(("Service Control Manager", "Microsoft-Windows-Kernel-Power")),
         "description": "The service terminated unexpectedly.", "triggerCount": rng.randint(1, 5),
         "lastTriggered": None, "causedSuspension": False},
        {"@class": "perf_disk_usage_ctx", "diskName": "C:", "diskNameDesignation": "C:",
         "freeSpace": round(rng.uniform(0.5, 9.5), 1), "totalVolume": 237.9, "unitOfMeasure": "GB"},
        {"@class": "online_offline_status_ctx", "status": "OFFLINE"},
        {"@class": "comp_script_ctx", "samples": {"Result": "Backup job failed: destination unreachable"}},
        {"@class": "antivirus_ctx", "status": "NotRunning", "productName": "Microsoft Defender Antivirus"},
        {"@class": "perf_resource_usage_ctx", "type": "CPU", "percentage": round(rng.uniform(90, 100), 1)},
        {"@class": "srvc_status_ctx", "serviceName": "Spooler", "status": "STOPPED"},
        {"@class": "patch_ctx", "patchUid": None, "policyUid": "5f0c2b0e-patch-policy", "result": "FAILED",
         "info": "2 updates failed to install"},
        {"@class": UNKNOWN_CONTEXT_CLASS, "sensor": "Chassis intrusion", "reading": 1},
    ]


def make_alert(ids: _Ids, device: dict, context: dict, priority: str, timestamp_ms: int,
               creates_ticket: bool | None = True) -> dict:
    return {
        "alertUid": ids.uid(), "priority": priority, "diagnostics": None, "resolved": False,
        "resolvedBy": None, "resolvedOn": None, "muted": False, "ticketNumber": None,
        "timestamp": timestamp_ms, "autoresolveMins": None,
        "alertMonitorInfo": {"sendsEmails": True, "createsTicket": creates_ticket},
        "alertSourceInfo": {"deviceUid": device["uid"], "deviceName": device["hostname"],
                            "siteUid": device["siteUid"], "siteName": device["siteName"]},
        "alertContext": dict(context), "responseActions": [],
    }


# -- putting it together ------------------------------------------------------------------------


def generate_estate(seed: int = 0, companies: int = 12, unmatched_sites: int = 2,
                    devices_per_site: tuple[int, int] = simulated_msp.MACHINES_PER_CLIENT,
                    alerts: int = 24, now_ms: int = 1_790_000_000_000,
                    company_names: list[str] | None = None) -> Estate:
    """A whole account: a site for each of the MSP's `companies` clients (`simulated_msp`, or
    the clients named `company_names`) with their machines as devices, a few sites of the MSP's
    own, and alerts, some of them resolved. Deterministic; a PSA simulator of the same seed and
    number of companies describes the same clients."""
    rng = random.Random(f"datto-estate:{seed}")
    ids = _Ids(rng)
    account_uid = ids.uid()
    account = {"id": ids.id(), "uid": account_uid, "name": "Simulated MSP", "currency": "USD",
               "descriptor": {"bilingEmail": "billing@msp.example", "deviceLimit": 5000,
                              "timeZone": "UTC"}, "devicesStatus": None}
    estate = Estate(account, [], [], {}, [])
    builder = _Builder(rng, ids, now_ms, account_uid, estate)
    names = list(DISTORTIONS)
    machines: list[tuple[simulated_msp.Machine, ...]] = []
    for i, client in enumerate(simulated_msp.clients(seed, companies, company_names, devices_per_site)):
        distortion = names[i % len(names)]  # every distortion appears once in the first seven
        site = make_site(ids, account_uid, distort(client.name, distortion, rng))
        estate.sites.append(site)
        estate.site_origins[site["uid"]] = (client.name, distortion)
        machines.append(client.machines)
    for name in _UNMATCHED_SITES[:unmatched_sites]:
        site = make_site(ids, account_uid, name)
        estate.sites.append(site)
        estate.site_origins[site["uid"]] = (None, "unmatched")
        machines.append(tuple(simulated_msp.draw_machines(
            rng, simulated_msp.abbreviation(name), rng.randint(*devices_per_site))))
    _add_devices(builder, machines)
    deleted_site = make_site(ids, account_uid, "Deleted Devices", uid=DELETED_DEVICES_SITE_UID)
    estate.sites.append(deleted_site)
    estate.site_origins[deleted_site["uid"]] = (None, "system")
    for n in range(2):
        builder.device(deleted_site, "desktop", f"OLD-PC-{n + 1:02d}", deleted=True)
    _add_alerts(builder, alerts)
    return estate


def _add_devices(builder: _Builder, machines: list[tuple[simulated_msp.Machine, ...]]) -> None:
    """Each site's machines (in the order of `builder.estate.sites`), then the awkward devices
    real estates have, in the first two sites."""
    client_sites = list(builder.estate.sites)
    for site, site_machines in zip(client_sites, machines, strict=True):
        for machine in site_machines:
            builder.machine(site, machine)
    first, second = client_sites[0], client_sites[1]
    # Duplicated names: the same front-desk PC name in two sites, and twice in one site.
    for site in (first, second, first):
        builder.device(site, "desktop", "RECEPTION-PC")
    # One of each kind that is always there, whatever the weights drew.
    prefix = simulated_msp.abbreviation(site_origin_name(builder.estate, second))
    for kind in ("laptop", "printer", "esxi", "network"):
        builder.device(second, kind, f"{prefix}-{_stem(kind)}99")
    builder.device(first, "desktop", "NEW-PC-01", audited=False)  # enrolled, not yet audited
    for serial in SHARED_SERIALS:  # white-box machines that share a serial
        for site in (first, second):
            prefix = simulated_msp.abbreviation(site_origin_name(builder.estate, site))
            builder.device(site, "server", f"WHITEBOX-{prefix}", serial=serial)


def site_origin_name(estate: Estate, site: dict) -> str:
    """The company a site was made for (its machines are named after it), else the site's name."""
    return estate.site_origins.get(site["uid"], (None, ""))[0] or site["name"]


def _add_alerts(builder: _Builder, count: int) -> None:
    rng, now = builder.rng, builder.now_ms
    # Monitors that raise these contexts run on agents, so alerts come from agent devices.
    live = [d for d in builder.estate.devices if not d["deleted"] and d["deviceClass"] == "device"]
    contexts = alert_contexts(rng)
    for n in range(count):
        device = rng.choice(live)
        context = contexts[n % len(contexts)]
        priority = PRIORITIES[n % len(PRIORITIES)]
        creates_ticket = None if n % 11 == 10 else n % 5 != 4
        raised = now - rng.randint(60_000, 6 * 86_400_000)
        alert = make_alert(builder.ids, device, context, priority, raised, creates_ticket)
        if n % 4 == 3:
            alert.update(resolved=True, resolvedOn=raised + rng.randint(60_000, 3_600_000),
                         resolvedBy="system")
        builder.estate.alerts.append(alert)
    if not builder.estate.alerts:
        return  # an estate asked for with no alerts has nothing to repeat either
    # The same monitor firing again on the same device (a repeating alert).
    first = builder.estate.alerts[0]
    repeat = make_alert(builder.ids, _device_of(builder, first), first["alertContext"],
                        first["priority"], now - 30_000)
    builder.estate.alerts.append(repeat)


def _device_of(builder: _Builder, alert: dict) -> dict:
    uid = alert["alertSourceInfo"]["deviceUid"]
    return next(d for d in builder.estate.devices if d["uid"] == uid)
