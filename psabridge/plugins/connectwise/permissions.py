"""The API member's security role: what the seed asks for, and which endpoint needs what.

`REQUIRED` is the table of the product documentation (seed, "Configure a Security Role in
ConnectWise Manage"). `needed_for` maps a request to the role line it exercises; the simulator
enforces it and the client names it when CW answers 403. The mapping is our reading of CW's UI
(module "Companies" covers companies and configurations, "System > Table Setup" the setup
tables); CW does not publish one, so it is documented as unverified in the connector docs.
"""

from __future__ import annotations

import re

import attrs

LEVELS = ("None", "My", "All")
ACTIONS = ("add", "edit", "delete", "inquire")


@attrs.frozen
class RoleLine:
    """One line of a security role: a module function and its four levels."""

    module: str
    function: str
    add: str = "None"
    edit: str = "None"
    delete: str = "None"
    inquire: str = "None"

    def level(self, action: str) -> str:
        return getattr(self, action)


# The seed's table, verbatim (levels the integration needs; "None" = not needed).
REQUIRED: tuple[RoleLine, ...] = (
    RoleLine("Companies", "Company Maintenance", inquire="All"),
    RoleLine("Companies", "Configurations", add="All", edit="All", inquire="All"),
    RoleLine("Companies", "Management", inquire="All"),
    RoleLine("Service Desk", "Close Service Tickets", edit="All", inquire="All"),
    RoleLine("Service Desk", "Service Tickets", add="All", edit="All", inquire="All"),
    RoleLine("Service Desk", "SLA Dashboard", inquire="All"),
    RoleLine("System", "API Reports", inquire="All"),
    RoleLine("System", "System Reports", inquire="All"),
    RoleLine("System", "Table Setup", add="All", inquire="All"),
)


def level_at_least(have: str | None, need: str) -> bool:
    have_rank = LEVELS.index(have) if have in LEVELS else 0
    return have_rank >= LEVELS.index(need)


def missing_from(settings: list[dict]) -> list[str]:
    """Compare a role's settings (as /system/securityRoles/{id}/settings returns them) with the
    seed's table; return one readable line per level that is too low or absent."""
    by_function = {
        (s.get("moduleName") or s.get("moduleIdentifier") or "", s.get("moduleFunctionName") or ""): s
        for s in settings
    }
    by_name_only = {s.get("moduleFunctionName"): s for s in settings}
    missing = []
    for line in REQUIRED:
        setting = by_function.get((line.module, line.function)) or by_name_only.get(line.function)
        for action in ACTIONS:
            need = line.level(action)
            if need == "None":
                continue
            have = setting.get(f"{action}Level") if setting else None
            if not level_at_least(have, need):
                missing.append(f"{line.module} > {line.function}: {action.capitalize()} level "
                               f"{need} (has {have or 'none'})")
    return missing


# Which role line a request exercises: (path regex, {method: (function, action)}).
_TABLE_SETUP = (r"^(company/configurations/(types|statuses)|service/(boards|priorities|sources)"
                r"|procurement/manufacturers)")
_ENDPOINTS: tuple[tuple[re.Pattern, dict[str, tuple[str, str]]], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), rules) for pattern, rules in (
        (_TABLE_SETUP, {"GET": ("Table Setup", "inquire"), "POST": ("Table Setup", "add")}),
        (r"^company/companies", {"GET": ("Company Maintenance", "inquire")}),
        (r"^company/configurations", {"GET": ("Configurations", "inquire"),
                                      "POST": ("Configurations", "add"),
                                      "PATCH": ("Configurations", "edit"),
                                      "PUT": ("Configurations", "edit"),
                                      "DELETE": ("Configurations", "delete")}),
        (r"^service/tickets/search$", {"POST": ("Service Tickets", "inquire")}),
        (r"^service/tickets/\d+/", {"GET": ("Service Tickets", "inquire"),
                                    "POST": ("Service Tickets", "edit"),
                                    "DELETE": ("Service Tickets", "edit")}),
        (r"^service/tickets", {"GET": ("Service Tickets", "inquire"),
                               "POST": ("Service Tickets", "add"),
                               "PATCH": ("Service Tickets", "edit"),
                               "PUT": ("Service Tickets", "edit"),
                               "DELETE": ("Service Tickets", "delete")}),
    )
)

_MODULE_OF = {line.function: line.module for line in REQUIRED}


def needed_for(method: str, path: str) -> tuple[str, str] | None:
    """(module function, action) that `method path` (relative to apis/3.0/) needs, if known."""
    path = path.strip("/")
    for pattern, rules in _ENDPOINTS:
        if pattern.search(path):
            return rules.get(method.upper())
    return None


def describe(method: str, path: str) -> str:
    """Human words for the permission `method path` needs, for error messages."""
    need = needed_for(method, path)
    if need is None:
        return f"{method} {path}"
    function, action = need
    return f"{method} {path} ({_MODULE_OF.get(function, '')} > {function}: {action.capitalize()} level All)"
