"""The simulated MSP both simulators describe: the same companies and machines from the same seed,
with no need for either simulator to be told about the other."""

from __future__ import annotations

import pytest

from psabridge import simulated_msp
from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator
from psabridge.plugins.rmm_datto.simulator import DattoSimulator


def test_clients_are_deterministic_and_prefix_stable():
    clients = simulated_msp.clients(5, 20)
    assert clients == simulated_msp.clients(5, 20)
    assert clients[:7] == simulated_msp.clients(5, 7)
    assert [c.name for c in clients] == simulated_msp.company_names(5, 20)
    assert simulated_msp.clients(6, 7) != clients[:7]
    machines = [m for c in clients for m in c.machines]
    assert {m.in_psa for m in machines} == {None, "serial", "name"}
    assert all(m.kind in simulated_msp.SERIAL_KINDS and m.audited for m in machines if m.in_psa)


@pytest.mark.parametrize("seed", [0, 3])
def test_two_simulators_started_alone_describe_the_same_customers(seed):
    companies = 9
    cw = ConnectWiseSimulator(seed=seed, companies=companies)
    datto = DattoSimulator(seed=seed, companies=companies)
    clients = simulated_msp.clients(seed, companies)

    # Every ConnectWise company has a Datto RMM site made from it (its name told apart by the
    # naming differences real estates show), and no two sites come from one company.
    cw_names = sorted(c["name"] for c in cw.db.companies.values())
    origins = [company for company, _ in datto.estate.site_origins.values() if company]
    assert sorted(origins) == cw_names == sorted(c.name for c in clients)

    site_of = {company: uid for uid, (company, _) in datto.estate.site_origins.items() if company}
    company_of = {c["name"]: c["id"] for c in cw.db.companies.values()}
    known = 0
    for client in clients:
        devices = {d["hostname"]: d for d in datto.devices.values() if d["siteUid"] == site_of[client.name]}
        configurations = [c for c in cw.db.configurations.values()
                          if c["company"]["id"] == company_of[client.name]]
        for machine in client.machines:
            device = devices[machine.hostname]  # each machine is a device of its company's site
            assert _serial(datto.audits[device["uid"]]) == machine.serial
            recorded = [c for c in configurations if c["name"] == machine.configuration_name]
            if machine.in_psa is None:
                continue
            known += 1
            (configuration,) = recorded  # the MSP recorded it once, by serial or by name
            expected_serial = machine.serial if machine.in_psa == "serial" else None
            assert configuration["serialNumber"] == expected_serial
            assert configuration["modelNumber"] == machine.model
    assert known >= 3


def _serial(audit: dict) -> str | None:
    for section, field in (("bios", "serialNumber"), ("snmpInfo", "snmpSerial"),
                           ("systemInfo", "serviceTag")):
        if (audit.get(section) or {}).get(field):
            return audit[section][field]
    return None


def test_the_psa_can_be_seeded_without_the_machines_the_msp_recorded():
    with_known = ConnectWiseSimulator(seed=0, companies=4)
    without = ConnectWiseSimulator(seed=0, companies=4, known_machines=False)
    recorded = sum(m.in_psa is not None for c in simulated_msp.clients(0, 4) for m in c.machines)
    assert recorded > 0
    assert len(with_known.db.configurations) - len(without.db.configurations) == recorded
