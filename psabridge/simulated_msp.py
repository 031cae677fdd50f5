"""The simulated MSP that every simulator describes: its client companies and their machines.

A PSA simulator and an RMM simulator started on their own, with the same seed and the same
number of companies, describe the same customers, as the real PSA and RMM of one MSP do:

* `company_names(seed, n)`: the client companies, as the PSA records them;
* `clients(seed, n)`: each company with the machines the MSP manages for it (hostname, kind,
  hardware, serial), and for some machines how the MSP already recorded them in the PSA before
  any integration: under the same serial number, or under the same name.

The RMM simulator serves the machines as devices of a site named after the company (with the
naming differences real estates show; that is the RMM simulator's business); the PSA simulator
records the machines the MSP already knew about as configurations of the company. Nothing here
knows a product's wire format, and nothing here decides what matches what: that is psabridge's
own job, which the simulators exist to exercise.

Everything is deterministic and prefix-stable: `clients(s, n)[:k] == clients(s, k)`, so two
simulators given different counts still agree on the companies they both have.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

import attrs

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
    """`n` distinct, realistic MSP client names (at most 50 characters) for `seed`."""
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


# -- machines ---------------------------------------------------------------------------------

MachineKind = Literal["desktop", "laptop", "server", "printer", "esxi", "network"]
# kind -> (hostname stem, how common it is)
MACHINE_KINDS: dict[str, tuple[str, int]] = {
    "desktop": ("WS", 40), "laptop": ("LT", 25), "server": ("SRV", 15), "printer": ("PRN", 8),
    "esxi": ("ESX", 4), "network": ("SW", 8),
}
HARDWARE: dict[str, list[tuple[str, str]]] = {
    "desktop": [("Dell Inc.", "OptiPlex 7090"), ("HP", "EliteDesk 800 G6"), ("LENOVO", "ThinkCentre M70q")],
    "laptop": [("Dell Inc.", "Latitude 5420"), ("LENOVO", "ThinkPad T14 Gen 2"), ("HP", "EliteBook 840 G8")],
    "server": [("Dell Inc.", "PowerEdge R740"), ("HPE", "ProLiant DL380 Gen10"), ("Supermicro", "SYS-1029P")],
    "printer": [("HP", "LaserJet Pro M404"), ("Brother", "HL-L6200DW"), ("Kyocera", "ECOSYS P3145dn")],
    "esxi": [("Dell Inc.", "PowerEdge R650"), ("HPE", "ProLiant DL360 Gen10")],
    "network": [("Ubiquiti", "USW-24-POE"), ("Cisco", "C9200L-24P")],
}
# Kinds whose serial number an RMM reads from the machine itself (the BIOS): the ones an MSP
# could have typed into the PSA from the sticker and an integration can compare.
SERIAL_KINDS = frozenset({"desktop", "laptop", "server"})
MACHINES_PER_CLIENT = (3, 8)
KNOWN_SHARE = 0.35  # of the machines with a readable serial, how many the PSA already has
BY_SERIAL_SHARE = 0.6  # of those, how many were recorded with their serial (the others by name)


@attrs.frozen
class Machine:
    """One machine an MSP manages. `in_psa` says how the MSP recorded it in the PSA before any
    integration: "serial" (a configuration with its serial number, named "HOSTNAME (asset)"),
    "name" (a configuration named as the machine, without a serial), or None (not at all)."""

    hostname: str
    kind: MachineKind
    manufacturer: str
    model: str
    serial: str
    audited: bool  # the RMM agent has sent its inventory; a new machine may not have yet
    in_psa: Literal["serial", "name"] | None = None

    @property
    def configuration_name(self) -> str:
        """The name the MSP gave its configuration in the PSA."""
        return f"{self.hostname} (asset)" if self.in_psa == "serial" else self.hostname


@attrs.frozen
class Client:
    name: str  # as the PSA records the company
    machines: tuple[Machine, ...]


def serial_number(rng: random.Random, manufacturer: str) -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    body = "".join(rng.choice(alphabet) for _ in range(7))
    return {"Dell Inc.": body, "HP": "CZC" + body, "LENOVO": "PF" + body[:6]}.get(manufacturer, "SN" + body)


def abbreviation(name: str) -> str:
    """The hostname prefix an MSP would give a client's machines: "Acme Holdings Ltd" -> "AHL"."""
    letters = "".join(word[0] for word in name.split() if word[:1].isalpha())
    return (letters[:4] or "SITE").upper()


def draw_machines(rng: random.Random, prefix: str, count: int) -> list[Machine]:
    """`count` machines named `PREFIX-WS01`, `PREFIX-SRV02`...: a desktop and a server first,
    then kinds as common as they are in a real estate. None is in the PSA."""
    kinds = list(MACHINE_KINDS)
    weights = [MACHINE_KINDS[k][1] for k in kinds]
    chosen = ["desktop", "server", *rng.choices(kinds, weights, k=max(count - 2, 0))][:count]
    machines = []
    for n, kind in enumerate(chosen, start=1):
        manufacturer, model = rng.choice(HARDWARE[kind])
        machines.append(Machine(f"{prefix}-{MACHINE_KINDS[kind][0]}{n:02d}", kind, manufacturer, model,
                                serial_number(rng, manufacturer), audited=rng.random() > 0.12))
    return machines


def client(seed: int, index: int, name: str,
           machines_per_client: tuple[int, int] = MACHINES_PER_CLIENT) -> Client:
    """The client `name` (the `index`-th company of the seed) and its machines."""
    rng = random.Random(f"psabridge-client:{seed}:{index}:{name}")
    machines = draw_machines(rng, abbreviation(name), rng.randint(*machines_per_client))
    known = []
    for machine in machines:
        if machine.kind in SERIAL_KINDS and machine.audited and rng.random() < KNOWN_SHARE:
            machine = attrs.evolve(machine, in_psa="serial" if rng.random() < BY_SERIAL_SHARE else "name")
        known.append(machine)
    return Client(name, tuple(known))


def clients(seed: int, n: int, names: Sequence[str] | None = None,
            machines_per_client: tuple[int, int] = MACHINES_PER_CLIENT) -> list[Client]:
    """The MSP's `n` clients for `seed` (or the clients named `names`, in that order)."""
    names = list(names) if names is not None else company_names(seed, n)
    return [client(seed, index, name, machines_per_client) for index, name in enumerate(names)]
