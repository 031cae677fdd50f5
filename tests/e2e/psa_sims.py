"""The PSA simulator as the end-to-end tests see it: one small, PSA-neutral interface.

The e2e tests drive the real engine and connectors against simulators. What they need of the
PSA's simulator (settings and a transport for the connector, what tickets and configurations it
holds, a technician closing a ticket, request counts, the names to route tickets by) is
`PsaSim`; each PSA's simulator is wrapped once to provide it (`ConnectWisePsaSim` below), and
`PSA_SIMS` names the wrappers. A test written against `sims.psa` runs on any PSA in it; a test
of one PSA's specifics (ConnectWise's board without a default team, its callback URL) uses
that simulator directly (`sims.cw`).

To add a PSA: write a class with the attributes and methods of `PsaSim` over its simulator, and
add to `PSA_SIMS`, under the connector's plugin name, a function making one from a seed and a
number of companies. Its `company_names` are the customers the Datto RMM simulator is seeded
with (as sites whose names are distortions of them), so the mapping tests find pairs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

import attrs
import httpx

from psabridge.simulation import ScriptedFault


@attrs.frozen
class SimTicket:
    """A ticket as the simulator holds it, by names (as a technician would read it).

    `routing` maps the connector's routing field names ("board", "queue", ...) to the names of
    the chosen choices; `description` is the text the ticket was opened with, `notes` those
    added afterwards, oldest first."""

    id: str
    summary: str
    company_id: str
    status: str
    closed: bool
    routing: Mapping[str, str | None]
    priority: str | None
    source: str | None
    marker: str | None  # as core gave it (a PSA storing a digest of long ones: its digest)
    configuration_ids: tuple[str, ...]
    description: str
    notes: tuple[str, ...]


@attrs.frozen
class SimConfiguration:
    """A configuration as the simulator holds it; `expiration_date` as an ISO date, or None."""

    id: str
    name: str
    company_id: str
    management_link: str | None
    active: bool
    serial_number: str | None
    type_name: str = ""
    manufacturer: str | None = None
    model: str | None = None
    expiration_date: str | None = None


@attrs.frozen
class SimCompany:
    id: str
    name: str
    status: str
    types: tuple[str, ...]


@attrs.frozen
class Delivery:
    """One ticket callback the PSA POSTed: where, about which ticket, and the answer's status
    (None when no answer came)."""

    url: str
    ticket_id: str
    status: int | None


@attrs.frozen
class TicketRoute:
    """Where tests send one origin's tickets, by name: routing field name -> choice name (in
    the order the connector declares the fields), and an open and a closed status."""

    routing: Mapping[str, str]
    open_status: str
    closed_status: str


class PsaSim(Protocol):
    """What the e2e tests ask of a PSA simulator."""

    plugin: str
    """The connector's plugin name ("connectwise")."""
    company_names: list[str]
    """The customers' names, for the Datto RMM simulator's sites."""
    alert_route: TicketRoute
    """Where alert tickets go in the tests' settings."""
    manual_route: TicketRoute
    """Where manual tickets go."""
    other_route: TicketRoute
    """Somewhere else, for a monitor's override."""
    technician_closed_status: str
    """A closed status a technician picks, other than the routes' closed statuses."""
    priority_names: Mapping[str, str]
    """RMM priority -> the PSA priority's name the tests map it to."""
    source_names: tuple[str, str]
    """Two ticket sources: the one tests set, and another to change to."""

    def settings(self, url: str) -> dict[str, str]:
        """Connector settings that authenticate against the simulator served at `url`."""

    def transport(self) -> httpx.BaseTransport:
        """An in-process transport to the simulator."""

    def serve(self) -> AbstractContextManager[Any]:
        """Serve on loopback for the block; the object it yields has the `url`."""

    @property
    def counts(self) -> Mapping[str, int]:
        """Requests per endpoint, "METHOD /path-template" (what `Sims.writes` reads)."""

    def ticket_creates(self) -> int:
        """How many ticket-creating requests the PSA answered (or saw, under faults)."""

    def tickets(self) -> list[SimTicket]:
        ...

    def ticket(self, ticket_id: str) -> SimTicket:
        ...

    def close_ticket(self, ticket_id: str, status: str) -> None:
        """A technician moves the ticket to the closed status named `status`, through the PSA's
        API (so the PSA calls back, where a callback is registered)."""

    def edit_ticket(self, ticket_id: str, summary: str, note: str) -> None:
        """A technician changes a ticket without closing it: a new summary and a note."""

    def configurations(self) -> list[SimConfiguration]:
        ...

    def configuration(self, configuration_id: str) -> SimConfiguration | None:
        """The configuration, or None once it was deleted."""

    def add_configuration(self, company_id: str, name: str, type_name: str | None = None, *,
                          serial_number: str | None = None, manufacturer: str | None = None,
                          model: str | None = None, management_link: str | None = None,
                          expiration_date: str | None = None) -> SimConfiguration:
        """A configuration the MSP entered by hand (`type_name` None: the workstation type)."""

    def delete_configuration(self, configuration_id: str) -> None:
        """An admin deletes the configuration in the PSA."""

    def configuration_creates(self) -> int:
        """How many configuration-creating requests the PSA answered."""

    def companies(self) -> list[SimCompany]:
        ...

    def company_id(self, name: str) -> str:
        ...

    def fail_ticket_creates(self, kind: str, when: str, times: int = 1, status: int = 500,
                            seconds: float = 0.0) -> None:
        """The next `times` ticket creates fail: `kind` "error" (answered `status`), "drop" (no
        answer) or "slow" (answered `seconds` late), `when` "before" or "after" the PSA made
        the ticket."""

    def faults_served(self, kind: str) -> int:
        """How many requests a fault of `kind` has struck so far."""

    def tune_client(self, connection, timeout: float) -> None:
        """Set up the connector's client on `connection` to wait `timeout` seconds for an
        answer, instead of its deadline."""

    def callback_registrations(self) -> list[str]:
        """The URLs of the ticket callbacks registered with the PSA, as it keeps them."""

    def deliveries(self, timeout: float = 10) -> list[Delivery]:
        """The ticket callbacks the PSA has POSTed, oldest first, once those in flight ended."""

    def callback(self, ticket_id: str, event_id: str,
                 signing_secret: str = "") -> tuple[dict[str, str], bytes]:
        """The callback the PSA would POST about a change of ticket `ticket_id`, as the event
        `event_id`: headers and body (signed with `signing_secret`, the one psabridge registers
        its callbacks with, where the PSA signs)."""


