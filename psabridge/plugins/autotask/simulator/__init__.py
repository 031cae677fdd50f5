"""An Autotask PSA REST API (v1.0) simulator, for tests, benchmarks and `psabridge simulate autotask`.

    sim = AutotaskSimulator(seed=0, companies=12, faults=Faults(throttle_rate=0.1))
    client = httpx.Client(transport=sim.transport(), base_url="http://autotask.simulator")
    with sim.serve() as server:                # or over real loopback HTTP
        settings = sim.settings(server.url)

`sim.db` is the state (tables of Autotask-shaped dicts), `sim.counts` the requests per endpoint
template ("GET /V1.0/Tickets/{id}"), `sim.webhooks` the TicketWebhook deliverer (its `attempts`
are the callouts made; `deliver_pending()` makes those due). `sim.clock` is the simulator's
time: give a `FakeClock` to decide when the rolling hour ends and webhook retries fall due.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import httpx
from werkzeug.wrappers import Response

from psabridge.plugins.autotask.simulator.app import AutotaskApp, Options, endpoint_template
from psabridge.plugins.autotask.simulator.data import KIND_CI_TYPE, STATUS_COMPLETE, STATUS_NEW, Database
from psabridge.plugins.autotask.simulator.webhooks import Deliverer, escaped_json, signature
from psabridge.simulation import (
    ControlPanel,
    FaultInjector,
    Faults,
    RunningServer,
    retry_after_text,
    start_server,
    transport,
)

__all__ = ["AutotaskSimulator", "Options", "Faults", "FakeClock", "escaped_json", "signature",
           "STATUS_COMPLETE", "STATUS_NEW"]


@attrs.define
class FakeClock:
    """A clock a test moves: `clock.advance(3600)`."""

    now: float = attrs.field(factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def throttle_body(seconds: float) -> Response:
    """A random throttle fault, in the shape of the simulator's own limit refusals."""
    wait = retry_after_text(seconds)
    return Response('{"errors":["The API request threshold has been exceeded; try again later."]}', 429,
                    {"Retry-After": wait}, content_type="application/json; charset=utf-8")


