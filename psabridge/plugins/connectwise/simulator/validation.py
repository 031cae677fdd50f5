"""Checking bodies the way CW does: required fields and max lengths from the spec, JSON-Patch.

Every failure is a `Invalid` carrying CW's validation errors; the app answers it with
``400 {"code": "InvalidObject", "message": "<resource> object is invalid", "errors": [...]}``,
the shape of samples/error-400-invalid-object-missing-field.json.
"""

from __future__ import annotations

import copy
from typing import Any

from psabridge.plugins.connectwise.simulator.spec import SCHEMAS

READ_ONLY = frozenset({"id", "_info"})


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
    """Raise `Invalid` unless `body` is an object with every required field, none too long."""
    spec = SCHEMAS[schema]
    resource = spec["resource"]
    if not isinstance(body, dict):
        raise Invalid(resource, [error("InvalidObject", f"The {resource} is not a JSON object.",
                                       resource, "")])
    errors = [error("MissingRequiredField", f"The {name} field is required.", resource, name)
              for name in spec["required"] if _is_empty(body.get(name))]
    errors += length_errors(schema, body)
    if errors:
        raise Invalid(resource, errors)


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
        op = str(operation.get("op", "")).lower() if isinstance(operation, dict) else ""
        path = str(operation.get("path", "")).lstrip("/") if isinstance(operation, dict) else ""
        if op not in ("add", "replace", "remove") or not path:
            raise Invalid(resource, [error("InvalidObject", f"Invalid patch operation {operation!r}.",
                                           resource, path)])
        if "/" in path:
            continue  # the false 200
        if path not in spec["fields"] or path in READ_ONLY:
            raise Invalid(resource, [error("InvalidField", f"{path} cannot be patched.", resource, path)])
        if op == "remove":
            updated[path] = None
        else:
            updated[path] = operation.get("value")
        changed.append(path)
    errors = length_errors(schema, updated)
    errors += [error("MissingRequiredField", f"The {name} field is required.", resource, name)
               for name in spec["required"] if name in changed and _is_empty(updated.get(name))]
    if errors:
        raise Invalid(resource, errors)
    return updated, changed
