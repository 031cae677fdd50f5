"""End to end: the engine, the real connectors, and both simulators, in-process and on loopback.

`sims` starts a ConnectWise and a Datto RMM simulator describing the same MSP (the Datto sites
are distortions of the ConnectWise company names); `e2e` configures and enables both plugins
against them, as an admin would, and opens the bridge.
"""

from __future__ import annotations

import contextlib

import attrs
import pytest

from psabridge.core.bridge import Bridge, open_bridge
from psabridge.core.plugins import configure_plugin, enable_plugin
from psabridge.core.store import open_store, store_url
from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator, company_names
from psabridge.plugins.rmm_datto.simulator import DattoSimulator

SEED = 3
COMPANIES = 10


@attrs.define
class Sims:
    cw: ConnectWiseSimulator
    datto: DattoSimulator
    cw_url: str
    datto_url: str
    transports: dict

    def request_counts(self) -> dict[str, int]:
        return {**{f"cw {k}": v for k, v in self.cw.counts.items()},
                **{f"datto {k}": v for k, v in self.datto.counts.items()}}

    def writes(self) -> dict[str, int]:
        """Requests that change something, on either side (token grants are not changes)."""
        return {k: v for k, v in self.request_counts().items()
                if k.split()[1] in ("POST", "PUT", "PATCH", "DELETE") and "oauth/token" not in k}


def make_sims(seed: int = SEED, companies: int = COMPANIES, **datto_options) -> tuple:
    cw = ConnectWiseSimulator(seed=seed, companies=companies)
    datto = DattoSimulator(seed=seed, company_names=company_names(seed, companies), **datto_options)
    return cw, datto


@pytest.fixture(params=["in-process", "loopback"])
def sims(request):
    cw, datto = make_sims()
    if request.param == "in-process":
        yield Sims(cw, datto, "http://connectwise.simulator", "http://datto.simulator",
                   {"connectwise": cw.transport(), "datto": datto.transport()})
        return
    with contextlib.ExitStack() as stack:
        cw_server = stack.enter_context(cw.serve())
        datto_server = stack.enter_context(datto.serve())
        yield Sims(cw, datto, cw_server.url, datto_server.url, {})


@pytest.fixture(params=["sqlite", "postgres"])
def store_engine(request, tmp_path):
    """Where each test's store is, as `--db` takes it: a new SQLite file, or a new database on
    the throwaway PostgreSQL server. Every e2e test runs on both stores."""
    if request.param == "sqlite":
        return tmp_path / "state.db"
    return request.getfixturevalue("postgres_db")


@pytest.fixture
def db_path(store_engine):
    return store_engine


@pytest.fixture
def store(pm, store_engine):
    store = open_store(pm, store_url(store_engine))
    yield store
    store.close()


@pytest.fixture
def e2e(pm, store, sims) -> Bridge:
    configure_plugin(pm, store, "connectwise", sims.cw.settings(sims.cw_url))
    configure_plugin(pm, store, "datto", sims.datto.settings(sims.datto_url))
    enable_plugin(pm, store, "connectwise", transport=sims.transports.get("connectwise"))
    enable_plugin(pm, store, "datto", transport=sims.transports.get("datto"))
    return open_bridge(pm, store, sims.transports)


# -- ticketing through both simulators (issue 6) ---------------------------------------------------

ALERT_BOARD = "RMM Alerts"  # the origin "alert" goes here, manual tickets to the Help Desk
PRIORITY_NAMES = {  # Datto RMM priority -> ConnectWise priority name
    "Critical": "Priority 1 - Emergency Response", "High": "Priority 2 - Quick Response",
    "Moderate": "Priority 3 - Normal Response", "Low": "Priority 4 - Schedule Maintenance",
    "Information": "Do Not Respond",
}
DISK_C = {"@class": "perf_disk_usage_ctx", "diskName": "C:", "freeSpace": 1.5, "totalVolume": 237.9,
          "unitOfMeasure": "GB"}
SPOOLER = {"@class": "srvc_status_ctx", "serviceName": "Spooler", "status": "STOPPED"}


class ChosenOptions:
    """The ConnectWise ticket options as the engine reads them (`psa_ticket_options`), by name."""

    def __init__(self, options):
        self.options = options
        self.boards = {b.name: b for b in options.boards}

    def board(self, name: str) -> str:
        return self.boards[name].id

    def status(self, board: str, name: str) -> str:
        return next(s.id for s in self.options.statuses
                    if s.board_id == self.board(board) and s.name == name)

    def type(self, board: str, name: str) -> str:
        return next(t.id for t in self.options.types if t.board_id == self.board(board) and t.name == name)

    def subtype(self, board: str, name: str) -> str:
        return next(t.id for t in self.options.subtypes
                    if t.board_id == self.board(board) and t.name == name)

    def priority(self, name: str) -> str:
        return next(p.id for p in self.options.priorities if p.name == name)

    def source(self, name: str) -> str:
        return next(s.id for s in self.options.sources if s.name == name)

    def attributes(self, board: str, type_: str, subtype: str, open_status: str, closed_status: str):
        from psabridge.core.ticketing import TicketAttributes

        return TicketAttributes(board_id=self.board(board), type_id=self.type(board, type_),
                                subtype_id=self.subtype(board, subtype),
                                open_status_id=self.status(board, open_status),
                                closed_status_id=self.status(board, closed_status))