class AutotaskSimulator:
    TITLE = "Autotask PSA"
    PLUGIN = "autotask"

    def __init__(self, seed: int = 0, companies: int = 12, configurations_per_company: int = 2,
                 faults: Faults | None = None, options: Options | None = None,
                 clock: Callable[[], float] = time.time,
                 delivery_transport: httpx.BaseTransport | None = None, known_machines: bool = True):
        self.options = options or Options()
        self.clock = clock
        self.db = Database(clock)
        self.db.seed(seed, companies, configurations_per_company, self.options.username, known_machines)
        self.webhooks = Deliverer(self.db, self.options, clock, delivery_transport)
        self.api = AutotaskApp(self.db, self.options, clock, self.webhooks)
        self.faults = faults or Faults(seed=seed)
        self.app = FaultInjector(self.api, self.faults, endpoint_of=endpoint_template,
                                 throttle_body=throttle_body)

    @property
    def counts(self):
        """Requests per endpoint template, e.g. counts["POST /V1.0/Tickets/query"]."""
        return self.app.counts

    @property
    def limits(self):
        return self.api.limits

    def transport(self) -> httpx.BaseTransport:
        return transport(self.app)

    @contextmanager
    def serve(self, host: str = "127.0.0.1", port: int = 0, control_token: str | None = None,
              deliver_webhooks: bool = True) -> Iterator[RunningServer]:
        """Serve on loopback (threaded) for the duration of the block, with the webhook
        deliverer running in the background unless `deliver_webhooks` is false; with
        `control_token`, also the control endpoints under /_simulator/ (`controls`)."""
        running = start_server(self.controlled_app(control_token), host, port, name="autotask-simulator")
        if deliver_webhooks:
            self.webhooks.start()
        try:
            yield running
        finally:
            self.webhooks.stop()
            running.shutdown()

    def controlled_app(self, control_token: str | None):
        if control_token is None:
            return self.app
        from psabridge.plugins.autotask.simulator import controls

        return ControlPanel(self.app, control_token, controls.actions(self))

    def settings(self, url: str = "http://autotask.simulator") -> dict[str, str]:
        """Connector settings for this simulator at `url`: `api_url` is the zone's REST root
        (what zone discovery answers as `url`), so the connector skips discovery."""
        o = self.options
        return {"api_url": f"{url.rstrip('/')}/ATServicesRest/", "username": o.username,
                "integration_code": o.integration_code, "secret": o.secret}

    def headers(self) -> dict[str, str]:
        """The auth headers of this simulator's API user (for tests calling it directly)."""
        o = self.options
        return {"ApiIntegrationCode": o.integration_code, "UserName": o.username, "Secret": o.secret}

    def client(self, url: str | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx client authenticated as the API user: in-process, or at `url`."""
        if url is None:
            return httpx.Client(transport=self.transport(), headers=self.headers(),
                                base_url="http://autotask.simulator/ATServicesRest/V1.0/", **kwargs)
        return httpx.Client(headers=self.headers(), base_url=f"{url.rstrip('/')}/ATServicesRest/V1.0/",
                            **kwargs)

    # -- what a technician does, and what tests look at ----------------------------------------

    def close_ticket(self, ticket_id: int, status: str | None = None) -> dict:
        """A technician completes the ticket in Autotask's interface (status Complete, or the
        named status), firing the callouts any change fires."""
        from psabridge.plugins.autotask.simulator import controls

        return controls.close_ticket(self, {"ticket": ticket_id, **({"status": status} if status else {})})

    def ticket(self, ticket_id: int) -> dict:
        return self.db.table("Tickets")[int(ticket_id)]

    def tickets(self) -> list[dict]:
        return sorted(self.db.table("Tickets").values(), key=lambda r: r["id"])

    def notes(self, ticket_id: int) -> list[dict]:
        return sorted(self.db.by("TicketNotes", ticketID=int(ticket_id)), key=lambda r: r["id"])

    def ticket_configurations(self, ticket_id: int) -> list[int]:
        """The ticket's configuration items: its primary one, then the additional ones."""
        ticket = self.ticket(ticket_id)
        extra = sorted(self.db.by("TicketAdditionalConfigurationItems", ticketID=ticket["id"]),
                       key=lambda r: r["id"])
        primary = [ticket["configurationItemID"]] if ticket["configurationItemID"] is not None else []
        return primary + [r["configurationItemID"] for r in extra]

    def configurations(self) -> list[dict]:
        return sorted(self.db.table("ConfigurationItems").values(), key=lambda r: r["id"])

    def configuration(self, configuration_id: int) -> dict | None:
        return self.db.table("ConfigurationItems").get(int(configuration_id))

    def add_configuration(self, company_id: int, name: str, type_name: str = "Workstation",
                          **fields: Any) -> dict:
        """A configuration item the MSP entered by hand in Autotask's interface: `name` as its
        reference title, of the ConfigurationItemType named `type_name`, with any other wire
        fields (`serialNumber`, `referenceNumber`, `warrantyExpirationDate`...)."""
        kinds = {ci_type: kind for kind, ci_type in KIND_CI_TYPE.items()}
        if type_name not in kinds:
            raise ValueError(f"no configuration item type {type_name!r}; there are: {', '.join(kinds)}")
        with self.db.lock:
            company = self.db.table("Companies")[int(company_id)]
            return self.db.add_configuration_item(company, name, kinds[type_name], **fields)

    def delete_configuration(self, configuration_id: int) -> None:
        """An admin deletes the configuration item in Autotask's interface (the API cannot)."""
        with self.db.lock:
            del self.db.table("ConfigurationItems")[int(configuration_id)]
            links = "TicketAdditionalConfigurationItems"
            for row in self.db.by(links, configurationItemID=int(configuration_id)):
                del self.db.table(links)[row["id"]]

    def companies(self) -> list[dict]:
        return sorted(self.db.table("Companies").values(), key=lambda r: r["id"])

    def company(self, name: str) -> dict:
        return next(c for c in self.db.table("Companies").values() if c["companyName"] == name)

    def is_closed(self, ticket: dict) -> bool:
        return ticket["status"] == STATUS_COMPLETE

    def routing_names(self) -> dict[str, Any]:
        """Names tests route tickets with, as labels of the picklists (what a connector maps)."""
        return {"queue": "Monitoring Alert", "manual_queue": "Level I Support",
                "closed_status": "Complete", "new_status": "New",
                "priorities": {"Critical": "Critical", "High": "High", "Moderate": "Medium",
                               "Low": "Low", "Information": "Low"}}

    def deliver_pending(self) -> int:
        return self.webhooks.deliver_pending()

    @contextmanager
    def holding(self, entity: str) -> Iterator[threading.Event]:
        """Within the block, API requests for `entity` ("Tickets", "ThresholdInformation") wait
        while counted in flight, until the event yielded is set (or the block ends): how a
        test fills an entity's threads."""
        gate = threading.Event()
        self.api.holds[entity.casefold()] = gate
        try:
            yield gate
        finally:
            gate.set()
            self.api.holds.pop(entity.casefold(), None)
