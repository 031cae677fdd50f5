"""The seeded data generator, including the company names the Datto simulator reuses."""

from __future__ import annotations

from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator, company_names
from psabridge.plugins.connectwise.simulator.app import endpoint_template


def test_company_names_are_deterministic_distinct_prefix_stable_and_fit_cw():
    names = company_names(7, 400)
    assert names == company_names(7, 400)
    assert names[:25] == company_names(7, 25)
    assert len({n.casefold() for n in names}) == 400
    assert all(0 < len(n) <= 50 for n in names)
    assert company_names(8, 25) != names[:25]


def test_the_seed_exercises_the_rules_that_need_awkward_data():
    sim = ConnectWiseSimulator(seed=0, companies=8, configurations_per_company=5)
    db = sim.db
    assert any(len(c["types"]) > 1 for c in db.companies.values())  # R7
    assert {c["status"]["name"] for c in db.companies.values()} >= {"Active", "Inactive"}
    assert any(q["requiredFlag"] for q in db.configuration_type_questions.values())  # R10
    per_company: dict = {}
    for configuration in db.configurations.values():
        per_company.setdefault(configuration["company"]["id"], []).append(configuration)
    for rows in per_company.values():  # R13 ambiguity: duplicate names and shared serials
        assert len({r["name"] for r in rows}) < len(rows)
        assert len({r["serialNumber"] for r in rows}) < len(rows)
    assert any(c["managementLink"] for c in db.configurations.values())
    boards_without_team = [b for b in db.boards.values() if db.default_team(b["id"]) is None]
    assert [b["name"] for b in boards_without_team] == ["Projects Intake"]  # R24
    assert all(any(s["closedStatus"] for s in db.statuses_of(b["id"])) for b in db.boards.values())


def test_requests_are_counted_per_endpoint_template():
    assert endpoint_template("GET", "/v2025_1/apis/3.0/service/tickets/12/notes") == \
        "GET /service/tickets/{id}/notes"
    assert endpoint_template("POST", "/v2025_1/apis/3.0/company/configurations") == \
        "POST /company/configurations"