class ConnectWisePsaSim:
    """`PsaSim` over the ConnectWise Manage simulator."""

    plugin = "connectwise"
    alert_route = TicketRoute({"board": "RMM Alerts", "type": "Alert", "subtype": "Hardware"},
                              "Assigned", "Resolved")
    manual_route = TicketRoute({"board": "Help Desk", "type": "Service Request",
                                "subtype": "Software"}, "New", "Completed")
    other_route = TicketRoute({"board": "Help Desk", "type": "Incident", "subtype": "Hardware"},
                              "In Progress", "Closed")
    technician_closed_status = "Closed (Auto)"
    priority_names = {
        "Critical": "Priority 1 - Emergency Response", "High": "Priority 2 - Quick Response",
        "Moderate": "Priority 3 - Normal Response", "Low": "Priority 4 - Schedule Maintenance",
        "Information": "Do Not Respond",
    }
    source_names = ("Monitoring", "Portal")
    TICKET_POST = r"/service/tickets$"

    def __init__(self, simulator, names: list[str] | None = None):
        self.cw = simulator
        self.company_names = names or [c["name"] for c in simulator.db.companies.values()]
        self._url = "http://connectwise.simulator"
        self._in_process = False

    def settings(self, url: str) -> dict[str, str]:
        self._url = url
        return self.cw.settings(url)

    def transport(self) -> httpx.BaseTransport:
        self._in_process = True  # the technician's client goes the same way
        return self.cw.transport()

    def serve(self):
        return self.cw.serve()

    @property
    def counts(self) -> Mapping[str, int]:
        return self.cw.counts

    def ticket_creates(self) -> int:
        return self.cw.counts["POST /service/tickets"]

    def tickets(self) -> list[SimTicket]:
        return [self._ticket(record) for record in self.cw.db.tickets.values()]

    def ticket(self, ticket_id: str) -> SimTicket:
        return self._ticket(self.cw.db.tickets[int(ticket_id)])

    def _ticket(self, record: dict) -> SimTicket:
        def name(field: str) -> str | None:
            return (record.get(field) or {}).get("name")

        notes = [n["text"] for n in self.cw.db.ticket_notes.values() if n["ticketId"] == record["id"]]
        return SimTicket(
            id=str(record["id"]), summary=record["summary"],
            company_id=str(record["company"]["id"]), status=name("status") or "",
            closed=bool(record.get("closedFlag")),
            routing={"board": name("board"), "type": name("type"), "subtype": name("subType")},
            priority=name("priority"), source=name("source"), marker=record.get("externalXRef"),
            configuration_ids=tuple(str(c) for c in
                                    self.cw.db.ticket_configurations.get(record["id"], [])),
            description=notes[0] if notes else "", notes=tuple(notes[1:]))

    def _client(self):
        from psabridge.plugins.connectwise.client import ConnectWiseClient

        return ConnectWiseClient(self.cw.settings(self._url),
                                 transport=self.cw.transport() if self._in_process else None)

    def close_ticket(self, ticket_id: str, status: str) -> None:
        record = self.cw.db.tickets[int(ticket_id)]
        status_id = self.cw.board_status(record["board"]["name"], status)["id"]
        self._client().patch(f"service/tickets/{ticket_id}",
                             [{"op": "replace", "path": "status", "value": {"id": status_id}}])

    def edit_ticket(self, ticket_id: str, summary: str, note: str) -> None:
        client = self._client()
        client.patch(f"service/tickets/{ticket_id}",
                     [{"op": "replace", "path": "summary", "value": summary}])
        client.post(f"service/tickets/{ticket_id}/notes",
                    {"text": note, "detailDescriptionFlag": True})

    WORKSTATION_TYPE = "Managed Workstation"

    def configurations(self) -> list[SimConfiguration]:
        return [self._configuration(c) for c in self.cw.db.configurations.values()]

    def configuration(self, configuration_id: str) -> SimConfiguration | None:
        record = self.cw.db.configurations.get(int(configuration_id))
        return self._configuration(record) if record else None

    @staticmethod
    def _configuration(c: dict) -> SimConfiguration:
        return SimConfiguration(
            id=str(c["id"]), name=c["name"], company_id=str(c["company"]["id"]),
            management_link=c.get("managementLink"), active=bool(c.get("activeFlag", True)),
            serial_number=c.get("serialNumber"), type_name=(c.get("type") or {}).get("name", ""),
            manufacturer=(c.get("manufacturer") or {}).get("name"), model=c.get("modelNumber"),
            expiration_date=c.get("warrantyExpirationDate"))

    def add_configuration(self, company_id: str, name: str, type_name: str | None = None, *,
                          serial_number: str | None = None, manufacturer: str | None = None,
                          model: str | None = None, management_link: str | None = None,
                          expiration_date: str | None = None) -> SimConfiguration:
        fields = {key: value for key, value in (
            ("serialNumber", serial_number), ("manufacturer", manufacturer),
            ("modelNumber", model), ("managementLink", management_link),
            ("warrantyExpirationDate", expiration_date)) if value is not None}
        record = self.cw.db.add_configuration(self.cw.db.companies[int(company_id)], name,
                                              type_name or self.WORKSTATION_TYPE, **fields)
        return self._configuration(record)

    def delete_configuration(self, configuration_id: str) -> None:
        del self.cw.db.configurations[int(configuration_id)]

    def configuration_creates(self) -> int:
        return self.cw.counts["POST /company/configurations"]

    def companies(self) -> list[SimCompany]:
        return [SimCompany(str(c["id"]), c["name"], (c.get("status") or {}).get("name", ""),
                           tuple(t["name"] for t in c.get("types") or ()))
                for c in self.cw.db.companies.values() if not c.get("deletedFlag")]

    def company_id(self, name: str) -> str:
        return str(self.cw.company(name)["id"])

    def fail_ticket_creates(self, kind: str, when: str, times: int = 1, status: int = 500,
                            seconds: float = 0.0) -> None:
        self.cw.faults.add(ScriptedFault(kind, "POST", self.TICKET_POST, when=when, status=status,
                                         seconds=seconds, times=times))

    def faults_served(self, kind: str) -> int:
        return self.cw.app.faults_served[kind]

    def tune_client(self, connection, timeout: float) -> None:
        from psabridge.plugins.connectwise.client import ConnectWiseClient

        ConnectWiseClient.for_connection(connection, timeout=timeout)

    def callback_registrations(self) -> list[str]:
        return [entry["url"] for entry in self.cw.db.callbacks.values()]

    def deliveries(self, timeout: float = 10) -> list[Delivery]:
        return [Delivery(d["url"], str(d["payload"]["ID"]), d.get("status"))
                for d in self.cw.api.wait_for_deliveries(timeout=timeout)]

    def callback(self, ticket_id: str, event_id: str,
                 signing_secret: str = "") -> tuple[dict[str, str], bytes]:
        body = {"MessageId": event_id, "Type": "ticket", "Action": "updated", "ID": int(ticket_id)}
        return {"Content-Type": "application/json"}, json.dumps(body).encode()


def connectwise(seed: int, companies: int) -> ConnectWisePsaSim:
    from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator, company_names

    return ConnectWisePsaSim(ConnectWiseSimulator(seed=seed, companies=companies),
                             company_names(seed, companies))


# Plugin name -> a function making its PsaSim from a seed and a number of companies.
PSA_SIMS = {"connectwise": connectwise}


__all__ = ["PSA_SIMS", "ConnectWisePsaSim", "Delivery", "PsaSim", "SimCompany", "SimConfiguration",
           "SimTicket",
           "TicketRoute"]
