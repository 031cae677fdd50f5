"""The whole chain once: companies, device types and devices mapped through both simulators."""

from __future__ import annotations

from psabridge.core import mapping


def test_initial_mapping_through_both_simulators_then_nothing_to_do(e2e, sims):
    companies = mapping.load_companies(e2e)
    assert companies, "the simulators describe companies"
    mapping.apply(e2e, mapping.plan_company_mappings(e2e, {r.company.id: None for r in companies}))
    for row in mapping.load_device_types(e2e):
        if row.configuration_type and not row.flagged:
            mapping.map_device_type(e2e, row.device_type, row.configuration_type.id)
    outcome = mapping.apply(e2e, mapping.plan_automatic_mapping(e2e))
    assert outcome.done and not outcome.failed
    mapped = mapping.load_devices(e2e, "mapped")
    assert len(mapped) == len(e2e.store.device_mappings(*e2e.pair)) > 0

    before = sims.writes()
    assert mapping.plan_automatic_mapping(e2e).changes == []
    assert mapping.plan_company_mappings(e2e, {r.company.id: None for r in companies}).changes == []
    assert sims.writes() == before
