"""Building conditions (client side) and parsing them (simulator side)."""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from psabridge.plugins.connectwise import conditions as cond
from psabridge.plugins.connectwise.simulator.app import resolve
from psabridge.plugins.connectwise.simulator.conditions import (
    MAX_DEPTH,
    ConditionError,
    compile_conditions,
    tokenize,
)

NASTY = 'Bob\'s "PC" \\ *x and y'


def matches(text: str, record: dict) -> bool:
    return compile_conditions(text, resolve, lambda field: True)(record)


def test_strings_are_double_quoted_with_backslash_and_quote_escaped():
    assert cond.quote(NASTY) == '"Bob\'s \\"PC\\" \\\\ *x and y"'


def test_other_literals_use_cw_forms():
    assert cond.quote(True) == "True" and cond.quote(False) == "False"
    assert cond.quote(None) == "null" and cond.quote(12) == "12"
    assert cond.quote(dt.datetime(2025, 1, 2, 3, 4, 5, 678, tzinfo=dt.UTC)) == "[2025-01-02T03:04:05Z]"
    assert cond.quote(dt.date(2025, 1, 2)) == "[2025-01-02T00:00:00Z]"
    offset = dt.timezone(dt.timedelta(hours=2))
    assert cond.quote(dt.datetime(2025, 1, 2, 5, 0, tzinfo=offset)) == "[2025-01-02T03:00:00Z]"


def test_a_quoted_value_round_trips_through_the_simulator_parser_as_one_token():
    tokens = tokenize(cond.eq("name", NASTY))
    assert [t.kind for t in tokens] == ["word", "op", "string"]
    assert tokens[2].value == NASTY


def test_equality_is_literal_and_like_treats_star_as_wildcard():
    record = {"name": "Bob's PC"}
    assert not matches(cond.eq("name", "Bob*"), record)
    assert matches('name like "Bob*"', record)
    assert matches(cond.eq("name", "bob's pc"), record)  # SQL Server collation ignores case
    assert matches("name like 'bob\\'s*'", record)  # single quotes with a backslash escape


def test_and_or_parentheses_in_any_case():
    record = {"a": 1, "b": "x", "status": {"id": 3}}
    assert matches("a = 1 AND (b = 'y' Or status/id in (2, 3))", record)
    assert not matches("a = 1 and b = 'y' or status/id not in (2, 3)", record)


def test_dates_null_booleans_and_info_fields():
    record = {"closedFlag": False, "value": None, "_info": {"lastUpdated": "2025-03-01T10:00:00Z"}}
    assert matches("lastUpdated > [2025-03-01T09:59:59Z] and closedFlag = false and value = null", record)
    assert not matches("lastUpdated >= [2025-03-01T10:00:01Z]", record)
    assert matches("value != null or closedFlag = FALSE", record)


@pytest.mark.parametrize("bad", [
    'name = "unterminated', "name = ", "= 3", "name === 3", "(a = 1", "a = 1)", "a in ()", "a = 1 and",
    "a ~ 1", "a in (1 2)", "lastUpdated > [yesterday]", "a = 1 b = 2",
])
def test_malformed_conditions_are_refused(bad):
    with pytest.raises(ConditionError):
        matches(bad, {"a": 1})


def test_parentheses_nest_up_to_a_bound_and_deeper_is_refused_not_a_crash():
    assert matches("(" * MAX_DEPTH + "a = 1" + ")" * MAX_DEPTH, {"a": 1})
    for depth in (MAX_DEPTH + 1, 400, 100_000):
        with pytest.raises(ConditionError, match="nested too deeply"):
            matches("(" * depth + "a = 1" + ")" * depth, {"a": 1})


def test_a_number_too_long_to_be_an_id_is_refused():
    with pytest.raises(ConditionError, match="too long"):
        matches("a = " + "9" * 5000, {"a": 1})


def test_like_with_many_wildcards_answers_at_once():
    started = time.monotonic()
    assert not matches('name like "' + "*a" * 40 + '*b"', {"name": "a" * 200})
    assert time.monotonic() - started < 5  # a backtracking matcher takes hours here


@given(st.text("aAb*%", max_size=8), st.text("aAb", max_size=8))
def test_like_matches_what_the_sql_wildcards_mean(pattern, value):
    meaning = "".join(".*" if c in "*%" else re.escape(c) for c in pattern)
    expected = re.fullmatch(meaning, value, re.IGNORECASE | re.DOTALL) is not None
    assert matches(f'name like "{pattern}"', {"name": value}) == expected


def test_unknown_fields_are_refused_like_cw_does():
    with pytest.raises(ConditionError, match="typeids is not a recognized name"):
        compile_conditions('typeids = "1"', resolve, lambda field: field == "name")


def test_in_batches_stay_under_the_length_limit_and_keep_every_value_once():
    values = [f"SERIAL-{n:04d}" for n in range(300)] + ["SERIAL-0001"]
    batches = list(cond.batched_in("serialNumber", values, lambda c: len(c) <= 400))
    assert all(len(condition) <= 400 for _, condition in batches)
    flat = [v for batch, _ in batches for v in batch]
    assert flat == list(dict.fromkeys(values))
    assert len(batches) > 1
    for (batch, _), (following, _) in zip(batches, batches[1:], strict=False):
        # Each batch is as full as the limit allows: one more value would not fit.
        assert len(cond.in_("serialNumber", [*batch, following[0]])) > 400


def test_a_single_value_too_long_for_any_batch_still_goes_out_alone():
    batches = list(cond.batched_in("name", ["x" * 50, "y"], lambda c: len(c) < 20))
    assert [batch for batch, _ in batches] == [["x" * 50], ["y"]]
