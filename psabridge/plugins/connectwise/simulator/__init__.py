"""A ConnectWise Manage API simulator, for tests, benchmarks and `psabridge simulate connectwise`.

    sim = ConnectWiseSimulator(seed=0, companies=12, faults=Faults(throttle_rate=0.1))
    connection = Connection("connectwise", sim.settings("http://sim"), transport=sim.transport())
    with sim.serve() as server:                # or over real loopback HTTP
        settings = sim.settings(server.url)

`sim.db` is the state (tables of CW-shaped dicts), `sim.counts` the requests per endpoint
template ("GET /company/configurations"), `sim.api.deliveries` the callback POSTs made.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from werkzeug.wrappers import Response

from psabridge.plugins.connectwise.simulator.app import ConnectWiseApp, Options, endpoint_template
from psabridge.plugins.connectwise.simulator.data import company_names
from psabridge.plugins.connectwise.simulator.db import Database
from psabridge.simulation import (
    ControlPanel,
    FaultInjector,
    Faults,
    RunningServer,
    retry_after_text,
    start_server,
    transport,
)

__all__ = ["ConnectWiseSimulator", "Options", "Faults", "company_names"]


def throttle_body(seconds: float) -> Response:
    """CW's 429 (note `error`, not `code`: samples/error-429-rate-limited.json)."""
    wait = retry_after_text(seconds)
    return Response(
        f'{{"error":"ConnectWiseAPI","message":"Too many requests. Please try again in {wait} seconds."}}',
        429, {"Retry-After": wait}, content_type="application/json")


class ConnectWiseSimulator:
    def __init__(self, seed: int = 0, companies: int = 12, configurations_per_company: int = 6,
                 faults: Faults | None = None, options: Options | None = None, **seed_options: Any):
        self.db = Database()
        self.db.seed(seed, companies=companies, configurations_per_company=configurations_per_company,
                     **seed_options)
        self.options = options or Options()
        self.api = ConnectWiseApp(self.db, self.options)
        self.faults = faults or Faults(seed=seed)
        self.app = FaultInjector(self.api, self.faults, endpoint_of=endpoint_template,
                                 throttle_body=throttle_body)

    @property
    def counts(self):
        """Requests per endpoint template, e.g. counts["GET /company/configurations"]."""
        return self.app.counts

    def transport(self) -> httpx.BaseTransport:
        return transport(self.app)

    @contextmanager
    def serve(self, host: str = "127.0.0.1", port: int = 0,
              control_token: str | None = None) -> Iterator[RunningServer]:
        """Serve on loopback (threaded) for the duration of the block; with `control_token`,
        also the control endpoints under /_simulator/ (`controls`), outside the simulated API."""
        running = start_server(self.controlled_app(control_token), host, port,
                               name="connectwise-simulator")
        try:
            yield running
        finally:
            running.shutdown()

    def controlled_app(self, control_token: str | None):
        """The API, and with `control_token` the control endpoints beside it."""
        if control_token is None:
            return self.app
        from psabridge.plugins.connectwise.simulator import controls

        return ControlPanel(self.app, control_token, controls.actions(self))

    def settings(self, url: str = "http://connectwise.simulator") -> dict[str, str]:
        """Plugin settings that authenticate against this simulator at `url`."""
        o = self.options
        return {"url": url, "company": o.company_id, "public_key": o.public_key,
                "private_key": o.private_key, "client_id": o.client_ids[0]}

    # -- conveniences for tests --------------------------------------------------------------------

    def company(self, name: str) -> dict:
        return self.db.by_name(self.db.companies, name)

    def board(self, name: str) -> dict:
        return self.db.by_name(self.db.boards, name)

    def board_status(self, board_name: str, status_name: str) -> dict:
        board = self.board(board_name)
        return next(s for s in self.db.statuses_of(board["id"]) if s["name"] == status_name)
