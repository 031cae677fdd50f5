"""Autotask's query model (API-NOTES §3): a search object `{"filter": [...], "MaxRecords": N,
"IncludeFields": [...]}` whose conditions (`{"op", "field", "value"[, "udf": true]}`) and
`and`/`or` groups compile to a predicate over stored records.

Keys and field names are case-insensitive; string matching is too (as the SOAP API documents).
What the real API refuses is refused here with the text it answers: every such refusal is a
`QueryError`, answered as HTTP 500 with `{"errors": [...]}`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import attrs

MAX_RECORDS = 500
MAX_OR_CONDITIONS = 500
OPERATORS = frozenset({"eq", "noteq", "gt", "gte", "lt", "lte", "beginswith", "endswith", "contains",
                       "exist", "notexist", "in", "notin"})

Predicate = Callable[[dict], bool]


class QueryError(Exception):
    """A search the API refuses: HTTP 500 with `{"errors": [str(self)]}`."""


@attrs.frozen
class Search:
    predicate: Predicate
    max_records: int
    include_fields: tuple[str, ...] | None  # canonical names, None for all


def _key(body: dict, name: str) -> Any:
    """`body[name]` whatever the key's case (the swagger says `Filter`, clients send `filter`)."""
    for key, value in body.items():
        if isinstance(key, str) and key.casefold() == name.casefold():
            return value
    return None


def parse_search(body: Any, fields: dict[str, dict], udf_names: list[str], entity: str,
                 not_queryable: frozenset[str] = frozenset(), empty_filter_error: bool = True) -> Search:
    """The search object `body` for `entity`, whose fields are `fields` (name -> spec)."""
    if not isinstance(body, dict):
        raise QueryError("The search object must be a JSON object with a filter.")
    max_records = _key(body, "MaxRecords")
    if max_records is None:
        max_records = MAX_RECORDS
    if isinstance(max_records, bool) or not isinstance(max_records, int) \
            or not 1 <= max_records <= MAX_RECORDS:
        raise QueryError(f"maxCountOfRecordsToReturn must be between 1 and {MAX_RECORDS}")
    names = {name.casefold(): name for name in fields}
    include = _key(body, "IncludeFields")
    include_fields = None
    if include:
        if not isinstance(include, list) or not all(isinstance(n, str) for n in include):
            raise QueryError("IncludeFields must be a list of field names.")
        unknown = [n for n in include if n.casefold() not in names]
        if unknown:
            raise QueryError(f"Unable to find {unknown[0]} in the {entity} entity.")
        include_fields = tuple(names[n.casefold()] for n in include)
    items = _key(body, "filter")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise QueryError("filter must be a list of conditions.")
    if not items and empty_filter_error:
        raise QueryError("A query must have at least one filter condition (e.g. id gte 0).")
    compiler = _Compiler(fields, names, {n.casefold(): n for n in udf_names}, entity, not_queryable)
    predicate = compiler.group("and", items)
    if compiler.udf_conditions > 1:
        raise QueryError("Only one user-defined field condition is allowed per query.")
    if compiler.or_conditions > MAX_OR_CONDITIONS:
        raise QueryError("Invalid query syntax. Queries are limited to 500 or fewer 'OR' conditions.")
    return Search(predicate, max_records, include_fields)


