"""The matching rules as pure functions: site suggestions, type suggestions, the R13 cascade."""

from __future__ import annotations

import pytest

from psabridge.core.matching import (
    match_configuration,
    normalise_name,
    suggest_configuration_type,
    suggest_sites,
)
from psabridge.core.models import Configuration, ConfigurationType, Device, DeviceDetails

URL = "https://merlot.rmm.datto.com/device/101"


@pytest.mark.parametrize(
    ("company", "site"),
    [
        ("Acme Corp.", "ACME Corporation"),
        ("Smith & Sons LLC", "Smith and Sons"),
        ("Müller GmbH", "Muller"),
        ("Northwind Traders, Inc.", "northwind traders"),
    ],
)
def test_real_naming_differences_normalise_to_the_same_name(company, site):
    assert normalise_name(company) == normalise_name(site)


def test_r6_each_company_gets_its_closest_site_or_create_new():
    companies = [("1", "Acme Corp."), ("2", "Smith & Sons LLC"), ("3", "Globex Industries"),
                 ("4", "Initech")]
    sites = [("s-acme", "ACME Corporation"), ("s-smith", "Smith and Sons"),
             ("s-globx", "Globex Industires"), ("s-other", "Umbrella Health")]
    got = suggest_sites(companies, sites)
    assert {c: (s.site_uid, round(s.score)) for c, s in got.items()} == {
        "1": ("s-acme", 100), "2": ("s-smith", 100), "3": ("s-globx", 94), "4": (None, 0),
    }
    assert got["4"].site_name == "Initech"  # "Create New" with the company's name


def test_r6_names_that_normalise_alike_are_told_apart_as_written():
    companies = [("corp", "Redwood Corp."), ("inc", "Redwood Inc.")]
    got = suggest_sites(companies, [("s1", "REDWOOD INC."), ("s2", "Redwood Corporation")])
    assert (got["inc"].site_uid, got["corp"].site_uid) == ("s1", "s2")


def test_r6_a_site_is_suggested_to_one_company_only_the_closest():
    companies = [("west", "Acme West"), ("acme", "Acme Inc")]
    got = suggest_sites(companies, [("s1", "Acme")], threshold=60)
    assert got["acme"].site_uid == "s1"
    assert got["west"].site_uid is None


def test_r9_device_types_get_a_similar_configuration_type_never_one_with_required_questions():
    types = [ConfigurationType("1", "Managed Workstation"), ConfigurationType("2", "Server",
             unusable="has required questions"), ConfigurationType("3", "Managed Server"),
             ConfigurationType("4", "Printer")]
    assert suggest_configuration_type("Desktop", types).configuration_type.id == "1"
    assert suggest_configuration_type("Server", types).configuration_type.id == "3"
    assert suggest_configuration_type("Printer", types).configuration_type.id == "4"
    assert suggest_configuration_type("Hypervisor thing", types[:1]).configuration_type is None


def device(**kw):
    return Device(uid=kw.pop("uid", "d1"), hostname=kw.pop("hostname", "PC-01"), site_uid="s1", **kw)


def config(id, name="PC-01", serial=None, maker=None, model=None, link=None):
    return Configuration(name=name, company_id="c1", id=id, serial_number=serial,
                         manufacturer=maker, model_number=model, management_link=link)


DETAILS = DeviceDetails(serial_number="SN1", manufacturer="Dell Inc.", model="OptiPlex 7090")


def test_r13_an_existing_manage_device_link_wins_over_everything():
    m = match_configuration(device(), DETAILS, URL,
                            [config("1", serial="SN1"), config("2", name="other", link=URL)])
    assert (m.configuration.id, m.step) == ("2", "link")


def test_r13_a_single_serial_number_match():
    m = match_configuration(device(), DETAILS, URL, [config("1", name="x", serial="sn1"),
                                                     config("2", name="PC-01")])
    assert (m.configuration.id, m.step) == ("1", "serial")
    assert m.reason == "the only configuration matching by serial"


