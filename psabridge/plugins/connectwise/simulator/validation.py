"""Checking bodies the way CW does: field types, required fields and max lengths from the spec,
JSON-Patch.

Every failure is a `Invalid` carrying CW's validation errors; the app answers it with
``400 {"code": "InvalidObject", "message": "<resource> object is invalid", "errors": [...]}``,
the shape of samples/error-400-invalid-object-missing-field.json. A value of the wrong JSON type
(a list where a reference belongs, a number where text belongs, an id that is not a whole
number) is an `InvalidField` error naming the field, never a crash further in.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable
from typing import Any

from psabridge.plugins.connectwise.simulator.spec import SCHEMAS

READ_ONLY = frozenset({"id", "_info"})
INT32 = range(-(2**31), 2**31)  # CW's ids and integer fields are int32
# The keys a reference is sent with (API-NOTES §5: send {"id": n}); CW answers with more.
REFERENCE_KEYS = {"id": "integer", "identifier": "string", "name": "string"}
# field -> kind, per schema: the spec lists fields by kind.
FIELD_KINDS = {name: {field: kind for kind, fields in spec["types"].items() for field in fields}
               for name, spec in SCHEMAS.items()}


class Invalid(Exception):
    def __init__(self, resource: str, errors: list[dict[str, Any]]):
        super().__init__(f"{resource} object is invalid")
        self.resource = resource
        self.errors = errors


def error(code: str, message: str, resource: str, field: str) -> dict[str, str]:
    return {"code": code, "message": message, "resource": resource, "field": field}


def _is_empty(value: Any) -> bool:
    if isinstance(value, dict):  # a reference needs something to point with
        return not any(value.get(k) not in (None, "") for k in ("id", "identifier", "name"))
    return value is None or value == ""


def check_body(schema: str, body: Any) -> None:
    """Raise `Invalid` unless `body` is an object with every required field, each field of its
    type, none too long."""
    spec = SCHEMAS[schema]
    resource = spec["resource"]
    if not isinstance(body, dict):
        raise Invalid(resource, [error("InvalidObject", f"The {resource} is not a JSON object.",
                                       resource, "")])
    errors = type_errors(schema, body)
    mistyped = {e["field"] for e in errors}
    errors += [error("MissingRequiredField", f"The {name} field is required.", resource, name)
               for name in spec["required"] if name not in mistyped and _is_empty(body.get(name))]
    errors += length_errors(schema, body)
    if errors:
        raise Invalid(resource, errors)


def type_errors(schema: str, body: dict, fields: Iterable[str] | None = None) -> list[dict[str, str]]:
    """An `InvalidField` error for each field of `body` (or only `fields`) whose value is not the
    JSON the spec says. Null is always accepted: it means "not given", and whether that is
    allowed is the required fields' business. Unknown fields are ignored, as CW ignores them."""
    kinds = FIELD_KINDS[schema]
    resource = SCHEMAS[schema]["resource"]
    errors = []
    for field in body if fields is None else fields:
        kind = kinds.get(field)
        value = body.get(field)
        problem = _type_problem(kind, f"{field} field", value) if kind and value is not None else None
        if problem:
            errors.append(error("InvalidField", problem, resource, field))
    return errors


def _type_problem(kind: str, subject: str, value: Any) -> str | None:
    """What is wrong with `value` as a `kind` (see make_spec.KINDS), in CW's words ("The
    `subject` must be ..."); None if nothing is."""
    must = f"The {subject} must be"
    if kind.startswith("array of "):
        if not isinstance(value, list):
            return f"{must} a list, not {_json_type(value)}."
        item_kind = kind.removeprefix("array of ")
        for number, item in enumerate(value, 1):
            if problem := _type_problem(item_kind, f"{subject.removesuffix(' field')} item "
                                                   f"{number}", item):
                return problem
        return None
    if kind == "reference":
        if not isinstance(value, dict):
            return f'{must} a reference such as {{"id": 1}}, not {_json_type(value)}.'
        reference = subject.removesuffix(" field")
        return next((problem for key, key_kind in REFERENCE_KEYS.items()
                     if value.get(key) is not None
                     and (problem := _type_problem(key_kind, f"{reference} {key}", value[key]))),
                    None)
    if kind == "object":
        return None if isinstance(value, dict) else f"{must} an object, not {_json_type(value)}."
    if kind == "string":
        return None if isinstance(value, str) else f"{must} text, not {_json_type(value)}."
    if kind == "date-time":
        if isinstance(value, str) and _is_date_time(value):
            return None
        return f"{must} a date-time such as 2025-01-31T00:00:00Z."
    if kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{must} a whole number, not {_json_type(value)}."
        return None if value in INT32 else f"{must} between {INT32.start} and {INT32.stop - 1}."
    if kind == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return None
        return f"{must} a number, not {_json_type(value)}."
    if kind == "boolean":
        return None if isinstance(value, bool) else f"{must} true or false, not {_json_type(value)}."
    return None


def _json_type(value: Any) -> str:
    """What JSON calls the type of `value`, with an article: "a list", "text", "null"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _is_date_time(text: str) -> bool:
    try:
        dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def length_errors(schema: str, body: dict) -> list[dict[str, str]]:
    spec = SCHEMAS[schema]
    resource = spec["resource"]
    return [error("InvalidField", f"The {name} field has a maximum length of {limit}.", resource, name)
            for name, limit in spec["max_length"].items()
            if isinstance(body.get(name), str) and len(body[name]) > limit]


def apply_patch(schema: str, record: dict, operations: Any) -> tuple[dict, list[str]]:
    """Apply JSON-Patch `operations` to a copy of `record`; return it and the fields changed.

    Paths name a top-level field (a leading `/` is tolerated, as peers send it). A deeper path
    such as `company/identifier` is answered 200 without changing anything, the "false 200" CW's
    guide warns about, so a connector that relies on it is caught by its own re-read.
    """
    spec = SCHEMAS[schema]
    resource = spec["resource"]
    if not isinstance(operations, list) or not operations:
        raise Invalid(resource, [error("InvalidObject", "A PATCH body is a non-empty JSON array "
                                       "of operations.", resource, "")])
    updated, changed = copy.deepcopy(record), []
    for operation in operations:
        op, path = (operation.get("op"), operation.get("path")) if isinstance(operation, dict) \
            else (None, None)
        op = op.lower() if isinstance(op, str) else ""
        path = path.lstrip("/") if isinstance(path, str) else ""
        if op not in ("add", "replace", "remove") or not path:
            raise Invalid(resource, [error("InvalidObject", f"Invalid patch operation "
                                           f"{_abridged(operation)}.", resource, path)])
        if "/" in path:
            continue  # the false 200
        if path not in spec["fields"] or path in READ_ONLY:
            raise Invalid(resource, [error("InvalidField", f"{path} cannot be patched.", resource, path)])
        if op == "remove":
            updated[path] = None
        else:
            updated[path] = operation.get("value")
        changed.append(path)
    errors = type_errors(schema, updated, dict.fromkeys(changed))
    errors += length_errors(schema, updated)
    mistyped = {e["field"] for e in errors}
    errors += [error("MissingRequiredField", f"The {name} field is required.", resource, name)
               for name in spec["required"]
               if name in changed and name not in mistyped and _is_empty(updated.get(name))]
    if errors:
        raise Invalid(resource, errors)
    return updated, changed


def _abridged(value: Any, limit: int = 200) -> str:
    """`repr(value)`, cut short: a message must not echo a megabyte back."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
