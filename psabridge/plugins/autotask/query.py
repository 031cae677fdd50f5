"""Autotask's JSON query filters, built from plain values.

A condition is ``{"op", "field", "value"}``; groups are ``{"op": "and"|"or", "items": [...]}``
and the top-level list is AND-ed (API-NOTES §3). Values from the RMM (names, serial numbers,
links) go in as JSON values, never into text the server parses, so none can widen a query;
callers still compare every returned row exactly (the server's string matching may ignore case).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

# Autotask limits a query to 500 OR conditions (API-NOTES §3, §12): an `in` list is kept at
# most this long.
MAX_IN_VALUES = 500

Condition = dict[str, Any]


def condition(op: str, field: str, value: Any = None, *, udf: bool = False) -> Condition:
    found: Condition = {"op": op, "field": field}
    if op not in ("exist", "notExist"):
        found["value"] = value
    if udf:
        found["udf"] = True
    return found


def eq(field: str, value: Any, *, udf: bool = False) -> Condition:
    return condition("eq", field, value, udf=udf)


def gt(field: str, value: Any) -> Condition:
    return condition("gt", field, value)


def gte(field: str, value: Any) -> Condition:
    return condition("gte", field, value)


def contains(field: str, value: str) -> Condition:
    return condition("contains", field, value)


def in_(field: str, values: Iterable[Any], *, udf: bool = False) -> Condition:
    values = list(values)
    if len(values) > MAX_IN_VALUES:
        raise ValueError(f"an `in` list holds at most {MAX_IN_VALUES} values, not {len(values)}")
    return condition("in", field, values, udf=udf)


def any_of(*items: Condition | None) -> Condition | None:
    kept = [i for i in items if i]
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else {"op": "or", "items": kept}


def all_of(*items: Condition | None) -> Condition | None:
    kept = [i for i in items if i]
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else {"op": "and", "items": kept}


EVERYTHING = gte("id", 0)  # Autotask wants at least one condition; ids start at 0


def filters(*items: Condition | None) -> list[Condition]:
    """The top-level filter list: the given conditions, or "every id" when there are none."""
    kept = [i for i in items if i]
    return kept or [EVERYTHING]


def batches(values: Sequence[Any], size: int = MAX_IN_VALUES) -> Iterator[list[Any]]:
    """`values` without repeats, cut into lists of at most `size`."""
    unique = list(dict.fromkeys(values))
    size = max(1, min(size, MAX_IN_VALUES))
    for start in range(0, len(unique), size):
        yield unique[start:start + size]