@attrs.define
class Desk:
    """A mapped MSP with ticketing configured from ConnectWise's own options, and the means to
    drive both simulators: raise and resolve alerts in Datto, work tickets in ConnectWise."""

    bridge: Bridge
    sims: Sims
    options: ChosenOptions
    devices: list  # mapped psabridge Devices, each with its configuration id in `configuration_of`
    configuration_of: dict
    clock: object  # the Datto simulator's clock (a ManualClock): alert times are the test's

    def settings(self, **changes):
        from psabridge.core.ticketing import TicketSettings

        o = self.options
        base = TicketSettings(
            source_id=o.source("Monitoring"),
            priorities={rmm: o.priority(psa) for rmm, psa in PRIORITY_NAMES.items()},
            attributes={"alert": o.attributes(ALERT_BOARD, "Alert", "Hardware", "Assigned", "Resolved"),
                        "manual": o.attributes("Help Desk", "Service Request", "Software", "New",
                                               "Completed")},
        )
        return attrs.evolve(base, **changes)

    def now(self):
        import datetime as dt

        return dt.datetime.fromtimestamp(self.clock.now, dt.UTC)

    def enable(self, **changes) -> None:
        """Save the settings and switch ticketing on as of the simulated now; alerts raised
        before (the seeded ones) make no tickets (R27)."""
        from psabridge.core import ticketing

        ticketing.save_ticket_settings(self.bridge, self.settings(**changes))
        ticketing.set_ticketing_enabled(self.bridge, True, now=self.now())
        self.clock.advance(1)

    def raise_alert(self, device, context=None, priority="High", **options) -> str:
        alert = self.sims.datto.raise_alert(device.uid, context or DISK_C, priority, **options)
        self.clock.advance(1)
        return alert["alertUid"]

    def marker(self, alert_uid: str) -> str:
        from psabridge.core.ticketing import alert_marker

        return alert_marker(self.bridge, alert_uid)

    def tickets_for(self, alert_uid: str) -> list[dict]:
        """ConnectWise tickets carrying this alert's marker (what exactly-once is about)."""
        marker = self.marker(alert_uid)
        return [t for t in self.sims.cw.db.tickets.values() if t.get("externalXRef") == marker]

    def ticket_for(self, alert_uid: str) -> dict:
        (ticket,) = self.tickets_for(alert_uid)
        return ticket

    def notes(self, ticket: dict) -> list[str]:
        return [n["text"] for n in self.sims.cw.db.ticket_notes.values() if n["ticketId"] == ticket["id"]]

    def configurations_of(self, ticket: dict) -> list[str]:
        return [str(c) for c in self.sims.cw.db.ticket_configurations.get(ticket["id"], [])]

    def cw_client(self):
        """A ConnectWise API client of our own, standing in for a technician's edits."""
        from psabridge.plugins.connectwise.client import ConnectWiseClient

        return ConnectWiseClient(self.sims.cw.settings(self.sims.cw_url),
                                 transport=self.sims.transports.get("connectwise"))

    def close_in_cw(self, ticket: dict, status: str) -> None:
        """A technician moves the ticket to `status` (of its board) through CW's API."""
        status_id = self.options.status(ticket["board"]["name"], status)
        self.cw_client().patch(f"service/tickets/{ticket['id']}",
                               [{"op": "replace", "path": "status", "value": {"id": int(status_id)}}])

    def alert(self, alert_uid: str) -> dict:
        return self.sims.datto.alerts[alert_uid]


def map_everything(bridge: Bridge) -> None:
    """As an admin would: companies to their suggested sites, device types to their suggested
    configuration types, then every audited device of the mapped sites."""
    from psabridge.core import mapping

    companies = mapping.load_companies(bridge)
    mapping.apply(bridge, mapping.plan_company_mappings(bridge, {r.company.id: None for r in companies}))
    for row in mapping.load_device_types(bridge):
        if row.configuration_type and not row.flagged:
            mapping.map_device_type(bridge, row.device_type, row.configuration_type.id)
    outcome = mapping.apply(bridge, mapping.plan_automatic_mapping(bridge))
    assert outcome.done and not outcome.failed


@pytest.fixture
def desk(e2e, sims) -> Desk:
    """Everything mapped, ticket settings chosen from ConnectWise's options (not enabled yet)."""
    import time

    from psabridge.core.ticketing import check_ticket_settings
    from psabridge.plugins.rmm_datto.simulator.app import ManualClock

    clock = ManualClock(time.time())
    sims.datto.clock = clock  # alert times (raised, resolved) come from here from now on
    map_everything(e2e)
    options = ChosenOptions(e2e.psa.call("psa_ticket_options"))
    mappings = e2e.store.device_mappings(*e2e.pair)
    configuration_of = {m.device_uid: m.configuration_id for m in mappings}
    devices = sorted((d for d in e2e.rmm.call("rmm_list_devices", site_uid=None)
                      if d.uid in configuration_of), key=lambda d: d.hostname)
    desk = Desk(e2e, sims, options, devices, configuration_of, clock)
    assert [p for p in check_ticket_settings(e2e, desk.settings(), options.options)
            if p.severity == "error"] == []
    return desk