def test_r13_the_name_narrows_several_serial_matches():
    m = match_configuration(device(), DETAILS, URL,
                            [config("1", name="old", serial="SN1"), config("2", serial="SN1")])
    assert (m.configuration.id, m.step) == ("2", "name")
    assert m.reason == "the only configuration matching by serial and name"


def test_r13_the_manufacturer_then_the_model_narrow_further():
    by_maker = match_configuration(device(), DETAILS, URL, [
        config("1", serial="SN1", maker="HP"), config("2", serial="SN1", maker="Dell")])
    assert (by_maker.configuration.id, by_maker.step) == ("2", "manufacturer")
    by_model = match_configuration(device(), DETAILS, URL, [
        config("1", serial="SN1", maker="Dell", model="OptiPlex 3000"),
        config("2", serial="SN1", maker="Dell", model="optiplex 7090")])
    assert (by_model.configuration.id, by_model.step) == ("2", "model")


def test_r13_several_left_after_the_model_step_is_no_match_and_proposes_create_new():
    twins = [config(str(i), serial="SN1", maker="Dell", model="OptiPlex 7090") for i in (1, 2)]
    m = match_configuration(device(), DETAILS, URL, twins)
    assert m.configuration is None and m.step == "none"
    assert m.create_name == "PC-01"
    assert m.reason == ("2 configurations still match after the model number step: "
                        "PC-01 (1), PC-01 (2)")


def test_r13_name_alone_matches_when_the_pool_has_no_serials():
    m = match_configuration(device(), DETAILS, URL, [config("7", serial=None)])
    assert (m.configuration.id, m.step) == ("7", "name")


def test_r13_a_contradicting_serial_is_different_hardware_even_with_the_same_name():
    m = match_configuration(device(), DETAILS, URL, [config("1", serial="SN999")])
    assert m.configuration is None
    assert m.reason == "PC-01 (1) has serial SN999, not SN1"


def test_r14_a_configuration_taken_by_another_device_is_not_proposed():
    m = match_configuration(device(), DETAILS, URL, [config("1", serial="SN1")], taken={"1": "d9"})
    assert m.configuration is None
    assert m.reason == "PC-01 (1) is mapped to device d9"
    again = match_configuration(device(), DETAILS, URL, [config("1", serial="SN1")], taken={"1": "d1"})
    assert again.configuration.id == "1"  # its own mapping is not "taken"


def test_no_candidates_at_all():
    m = match_configuration(device(), DETAILS, URL, [])
    assert (m.configuration, m.step, m.create_name) == (None, "none", "PC-01")
    assert "no configuration of the company" in m.reason


def test_a_suggestion_says_why_and_names_the_runner_up():
    suggestions = suggest_sites(
        [("1", "Acme Corp."), ("2", "Globex"), ("3", "Initech"), ("4", "Harbor Dental")],
        [("s1", "ACME Corporation"), ("s2", "Globex West"), ("s3", "Globex"), ("s4", "Umbrella"),
         ("s5", "Harbor Family Dental")],
    )
    acme, globex, initech, harbor = (suggestions[k] for k in "1234")
    assert (acme.site_uid, acme.reason) == (
        "s1", "same name once case, punctuation, abbreviations, '&' and legal forms are set aside")
    assert (globex.site_uid, globex.reason) == ("s3", "same name")
    assert globex.runner_up.site_uid == "s2" and globex.runner_up.score < globex.score
    # Nothing close: Create New, and nothing to offer instead.
    assert (initech.site_uid, initech.reason, initech.runner_up) == (
        None, "no site has a name close to it", None)
    # Something close but not enough: Create New, and the closest site is offered as the next choice.
    assert (harbor.site_uid, harbor.reason) == (None, "no site scores 85 or more")
    assert harbor.runner_up.site_uid == "s5" and harbor.runner_up.score < 85


