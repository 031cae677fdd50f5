"""End to end: the engine, the real connectors, and both simulators, in-process and on loopback.

`sims` starts a PSA simulator and a Datto RMM simulator describing the same MSP (the Datto sites
are distortions of the PSA's company names); `e2e` configures and enables both plugins against
them, as an admin would, and opens the bridge. The tests reach the PSA's simulator through a
neutral interface, `sims.psa` (tests/e2e/psa_sims.py), so that they can run on any PSA whose
simulator provides it; the PSA is ConnectWise (`psa_kind`).
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
from tests.e2e import psa_sims
from tests.e2e.autotask_psa_sim import autotask
from tests.e2e.psa_sims import ConnectWisePsaSim, PsaSim, SimTicket, TicketRoute

# Every PSA the e2e tests run on: plugin name -> a function making its PsaSim.
PSA_SIMS = {**psa_sims.PSA_SIMS, "autotask": autotask}

SEED = 3
COMPANIES = 10


@attrs.define
class Sims:
    """The two simulators. `psa` is the PSA's, through the neutral interface every e2e test not
    about one PSA's specifics uses (tests/e2e/psa_sims.py); `cw` is the ConnectWise simulator
    itself, for the tests of ConnectWise's own behaviour."""

    psa: PsaSim
    datto: DattoSimulator
    psa_url: str
    datto_url: str
    transports: dict

    @property
    def cw(self) -> ConnectWiseSimulator:
        if not isinstance(self.psa, ConnectWisePsaSim):
            pytest.skip(f"a test of ConnectWise's own behaviour (the PSA is {self.psa.plugin})")
        return self.psa.cw

    @property
    def cw_url(self) -> str:
        return self.psa_url

    def request_counts(self) -> dict[str, int]:
        return {**{f"psa {k}": v for k, v in self.psa.counts.items()},
                **{f"datto {k}": v for k, v in self.datto.counts.items()}}

    def writes(self) -> dict[str, int]:
        """Requests that change something, on either side (token grants are not changes)."""
        return {k: v for k, v in self.request_counts().items()
                if k.split()[1] in ("POST", "PUT", "PATCH", "DELETE") and "oauth/token" not in k
                and "/query" not in k}  # Autotask's queries are POSTs that change nothing


def connectwise_only(sims: Sims, why: str) -> None:
    """Skip on another PSA: the test relies on ConnectWise's own data or behaviour (`why`)."""
    if sims.psa.plugin != "connectwise":
        pytest.skip(f"ConnectWise's own: {why}")


def make_sims(seed: int = SEED, companies: int = COMPANIES, **datto_options) -> tuple:
    cw = ConnectWiseSimulator(seed=seed, companies=companies)
    datto = DattoSimulator(seed=seed, company_names=company_names(seed, companies), **datto_options)
    return cw, datto


@pytest.fixture(params=["connectwise", "autotask"])
def psa_kind(request) -> str:
    """The PSA the e2e tests run on (a key of PSA_SIMS); override to run them on another."""
    return request.param


def make_psa_sims(psa_kind: str, seed: int = SEED, companies: int = COMPANIES,
                  **datto_options) -> tuple[PsaSim, DattoSimulator]:
    """The PSA's simulator (any of PSA_SIMS) and a Datto RMM simulator of the same customers."""
    psa = PSA_SIMS[psa_kind](seed, companies)
    datto = DattoSimulator(seed=seed, company_names=psa.company_names, **datto_options)
    return psa, datto


@pytest.fixture(params=["in-process", "loopback"])
def sims(request, psa_kind):
    psa, datto = make_psa_sims(psa_kind)
    if request.param == "in-process":
        url = f"http://{psa.plugin}.simulator"
        psa.settings(url)
        yield Sims(psa, datto, url, "http://datto.simulator",
                   {psa.plugin: psa.transport(), "datto": datto.transport()})
        return
    with contextlib.ExitStack() as stack:
        psa_server = stack.enter_context(psa.serve())
        datto_server = stack.enter_context(datto.serve())
        psa.settings(psa_server.url)
        yield Sims(psa, datto, psa_server.url, datto_server.url, {})


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
    psa = sims.psa.plugin
    configure_plugin(pm, store, psa, sims.psa.settings(sims.psa_url))
    configure_plugin(pm, store, "datto", sims.datto.settings(sims.datto_url))
    enable_plugin(pm, store, psa, transport=sims.transports.get(psa))
    enable_plugin(pm, store, "datto", transport=sims.transports.get("datto"))
    return open_bridge(pm, store, sims.transports)


# -- ticketing through both simulators (issue 6) ---------------------------------------------------

DISK_C = {"@class": "perf_disk_usage_ctx", "diskName": "C:", "freeSpace": 1.5, "totalVolume": 237.9,
          "unitOfMeasure": "GB"}
