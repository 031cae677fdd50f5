"""A sync against the simulator: audits read only when they changed, a token that expires in
the middle of it, and an audit that fails. The loop is `psabridge.core.devices.refresh_device_details`."""

from __future__ import annotations

import attrs
import pytest

from psabridge.core.connectors import RmmConnector
from psabridge.core.devices import refresh_device_details
from psabridge.core.http import RetryPolicy
from psabridge.plugins.rmm_datto.simulator import DattoSimulator, SimOptions
from psabridge.simulation import Faults
from tests.outages import Outage
from tests.rmm_datto.conftest import connect

AUDITS = "GET /api/v2/audit/{kind}/{uid}"
PAGES = "GET /api/v2/account/devices"


def sync(connector: RmmConnector, store):
    """What the engine does each run: the device pages, then the audits that changed."""
    devices = list(connector.call("rmm_list_devices", site_uid=None))
    return devices, refresh_device_details(connector, store, "datto", devices)


def per_device_requests(sim: DattoSimulator) -> int:
    return sum(n for endpoint, n in sim.counts.items() if "{uid}" in endpoint)


def test_a_second_sync_of_an_unchanged_estate_costs_pages_not_devices(pm, store, connection, sim):
    connector = RmmConnector(pm, connection)
    devices, first = sync(connector, store)
    audited = [d for d in devices if d.last_audit]
    assert first.fetched == len(audited) and first.unaudited == len(devices) - len(audited)
    assert sim.counts[AUDITS] == sum(
        1 for d in audited if sim.devices[d.uid]["deviceClass"] in ("device", "printer", "esxihost"))

    sim.injector.reset_counts()
    _, second = sync(connector, store)
    assert second.fetched == 0 and second.cached == len(audited)
    assert second.details == first.details
    assert per_device_requests(sim) == 0
    assert dict(sim.counts) == {PAGES: 1}  # one page of devices: the whole cost of the sync


def test_a_changed_audit_is_read_again_and_only_that_one(pm, store, connection, sim, sim_clock):
    connector = RmmConnector(pm, connection)
    sync(connector, store)
    changed = next(u for u, d in sim.devices.items()
                   if d["deviceClass"] == "device" and d["lastAuditDate"] and not d["deleted"])
    sim_clock.advance(3600)
    sim.audit_device(changed, serial="NEW-SERIAL-1", model="OptiPlex 7010")
    sim.injector.reset_counts()
    _, again = sync(connector, store)
    assert again.fetched == 1 and sim.counts[AUDITS] == 1
    assert again.details[changed].serial_number == "NEW-SERIAL-1"
    assert store.device_details("datto", changed)[1].model == "OptiPlex 7010"


@pytest.mark.parametrize("when", ["between pages", "between audits"])
def test_the_token_expires_mid_sync_and_the_sync_completes(pm, store, sim_clock, reach, options, when):
    # More than 250 devices, so the device list takes two pages.
    sim = DattoSimulator(seed=4, clock=sim_clock, options=SimOptions(token_ttl=3600),
                         companies=50, devices_per_site=(6, 7))
    url, transport = reach(sim)
    connector = RmmConnector(pm, connect(sim, url, transport, options))
    assert len(sim.devices) > 250

    def expire_at(position, devices):
        for n, device in enumerate(devices):
            if n == position:
                sim_clock.advance(3601)  # the token's hour is over on the server's clock
            yield device

    listing = connector.call("rmm_list_devices", site_uid=None)
    devices = list(expire_at(250, listing) if when == "between pages" else listing)
    to_refresh = expire_at(20, devices) if when == "between audits" else devices
    result = refresh_device_details(connector, store, "datto", to_refresh)

    assert {d.uid for d in devices} == set(sim.devices)
    assert result.fetched + result.unaudited == len(devices)
    assert sim.grants == 2 and sim.counts["POST /auth/oauth/token"] == 2


def test_unaudited_devices_are_not_asked_for_details(pm, store, connection, sim):
    connector = RmmConnector(pm, connection)
    devices, result = sync(connector, store)
    unaudited = [d for d in devices if d.last_audit is None]
    assert unaudited and all(store.device_details("datto", d.uid) is None for d in unaudited)
    assert not set(result.details) & {d.uid for d in unaudited}


def test_a_sync_completes_through_random_server_errors_and_dropped_connections(
        pm, store, sim_clock, reach, options):
    faults = Faults(error_rate=0.15, drop_rate=0.05, seed=11)
    sim = DattoSimulator(seed=5, clock=sim_clock, faults=faults)
    url, transport = reach(sim)
    connection = connect(sim, url, transport, attrs.evolve(options, retry=RetryPolicy(
        attempts=8, base_delay=0.001)))
    devices, result = sync(RmmConnector(pm, connection), store)
    assert {d.uid for d in devices} == set(sim.devices)
    assert result.fetched + result.unaudited == len(devices)
    assert sim.injector.faults_served["error"] > 0 and sim.injector.faults_served["drop"] > 0


def test_a_device_added_between_syncs_costs_exactly_its_own_audit(pm, store, connection, sim):
    connector = RmmConnector(pm, connection)
    sync(connector, store)
    site_uid = next(iter(sim.sites))
    added = sim.add_device(site_uid, "NEW-LAPTOP-7", kind="laptop", serial="PF1234567")
    sim.injector.reset_counts()
    devices, result = sync(connector, store)
    assert added["uid"] in {d.uid for d in devices}
    assert result.fetched == 1 and sim.counts[AUDITS] == 1
    assert result.details[added["uid"]].serial_number == "PF1234567"


@pytest.mark.parametrize(("status", "transient"), [(500, True), (404, False)])
def test_a_device_whose_audit_fails_is_reported_keeps_its_cache_and_the_others_are_read(
        pm, store, connection, sim, sim_clock, options, status, transient):
    connector = RmmConnector(pm, connection)
    sync(connector, store)
    broken, other = [u for u, d in sim.devices.items()
                     if d["deviceClass"] == "device" and d["lastAuditDate"] and not d["deleted"]][:2]
    cached_before = store.device_details("datto", broken)
    sim_clock.advance(3600)
    for uid in (broken, other):  # both audited again: both must be read
        sim.audit_device(uid, serial=f"NEW-{uid[:8]}")
    outage = Outage.behind(sim.injector, lambda request: request.path.endswith(f"/audit/device/{broken}"),
                           status)
    sim.injector.reset_counts()

    _, result = sync(connector, store)
    assert set(result.failed) == {broken} and result.failed[broken].transient is transient
    assert f"/audit/device/{broken}" in str(result.failed[broken])
    assert broken not in result.details and result.fetched == 1
    assert result.details[other].serial_number == f"NEW-{other[:8]}"
    assert store.device_details("datto", broken) == cached_before  # not overwritten
    # A 5xx is retried by the client (then given up on); a 404 is asked once.
    attempts = options.retry.attempts if transient else 1
    assert outage.refused == attempts and sim.counts[AUDITS] == attempts + 1

    outage.end()
    _, healed = sync(connector, store)  # the next refresh asks again, by itself
    assert healed.failed == {} and healed.fetched == 1
    assert healed.details[broken].serial_number == f"NEW-{broken[:8]}"
