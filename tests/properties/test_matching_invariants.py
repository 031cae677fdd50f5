"""Invariants of the R13 cascade (`psabridge.core.matching.match_configuration`).

Candidates are drawn from small pools of names, serials, links, makers and models, written in
varying case, so that ties, partial matches and contradictions are the common case.
"""

from __future__ import annotations

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from psabridge.core.matching import match_configuration
from psabridge.core.models import Configuration, Device, DeviceDetails

DEVICE_UID = "dev-1"
NAMES = ["PC-1", "pc-1", "PC-2", "SRV-1"]
SERIALS = [None, "", "SN-1", "sn-1 ", "SN-2"]
LINKS = [None, "https://rmm.example.com/device/1", "https://rmm.example.com/device/2"]
MAKERS = [None, "Dell Inc.", "DELL", "HP", "Lenovo"]
MODELS = [None, "OptiPlex 7090", "optiplex 7090", "EliteDesk"]
HOLDERS = [None, None, DEVICE_UID, "dev-other"]

CHECKS = settings(max_examples=200, deadline=None)

drafts = st.builds(
    lambda name, serial, link, maker, model: Configuration(
        name=name, company_id="1", serial_number=serial, management_link=link,
        manufacturer=maker, model_number=model),
    st.sampled_from(NAMES), st.sampled_from(SERIALS), st.sampled_from(LINKS),
    st.sampled_from(MAKERS), st.sampled_from(MODELS))


@attrs.frozen
class Case:
    device: Device
    details: DeviceDetails
    device_url: str | None
    candidates: list[Configuration]
    taken: dict[str, str]

    def run(self, candidates=None):
        return match_configuration(self.device, self.details, self.device_url,
                                   self.candidates if candidates is None else candidates, self.taken)

    def taken_by_another(self, configuration: Configuration) -> bool:
        return self.taken.get(configuration.id, DEVICE_UID) != DEVICE_UID

    def contradicts(self, configuration: Configuration) -> bool:
        mine, theirs = self.details.serial_number, configuration.serial_number
        return bool(mine and theirs) and mine.strip().casefold() != theirs.strip().casefold()


@st.composite
def cases(draw) -> Case:
    candidates = [attrs.evolve(c, id=f"c{i}") for i, c in enumerate(draw(st.lists(drafts, max_size=7)))]
    taken = {c.id: holder for c in candidates if (holder := draw(st.sampled_from(HOLDERS)))}
    device = Device(uid=DEVICE_UID, hostname=draw(st.sampled_from(NAMES)), site_uid="s")
    details = DeviceDetails(serial_number=draw(st.sampled_from(SERIALS)),
                            manufacturer=draw(st.sampled_from(MAKERS)), model=draw(st.sampled_from(MODELS)))
    return Case(device, details, draw(st.sampled_from(LINKS)), candidates, taken)


@CHECKS
@given(cases())
def test_the_choice_is_nothing_or_a_candidate_that_may_be_this_devices(case):
    chosen = case.run().configuration
    if chosen is not None:
        assert chosen in case.candidates
        assert not case.taken_by_another(chosen), "chose a configuration mapped to another device"
        assert not case.contradicts(chosen), "chose a configuration whose serial is another machine's"


@CHECKS
@given(cases())
def test_the_only_eligible_configuration_linked_to_the_device_is_chosen(case):
    eligible = [c for c in case.candidates if not case.taken_by_another(c) and not case.contradicts(c)]
    linked = [c for c in eligible if case.device_url and c.management_link == case.device_url]
    match = case.run()
    if len(linked) == 1:
        assert (match.configuration, match.step) == (linked[0], "link")


@CHECKS
@given(cases(), st.randoms(use_true_random=False))
def test_the_order_of_the_candidates_does_not_matter(case, rng):
    shuffled = list(case.candidates)
    rng.shuffle(shuffled)
    before, after = case.run(), case.run(shuffled)
    assert (after.configuration and after.configuration.id, after.step) == \
           (before.configuration and before.configuration.id, before.step)


@CHECKS
@given(cases(), st.sampled_from([None, "SN-UNRELATED"]), st.integers(min_value=0, max_value=7))
def test_a_candidate_that_matches_nothing_does_not_change_a_unique_result(case, serial, position):
    before = case.run()
    if before.configuration is None:
        return
    stranger = Configuration(id="c-stranger", name="UNRELATED-HOST", company_id="1",
                             serial_number=serial, management_link="https://rmm.example.com/device/99",
                             manufacturer="Nobody Ltd", model_number="Model-Z")
    candidates = list(case.candidates)
    candidates.insert(min(position, len(candidates)), stranger)
    after = case.run(candidates)
    assert (after.configuration, after.step) == (before.configuration, before.step)
