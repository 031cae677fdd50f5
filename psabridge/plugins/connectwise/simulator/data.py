"""Seeded MSP data for the simulator: companies, configurations, boards and lookups.

Everything comes from `random.Random(seed)`, so a seed always gives the same data.

`company_names(seed, n)` is public on purpose: the Datto RMM simulator builds its site names
from the same list (then blurs them: "Acme Corp." -> "ACME Corp", "Smith & Sons LLC" ->
"Smith and Sons") so that the two simulators share a world. It is deterministic and
prefix-stable: `company_names(s, n)[:k] == company_names(s, k)` for every k <= n.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

_SURNAMES = (
    "Smith", "Johnson", "Garcia", "Miller", "Davis", "Martinez", "Anderson", "Taylor", "Thomas",
    "Moore", "Jackson", "Martin", "Lee", "Thompson", "White", "Harris", "Clark", "Lewis",
    "Walker", "Hall", "Young", "King", "Wright", "Lopez", "Hill", "Green", "Baker", "Nelson",
    "Carter", "Mitchell", "Roberts", "Turner", "Phillips", "Campbell", "Parker", "Evans",
    "Edwards", "Collins", "Stewart", "Morris", "Murphy", "Cook", "Rogers", "O'Brien", "Bennett",
)
_NOUNS = (
    "Acme", "Summit", "Blue Ridge", "Riverside", "Pinnacle", "Evergreen", "Harbor", "Lakeside",
    "Northwind", "Oakwood", "Silverline", "Redwood", "Cornerstone", "Keystone", "Bright Path",
    "Granite", "Maple Leaf", "Horizon", "Liberty", "Crescent", "Sterling", "Cedar Grove",
    "Golden Gate", "Ironclad", "Meadowbrook", "Westfield", "Bayview", "Stonebridge", "Falcon",
)
_TRADES = (
    "Dental", "Family Medicine", "Law", "Accounting", "Construction", "Logistics", "Realty",
    "Veterinary Clinic", "Engineering", "Insurance", "Architects", "Auto Repair", "Bakery",
    "Financial Advisors", "Manufacturing", "Pharmacy", "Print & Copy", "Plumbing", "Marketing",
)
_PATTERNS = (
    "{noun} Corp.", "{surname} & Sons LLC", "{surname} {trade}", "{noun} {trade} Group",
    "{surname} & {surname2} {trade}", "{noun} Inc.", "{noun} {trade}", "{surname} {trade} LLC",
    "{noun} Holdings Ltd", "The {noun} Company", "{surname}, {surname2} & Partners",
    "{noun} {trade} P.C.",
)


def company_names(seed: int, n: int) -> list[str]:
    """`n` distinct, realistic MSP client names (<= 50 characters, CW's limit) for `seed`."""
    rng = random.Random(f"psabridge-company-names:{seed}")
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        surname, surname2 = rng.sample(_SURNAMES, 2)
        name = rng.choice(_PATTERNS).format(
            noun=rng.choice(_NOUNS), surname=surname, surname2=surname2, trade=rng.choice(_TRADES))
        if len(names) >= len(_PATTERNS) * 40:  # the word lists are exhausted: number them
            name = f"{name} {len(names)}"
        name = name[:50]
        if name.casefold() not in seen:
            seen.add(name.casefold())
            names.append(name)
    return names


def identifier_for(name: str, taken: Iterable[str]) -> str:
    """A CW company identifier (<= 30 chars, no spaces) unique among `taken`."""
    base = re.sub(r"[^A-Za-z0-9]", "", name)[:25] or "Company"
    taken = {t.casefold() for t in taken}
    candidate, n = base, 1
    while candidate.casefold() in taken:
        n += 1
        candidate = f"{base}{n}"
    return candidate


COMPANY_TYPES = ("Client", "Prospect", "Vendor", "Partner", "Managed Services")
COMPANY_STATUSES = (("Active", False), ("Inactive", True), ("Not-Approved", False))

# (name, required questions)
CONFIGURATION_TYPES = (
    ("Managed Workstation", 0), ("Managed Server", 0), ("Laptop", 0), ("Network Device", 0),
    ("Printer", 0), ("Firewall", 2), ("Virtual Machine", 0), ("Mobile Device", 1),
    ("ESXi Host", 0), ("Line of Business Application", 1),
)
CONFIGURATION_STATUSES = (("Active", False, True), ("Inactive", True, False), ("Retired", True, False))

HARDWARE = {
    "Dell Inc.": ("OptiPlex 7090", "Latitude 5520", "PowerEdge R740", "Precision 3660"),
    "HP": ("EliteDesk 800 G6", "ProBook 450 G8", "ProLiant DL380 Gen10", "LaserJet Pro M404"),
    "Lenovo": ("ThinkPad T14", "ThinkCentre M720q", "ThinkSystem SR650"),
    "Apple Inc.": ("MacBook Pro 14", "Mac mini M2", "iMac 24"),
    "Microsoft Corporation": ("Surface Pro 9", "Surface Laptop 5", "Virtual Machine"),
    "Ubiquiti": ("UniFi Dream Machine Pro", "USW-24-PoE"),
}

# Boards: (name, default team or None, statuses as (name, closed, default))
BOARDS = (
    ("Help Desk", "Tier 1", (("New", False, True), ("In Progress", False, False),
                             ("Waiting on Client", False, False), ("Completed", True, False),
                             ("Closed", True, False))),
    ("RMM Alerts", "NOC", (("New (Alert)", False, True), ("Assigned", False, False),
                           ("Resolved", True, False), ("Closed (Auto)", True, False))),
    # No default team, so ticket creation on it is reported before it fails.
    ("Projects Intake", None, (("Submitted", False, True), ("Accepted", False, False),
                               ("Done", True, False))),
)
TICKET_TYPES = ("Incident", "Service Request", "Alert", "Problem")
TICKET_SUBTYPES = ("Hardware", "Software", "Network", "Backup", "Security")
PRIORITIES = ("Priority 1 - Emergency Response", "Priority 2 - Quick Response",
              "Priority 3 - Normal Response", "Priority 4 - Schedule Maintenance",
              "Do Not Respond")
SOURCES = ("Email", "Phone", "Portal", "Monitoring", "Walk-in")


def device_name(rng: random.Random, company_identifier: str, kind: str, number: int) -> str:
    prefix = company_identifier[:4].upper()
    tag = {"Managed Server": "SRV", "Laptop": "LT", "Network Device": "NET",
           "Printer": "PRN", "Virtual Machine": "VM"}.get(kind, "WS")
    if rng.random() < 0.2:  # users rename machines: some keep the Windows default name
        return "DESKTOP-" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(7))
    return f"{prefix}-{tag}{number:02d}"


def serial_number(rng: random.Random) -> str:
    return "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(10))
