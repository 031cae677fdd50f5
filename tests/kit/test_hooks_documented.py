"""Every hook of the contract is documented in docs/writing-a-connector.md, with every argument
it takes and whether it is required (as datasette's test_plugin_hooks_are_documented does)."""

from __future__ import annotations

import inspect
import pathlib
import re

import pytest

from psabridge.core import hookspecs
from psabridge.core.connectors import PsaConnector, RmmConnector

GUIDE = pathlib.Path(__file__).parents[2] / "docs" / "writing-a-connector.md"
SPECS = sorted(name for name, value in vars(hookspecs).items()
               if inspect.isfunction(value) and hasattr(value, "psabridge_spec"))


def table_rows(hook: str) -> list[str]:
    """The lines of the guide's hook table that name `hook`."""
    return [line for line in GUIDE.read_text().splitlines()
            if line.startswith("|") and re.search(rf"`{hook}\b", line)]


def test_the_contract_has_hooks():
    assert len(SPECS) >= 30 and "psa_parse_ticket_callback" in SPECS


@pytest.mark.parametrize("hook", SPECS)
def test_hook_is_documented_with_its_arguments(hook):
    spec = getattr(hookspecs, hook)
    assert (spec.__doc__ or "").strip(), f"hookspecs.{hook} has no docstring"
    rows = table_rows(hook)
    assert rows, f"docs/writing-a-connector.md's table does not name {hook}"
    arguments = [a for a in inspect.signature(spec).parameters if a != "connection"]
    missing = [a for a in arguments if not any(re.search(rf"\b{a}\b", row) for row in rows)]
    assert not missing, f"the guide's row for {hook} does not name its arguments {missing}"
    marked = any(f"`{hook}" in row and "**required**" in row for row in rows)
    assert marked == (hook in hookspecs.REQUIRED_HOOKS), (
        f"the guide must mark {hook} **required** exactly when hookspecs.py does")


@pytest.mark.parametrize("hook", [h for h in SPECS if h.startswith(("psa_", "rmm_"))])
def test_the_facade_has_a_method_per_hook_with_its_signature(hook):
    facade = PsaConnector if hook.startswith("psa_") else RmmConnector
    method = getattr(facade, hook.split("_", 1)[1], None)
    assert method is not None, f"{facade.__name__} has no method for {hook}"
    spec_arguments = [a for a in inspect.signature(getattr(hookspecs, hook)).parameters
                      if a != "connection"]
    assert list(inspect.signature(method).parameters)[1:] == spec_arguments
