"""Write `spec.py` from the ConnectWise Manage 2025.1 OpenAPI subset (shared/specs/connectwise).

    python -m psabridge.plugins.connectwise.simulator.make_spec \\
        ../shared/specs/connectwise/cw-manage-2025.1-subset.openapi.json \\
        > psabridge/plugins/connectwise/simulator/spec.py

The simulator reads only what is extracted here, so the package does not need the 0.6 MB file
at run time. The resource names are CW's words in validation errors ("contact object is
invalid"); the OpenAPI document does not carry them.
"""

from __future__ import annotations

import json
import pprint
import sys
from typing import Any

# The schemas the simulator stores, each with the resource name CW uses in its errors.
RESOURCES = {
    "Company": "company", "CompanyConfiguration": "configuration", "Ticket": "ticket",
    "ServiceNote": "serviceNote", "CallbackEntry": "callbackEntry",
    "ConfigurationType": "configurationType",
    "ConfigurationTypeQuestion": "configurationTypeQuestion", "Board": "board",
    "BoardStatus": "boardStatus", "BoardType": "boardType", "BoardSubType": "boardSubType",
    "BoardTeam": "boardTeam", "Priority": "priority", "Source": "source",
    "CompanyType": "companyType", "CompanyStatus": "companyStatus",
    "ConfigurationStatus": "configurationStatus", "Manufacturer": "manufacturer",
    "Member": "member", "SecurityRole": "securityRole",
    "SecurityRoleSetting": "securityRoleSetting", "ConfigurationReference": "configuration",
}

# The JSON each kind of field takes; see validation.type_errors.
KINDS = ("string", "date-time", "integer", "number", "boolean", "reference", "object",
         "array of string", "array of integer", "array of reference", "array of object")

HEADER = '''"""Required fields, maximum lengths, field names and field types of the objects the simulator
stores.

Extracted from the ConnectWise Manage 2025.1 OpenAPI subset (shared/specs/connectwise/
cw-manage-2025.1-subset.openapi.json, reconstructed from the official spec; see its SOURCE.md) so
the package does not need the 0.6 MB file at run time. `resource` is the name CW uses in
validation errors ("contact object is invalid"); `types` groups the fields by the JSON they take
(`reference` is an object pointing at a record: `{"id": ...}` or `{"name": ...}`). Regenerate
with `make_spec` rather than edit by hand.
"""

# fmt: off
'''


def kind_of(prop: dict[str, Any]) -> str:
    """The kind of JSON a property takes, one of KINDS."""
    if "$ref" in prop:
        return "reference" if prop["$ref"].endswith("Reference") else "object"
    if prop.get("type") == "array":
        return "array of " + kind_of(prop["items"])
    if prop.get("type") == "string" and prop.get("format") == "date-time":
        return "date-time"
    return prop.get("type") or "object"


def extract(openapi: dict[str, Any]) -> dict[str, dict[str, Any]]:
    schemas = openapi["components"]["schemas"]
    extracted = {}
    for name, resource in RESOURCES.items():
        properties = schemas[name]["properties"]
        by_kind: dict[str, list[str]] = {kind: [] for kind in KINDS}
        for field, prop in properties.items():
            by_kind[kind_of(prop)].append(field)
        extracted[name] = {
            "resource": resource,
            "required": schemas[name].get("required", []),
            "max_length": {f: p["maxLength"] for f, p in properties.items() if "maxLength" in p},
            "fields": sorted(properties),
            "types": {kind: sorted(fields) for kind, fields in by_kind.items() if fields},
        }
    return extracted


def render(schemas: dict[str, dict[str, Any]]) -> str:
    return HEADER + "SCHEMAS = " + pprint.pformat(schemas, width=100, sort_dicts=False,
                                                  compact=True) + "\n"


def main(argv: list[str]) -> None:
    with open(argv[1], encoding="utf-8") as source:
        sys.stdout.write(render(extract(json.load(source))))


if __name__ == "__main__":
    main(sys.argv)
