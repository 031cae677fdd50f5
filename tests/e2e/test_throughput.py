"""Throughput within the APIs' limits: workers that really overlap, a pace that never exceeds a
quota, each list read once per run, configurations listed in pages where that is cheaper, and
a plan killed mid-apply that a re-run finishes without a duplicate.

Overlap and pacing are asserted from the simulators' own records (requests in flight at once,
requests refused for the quota), never from wall time.
"""

from __future__ import annotations

import signal

import pytest

from psabridge.core import mapping, sync
from psabridge.core.bridge import open_bridge
from psabridge.core.http import RetryPolicy
from psabridge.core.plugins import configure_plugin, enable_plugin
from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator, company_names
from psabridge.plugins.rmm_datto.client import ClientOptions, client_for
from psabridge.plugins.rmm_datto.simulator import DattoSimulator
from psabridge.plugins.rmm_datto.simulator.quota import Quotas
from psabridge.plugins.rmm_datto.throttle import Limits
from psabridge.simulation import Faults
from tests.e2e.conftest import SEED
from tests.reliability.processes import (
    configurations_linking,
    device_link,
    psabridge_env,
    run,
    start,
    wait_until,
)
from tests.reliability.world import set_up, world

COMPANIES = 10
DEVICE_PAGES = "GET /api/v2/account/devices"


def bridge_on(pm, store, cw, datto, workers: int, datto_options: ClientOptions | None = None):
    transports = {"connectwise": cw.transport(), "datto": datto.transport()}
    configure_plugin(pm, store, "connectwise", cw.settings("http://connectwise.simulator"))
    configure_plugin(pm, store, "datto", datto.settings("http://datto.simulator"))
    enable_plugin(pm, store, "connectwise", transport=transports["connectwise"])
    enable_plugin(pm, store, "datto", transport=transports["datto"])
    bridge = open_bridge(pm, store, transports)
    bridge.workers = workers
    if datto_options is not None:
        client_for(bridge.rmm.connection, datto_options)
    return bridge


def sims(latency: float = 0.0, quotas: Quotas | None = None):
    cw = ConnectWiseSimulator(seed=SEED, companies=COMPANIES, faults=Faults(latency=latency))
    datto = DattoSimulator(seed=SEED, company_names=company_names(SEED, COMPANIES),
                           faults=Faults(latency=latency), quotas=quotas)
    return cw, datto


def map_companies_and_types(bridge) -> None:
    mapping.apply(bridge, mapping.plan_company_mappings(bridge, None))
    for row in mapping.load_device_types(bridge):
        if row.configuration_type and not row.flagged:
            mapping.map_device_type(bridge, row.device_type, row.configuration_type.id)


@pytest.mark.parametrize(("workers", "latency"), [(1, 0.05), (8, 0.3)])
def test_the_workers_of_a_remote_have_that_many_requests_in_flight_at_once(pm, store, workers,
                                                                           latency):
    cw, datto = sims(latency=latency)
    bridge = bridge_on(pm, store, cw, datto, workers)
    map_companies_and_types(bridge)
    datto.injector.reset_counts()
    cw.app.reset_counts()

    outcome = mapping.apply(bridge, mapping.plan_automatic_mapping(bridge))

    assert outcome.done and not outcome.failed
    assert datto.counts["GET /api/v2/audit/{kind}/{uid}"] > workers  # more audits than workers
    assert datto.injector.most_in_flight == workers  # the audits
    assert cw.app.most_in_flight == workers  # the configurations created


def test_sixteen_workers_at_datto_s_real_quota_model_are_never_refused(pm, store):
    # Datto's model (a sliding window, 429 past the quota, answers held past 90 % of it), with
    # the window shortened from 60 s to 2 s so that the test does not wait minutes; the client
    # keeps its margin for requests that overtake one another on the way in proportion.
    quotas = Quotas(window=2.0, reads=20, cutoff_delay=0.05)
    cw, datto = sims(latency=0.02, quotas=quotas)
    # The client keeps 2 of the 20 for others: `plugins enable` checked the connection with a
    # client of its own, whose request the server counts too.
    paced = ClientOptions(limits=Limits(window=2.3, reads=18), throttle_backoff=(0.01, 0.02))
    bridge = bridge_on(pm, store, cw, datto, 16, paced)
    map_companies_and_types(bridge)

    outcome = mapping.apply(bridge, mapping.plan_automatic_mapping(bridge))

    assert not outcome.failed
    assert datto.counts["GET /api/v2/audit/{kind}/{uid}"] > 3 * quotas.reads  # several windows' worth
    assert datto.quota.refused == 0
    assert datto.injector.most_in_flight > 1


def test_without_the_pace_the_same_run_is_refused(pm, store):
    """The control: the quota model does refuse 16 unpaced workers."""
    quotas = Quotas(window=1.0, reads=20, cutoff_delay=0.05)
    cw, datto = sims(latency=0.02, quotas=quotas)
    unpaced = ClientOptions(limits=Limits(reads=10**6), retry=RetryPolicy(attempts=1),
                            throttle_backoff=(0.01, 0.02))
    bridge = bridge_on(pm, store, cw, datto, 16, unpaced)
    map_companies_and_types(bridge)

    mapping.plan_automatic_mapping(bridge)

    assert datto.quota.refused > 0


