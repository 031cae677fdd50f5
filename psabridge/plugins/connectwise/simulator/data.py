"""Seeded MSP data for the simulator: companies, configurations, boards and lookups.

Everything comes from `random.Random(seed)`, so a seed always gives the same data. The client
companies, and the machines the MSP already recorded as their configurations, come from
`psabridge.simulated_msp`, which the Datto RMM simulator reads too: started with the same seed
and number of companies, the two simulators describe the same customers.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

from psabridge.simulated_msp import company_names  # noqa: F401 - part of this module's API


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


# The PSA's configuration type for each kind of machine the MSP already recorded.
KNOWN_MACHINE_TYPES = {"desktop": "Managed Workstation", "laptop": "Laptop", "server": "Managed Server",
                       "printer": "Printer", "esxi": "ESXi Host", "network": "Network Device"}


def serial_number(rng: random.Random) -> str:
    return "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(10))
