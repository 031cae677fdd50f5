"""Every command whose output is data, run with `--json` against both simulators: the output
is valid JSON and matches the schema shipped for that command (psabridge/schemas/), and a data
command without a schema fails the test."""

from __future__ import annotations

import json
from importlib import resources

import click
import jsonschema
import pytest

from psabridge.cli import cli
from tests.core.test_cli_lookups import run, sims  # noqa: F401 - fixtures

# Commands that drive a running simulator: tests/test_simulate.py runs them against simulators
# in their own processes and validates their output against these same schemas.
NOT_HERE = {"simulate raise-alert", "simulate resolve-alert", "simulate add-device",
            "simulate close-ticket"}


def data_commands() -> dict[str, click.Command]:
    """Every command of the tree with a --json option, by its path ("companies map")."""
    found = {}

    def walk(group: click.Group, prefix: tuple[str, ...]) -> None:
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            path = (*prefix, name)
            if isinstance(command, click.Group):
                walk(command, path)
            elif any(p.name == "as_json" for p in command.params):
                found[" ".join(path)] = command

    walk(cli, ())
    assert NOT_HERE <= set(found), "NOT_HERE names commands that no longer exist"
    return {path: command for path, command in found.items() if path not in NOT_HERE}


def schema_for(path: str) -> dict:
    name = path.replace(" ", "-") + ".json"
    schema_file = resources.files("psabridge") / "schemas" / name
    if not schema_file.is_file():
        pytest.fail(f"`psabridge {path}` has --json but no schema: add psabridge/schemas/{name}")
    return json.loads(schema_file.read_text())


def test_every_data_command_has_a_schema_and_every_schema_a_command():
    commands = data_commands()
    assert len(commands) >= 30
    for path in commands:
        jsonschema.Draft202012Validator.check_schema(schema_for(path))
    shipped = {f.name.removesuffix(".json") for f in (resources.files("psabridge") / "schemas")
               .iterdir() if f.name.endswith(".json")}
    assert shipped == {path.replace(" ", "-") for path in (*commands, *NOT_HERE)}


def scenario(sims) -> list[tuple[str, list[str]]]:  # noqa: F811
    """What an admin does, in order, each data command at least once (writes for real too)."""
    cw, datto = sims
    company = next(c for c in cw.db.companies.values()
                   if any(k["company"]["id"] == c["id"] for k in cw.db.configurations.values()))
    return [
        ("plugins list", []),
        ("psa routing", []), ("psa choices", ["board"]), ("psa statuses", ["--within", "Help Desk"]),
        ("psa choices", ["type"]), ("psa choices", ["subtype", "--within", "RMM Alerts"]),
        ("psa priorities", []), ("psa sources", []),
        ("psa companies", []), ("psa configurations", ["--company", company["name"]]),
        ("rmm sites", []), ("rmm devices", []), ("rmm monitors", []),
        ("companies load", []), ("companies load", ["--mapping", "all"]),
        ("companies map", ["--suggested", "--dry-run"]), ("companies map", ["--suggested"]),
        ("companies load", ["--mapping", "mapped"]),
        ("companies map", ["--suggested"]),  # again: nothing left to do
        ("device-types list", []), ("device-types map", ["--suggested", "--dry-run"]),
        ("device-types map", ["--suggested"]),
        ("devices load", []), ("devices map", ["--all", "--dry-run"]), ("devices map", ["--all"]),
        ("devices load", ["--mapping", "mapped"]),
        ("devices auto", []), ("devices auto", ["on", "--dry-run"]), ("devices auto", ["on"]),
        ("devices map-now", ["--dry-run"]), ("devices map-now", []),
        ("warnings list", []), ("warnings clear", ["--dry-run"]),
        ("ticketing show", []),
        ("ticketing set", ["--origin", "alert", "--board", "RMM Alerts", "--open-status", "new (alert)",
                           "--closed-status", "Resolved", "--priority", "Critical=Priority 1 - "
                           "Emergency Response", "--dry-run"]),
        ("ticketing set", ["--origin", "alert", "--board", "RMM Alerts", "--open-status", "new (alert)",
                           "--closed-status", "Resolved", "--repeat-minutes", "30"]),
        ("ticketing monitor", ["srvc_status_ctx:serviceName=Spooler", "--no-tickets"]),
        ("ticketing enable", ["--dry-run"]), ("ticketing enable", []), ("ticketing show", []),
        ("sync", ["--dry-run"]), ("sync", []),
        ("ticketing disable", []),
        ("tickets create", ["@mapped", "Printer out of toner", "--dry-run"]),
        ("tickets create", ["@mapped", "Printer out of toner"]),
        ("tickets list", []),
        ("devices unmap", ["@mapped", "--dry-run"]), ("devices unmap", ["@mapped"]),
        ("companies unmap", ["@mapped_company", "--dry-run"]),
        ("companies unmap", ["@mapped_company"]),
        ("warnings clear", []),
        ("plugins disable", ["datto", "--dry-run"]), ("plugins disable", ["datto"]),
        ("plugins enable", ["datto", "--skip-check", "--dry-run"]),
        ("plugins enable", ["datto", "--skip-check"]),
        ("plugins remove", ["datto", "--dry-run"]), ("plugins remove", ["datto", "--yes"]),
    ]


