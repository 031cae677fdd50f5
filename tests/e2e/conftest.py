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


@pytest.fixture
def e2e(pm, store, sims) -> Bridge:
    configure_plugin(pm, store, "connectwise", sims.cw.settings(sims.cw_url))
    configure_plugin(pm, store, "datto", sims.datto.settings(sims.datto_url))
    enable_plugin(pm, store, "connectwise", transport=sims.transports.get("connectwise"))
    enable_plugin(pm, store, "datto", transport=sims.transports.get("datto"))
    return open_bridge(pm, store, sims.transports)