@attrs.define
class _Compiler:
    fields: dict[str, dict]
    names: dict[str, str]
    udf_names: dict[str, str]
    entity: str
    not_queryable: frozenset[str]
    udf_conditions: int = 0
    or_conditions: int = 0

    def item(self, item: Any) -> Predicate:
        if not isinstance(item, dict):
            raise QueryError(f"Each filter item must be an object with op, field and value, not {item!r}.")
        op = _key(item, "op")
        if not isinstance(op, str):
            raise QueryError("Each filter item needs an op.")
        op = op.casefold()
        if op in ("and", "or"):
            children = _key(item, "items")
            if not isinstance(children, list) or not children:
                raise QueryError(f"An '{op}' group needs a non-empty items list.")
            if op == "or":
                self.or_conditions += len(children)
            return self.group(op, children)
        if op not in OPERATORS:
            raise QueryError(f"Invalid operator '{_key(item, 'op')}'.")
        return self.condition(op, item)

    def group(self, op: str, items: list) -> Predicate:
        predicates = [self.item(i) for i in items]
        if op == "or":
            return lambda row: any(p(row) for p in predicates)
        return lambda row: all(p(row) for p in predicates)

    def condition(self, op: str, item: dict) -> Predicate:
        field = _key(item, "field")
        if not isinstance(field, str) or not field:
            raise QueryError("Each condition needs a field.")
        udf = _key(item, "udf") in (True, "true", "True")
        if udf:
            self.udf_conditions += 1
            name = self.udf_names.get(field.casefold())
            if name is None:
                raise QueryError(f"Unable to find user-defined field {field} in the {self.entity} entity.")
            kind = "string"

            def get(row: dict) -> Any:
                return next((u.get("value") for u in row.get("userDefinedFields") or []
                             if u.get("name") == name), None)
        else:
            name = self.names.get(field.casefold())
            if name is None:
                raise QueryError(f"Unable to find {field} in the {self.entity} entity.")
            if name in self.not_queryable:
                raise QueryError(f"The field {name} is not queryable.")
            kind = self.fields[name]["type"]

            def get(row: dict) -> Any:
                return row.get(name)
        if op in ("exist", "notexist"):
            present = op == "exist"
            return lambda row: (get(row) not in (None, "")) == present
        value = _key(item, "value")
        if op in ("in", "notin"):
            if not isinstance(value, list):
                raise QueryError(f"The value of an '{op}' condition on {name} must be a list.")
            self.or_conditions += len(value)
            wanted = [_coerce(v, kind, name) for v in value]
            member = lambda row: _comparable(get(row), kind) in wanted  # noqa: E731
            return member if op == "in" else (lambda row: not member(row))
        if value is None:
            raise QueryError(f"The condition on {name} needs a value.")
        target = _coerce(value, kind, name)
        if op in ("beginswith", "endswith", "contains"):
            text = str(target)
            test = {"beginswith": str.startswith, "endswith": str.endswith,
                    "contains": str.__contains__}[op]
            return lambda row: get(row) is not None and test(str(_comparable(get(row), kind)), text)
        compare = {"eq": lambda a, b: a == b, "noteq": lambda a, b: a != b,
                   "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
                   "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}[op]

        def test_value(row: dict) -> bool:
            actual = _comparable(get(row), kind)
            if actual is None:
                return op == "noteq"
            try:
                return compare(actual, target)
            except TypeError:
                return False
        return test_value


_NUMERIC = {"integer", "long", "short", "byte", "double", "decimal"}


def _coerce(value: Any, kind: str, name: str) -> Any:
    """A condition's value as the field's type, the way the API reads it."""
    try:
        if kind in ("integer", "long", "short", "byte"):
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if kind in ("double", "decimal"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.casefold() in ("true", "false"):
                return value.casefold() == "true"
            raise ValueError
        if kind == "datetime":
            return parse_datetime(value)
    except (TypeError, ValueError):
        raise QueryError(f"The value {value!r} is not valid for field {name} ({kind}).") from None
    return str(value).casefold()


def _comparable(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "datetime":
        return parse_datetime(value)
    if kind in _NUMERIC or kind == "boolean":
        return value
    return str(value).casefold()


def parse_datetime(value: Any) -> dt.datetime:
    """An ISO-8601 date or date-time (UTC when it names no zone), as the API accepts them."""
    if not isinstance(value, str):
        raise ValueError(value)
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment


def project(row: dict, include_fields: tuple[str, ...] | None) -> dict:
    if include_fields is None:
        return row
    out = {name: row.get(name) for name in include_fields}
    if "userDefinedFields" in row:  # still answered with IncludeFields (API-NOTES §3)
        out["userDefinedFields"] = row["userDefinedFields"]
    return out
