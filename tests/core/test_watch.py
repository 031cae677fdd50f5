"""`sync --watch`'s bridge: one set of connectors for every pass, following the plugins that
are enabled, disabled or switched while it runs (the in-memory PSA and RMM)."""

from __future__ import annotations

import pytest

from psabridge.core import sync
from psabridge.core.bridge import LiveBridge, PluginDisabled
from psabridge.core.errors import PluginError
from psabridge.core.plugins import configure_plugin, disable_plugin, enable_plugin
from tests.core.memory import MemoryRmm
from tests.core.test_mapping import bridge, psa, rmm  # noqa: F401 - fixtures


@pytest.fixture
def other_rmm(pm):
    plugin = MemoryRmm()
    pm.register(plugin, name="memrmm2")
    yield plugin
    pm.unregister(plugin)


def test_each_pass_has_the_same_connectors_and_its_own_fresh_reads(bridge, psa):  # noqa: F811
    live = sync.live_bridge(bridge)
    passes = []
    sync.watch(lambda: passes.append(live()) or passes[-1], interval=0, on_pass=lambda r: None,
               stop=lambda: len(passes) == 3, sleep=lambda s: None)
    assert all(b.psa is bridge.psa and b.rmm is bridge.rmm for b in passes)
    psa.calls.clear()
    for kept in passes[:2]:
        kept.with_fresh_reads().company_ids()  # what each pass is given: see watch
    assert psa.calls["list_companies"] == 2  # a company deleted meanwhile is seen


def test_ticket_options_one_pass_read_serve_the_next_passes(bridge, psa):  # noqa: F811
    """The options are read for their limits when a pass makes a ticket; every pass used to
    read them again (a fresh copy read them and forgot them), at a request per board and more."""
    live = sync.live_bridge(bridge)
    psa.calls.clear()
    for _ in range(3):
        live().with_fresh_reads().ticket_options()
    assert psa.calls["ticket_options"] == 1


def test_a_watch_takes_up_the_rmm_enabled_in_place_of_its_own(pm, store, bridge, rmm, other_rmm):  # noqa: F811
    live = sync.live_bridge(bridge)
    assert live().rmm.name == "memrmm"
    configure_plugin(pm, store, "memrmm2", {"url": "https://rmm2.example.com"})
    disable_plugin(pm, store, "memrmm")
    with pytest.raises(PluginError, match="no RMM plugin is enabled"):
        live()
    enable_plugin(pm, store, "memrmm2", check=False)
    switched = live()
    assert switched.rmm.name == "memrmm2" and switched.psa is bridge.psa
    assert switched.rmm.connection.settings["url"] == "https://rmm2.example.com"
    assert live() is switched
    rmm.calls.clear()
    sync.run_pass(switched.with_fresh_reads())
    assert other_rmm.calls["list_alerts"] == 2  # the open alerts, then the resolved ones
    assert rmm.calls["list_alerts"] == 0


def test_serve_s_live_bridge_does_not_switch(pm, store, bridge, rmm, other_rmm):  # noqa: F811
    live = LiveBridge(bridge)
    configure_plugin(pm, store, "memrmm2", {"url": "https://rmm2.example.com"})
    disable_plugin(pm, store, "memrmm")
    enable_plugin(pm, store, "memrmm2", check=False)
    with pytest.raises(PluginDisabled, match="memrmm is disabled"):
        live()