def test_every_data_command_prints_json_that_matches_its_schema(run, sims):  # noqa: F811
    commands = data_commands()
    seen: dict[str, list] = {}
    mapped: dict[str, str] = {}
    for path, args in scenario(sims):
        assert path in commands, f"the scenario runs `{path}`, which has no --json"
        args = [mapped.get(a, a) for a in args]
        if path == "sync" and args == ["--dry-run"]:  # an alert on a mapped device, for the passes
            _, datto = sims
            device = next(d for d in datto.devices.values() if d["hostname"] == mapped["@mapped"])
            datto.raise_alert(device["uid"])
        result = run(*path.split(), *args, "--json", ok=False)
        # 1 is fine here (something asked for was left out, e.g. a device with no type);
        # the output must still be the report.
        assert result.exit_code in (0, 1), (path, args, result.output)
        assert result.stdout.strip(), (path, args, result.output)
        document = json.loads(result.stdout)
        jsonschema.validate(document, schema_for(path))
        seen.setdefault(path, []).append(document)
        if path == "devices load" and args == ["--mapping", "mapped"]:
            assert document, "the scenario maps devices"
            mapped["@mapped"] = document[0]["hostname"]
            mapped["@mapped_company"] = document[0]["company"]
    assert set(commands) - set(seen) == set(), "data commands the scenario never ran"

    # What the documents say is what happened.
    auto = [d for d in seen["devices auto"] if "auto_map" in d]
    assert auto == [{"auto_map": False}]
    show = seen["ticketing show"]
    assert [s["enabled"] for s in show] == [False, True]
    assert show[1]["repeat_minutes"] == 30 and show[1]["attributes"][0]["origin"] == "alert"
    assert show[1]["monitors"] == [{"monitor": "srvc_status_ctx:serviceName=Spooler",
                                    "create_tickets": False, "attributes": None}]
    dry, real = seen["companies map"][:2]
    assert dry["dry_run"] and {c["result"] for c in dry["changes"]} <= {"planned", "skipped"}
    assert [c["ids"] for c in dry["changes"]] == [c["ids"] for c in real["changes"]]
    assert {c["result"] for c in real["changes"]} == {"done"} and real["complete"]
    again = seen["companies map"][2]
    assert again["changes"] == [] and again["complete"]
    dry_pass, real_pass = seen["sync"]
    assert dry_pass["planned"] and dry_pass["tickets_created"] == 0
    assert real_pass["tickets_created"] == 1 and real_pass["errors"] == []
    created = seen["tickets create"][1]["changes"][0]
    assert created["result"] == "done" and created["ids"]["ticket_id"]
    assert created["ids"]["ticket_id"] in {t["ticket_id"] for t in seen["tickets list"][0]}
