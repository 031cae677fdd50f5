"""The simulator's state: CW records as the API returns them (plain dicts), by table.

Records are stored in CW's JSON shape so the app serves them as they are, and tests can read and
change them directly (`sim.db.configurations[12]["name"] = ...`). `Database.seed()` fills the
tables from :mod:`.data`; the `add_*` methods are how the seed, the app and tests create records,
so ids, references and `_info` are always consistent.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import threading
from typing import Any

from psabridge import simulated_msp
from psabridge.plugins.connectwise.simulator import data

MEMBER_IDENTIFIER = "psabridge"


def now_text() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ref(record: dict, *keys: str) -> dict:
    """A reference object ({id, name}) to `record`, as CW embeds them."""
    return {"id": record["id"], **{k: record[k] for k in keys or ("name",) if k in record}}


class Database:
    """All tables, with one lock: the loopback server is threaded."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._ids = itertools.count(1)
        self.clock = now_text  # tests may replace it to control lastUpdated
        self.companies: dict[int, dict] = {}
        self.company_types: dict[int, dict] = {}
        self.company_statuses: dict[int, dict] = {}
        self.configuration_types: dict[int, dict] = {}
        self.configuration_type_questions: dict[int, dict] = {}
        self.configuration_statuses: dict[int, dict] = {}
        self.manufacturers: dict[int, dict] = {}
        self.configurations: dict[int, dict] = {}
        self.boards: dict[int, dict] = {}
        self.board_statuses: dict[int, dict] = {}
        self.board_types: dict[int, dict] = {}
        self.board_subtypes: dict[int, dict] = {}
        self.board_teams: dict[int, dict] = {}
        self.priorities: dict[int, dict] = {}
        self.sources: dict[int, dict] = {}
        self.tickets: dict[int, dict] = {}
        self.ticket_notes: dict[int, dict] = {}
        self.ticket_configurations: dict[int, list[int]] = {}
        self.callbacks: dict[int, dict] = {}
        self.members: dict[int, dict] = {}
        self.security_roles: dict[int, dict] = {}
        self.role_settings: dict[int, list[dict]] = {}

    # -- record plumbing -------------------------------------------------------------------------

    def next_id(self) -> int:
        return next(self._ids)

    def info(self, created: bool = True) -> dict:
        stamp = self.clock()
        info = {"lastUpdated": stamp, "updatedBy": MEMBER_IDENTIFIER}
        if created:
            info.update(dateEntered=stamp, enteredBy=MEMBER_IDENTIFIER)
        return info

    def insert(self, table: dict[int, dict], record: dict) -> dict:
        with self.lock:
            record = {"id": self.next_id(), **record}
            record["_info"] = {**self.info(), **record.get("_info", {})}
            table[record["id"]] = record
            return record

    def touch(self, record: dict) -> None:
        record["_info"] = {**record.get("_info", {}), **self.info(created=False)}

    # -- adding records (used by the seed, the app and tests) --------------------------------

    def add_company(self, name: str, *, types: list[str] = ("Client",), status: str = "Active",
                    identifier: str | None = None) -> dict:
        taken = (c["identifier"] for c in self.companies.values())
        identifier = identifier or data.identifier_for(name, taken)
        status_record = self.by_name(self.company_statuses, status)
        return self.insert(self.companies, {
            "identifier": identifier, "name": name, "status": ref(status_record),
            "types": [ref(self.by_name(self.company_types, t)) for t in types],
            "city": "Springfield", "deletedFlag": False,
        })

    def add_configuration(self, company: dict, name: str, type_name: str, **fields: Any) -> dict:
        ctype = self.by_name(self.configuration_types, type_name)
        status = self.by_name(self.configuration_statuses, fields.pop("status", "Active"), key="description")
        record = {"name": name, "type": ref(ctype), "company": ref(company, "identifier", "name"),
                  "status": {"id": status["id"], "name": status["description"]},
                  "activeFlag": not status["closedFlag"], "serialNumber": None, "modelNumber": None,
                  "manufacturer": None, "managementLink": None, "warrantyExpirationDate": None}
        manufacturer = fields.pop("manufacturer", None)
        if manufacturer:
            record["manufacturer"] = ref(self.manufacturer_named(manufacturer))
        record.update(fields)
        return self.insert(self.configurations, record)

    def manufacturer_named(self, name: str) -> dict:
        for record in self.manufacturers.values():
            if record["name"].casefold() == name.casefold():
                return record
        return self.insert(self.manufacturers, {"name": name, "inactiveFlag": False})

    def add_ticket(self, company: dict, summary: str, board: dict, **fields: Any) -> dict:
        status = fields.pop("status", None) or self.default_status(board["id"])
        record = {"summary": summary, "recordType": "ServiceTicket", "board": ref(board),
                  "company": ref(company, "identifier", "name"), "status": ref(status),
                  "closedFlag": bool(status.get("closedStatus")), "externalXRef": None}
        record.update(fields)
        return self.insert(self.tickets, record)

    # -- lookups -------------------------------------------------------------------------------

    @staticmethod
    def by_name(table: dict[int, dict], name: str, key: str = "name") -> dict:
        for record in table.values():
            if str(record.get(key, "")).casefold() == name.casefold():
                return record
        raise KeyError(f"no record named {name!r}")

    def statuses_of(self, board_id: int) -> list[dict]:
        return [s for s in self.board_statuses.values() if s["board"]["id"] == board_id]

    def default_status(self, board_id: int) -> dict | None:
        return next((s for s in self.statuses_of(board_id) if s.get("defaultFlag")), None)

    def default_team(self, board_id: int) -> dict | None:
        return next((t for t in self.board_teams.values()
                     if t["boardId"] == board_id and t.get("defaultFlag")), None)

    # -- the seed ------------------------------------------------------------------------------

    def seed(self, seed: int = 0, companies: int = 12, configurations_per_company: int = 6,
             management_link: str = "https://rmm.example.com/device/{n}",
             known_machines: bool = True) -> None:
        """Fill every table from `seed`. `management_link` is formatted with a running number
        for the configurations that look as if an RMM already linked them. With
        `known_machines`, each company also has a configuration for each of its machines the
        MSP recorded by hand (`simulated_msp`), which an RMM simulator of the same seed serves
        as devices."""
        rng = random.Random(seed)
        self._seed_system()
        self._seed_company_lookups()
        self._seed_configuration_lookups()
        self._seed_service_lookups()
        for index, client in enumerate(simulated_msp.clients(seed, companies)):
            types = rng.sample(data.COMPANY_TYPES[:2] + data.COMPANY_TYPES[4:], rng.choice((1, 1, 1, 2)))
            status = "Inactive" if index % 7 == 6 else "Active"
            company = self.add_company(client.name, types=types, status=status)
            self._seed_configurations(rng, company, configurations_per_company, management_link)
            if known_machines:
                self._seed_known_machines(company, client.machines)

    def _seed_system(self) -> None:
        role = self.insert(self.security_roles, {"name": "RMM Integration", "roleType": "Custom",
                                                 "adminFlag": False, "inactiveFlag": False})
        self.role_settings[role["id"]] = default_role_settings()
        self.insert(self.members, {
            "identifier": MEMBER_IDENTIFIER, "firstName": "psabridge", "lastName": "API",
            "licenseClass": "A", "inactiveFlag": False, "securityRole": ref(role)})

    def _seed_company_lookups(self) -> None:
        for index, name in enumerate(data.COMPANY_TYPES):
            self.insert(self.company_types, {"name": name, "defaultFlag": index == 0,
                                             "vendorFlag": name == "Vendor"})
        for name, inactive in data.COMPANY_STATUSES:
            self.insert(self.company_statuses, {"name": name, "defaultFlag": name == "Active",
                                                "inactiveFlag": inactive})

    def _seed_configuration_lookups(self) -> None:
        for name, required_questions in data.CONFIGURATION_TYPES:
            ctype = self.insert(self.configuration_types, {"name": name, "inactiveFlag": False,
                                                           "systemFlag": False})
            for n in range(required_questions + 1):  # plus one optional question
                self.insert(self.configuration_type_questions, {
                    "configurationType": ref(ctype), "fieldType": "Text", "entryType": "EntryField",
                    "sequenceNumber": float(n + 1), "question": f"{name} question {n + 1}",
                    "requiredFlag": n < required_questions, "inactiveFlag": False})
        for description, closed, default in data.CONFIGURATION_STATUSES:
            self.insert(self.configuration_statuses, {"description": description, "closedFlag": closed,
                                                      "defaultFlag": default})
        for manufacturer in data.HARDWARE:
            self.manufacturer_named(manufacturer)

    def _seed_service_lookups(self) -> None:
        member = next(iter(self.members.values()))
        for board_name, team_name, statuses in data.BOARDS:
            board = self.insert(self.boards, {"name": board_name, "inactiveFlag": False,
                                              "projectFlag": False,
                                              "location": {"id": 1, "name": "Main"},
                                              "department": {"id": 1, "name": "Services"}})
            for order, (name, closed, default) in enumerate(statuses):
                self.insert(self.board_statuses, {"name": name, "board": ref(board), "sortOrder": order,
                                                  "inactive": False, "closedStatus": closed,
                                                  "defaultFlag": default, "displayOnBoard": True})
            self.insert(self.board_teams, {"name": team_name or "Unassigned",
                                           "teamLeader": ref(member, "identifier"),
                                           "members": [member["id"]], "defaultFlag": team_name is not None,
                                           "boardId": board["id"]})
            type_ids = []
            for index, name in enumerate(data.TICKET_TYPES):
                btype = self.insert(self.board_types, {"name": name, "board": ref(board),
                                                       "category": "Reactive", "defaultFlag": index == 0,
                                                       "inactiveFlag": False})
                type_ids.append(btype["id"])
            for name in data.TICKET_SUBTYPES:
                self.insert(self.board_subtypes, {"name": name, "board": ref(board), "inactiveFlag": False,
                                                  "typeAssociationIds": type_ids})
        for index, name in enumerate(data.PRIORITIES):
            self.insert(self.priorities, {"name": name, "color": "Red" if index == 0 else "Blue",
                                          "sortOrder": index + 1, "defaultFlag": index == 2,
                                          "level": str(index + 1)})
        for name in data.SOURCES:
            self.insert(self.sources, {"name": name, "defaultFlag": name == "Email"})

    def _seed_known_machines(self, company: dict, machines) -> None:
        """Configurations the MSP typed in from its machines: by serial, or by name only."""
        for machine in machines:
            if machine.in_psa is None:
                continue
            self.add_configuration(
                company, machine.configuration_name, data.KNOWN_MACHINE_TYPES[machine.kind],
                serialNumber=machine.serial if machine.in_psa == "serial" else None,
                manufacturer=machine.manufacturer, modelNumber=machine.model)

    def _seed_configurations(self, rng: random.Random, company: dict, count: int, link: str) -> None:
        type_names = [name for name, questions in data.CONFIGURATION_TYPES if not questions]
        for n in range(1, count + 1):
            manufacturer = rng.choice(list(data.HARDWARE))
            fields = {"serialNumber": data.serial_number(rng), "manufacturer": manufacturer,
                      "modelNumber": rng.choice(data.HARDWARE[manufacturer])}
            kind = rng.choice(type_names)
            name = data.device_name(rng, company["identifier"], kind, n)
            if rng.random() < 0.3:
                fields["managementLink"] = link.format(n=f"{company['id']}-{n}")
            if rng.random() < 0.15:
                fields["status"] = "Inactive"
            self.add_configuration(company, name, kind, **fields)
        # The matching cascade needs ambiguity: a duplicate name, and a serial shared by two records.
        existing = [c for c in self.configurations.values() if c["company"]["id"] == company["id"]]
        if existing:
            twin = rng.choice(existing)
            self.add_configuration(company, twin["name"], twin["type"]["name"],
                                   serialNumber=data.serial_number(rng))
            shared = rng.choice(existing)
            self.add_configuration(company, shared["name"] + "-OLD", shared["type"]["name"],
                                   serialNumber=shared["serialNumber"], status="Inactive")


def default_role_settings() -> list[dict]:
    """The seeded API member's role: exactly the seed's table, plus a few unrelated lines."""
    from psabridge.plugins.connectwise.permissions import REQUIRED

    settings = []
    for index, line in enumerate(REQUIRED, start=1):
        settings.append({
            "id": index, "moduleName": line.module, "moduleFunctionName": line.function,
            "moduleIdentifier": line.module.replace(" ", ""),
            "moduleFunctionIdentifier": line.function.replace(" ", ""),
            "addLevel": line.add, "editLevel": line.edit, "deleteLevel": line.delete,
            "inquireLevel": line.inquire, "myAllFlag": True, "sortOrder": index,
        })
    for offset, (module, function) in enumerate((("System", "Member Maintenance"),
                                                 ("Finance", "Agreements"))):
        settings.append({"id": 100 + offset, "moduleName": module, "moduleFunctionName": function,
                         "addLevel": "None", "editLevel": "None", "deleteLevel": "None",
                         "inquireLevel": "None", "myAllFlag": True, "sortOrder": 100 + offset})
    return settings