SPOOLER = {"@class": "srvc_status_ctx", "serviceName": "Spooler", "status": "STOPPED"}


class ChosenOptions:
    """The PSA's ticket options as the engine reads them (`psa.ticket_options()`), by name:
    routing choices looked up within the scope chosen before them, as an admin picks them."""

    def __init__(self, options):
        self.options = options

    def choice(self, field: str, name: str, routing: dict | None = None) -> str:
        declared = self.options.field(field)
        scope = (routing or {}).get(declared.scoped_by) if declared.scoped_by else None
        return next(c.id for c in declared.choices
                    if c.name == name and (scope is None or c.scope_id in (None, scope)))

    def status(self, name: str, routing: dict | None = None) -> str:
        scope = (routing or {}).get(self.options.status_scope) if self.options.status_scope else None
        return next(s.id for s in self.options.statuses
                    if s.name == name and (scope is None or s.scope_id == scope))

    def priority(self, name: str) -> str:
        return next(p.id for p in self.options.priorities if p.name == name)

    def source(self, name: str) -> str:
        return next(s.id for s in self.options.sources if s.name == name)

    def routing(self, route: TicketRoute) -> dict[str, str]:
        chosen: dict[str, str] = {}
        for field in self.options.routing:  # scoping fields first, as the PSA declares them
            if field.name in route.routing:
                chosen[field.name] = self.choice(field.name, route.routing[field.name], chosen)
        return chosen

    def attributes(self, route: TicketRoute, **statuses: str):
        """Ticket attributes for `route`; `open_status`/`closed_status` names replace its own."""
        from psabridge.core.ticketing import TicketAttributes

        routing = self.routing(route)
        return TicketAttributes(
            routing=routing,
            open_status_id=self.status(statuses.get("open_status", route.open_status), routing),
            closed_status_id=self.status(statuses.get("closed_status", route.closed_status),
                                         routing))


@attrs.define
class Desk:
    """A mapped MSP with ticketing configured from the PSA's own options, and the means to
    drive both simulators: raise and resolve alerts in Datto, work tickets in the PSA."""

    bridge: Bridge
    sims: Sims
    options: ChosenOptions
    devices: list  # mapped psabridge Devices, each with its configuration id in `configuration_of`
    configuration_of: dict
    clock: object  # the Datto simulator's clock (a ManualClock): alert times are the test's

    @property
    def psa(self) -> PsaSim:
        return self.sims.psa

    def settings(self, **changes):
        from psabridge.core.ticketing import TicketSettings

        o, psa = self.options, self.psa
        base = TicketSettings(
            source_id=o.source(psa.source_names[0]),
            priorities={rmm: o.priority(name) for rmm, name in psa.priority_names.items()},
            attributes={"alert": o.attributes(psa.alert_route),
                        "manual": o.attributes(psa.manual_route)},
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

    def tickets_for(self, alert_uid: str) -> list[SimTicket]:
        """The PSA's tickets carrying this alert's marker (what exactly-once is about)."""
        marker = self.marker(alert_uid)
        # A PSA whose marker field is short stores a digest of a long marker (Autotask).
        stored = getattr(self.psa, "stored_marker", lambda m: m)(marker)
        return [t for t in self.psa.tickets() if t.marker == stored]

    def ticket_for(self, alert_uid: str) -> SimTicket:
        (ticket,) = self.tickets_for(alert_uid)
        return ticket

    def ticket(self, ticket_id: str) -> SimTicket:
        return self.psa.ticket(ticket_id)

    def close_in_psa(self, ticket: SimTicket, status: str) -> None:
        """A technician moves the ticket to the closed status `status` through the PSA's API."""
        self.psa.close_ticket(ticket.id, status)

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
    """Everything mapped, ticket settings chosen from the PSA's options (not enabled yet)."""
    import time

    from psabridge.core.ticketing import check_ticket_settings
    from psabridge.plugins.rmm_datto.simulator.app import ManualClock

    clock = ManualClock(time.time())
    sims.datto.clock = clock  # alert times (raised, resolved) come from here from now on
    map_everything(e2e)
    options = ChosenOptions(e2e.psa.ticket_options())
    mappings = e2e.store.device_mappings(*e2e.pair)
    configuration_of = {m.device_uid: m.configuration_id for m in mappings}
    devices = sorted((d for d in e2e.rmm.list_devices(site_uid=None)
                      if d.uid in configuration_of), key=lambda d: d.hostname)
    desk = Desk(e2e, sims, options, devices, configuration_of, clock)
    assert [p for p in check_ticket_settings(e2e, desk.settings(), options.options)
            if p.severity == "error"] == []
    return desk
