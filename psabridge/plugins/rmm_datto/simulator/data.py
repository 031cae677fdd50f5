"""Seeded, realistic Datto RMM data: sites named like an MSP's PSA companies, devices, alerts.

Everything is a plain dict in Datto's wire shape (API-NOTES §5), so the simulator serves it as is.
The same seed always gives the same estate.

Site names come from `msp_company_names`, the base list of client companies, with the distortions
real estates show between the PSA's company name and the RMM's site name: a dropped or swapped
legal suffix, a change of case, "&" for "and", a typo, a location tag. Some sites have no company
at all (internal or lab sites). `Estate.site_origins` records which company and which distortion
each site came from, so matching tests can check their answers.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable

import attrs

DELETED_DEVICES_SITE_UID = "deleted-devices"  # the system site's uid is not a GUID (§5)
UDF_COUNT = 300
PRIORITIES = ("Critical", "High", "Moderate", "Low", "Information", "Unknown")
UNKNOWN_CONTEXT_CLASS = "future_sensor_ctx"  # a class no client knows (checklist §9.7)
# Real serial numbers that many machines share: unflashed boards and white-box builds.
SHARED_SERIALS = ("To Be Filled By O.E.M.", "System Serial Number")

# -- company names ------------------------------------------------------------------------------

_PREFIXES = (
    "Acme", "Summit", "Blue Ridge", "Harbor", "Pioneer", "Cedar", "Northwind", "Riverside",
    "Oakwood", "Granite", "Evergreen", "Lakeside", "Keystone", "Sterling", "Maple", "Redwood",
    "Silver Creek", "Beacon", "Horizon", "Liberty", "Meridian", "Atlas", "Crescent", "Falcon",
    "Willow", "Bright Path", "Ironclad", "Coastal", "Prairie", "Union",
)
_SURNAMES = (
    "Smith", "Johnson", "Garcia", "Miller", "Davis", "Martinez", "Wilson", "Anderson", "Taylor",
    "Thomas", "Moore", "Jackson", "Martin", "Lee", "Harris", "Clark", "Lewis", "Walker", "Young",
    "King",
)
_TRADES = (
    "Dental", "Family Dentistry", "Veterinary Clinic", "Law Group", "Accounting", "Construction",
    "Plumbing", "Logistics", "Manufacturing", "Realty", "Insurance Agency", "Pediatrics",
    "Architects", "Engineering", "Medical Group", "Auto Repair", "Landscaping", "Bakery",
    "Brewing", "Credit Union",
)
LEGAL_SUFFIXES = ("Inc.", "LLC", "Ltd", "Corp.", "Co.", "LLP")
_UNMATCHED_SITES = (
    "Internal IT", "Staging Lab", "Onboarding - New Clients", "Home Office Users",
    "Disaster Recovery Lab", "Training Room", "Spare Hardware", "Test Bench",
)


def msp_company_names(seed: int, n: int) -> list[str]:
    """`n` distinct, realistic names of an MSP's client companies, the same for the same seed.

    Pure (no I/O, no global state): the PSA simulator can share this list so that both sides
    describe the same clients. Examples: "Acme Corp.", "Smith & Sons LLC", "Cedar Dental Inc.".
    """
    rng = random.Random(f"msp-companies:{seed}")
    patterns: tuple[Callable[[], str], ...] = (
        lambda: f"{rng.choice(_PREFIXES)} {rng.choice(_TRADES)} {rng.choice(LEGAL_SUFFIXES)}",
        lambda: f"{rng.choice(_SURNAMES)} & Sons {rng.choice(LEGAL_SUFFIXES)}",
        lambda: f"{rng.choice(_SURNAMES)} and {rng.choice(_SURNAMES)} {rng.choice(_TRADES)}",
        lambda: f"{rng.choice(_PREFIXES)} {rng.choice(('Corp.', 'Group', 'Partners', 'Holdings'))}",
        lambda: f"{rng.choice(_PREFIXES)} {rng.choice(_TRADES)}",
    )
    names: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(names) < n:
        attempts += 1
        name = rng.choice(patterns)()
        if attempts > 50 * (n + 10):  # the vocabulary ran out: number the rest
            name = f"{name} {len(names) + 1}"
        key = name.lower()
        if key not in seen:
            seen.add(key)
            names.append(name)
    return names


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


# kind -> (deviceClass, deviceType.category or None, deviceType.type, hostname stem, weight)
DEVICE_KINDS = {
    "desktop": ("device", "Desktop", "Desktop", "WS", 40),
    "laptop": ("device", "Laptop", "Laptop", "LT", 25),
    "server": ("device", "Server", "Server", "SRV", 15),
    "printer": ("printer", "Printer", "Printer", "PRN", 8),
    "esxi": ("esxihost", "ESXi Host", "ESXi Host", "ESX", 4),
    # Network devices send most fields null, deviceType included (pncit, §5).
    "network": ("rmmnetworkdevice", None, None, "SW", 8),
}
_HARDWARE = {
    "desktop": [("Dell Inc.", "OptiPlex 7090"), ("HP", "EliteDesk 800 G6"), ("LENOVO", "ThinkCentre M70q")],
    "laptop": [("Dell Inc.", "Latitude 5420"), ("LENOVO", "ThinkPad T14 Gen 2"), ("HP", "EliteBook 840 G8")],
    "server": [("Dell Inc.", "PowerEdge R740"), ("HPE", "ProLiant DL380 Gen10"), ("Supermicro", "SYS-1029P")],
    "printer": [("HP", "LaserJet Pro M404"), ("Brother", "HL-L6200DW"), ("Kyocera", "ECOSYS P3145dn")],
    "esxi": [("Dell Inc.", "PowerEdge R650"), ("HPE", "ProLiant DL360 Gen10")],
    "network": [("Ubiquiti", "USW-24-POE"), ("Cisco", "C9200L-24P")],
}
_OS = {
    "desktop": "Microsoft Windows 11 Pro 23H2", "laptop": "Microsoft Windows 10 Pro 22H2",
    "server": "Microsoft Windows Server 2022 Standard", "esxi": "VMware ESXi 7.0.3",
}


def _serial(rng: random.Random, manufacturer: str) -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    body = "".join(rng.choice(alphabet) for _ in range(7))
    return {"Dell Inc.": body, "HP": "CZC" + body, "LENOVO": "PF" + body[:6]}.get(manufacturer, "SN" + body)


def _abbreviation(name: str) -> str:
    letters = "".join(word[0] for word in name.split() if word[:1].isalpha())
    return (letters[:4] or "SITE").upper()


@attrs.define
class _Builder:
    rng: random.Random
    ids: _Ids
    now_ms: int
    account_uid: str
    estate: Estate

    def device(self, site: dict, kind: str, hostname: str, audited: bool = True,
               deleted: bool = False, serial: str | None = None) -> dict:
        rng = self.rng
        device_class, category, type_, _stem, _weight = DEVICE_KINDS[kind]
        manufacturer, model = rng.choice(_HARDWARE[kind])
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
            device_class, manufacturer, model, serial or _serial(rng, manufacturer), hostname, rng)
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
                    devices_per_site: tuple[int, int] = (3, 8), alerts: int = 24,
                    now_ms: int = 1_790_000_000_000,
                    company_names: list[str] | None = None) -> Estate:
    """A whole account: sites (most derived from `msp_company_names(seed, companies)`, or from
    `company_names`, e.g. the PSA simulator's companies, so both sides describe the same
    clients), their devices and audits, and alerts, some of them resolved. Deterministic."""
    rng = random.Random(f"datto-estate:{seed}")
    ids = _Ids(rng)
    account_uid = ids.uid()
    account = {"id": ids.id(), "uid": account_uid, "name": "Simulated MSP", "currency": "USD",
               "descriptor": {"bilingEmail": "billing@msp.example", "deviceLimit": 5000,
                              "timeZone": "UTC"}, "devicesStatus": None}
    estate = Estate(account, [], [], {}, [])
    builder = _Builder(rng, ids, now_ms, account_uid, estate)
    names = list(DISTORTIONS)
    for i, company in enumerate(company_names or msp_company_names(seed, companies)):
        distortion = names[i % len(names)]  # every distortion appears once in the first seven
        site = make_site(ids, account_uid, distort(company, distortion, rng))
        estate.sites.append(site)
        estate.site_origins[site["uid"]] = (company, distortion)
    for name in _UNMATCHED_SITES[:unmatched_sites]:
        site = make_site(ids, account_uid, name)
        estate.sites.append(site)
        estate.site_origins[site["uid"]] = (None, "unmatched")
    _add_devices(builder, devices_per_site)
    deleted_site = make_site(ids, account_uid, "Deleted Devices", uid=DELETED_DEVICES_SITE_UID)
    estate.sites.append(deleted_site)
    estate.site_origins[deleted_site["uid"]] = (None, "system")
    for n in range(2):
        builder.device(deleted_site, "desktop", f"OLD-PC-{n + 1:02d}", deleted=True)
    _add_alerts(builder, alerts)
    return estate


def _add_devices(builder: _Builder, per_site: tuple[int, int]) -> None:
    rng = builder.rng
    kinds = list(DEVICE_KINDS)
    weights = [DEVICE_KINDS[k][4] for k in kinds]
    client_sites = list(builder.estate.sites)
    for site in client_sites:
        abbreviation = _abbreviation(site["name"])
        chosen = ["desktop", "server", *rng.choices(kinds, weights, k=rng.randint(*per_site) - 2)]
        for n, kind in enumerate(chosen, start=1):
            stem = DEVICE_KINDS[kind][3]
            builder.device(site, kind, f"{abbreviation}-{stem}{n:02d}", audited=rng.random() > 0.12)
    first, second = client_sites[0], client_sites[1]
    # Duplicated names: the same front-desk PC name in two sites, and twice in one site.
    for site in (first, second, first):
        builder.device(site, "desktop", "RECEPTION-PC")
    # One of each kind that is always there, whatever the weights drew.
    for kind in ("laptop", "printer", "esxi", "network"):
        builder.device(second, kind, f"{_abbreviation(second['name'])}-{DEVICE_KINDS[kind][3]}99")
    builder.device(first, "desktop", "NEW-PC-01", audited=False)  # enrolled, not yet audited
    for serial in SHARED_SERIALS:  # white-box machines that share a serial
        for site in (first, second):
            builder.device(site, "server", f"WHITEBOX-{_abbreviation(site['name'])}", serial=serial)


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
