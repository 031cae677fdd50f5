"""`PsaSim` (tests/e2e/psa_sims.py) over the Autotask PSA simulator, so the e2e tests run on
Autotask as they do on ConnectWise.

Autotask's statuses are global and only Complete is closed in every database; the routes need
more closed statuses than that, so the connector is configured with two more (its
`closed_statuses` setting), as an MSP whose technicians close tickets into other statuses would.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import httpx

from psabridge.plugins.autotask.simulator import AutotaskSimulator, escaped_json
from psabridge.plugins.autotask.simulator import signature as sign
from psabridge.simulation import ScriptedFault
from tests.e2e.psa_sims import Delivery, SimCompany, SimConfiguration, SimTicket, TicketRoute

# Picklist fields of a ticket by the connector's routing field names.
ROUTING_FIELDS = {"queue": "queueID", "issue_type": "issueType", "sub_issue_type": "subIssueType"}
EXTRA_CLOSED = ("Waiting Vendor", "Escalated")


class AutotaskPsaSim:
    """`PsaSim` over the Autotask PSA simulator."""

    plugin = "autotask"
    alert_route = TicketRoute({"queue": "Monitoring Alert", "issue_type": "Monitoring",
                               "sub_issue_type": "Disk Space"}, "New", "Complete")
    manual_route = TicketRoute({"queue": "Level I Support", "issue_type": "Software",
                                "sub_issue_type": "Application"}, "In Progress", "Complete")
    other_route = TicketRoute({"queue": "Level II Support", "issue_type": "Hardware",
                               "sub_issue_type": "Disk"}, "Waiting Customer", "Waiting Vendor")
    technician_closed_status = "Escalated"
    priority_names = {"Critical": "Critical", "High": "High", "Moderate": "Medium", "Low": "Low",
                      "Information": "Low"}
    source_names = ("Monitoring Alert", "Email")
    TICKET_POST = r"/V1\.0/Tickets$"

    def __init__(self, simulator: AutotaskSimulator):
        self.at = simulator
        self._url = "http://autotask.simulator"
        self._in_process = False
        # The customers (id 0 is the MSP itself): the Datto RMM simulator's sites.
        self.company_names = [c["companyName"] for c in simulator.companies() if c["id"] != 0]

    def settings(self, url: str) -> dict[str, str]:
        self._url = url
        return {**self.at.settings(url), "closed_statuses": ", ".join(EXTRA_CLOSED)}

    def transport(self) -> httpx.BaseTransport:
        self._in_process = True
        return self.at.transport()

    def serve(self):
        return self.at.serve()

    @property
    def counts(self) -> Mapping[str, int]:
        return self.at.counts

    @staticmethod
    def stored_marker(marker: str) -> str:
        """What the connector stores in `externalID` for core's marker (a digest past 50)."""
        from psabridge.plugins.autotask.convert import stored_marker

        return stored_marker(marker)

    def ticket_creates(self) -> int:
        return self.at.counts["POST /V1.0/Tickets"]

    # -- what the PSA holds ------------------------------------------------------------------------

    def _label(self, field: str, value) -> str | None:
        found = self.at.db.picklist_value("Tickets", field, value) if value is not None else None
        return found.get("label") if found else None

    def _ticket(self, record: dict) -> SimTicket:
        status = self._label("status", record["status"]) or ""
        notes = [n["description"] for n in self.at.notes(record["id"])]
        return SimTicket(
            id=str(record["id"]), summary=record["title"], company_id=str(record["companyID"]),
            status=status, closed=status in ("Complete", *EXTRA_CLOSED),
            routing={name: self._label(field, record.get(field)) for name, field in ROUTING_FIELDS.items()},
            priority=self._label("priority", record.get("priority")),
            source=self._label("source", record.get("source")), marker=record.get("externalID"),
            configuration_ids=tuple(str(c) for c in self.at.ticket_configurations(record["id"])),
            description=record.get("description") or "", notes=tuple(notes))

    def tickets(self) -> list[SimTicket]:
        return [self._ticket(record) for record in self.at.tickets()]

    def ticket(self, ticket_id: str) -> SimTicket:
        return self._ticket(self.at.ticket(int(ticket_id)))

    WORKSTATION_TYPE = "Workstation"

    def _configuration(self, c: dict) -> SimConfiguration:
        kind = self.at.db.get("ConfigurationItemTypes", c.get("configurationItemType"))
        return SimConfiguration(
            id=str(c["id"]), name=c["referenceTitle"] or "", company_id=str(c["companyID"]),
            management_link=c.get("referenceNumber"), active=c.get("isActive") is not False,
            serial_number=c.get("serialNumber"), type_name=kind["name"] if kind else "",
            expiration_date=c.get("warrantyExpirationDate"))

    def configurations(self) -> list[SimConfiguration]:
        return [self._configuration(c) for c in self.at.configurations()]

    def configuration(self, configuration_id: str) -> SimConfiguration | None:
        record = self.at.db.get("ConfigurationItems", int(configuration_id))
        return self._configuration(record) if record else None

    def add_configuration(self, company_id: str, name: str, type_name: str | None = None, *,
                          serial_number: str | None = None, manufacturer: str | None = None,
                          model: str | None = None, management_link: str | None = None,
                          expiration_date: str | None = None) -> SimConfiguration:
        """Autotask's configuration items have no manufacturer or model of their own (they are
        the product's): those are not recorded."""
        fields = {key: value for key, value in (
            ("serialNumber", serial_number), ("referenceNumber", management_link),
            ("warrantyExpirationDate", expiration_date)) if value is not None}
        record = self.at.add_configuration(int(company_id), name, type_name or self.WORKSTATION_TYPE,
                                           **fields)
        return self._configuration(record)

    def delete_configuration(self, configuration_id: str) -> None:
        """Autotask's API cannot delete a configuration item; an admin can, in its interface."""
        self.at.delete_configuration(int(configuration_id))

    def configuration_creates(self) -> int:
        return self.at.counts["POST /V1.0/ConfigurationItems"]

    def companies(self) -> list[SimCompany]:
        types = {v["value"]: v["label"] for v in self.at.db.picklists("Companies")["companyType"]}
        return [SimCompany(str(c["id"]), c["companyName"], "Active" if c.get("isActive") else "Inactive",
                           (types.get(str(c.get("companyType")), ""),))
                for c in self.at.companies() if c["id"] != 0]

    def company_id(self, name: str) -> str:
        return str(self.at.company(name)["id"])

    # -- a technician ------------------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        if self._in_process:
            return self.at.client()
        return self.at.client(self._url)

    def _status_id(self, name: str) -> int:
        values = self.at.db.picklists("Tickets")["status"]
        return int(next(v["value"] for v in values if v["label"] == name))

    def close_ticket(self, ticket_id: str, status: str) -> None:
        with self._client() as client:
            client.patch("Tickets", json={"id": int(ticket_id), "status": self._status_id(status)}
                         ).raise_for_status()

    def edit_ticket(self, ticket_id: str, summary: str, note: str) -> None:
        with self._client() as client:
            client.patch("Tickets", json={"id": int(ticket_id), "title": summary}).raise_for_status()
            client.post(f"Tickets/{ticket_id}/Notes", json={
                "ticketID": int(ticket_id), "description": note, "noteType": 3, "publish": 1,
            }).raise_for_status()

    # -- faults ------------------------------------------------------------------------------------

    def fail_ticket_creates(self, kind: str, when: str, times: int = 1, status: int = 500,
                            seconds: float = 0.0) -> None:
        self.at.faults.add(ScriptedFault(kind, "POST", self.TICKET_POST, when=when, status=status,
                                         seconds=seconds, times=times))

    def faults_served(self, kind: str) -> int:
        return self.at.app.faults_served[kind]

    def tune_client(self, connection, timeout: float) -> None:
        from psabridge.plugins.autotask.client import AutotaskClient

        AutotaskClient.for_connection(connection, timeout=timeout)

    # -- callbacks ---------------------------------------------------------------------------------

    def callback_registrations(self) -> list[str]:
        return [w["webhookUrl"] for w in self.at.db.table("TicketWebhooks").values()]

    def deliveries(self, timeout: float = 10) -> list[Delivery]:
        self.at.deliver_pending()
        return [Delivery(a.url, str(json.loads(a.body)["Id"]), a.status) for a in self.at.webhooks.attempts
                if json.loads(a.body).get("Action") != "Deactivated"]

    def callback(self, ticket_id: str, event_id: str,
                 signing_secret: str = "") -> tuple[dict[str, str], bytes]:
        webhooks = sorted(self.at.db.table("TicketWebhooks").values(), key=lambda w: w["id"])
        secret = signing_secret or (webhooks[0]["secretKey"] if webhooks else "")
        guid = webhooks[0]["webhookGUID"] if webhooks else "00000000-0000-0000-0000-000000000000"
        sequence = int.from_bytes(hashlib.sha256(event_id.encode()).digest()[:6], "big") + 1
        body = escaped_json({"Action": "Update", "Guid": guid, "EntityType": "Ticket",
                             "Id": int(ticket_id), "Fields": {"Status": 5},
                             "EventTime": "2026-11-30T10:00:00Z", "SequenceNumber": sequence,
                             "PersonID": None}).encode()
        return {"Content-Type": "application/json", "X-Hook-Signature": sign(secret, body)}, body


def autotask(seed: int, companies: int) -> AutotaskPsaSim:
    """The `PSA_SIMS` entry: an Autotask simulator of `companies` customers from `seed`."""
    return AutotaskPsaSim(AutotaskSimulator(seed=seed, companies=companies))
