"""The simulated Autotask database: its tables, its picklists, and the MSP it is seeded with.

Picklist values are tenant data (API-NOTES §5, §12): only Complete = 5, New = 1 (ticket
statuses) and Customer = 1 (company types) are known to be the same everywhere; the others are
plausible values, served through `entityInformation/fields` as the real API serves them, so a
connector that maps by label (as it must) works here and against a real tenant.

Companies are the clients of `psabridge.simulated_msp`: the same seed and number of companies as
the Datto RMM simulator gives the same customers, and the machines the MSP already recorded in
its PSA are configuration items of their company (by serial number, or by name only).
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from typing import Any

import attrs

from psabridge import simulated_msp
from psabridge.plugins.autotask.simulator.spec import FIELDS

STATUS_NEW, STATUS_COMPLETE = 1, 5
COMPANY_TYPE_CUSTOMER = 1
OWN_COMPANY_ID = 0  # the MSP's own organisation (API-NOTES §5)
API_LICENSE_TYPE = 7  # "API User (API-only)": cannot own companies nor be assigned tickets

# (value, label, isActive, isSystem, isDefault)
STATUSES = [(1, "New", True, True, True), (5, "Complete", True, True, False),
            (7, "Waiting Customer", True, True, False), (8, "In Progress", True, False, False),
            (9, "Waiting Vendor", True, False, False), (10, "Escalated", True, False, False),
            (12, "On Hold (retired)", False, False, False)]
PRIORITIES = [(4, "Critical", True, False, False), (1, "High", True, False, False),
              (2, "Medium", True, False, True), (3, "Low", True, False, False)]
QUEUES = [(5, "Client Portal", True, False, False), (6, "Post Sale", True, False, False),
          (8, "Level I Support", True, False, True), (29682833, "Monitoring Alert", True, False, False),
          (29682969, "Level II Support", True, False, False), (29683012, "Old Queue", False, False, False)]
ISSUE_TYPES = [(1, "Hardware", True, False, False), (2, "Software", True, False, False),
               (3, "Network", True, False, False), (4, "Monitoring", True, False, False)]
# (value, label, parent issue type)
SUB_ISSUE_TYPES = [(10, "Disk", 1), (11, "Memory", 1), (12, "Printer", 1), (20, "Application", 2),
                   (21, "Patching", 2), (30, "Connectivity", 3), (31, "Firewall", 3),
                   (40, "Disk Space", 4), (41, "Offline", 4), (42, "Service Stopped", 4),
                   (43, "Event Log", 4), (44, "Antivirus", 4), (45, "Performance", 4)]
SOURCES = [(2, "Phone", True, False, False), (4, "Email", True, False, True),
           (6, "Client Portal", True, False, False), (8, "Monitoring Alert", True, False, False),
           (11, "Insourced", True, False, False)]
TICKET_TYPES = [(1, "Service Request", True, True, True), (2, "Incident", True, True, False),
                (3, "Problem", True, True, False), (4, "Change Request", True, True, False),
                (5, "Alert", True, True, False)]
COMPANY_TYPES = [(1, "Customer", True, True, True), (2, "Lead", True, True, False),
                 (3, "Prospect", True, True, False), (4, "Dead", True, True, False),
                 (6, "Cancelation", True, True, False), (7, "Vendor", True, True, False),
                 (8, "Partner", True, True, False)]
NOTE_TYPES = [(1, "Task Summary", True, True, False), (2, "Task Detail", True, True, False),
              (3, "Task Notes", True, True, True), (13, "Internal Log", True, False, False)]
NOTE_PUBLISH = [(1, "All Autotask Users", True, True, True), (2, "Internal Project Team", True, True, False),
                (3, "Internal Only", True, False, False)]
LICENSE_TYPES = [(1, "Full", True, True, False), (API_LICENSE_TYPE, "API User", True, True, False)]
# (id, name, isApiOnly, isGlobalDefault)
TICKET_CATEGORIES = [(2, "Standard", False, True), (3, "Alert", False, False),
                     (4, "Standard (non-editable)", False, False), (101, "RMM Integration", True, False)]
CI_TYPES = ["Workstation", "Laptop", "Server", "Printer", "Hypervisor", "Network Device"]
KIND_CI_TYPE = {"desktop": "Workstation", "laptop": "Laptop", "server": "Server", "printer": "Printer",
                "esxi": "Hypervisor", "network": "Network Device"}
PRODUCTS = ["Managed Workstation", "Managed Server", "Managed Network Device", "Generic Device"]
KIND_PRODUCT = {"desktop": "Managed Workstation", "laptop": "Managed Workstation",
                "server": "Managed Server", "esxi": "Managed Server", "printer": "Generic Device",
                "network": "Managed Network Device"}
# (id, name)
ROLES = [(29682833, "Technician"), (29682834, "Help Desk")]
TECHNICIANS = [("Alex", "Morgan"), ("Sam", "Rivera"), ("Jordan", "Lee")]
UDFS = {  # entity -> UDF names (text fields)
    "Companies": ["Number of Employees", "RMM Site UID"],
    "ConfigurationItems": ["RMM Device UID", "Last Audit"],
}
# Fields clients cannot filter on (API-NOTES §3).
NOT_QUERYABLE = {"Tickets": {"creatorType", "lastActivityPersonType"}}
# field -> the entity its id refers to, for `isReference` and for the checks on write.
REFERENCES = {
    "companyID": "Companies", "configurationItemID": "ConfigurationItems", "productID": "Products",
    "ownerResourceID": "Resources", "assignedResourceID": "Resources", "ticketID": "Tickets",
    "webhookID": "TicketWebhooks", "resourceID": "Resources", "parentConfigurationItemID":
    "ConfigurationItems", "configurationItemCategoryID": "ConfigurationItemCategories",
    "parentCompanyID": "Companies", "completedByResourceID": "Resources",
    "creatorResourceID": "Resources",
}
ID_BASES = {"Companies": 174, "ConfigurationItems": 1000, "ConfigurationItemTypes": 1,
            "ConfigurationItemCategories": 1, "Products": 29683600, "Tickets": 7000,
            "TicketNotes": 29684000, "Resources": 29682885, "TicketWebhooks": 1,
            "TicketWebhookFields": 1, "TicketWebhookExcludedResources": 1, "WebhookEventErrorLogs": 1,
            "TicketCategories": 200}


def now_text(clock_value: float) -> str:
    """A date-time as the API writes it: UTC, milliseconds, `Z` (API-NOTES §9)."""
    moment = dt.datetime.fromtimestamp(clock_value, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _picklist(rows, parent=None) -> list[dict]:
    values = []
    for order, (value, label, active, system, default) in enumerate(rows):
        values.append({"value": str(value), "label": label, "isDefaultValue": default,
                       "sortOrder": order, "parentValue": parent.get(value) if parent else None,
                       "isActive": active, "isSystem": system})
    return values


@attrs.define
class Database:
    """Every table (entity name -> id -> record, stored with all the entity's fields) and the
    lock every change is made under."""

    clock: Any
    tables: dict[str, dict[int, dict]] = attrs.field(factory=dict)
    next_ids: dict[str, int] = attrs.field(factory=dict)
    lock: threading.RLock = attrs.field(factory=threading.RLock)
    ticket_numbers: dict[str, int] = attrs.field(factory=dict)

    def table(self, entity: str) -> dict[int, dict]:
        return self.tables.setdefault(entity, {})

    def insert(self, entity: str, values: dict, record_id: int | None = None) -> dict:
        with self.lock:
            if record_id is None:
                record_id = self.next_ids.get(entity, ID_BASES.get(entity, 1))
            self.next_ids[entity] = max(self.next_ids.get(entity, 0), record_id + 1)
            record = {name: None for name in FIELDS.get(entity, {})}
            if entity in UDFS:
                record["userDefinedFields"] = [{"name": name, "value": None} for name in UDFS[entity]]
            record.update(values)
            record["id"] = record_id
            self.table(entity)[record_id] = record
            return record

    def get(self, entity: str, record_id: Any) -> dict | None:
        if isinstance(record_id, bool) or not isinstance(record_id, int):
            return None
        return self.table(entity).get(record_id)

    def by(self, entity: str, **match: Any) -> list[dict]:
        return [r for r in self.table(entity).values() if all(r.get(k) == v for k, v in match.items())]

    def ticket_number(self) -> str:
        day = dt.datetime.fromtimestamp(self.clock(), dt.UTC).strftime("%Y%m%d")
        self.ticket_numbers[day] = self.ticket_numbers.get(day, 0) + 1
        return f"T{day}.{self.ticket_numbers[day]:04d}"

    # -- picklists ----------------------------------------------------------------------------

    def picklists(self, entity: str) -> dict[str, list[dict]]:
        """field -> picklist values, for `entityInformation/fields`."""
        lists: dict[str, list[dict]] = {}
        if entity == "Tickets":
            lists = {"status": _picklist(STATUSES), "priority": _picklist(PRIORITIES),
                     "queueID": _picklist(QUEUES), "issueType": _picklist(ISSUE_TYPES),
                     "subIssueType": _picklist([(v, label, True, False, False)
                                                for v, label, _ in SUB_ISSUE_TYPES],
                                               {v: str(p) for v, _, p in SUB_ISSUE_TYPES}),
                     "source": _picklist(SOURCES), "ticketType": _picklist(TICKET_TYPES),
                     "ticketCategory": _picklist(
                         [(r["id"], r["name"], r["isActive"], not r["isApiOnly"], r["isGlobalDefault"])
                          for r in sorted(self.table("TicketCategories").values(), key=lambda r: r["id"])])}
        elif entity == "Companies":
            lists = {"companyType": _picklist(COMPANY_TYPES)}
        elif entity == "ConfigurationItems":
            lists = {"configurationItemType": _picklist(
                [(r["id"], r["name"], r["isActive"], False, False)
                 for r in self.table("ConfigurationItemTypes").values()])}
        elif entity == "TicketNotes":
            lists = {"noteType": _picklist(NOTE_TYPES), "publish": _picklist(NOTE_PUBLISH)}
        elif entity == "Resources":
            lists = {"licenseType": _picklist(LICENSE_TYPES)}
        elif entity == "TicketWebhookFields":
            lists = {"fieldID": _picklist([(number, name, True, False, False)
                                           for number, name in webhook_field_ids().items()])}
        return lists

    def picklist_value(self, entity: str, field: str, value: Any) -> dict | None:
        """The picklist entry `value` of `field`, or None when `field` has a picklist and
        `value` is not on it; {} when `field` has no picklist."""
        lists = self.picklists(entity)
        if field not in lists:
            return {}
        return next((v for v in lists[field] if v["value"] == str(value)), None)

    # -- seeding ------------------------------------------------------------------------------

    def seed(self, seed: int, companies: int, configurations_per_company: int,
             username: str, known_machines: bool = True) -> None:
        rng = random.Random(f"autotask-simulator:{seed}")
        self.insert("Resources", {"firstName": "psabridge", "lastName": "API", "userName": username,
                                  "email": username, "isActive": True, "licenseType": API_LICENSE_TYPE,
                                  "resourceType": "Employee", "userType": 7})
        for first, last in TECHNICIANS:
            self.insert("Resources", {
                "firstName": first, "lastName": last, "isActive": True, "licenseType": 1,
                "userName": f"{first[0]}{last}".lower(), "email": f"{first}.{last}@msp.example".lower(),
                "resourceType": "Employee", "userType": 1, "defaultServiceDeskRoleID": ROLES[0][0]})
        for record_id, name, api_only, default in TICKET_CATEGORIES:
            self.insert("TicketCategories", {"name": name, "isApiOnly": api_only, "isGlobalDefault": default,
                                             "isActive": True, "displayColorRGB": 0}, record_id)
        for name in CI_TYPES:
            self.insert("ConfigurationItemTypes", {"name": name, "isActive": True})
        self.insert("ConfigurationItemCategories", {"name": "Standard", "nickname": "STD",
                                                    "displayColorRGB": 0, "isActive": True,
                                                    "isGlobalDefault": True})
        for name in PRODUCTS:
            self.insert("Products", {"name": name, "isActive": True, "isSerialized": True,
                                     "productBillingCodeID": 29682801, "createdTime": now_text(self.clock())})
        owner = self.technicians()[0]["id"]
        self.insert("Companies", {"companyName": "Simulated MSP (own company)", "companyType": 1,
                                  "phone": "555-0100", "ownerResourceID": owner, "isActive": True,
                                  "createDate": now_text(self.clock() - 900 * 86400),
                                  "lastActivityDate": now_text(self.clock())}, OWN_COMPANY_ID)
        self.next_ids["Companies"] = ID_BASES["Companies"]
        for index, client in enumerate(simulated_msp.clients(seed, companies)):
            company = self.insert("Companies", {
                "companyName": client.name, "companyType": COMPANY_TYPE_CUSTOMER,
                "companyNumber": f"C{index + 1:04d}", "phone": f"555-{rng.randint(1000, 9999)}",
                "ownerResourceID": rng.choice(self.technicians())["id"],
                "isActive": index % 7 != 6, "city": rng.choice(["Springfield", "Riverton", "Fairview"]),
                "createDate": now_text(self.clock() - rng.randint(100, 900) * 86400),
                "lastActivityDate": now_text(self.clock() - rng.randint(0, 30) * 86400)})
            for n in range(1, configurations_per_company + 1):
                prefix = simulated_msp.abbreviation(client.name)
                self.add_configuration_item(company, f"{prefix}-ASSET{n:02d}",
                                            rng.choice(["desktop", "laptop", "printer", "network"]))
            if known_machines:
                for machine in client.machines:
                    if machine.in_psa is None:
                        continue
                    self.add_configuration_item(
                        company, machine.configuration_name, machine.kind,
                        serialNumber=machine.serial if machine.in_psa == "serial" else None)

    def technicians(self) -> list[dict]:
        return [r for r in self.table("Resources").values() if r["licenseType"] != API_LICENSE_TYPE]

    def api_resource(self) -> dict:
        return next(r for r in self.table("Resources").values() if r["licenseType"] == API_LICENSE_TYPE)

    def default_category_id(self) -> int | None:
        """The configuration item category applied when a create names none (API-NOTES §5)."""
        return next((r["id"] for r in self.table("ConfigurationItemCategories").values()
                     if r["isGlobalDefault"] and r["isActive"]), None)

    def add_configuration_item(self, company: dict, title: str, kind: str, **values: Any) -> dict:
        ci_type = next(r for r in self.table("ConfigurationItemTypes").values()
                       if r["name"] == KIND_CI_TYPE[kind])
        product = next(r for r in self.table("Products").values() if r["name"] == KIND_PRODUCT[kind])
        return self.insert("ConfigurationItems", {
            "companyID": company["id"], "productID": product["id"], "isActive": True,
            "configurationItemType": ci_type["id"], "configurationItemCategoryID": 1,
            "referenceTitle": title, "createDate": now_text(self.clock()),
            "lastModifiedTime": now_text(self.clock()), **values})


def webhook_field_ids() -> dict[int, str]:
    """The `fieldID` of each Ticket field a TicketWebhook can subscribe to (labels = field
    names): every field but `id`."""
    names = sorted(name for name in FIELDS["Tickets"] if name != "id")
    return {number: name for number, name in enumerate(names, start=1)}
