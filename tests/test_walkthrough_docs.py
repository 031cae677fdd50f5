"""docs/operating.md's "Try it by hand" works as written: every `$ psabridge ...` line of the
section is run in order, the simulators in their own processes and each other command as a
command of its own, and each output line the page shows is what the command printed.

Where the page shows a uid or a ticket number the reader takes from an earlier output, the test
takes it from that output too, as the reader would.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from click.testing import CliRunner

from psabridge.cli import cli
from psabridge.core.plugins import make_plugin_manager
from psabridge.core.store import open_store
from tests.test_simulate import start

PAGE = Path(__file__).parents[1] / "docs" / "operating.md"
UID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def walkthrough() -> list[tuple[str, list[str]]]:
    """The section's commands, each with the output lines shown under it."""
    text = PAGE.read_text()
    section = text[text.index("## Try it by hand"):]
    section = section[:section.index("\n## ", 1)]
    steps: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", section, re.DOTALL):
        lines = block.replace("\\\n", " ").splitlines()
        for line in lines:
            if line.startswith("$ "):
                steps.append((re.sub(r"\s+#\s.*$", "", line[2:]).strip(), []))
            elif steps and line.strip() and "..." not in line and "psabridge configure" not in line:
                steps[-1][1].append(line.strip())
    return steps


def pattern(shown: str) -> re.Pattern:
    """`shown` with its uids and numbers free: what the reader's own run prints instead."""
    parts = re.split(f"({UID}|\\b\\d+\\b)", shown)
    return re.compile("".join(f"({UID})" if re.fullmatch(UID, p) else r"(\d+)" if p.isdigit()
                              else re.escape(p) for p in parts))


def test_the_try_it_by_hand_walkthrough_runs_as_written(tmp_path, monkeypatch):
    steps = walkthrough()
    assert any("simulate raise-alert" in command for command, _ in steps)
    monkeypatch.delenv("PSABRIDGE_LOAD_PLUGINS", raising=False)
    db = tmp_path / "try-psabridge.db"
    seen: dict[str, str] = {}  # a value the page shows -> the one this run printed
    simulators = []
    try:
        for command, shown in steps:
            if command.startswith("export PSABRIDGE_DB="):
                monkeypatch.setenv("PSABRIDGE_DB", str(db))
                continue
            words = [seen.get(word, word) for word in shlex.split(command)]
            assert words[0] == "psabridge", command
            if words[1:2] == ["simulate"] and words[2] in ("connectwise", "datto"):
                last = "Press Ctrl-C" if words[2] == "connectwise" else "Act in it with"
                simulator = start(words[2], *words[3:], last=last)  # on a free port
                simulators.append(simulator)
                for line in shown:
                    assert pattern(line).search("\n".join(simulator.lines)), (line, simulator.lines)
                configure = simulator.configure_args()
                ran = CliRunner().invoke(cli, configure)  # "run the printed configure lines"
                assert ran.exit_code == 0, ran.output
                continue
            if words[1:3] == ["simulate", "close-ticket"]:
                words[3] = seen.setdefault(words[3], open_ticket(db))  # from `tickets list`
            result = CliRunner().invoke(cli, words[1:])
            assert result.exit_code == 0, f"{command}: {result.output}"
            for line in shown:
                match = pattern(line).search(result.output)
                assert match, f"{command} did not print {line!r} but:\n{result.output}"
                for value, printed in zip(re.findall(f"{UID}|\\b\\d+\\b", line), match.groups(),
                                          strict=True):
                    seen.setdefault(value, printed)
    finally:
        for simulator in simulators:
            simulator.stop()
    states = sorted(row.state for row in ticket_rows(db) if row.state != "skipped")
    assert states == ["closed", "resolved"]  # one alert resolved in the RMM, one ticket closed


def ticket_rows(db: Path) -> list:
    store = open_store(make_plugin_manager(), f"sqlite://{db}")
    try:
        return store.alert_tickets("connectwise", "datto")
    finally:
        store.close()


def open_ticket(db: Path) -> str:
    (ticket,) = [row.ticket_id for row in ticket_rows(db) if row.state == "open"]
    return str(ticket)
