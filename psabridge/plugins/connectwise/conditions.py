"""Building ConnectWise `conditions` strings that no value can change the meaning of.

ConnectWise filters lists with a small query language (API-NOTES §2.1)::

    company/id = 12 and (name = "Acme \\"HQ\\"" or serialNumber in ("A1", "B2"))

CW documents no escaping inside quoted values. We follow the safest reading (API-NOTES'
recommendation, and what spinen/connectwise-php does): strings are always double-quoted, with a
backslash before every backslash and double quote. Nothing else is special inside quotes, so a
value containing `'`, ` and `, `)` or `*` stays one literal string.

`*` is the wildcard of `like`. Values are only ever compared with `=` / `in` here; a caller that
needs `like` or `contains` must re-check the rows it gets (the hooks do: they compare every
candidate exactly, client-side, before returning it), because CW documents no way to escape `*`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence

Value = str | int | float | bool | None | dt.datetime | dt.date

# CW advises staying under ~2000 characters per URL; 1745 is its "safe" figure (API-NOTES §2).
SAFE_URL_LENGTH = 1745


def quote(value: Value) -> str:
    """`value` as a CW literal: "string", 12, True, null or [2024-01-02T03:04:05Z]."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int
        return "True" if value else "False"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dt.datetime):
        return f"[{format_datetime(value)}]"
    if isinstance(value, dt.date):
        return f"[{value.isoformat()}T00:00:00Z]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot put a {type(value).__name__} in a ConnectWise condition")


def format_datetime(value: dt.datetime) -> str:
    """UTC, whole seconds, `Z` suffix: the form CW itself returns in `_info.lastUpdated`."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def eq(field: str, value: Value) -> str:
    return f"{field} = {quote(value)}"


def compare(field: str, op: str, value: Value) -> str:
    if op not in ("=", "!=", "<", "<=", ">", ">="):
        raise ValueError(f"not a comparison operator: {op}")
    return f"{field} {op} {quote(value)}"


def contains(field: str, value: str) -> str:
    """A substring filter. Approximate by nature (CW may treat `*` in it as a wildcard)."""
    return f"{field} contains {quote(value)}"


def in_(field: str, values: Iterable[Value]) -> str:
    values = list(values)
    if not values:
        raise ValueError("an `in` condition needs at least one value")
    return f"{field} in ({', '.join(quote(v) for v in values)})"


def all_of(*parts: str | None) -> str:
    """Join conditions with `and`, each parenthesised so an `or` inside stays inside."""
    kept = [p for p in parts if p]
    if len(kept) == 1:
        return kept[0]
    return " and ".join(f"({p})" for p in kept)


def any_of(*parts: str | None) -> str:
    kept = [p for p in parts if p]
    if len(kept) == 1:
        return kept[0]
    return " or ".join(f"({p})" for p in kept)


def batched_in(
    field: str,
    values: Sequence[Value],
    fits: Callable[[str], bool],
    max_batch: int = 200,
) -> Iterator[tuple[list[Value], str]]:
    """Split `values` into `field in (...)` conditions that each pass `fits`.

    `fits(condition)` says whether the whole request (URL with every other parameter) stays under
    the length limit. Yields (the batch, its condition). A single value too long to fit on its
    own is still yielded alone: the caller sends it by POST .../search where the endpoint has
    one, else as a long GET (which CW may refuse; documented in the connector docs).
    """
    batch: list[Value] = []
    for value in dict.fromkeys(values):  # drop duplicates, keep order
        candidate = [*batch, value]
        if batch and (len(candidate) > max_batch or not fits(in_(field, candidate))):
            yield batch, in_(field, batch)
            batch = [value]
        else:
            batch = candidate
    if batch:
        yield batch, in_(field, batch)