def test_a_company_whose_site_went_to_a_closer_company_is_told_so():
    suggestions = suggest_sites([("1", "Acme"), ("2", "Acme.")], [("s1", "Acme")])
    assert suggestions["1"].site_uid == "s1"
    assert suggestions["2"].site_uid is None
    assert suggestions["2"].reason == "its closest site, 'Acme', suits another company better"
    assert suggestions["2"].runner_up.site_uid == "s1"


def test_word_order_is_a_reason_of_its_own():
    suggestion = suggest_sites([("1", "Smith and Jones")], [("s1", "Jones & Smith")])["1"]
    assert (suggestion.site_uid, suggestion.reason) == ("s1", "same words in another order")


@pytest.mark.parametrize(("company", "site"), [
    ("Harbor Dental", "Harbor Dental - Main Office"),  # a tag on one side only
    ("Harbor Dental (HQ)", "Harbor Dental - Head Office"),  # one place, written two ways
    ("Harbor Dental - Downtown", "HARBOR DENTAL DOWNTOWN"),
    ("Pioneer International Trading Group", "The Pioneer Intl Trading Co."),
    ("Montgomery Pediatrics", "Montogmery Pediatrics"),  # one typo
    ("Bright Path Bakery", "Harris Holdings LLC dba Bright Path Bakery"),
    ("Harris Holdings LLC d/b/a Bright Path Bakery", "Bright Path Bakery Inc."),
    ("Skyline Corp.", "Skyline Corpooration"),  # a typo in the legal form
    ("Smith & Sons LLC", "Smith and Sons"),
])
def test_names_written_differently_are_matched(company, site):
    suggestion = suggest_sites([("1", company)], [("s1", site), ("s2", "Umbrella Health")])["1"]
    assert suggestion.site_uid == "s1", suggestion


def test_branches_of_one_business_are_not_crossed():
    suggestions = suggest_sites(
        [("1", "Harbor Dental - Downtown"), ("2", "Harbor Dental - Uptown")],
        [("s1", "Harbor Dental (Uptown)"), ("s2", "Harbor Dental Downtown")],
    )
    assert (suggestions["1"].site_uid, suggestions["2"].site_uid) == ("s2", "s1")


def test_a_lone_branch_of_another_place_is_not_suggested():
    suggestion = suggest_sites([("1", "Harbor Dental - Downtown")], [("s1", "Harbor Dental - Uptown")])
    assert suggestion["1"].site_uid is None


def test_a_legal_form_alone_is_not_a_perfect_match_but_the_same_form_wins():
    alone = suggest_sites([("1", "Stonebridge Inc.")], [("s1", "Stonebridge LLP")])["1"]
    assert alone.site_uid == "s1" and alone.score < 100
    assert "legal forms differ (inc, llp)" in alone.reason
    both = suggest_sites([("1", "Stonebridge Inc."), ("2", "Stonebridge LLP")],
                         [("s1", "STONEBRIDGE LLP"), ("s2", "Stonebridge Incorporated")])
    assert (both["1"].site_uid, both["2"].site_uid) == ("s2", "s1")
    assert both["1"].score == 100


def test_another_surname_with_the_same_trade_is_another_business():
    suggestions = suggest_sites(
        [("1", "Boyd Electric"), ("2", "Walton Property Management")],
        [("s1", "Byrd Electric LLC"), ("s2", "Watson Property Management"),
         *((f"x{i}", f"Filler{i} Electric") for i in range(5))],
    )
    assert (suggestions["1"].site_uid, suggestions["2"].site_uid) == (None, None)


def test_the_reason_names_the_location_and_legal_form_evidence():
    tagged = suggest_sites([("1", "Redwood Corp.")], [("s1", "Redwood - Downtown")])["1"]
    assert tagged.reason.endswith("; the site names a location (downtown)")
    forms = suggest_sites([("1", "Stonebridge Inc.")], [("s1", "Stonebridge LLP (HQ)")])["1"]
    assert forms.reason.endswith("; legal forms differ (inc, llp); the site names a location (main)")
