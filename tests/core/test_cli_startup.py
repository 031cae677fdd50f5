"""What `psabridge --help` loads: only the command line, not what one command needs (the web
stack, the simulators, the store's engine, the secrets' cryptography, the mapping engine, the
logging stack, the models). Which modules, never how long: benchmarks/startup.py measures the
time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from psabridge.cli import cli
from psabridge.core import ticketing

NOT_FOR_HELP = ("werkzeug", "jinja2", "waitress", "psabridge.simulation",
                "psabridge.core.webhooks", "psabridge.plugins.rmm_datto.simulator",
                "psabridge.plugins.connectwise.simulator", "cryptography", "sqlite_utils",
                # each command imports the engine in its body: none of it is needed to list them
                "psabridge.core.mapping", "psabridge.core.models", "psabridge.core.plugins",
                "psabridge.core.logs", "rapidfuzz", "structlog", "rich", "cattrs", "httpx",
                "asyncio", "psabridge.plugins")


def modules_loaded_by(*args: str) -> set[str]:
    code = ("import json, sys\nfrom psabridge.cli import cli\n"
            "try:\n    cli.main(list(sys.argv[1:]), prog_name='psabridge', standalone_mode=False)\n"
            "finally:\n    print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("args", [("--help",), ("sync", "--help"), ("serve", "--help"),
                                  ("ticketing", "set", "--help")])
def test_help_loads_neither_the_web_stack_nor_the_simulators_nor_the_engine(args):
    loaded = modules_loaded_by(*args)
    assert "psabridge.cli" in loaded
    assert [m for m in loaded if m.split(".")[0] in NOT_FOR_HELP or
            any(m == n or m.startswith(n + ".") for n in NOT_FOR_HELP)] == []


def test_connectors_commands_are_still_listed_and_run():
    listed = CliRunner().invoke(cli, ["simulate", "--help"])
    assert listed.exit_code == 0, listed.output
    for command in ("connectwise", "datto", "raise-alert", "close-ticket"):
        assert command in listed.output
    shown = CliRunner().invoke(cli, ["simulate", "datto", "--help"])
    assert shown.exit_code == 0 and "Datto RMM" in shown.output


def test_ticketing_set_takes_every_origin_the_engine_knows():
    """`--origin`'s choices are written out so that the command line need not import the
    engine; they must stay the engine's."""
    command = cli.get_command(None, "ticketing").get_command(None, "set")
    origin = next(p for p in command.params if p.name == "origin")
    assert tuple(origin.type.choices) == ticketing.ORIGINS
