"""Any value the connector puts in a ConnectWise condition reads back as exactly that value.

The builder (`psabridge.plugins.connectwise.conditions`) and the simulator's parser
(`...simulator.conditions`) are written apart; if they ever disagreed on quoting, a device name
like `x" or name != "` would widen a query. Hypothesis throws such values at both.
"""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from psabridge.plugins.connectwise import conditions as cond
from psabridge.plugins.connectwise.simulator.conditions import compile_conditions, tokenize

# Fragments that mean something to the language, glued to arbitrary text (any code point
# but surrogates, which cannot travel in UTF-8).
TRICKY = ['"', "'", "\\", "\\\\", '\\"', "*", "%", " and ", " or ", " AND ", "(", ")", ",", "[", "]",
          "=", " in (", "null", "true", "é", "ß", "İ", "😀", "\u200b", "\n", "\t", " "]
values = st.lists(st.sampled_from(TRICKY) | st.text(max_size=4), max_size=8).map("".join)

CHECKS = settings(max_examples=150, deadline=None)


def read_back(text: str, field: str, operator: str) -> list:
    """The literal values of a single `field OP value` or `field in (v, ...)` condition."""
    tokens = tokenize(text)
    assert (tokens[0].kind, tokens[0].text) == ("word", field)
    if operator == "in":
        assert tokens[1].text == "in" and tokens[2].kind == "(" and tokens[-1].kind == ")"
        literals, separators = tokens[3:-1:2], tokens[4:-1:2]
        assert all(t.kind == "," for t in separators)
    else:
        assert (tokens[1].kind, tokens[1].text) == ("op", operator)
        literals = tokens[2:]
    assert len(literals) == 1 or operator == "in"
    return [t.value for t in literals]


@CHECKS
@given(values)
def test_a_string_reads_back_exactly(value):
    assert read_back(cond.eq("name", value), "name", "=") == [value]


@CHECKS
@given(st.lists(values, min_size=1, max_size=6))
def test_an_in_batch_reads_back_as_the_list(batch):
    assert read_back(cond.in_("serialNumber", batch), "serialNumber", "in") == batch


@CHECKS
@given(values, values)
def test_a_value_cannot_change_what_the_condition_selects(name, serial):
    condition = cond.all_of(cond.eq("name", name), cond.eq("serialNumber", serial))
    matches = compile_conditions(condition, lambda record, field: record.get(field), lambda field: True)
    assert matches({"name": name, "serialNumber": serial})
    assert not matches({"name": name + "x", "serialNumber": serial})
    assert not matches({"name": name, "serialNumber": serial + "x"})


@CHECKS
@given(st.lists(values, max_size=30), st.integers(min_value=20, max_value=400))
def test_batches_cover_every_value_once_and_each_reads_back(wanted, limit):
    batches = list(cond.batched_in("name", wanted, lambda condition: len(condition) <= limit, max_batch=7))
    flat = [v for batch, _ in batches for v in batch]
    assert flat == list(dict.fromkeys(wanted))
    for batch, condition in batches:
        assert 1 <= len(batch) <= 7
        assert len(condition) <= limit or len(batch) == 1  # only a lone value may overflow
        assert read_back(condition, "name", "in") == batch


@CHECKS
@given(st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(9998, 12, 31),
                    timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-7)),
                                               dt.timezone(dt.timedelta(hours=5, minutes=30))])))
def test_a_datetime_reads_back_to_the_second_in_utc(moment):
    [parsed] = read_back(cond.compare("lastUpdated", ">=", moment), "lastUpdated", ">=")
    assert parsed == moment.replace(microsecond=0)
    assert parsed.utcoffset() == dt.timedelta(0)