def test_one_run_reads_the_device_and_site_lists_once(pm, store):
    cw, datto = sims()
    bridge = bridge_on(pm, store, cw, datto, 4)
    map_companies_and_types(bridge)
    datto.injector.reset_counts()

    with bridge.one_run():
        mapping.apply(bridge, mapping.plan_company_mappings(bridge, None))
        mapping.load_device_types(bridge)
        mapping.apply(bridge, mapping.plan_automatic_mapping(bridge))
        mapping.apply(bridge, mapping.plan_deleted_devices(bridge))
    assert datto.counts[DEVICE_PAGES] == 1 and datto.counts["GET /api/v2/account/sites"] == 1

    # Outside a run, each command reads afresh (a later run must see new devices).
    mapping.load_device_types(bridge)
    mapping.plan_deleted_devices(bridge)
    assert datto.counts[DEVICE_PAGES] == 3


def test_a_sync_pass_with_automatic_mapping_reads_the_device_list_once(pm, store):
    cw, datto = sims()
    bridge = bridge_on(pm, store, cw, datto, 4)
    map_companies_and_types(bridge)
    bridge.set_option("auto_map", True)
    datto.injector.reset_counts()

    sync.run_pass(bridge)

    assert datto.counts[DEVICE_PAGES] == 1
    assert datto.counts["GET /api/v2/audit/{kind}/{uid}"] > 0  # the pass did map devices
    assert bridge.store.device_mappings(*bridge.pair)


def test_configurations_are_listed_in_pages_where_that_is_cheaper_and_match_as_queries_do(
        pm, store, tmp_path, monkeypatch):
    cw, datto = sims()
    bridge = bridge_on(pm, store, cw, datto, 4)
    map_companies_and_types(bridge)
    cw.app.reset_counts()
    listed = mapping.plan_automatic_mapping(bridge)
    # One count and one page for every configuration, where ten companies cost ten queries.
    assert cw.counts["GET /company/configurations/count"] == 1
    assert cw.counts["GET /company/configurations"] == 1

    monkeypatch.setattr(mapping.Listing, "read", classmethod(lambda cls, *args: None))
    cw.app.reset_counts()
    queried = mapping.plan_automatic_mapping(bridge)
    assert cw.counts["GET /company/configurations"] >= COMPANIES
    assert [(c.action, c.subject, c.detail) for c in listed.changes] == \
        [(c.action, c.subject, c.detail) for c in queried.changes]
    assert any(c.action == "map device" for c in listed.changes)  # matches were found


def test_a_mapping_killed_mid_apply_and_run_again_creates_no_configuration_twice(tmp_path):
    with world(tmp_path / "store.db", seed=5, companies=6, loopback=True) as w:
        set_up(w)
        seeded = set(w.cw.db.configurations)
        w.faults[0].latency = 0.1  # every ConnectWise answer: the run lasts long enough to kill
        env = psabridge_env(tmp_path / "store.db", lock_ttl=1, claim_ttl=1,
                            PSABRIDGE_CONCURRENCY="2")
        killed = start(env, "devices", "map", "--all")
        wait_until(lambda: len(set(w.cw.db.configurations) - seeded) >= 3, 60,
                   "the first configurations to be created")
        killed.process.send_signal(signal.SIGKILL)
        killed.process.wait()
        made_before_kill = set(w.cw.db.configurations) - seeded
        recorded = w.store.device_mappings("connectwise", "datto")
        # The kill landed before the group's rows were committed: configurations exist that the
        # store does not know of.
        assert len(recorded) < len(made_before_kill)

        w.faults[0].latency = 0.0
        run(env, "devices", "map", "--all", timeout=120).check()

        mappings = w.store.device_mappings("connectwise", "datto")
        created = set(w.cw.db.configurations) - seeded
        # Every configuration psabridge created is one device's mapping: none twice, none lost.
        assert created == {int(m.configuration_id) for m in mappings} - seeded
        assert made_before_kill <= created
        for m in mappings:
            if int(m.configuration_id) in created:
                link = device_link(w.datto, w.datto_url, m.device_uid)
                assert [str(c["id"]) for c in configurations_linking(w.cw, link)] == \
                    [m.configuration_id]


def test_mapping_in_groups_planned_beside_applied_maps_as_one_plan_would(pm, store, tmp_path,
                                                                         monkeypatch):
    from psabridge.core.plugins import make_plugin_manager
    from psabridge.core.store import open_store

    def mapped(bridge, sims_) -> dict:
        """device hostname -> (configuration name, created or seeded), as the PSA holds them."""
        result = {}
        for m in bridge.store.device_mappings(*bridge.pair):
            configuration = sims_[0].db.configurations[int(m.configuration_id)]
            result[sims_[1].devices[m.device_uid]["hostname"], m.device_uid] = (
                configuration["name"], configuration["company"]["id"])
        return result

    whole_sims = sims()
    whole = bridge_on(pm, store, *whole_sims, workers=4)
    map_companies_and_types(whole)
    outcome = mapping.apply(whole, mapping.plan_automatic_mapping(whole))

    monkeypatch.setattr(mapping, "PIPELINE_GROUP", 5)  # many groups, a company or two each
    other_pm = make_plugin_manager()
    other_store = open_store(other_pm, f"sqlite://{tmp_path / 'other.db'}")
    grouped_sims = sims()
    grouped = bridge_on(other_pm, other_store, *grouped_sims, workers=4)
    map_companies_and_types(grouped)
    plan, grouped_outcome = mapping.map_automatically(grouped)

    assert len(grouped_outcome.done) == len(outcome.done) and not grouped_outcome.failed
    assert mapped(grouped, grouped_sims) == mapped(whole, whole_sims)
    assert grouped_sims[0].counts["POST /company/configurations"] == \
        whole_sims[0].counts["POST /company/configurations"]
    other_store.close()
