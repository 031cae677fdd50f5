"""The seeded estate: MSP-like names, every distortion, and the awkward devices real estates have."""

from __future__ import annotations

import collections
import difflib
import random

import pytest

from psabridge.plugins.rmm_datto.simulator.data import (
    DISTORTIONS,
    SHARED_SERIALS,
    distort,
    generate_estate,
)
from psabridge.simulated_msp import company_names


@pytest.mark.parametrize("distortion", sorted(set(DISTORTIONS) - {"exact"}))
def test_each_distortion_changes_the_name_but_keeps_it_recognisable(distortion):
    rng = random.Random(1)
    for name in ("Smith & Sons LLC", "Cedar Dental Inc.", "Lee and Clark Realty Ltd"):
        site = distort(name, distortion, rng)
        assert site != name
        assert difflib.SequenceMatcher(None, site.lower(), name.lower()).ratio() > 0.6


def test_the_estate_has_matched_and_unmatched_sites_and_every_distortion():
    estate = generate_estate(seed=0, companies=12, unmatched_sites=2)
    origins = collections.Counter(kind for _, kind in estate.site_origins.values())
    assert set(DISTORTIONS) <= set(origins)
    assert origins["unmatched"] == 2 and origins["system"] == 1
    companies = set(company_names(0, 12))
    assert {company for company, _ in estate.site_origins.values() if company} == companies


def test_the_estate_has_the_devices_that_make_matching_hard():
    estate = generate_estate(seed=0)
    names = collections.Counter(d["hostname"] for d in estate.devices)
    assert names["RECEPTION-PC"] == 3
    serials = collections.Counter(a.get("bios", {}).get("serialNumber")
                                  for a in estate.audits.values() if a.get("bios"))
    assert all(serials[s] >= 2 for s in SHARED_SERIALS)
    assert {d["deviceClass"] for d in estate.devices} == {"device", "printer", "esxihost",
                                                           "rmmnetworkdevice"}
    assert any(d["lastAuditDate"] in (None, 0, -62135596800000) for d in estate.devices)
    assert sum(d["deleted"] for d in estate.devices) == 2


def test_the_same_seed_gives_the_same_estate():
    assert generate_estate(seed=3).devices == generate_estate(seed=3).devices
    assert generate_estate(seed=3).alerts == generate_estate(seed=3).alerts


def test_an_estate_can_have_no_alerts_at_all():
    estate = generate_estate(0, companies=3, alerts=0)
    assert estate.alerts == [] and estate.devices
