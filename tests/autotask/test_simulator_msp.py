"""The Autotask simulator describes the same MSP as the Datto RMM simulator started with the same
seed (psabridge.simulated_msp), and `psabridge simulate autotask` serves it."""

from __future__ import annotations

import shlex
import stat
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner

from psabridge import simulated_msp
from psabridge.plugins.autotask.simulator import AutotaskSimulator, command
from psabridge.plugins.rmm_datto.simulator import DattoSimulator


@pytest.mark.parametrize("seed", [0, 3])
def test_companies_are_the_datto_sites_customers_and_known_machines_are_configuration_items(seed):
    companies = 8
    sim = AutotaskSimulator(seed=seed, companies=companies)
    datto = DattoSimulator(seed=seed, companies=companies)
    clients = simulated_msp.clients(seed, companies)

    customers = {c["companyName"]: c for c in sim.companies() if c["id"] != 0}
    origins = sorted(company for company, _ in datto.estate.site_origins.values() if company)
    assert sorted(customers) == origins == sorted(c.name for c in clients)
    assert all(c["companyType"] == 1 for c in customers.values())  # Customer

    site_of = {company: uid for uid, (company, _) in datto.estate.site_origins.items() if company}
    known = 0
    with sim.client() as client:
        for customer in clients:
            company_id = customers[customer.name]["id"]
            items = client.post("ConfigurationItems/query", json={"filter": [
                {"op": "eq", "field": "companyID", "value": company_id}]}).json()["items"]
            hostnames = {d["hostname"] for d in datto.devices.values()
                         if d["siteUid"] == site_of[customer.name]}
            for machine in customer.machines:
                assert machine.hostname in hostnames  # a device of the company's Datto site
                recorded = [i for i in items if i["referenceTitle"] == machine.configuration_name]
                if machine.in_psa is None:
                    assert recorded == []
                    continue
                known += 1
                (item,) = recorded
                assert item["serialNumber"] == (machine.serial if machine.in_psa == "serial" else None)
                assert item["isActive"] and item["productID"] and item["configurationItemType"]
    assert known >= 3


def test_the_same_seed_gives_the_same_database():
    one, two = AutotaskSimulator(seed=5, companies=6), AutotaskSimulator(seed=5, companies=6)
    strip = {"createDate", "lastActivityDate", "lastModifiedTime", "createdTime"}

    def rows(sim, table):
        return [{k: v for k, v in r.items() if k not in strip} for r in sim.db.table(table).values()]

    for table in ("Companies", "ConfigurationItems", "Resources"):
        assert rows(one, table) == rows(two, table)
    assert rows(AutotaskSimulator(seed=6, companies=6), "Companies") != rows(one, "Companies")


def test_settings_name_the_zone_root_and_the_credentials():
    sim = AutotaskSimulator(seed=1, companies=2)
    settings = sim.settings("http://127.0.0.1:9999")
    assert settings == {"api_url": "http://127.0.0.1:9999/ATServicesRest/", "username": sim.options.username,
                        "integration_code": sim.options.integration_code, "secret": sim.options.secret}
    with httpx.Client(transport=sim.transport()) as client:
        zone = client.get("http://autotask.simulator/ATServicesRest/V1.0/zoneInformation",
                          params={"user": settings["username"]}).json()
    assert zone["url"] == sim.settings("http://autotask.simulator")["api_url"]


def test_register_adds_simulate_autotask_to_the_simulate_group():
    cli = click.Group("psabridge")
    cli.add_command(click.Group("simulate"))
    command.register(cli)
    assert "autotask" in cli.commands["simulate"].commands
    result = CliRunner().invoke(cli, ["simulate", "autotask", "--help"])
    assert result.exit_code == 0
    for option in ("--seed", "--companies", "--latency", "--error-rate", "--throttle-rate", "--drop-rate",
                   "--requests-per-hour", "--threads", "--limit-status"):
        assert option in result.output


def test_simulate_autotask_serves_until_interrupted_and_prints_the_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("PSABRIDGE_SIMULATOR_DIR", str(tmp_path / "control"))
    echoed: list[str] = []
    seen = {}

    def interrupt_after_a_request():
        url = next(line.split()[4] for line in echoed if "simulator at" in line)
        sim = AutotaskSimulator(seed=3, companies=4)
        seen["threshold"] = httpx.get(f"{url}/ATServicesRest/V1.0/ThresholdInformation",
                                      headers=sim.headers()).json()
        configure = shlex.split(next(line for line in echoed if "psabridge configure autotask" in line))
        seen["secret file"] = Path(configure[configure.index("--secret-file") + 1])
        seen["secret"] = seen["secret file"].read_text()
        seen["mode"] = stat.S_IMODE(seen["secret file"].stat().st_mode)
        seen["control"] = (tmp_path / "control" / "autotask.json").exists()
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "_wait_for_interrupt", interrupt_after_a_request)
    monkeypatch.setattr(command.click, "echo", lambda text="", **kw: echoed.append(str(text)))
    cli = click.Group("psabridge")
    cli.add_command(click.Group("simulate"))
    command.register(cli)
    result = CliRunner().invoke(cli, ["simulate", "autotask", "--port", "0", "--seed", "3",
                                      "--companies", "4", "--requests-per-hour", "500"])
    assert result.exit_code == 0, result.output
    assert seen["threshold"]["externalRequestThreshold"] == 500
    secret = AutotaskSimulator(seed=3).options.secret
    assert seen["secret"] == secret + "\n" and seen["mode"] == 0o600
    assert not any(secret in line for line in echoed)
    configure = next(line for line in echoed if "psabridge configure autotask" in line)
    assert "--api-url http://127.0.0.1:" in configure and "--integration-code" in configure
    assert seen["control"] and not (tmp_path / "control" / "autotask.json").exists()
    assert not seen["secret file"].exists() and echoed[-1] == "Stopped."


def test_configurations_entered_and_deleted_by_hand():
    sim = AutotaskSimulator(seed=1, companies=3)
    company = sim.companies()[1]
    added = sim.add_configuration(company["id"], "ACME-SRV09", "Server", serialNumber="SN123",
                                  referenceNumber="rmm:device-9")
    with sim.client() as client:
        item = client.get(f"ConfigurationItems/{added['id']}").json()["item"]
        assert (item["referenceTitle"], item["serialNumber"], item["referenceNumber"]) == \
            ("ACME-SRV09", "SN123", "rmm:device-9")
        server_type = sim.db.by("ConfigurationItemTypes", name="Server")[0]["id"]
        assert item["configurationItemType"] == server_type and item["companyID"] == company["id"]
        sim.delete_configuration(added["id"])
        assert client.get(f"ConfigurationItems/{added['id']}").status_code == 404
    assert sim.configuration(added["id"]) is None
    with pytest.raises(ValueError, match="no configuration item type 'Phone'"):
        sim.add_configuration(company["id"], "x", "Phone")
