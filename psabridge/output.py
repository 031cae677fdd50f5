"""What the CLI prints: tables that fit the terminal, JSON for scripts, progress on stderr.

Tables are drawn with rich at the terminal's width (`COLUMNS` when set, 80 columns when stdout is
not a terminal): ids are never cut, so they can be copied; long text is cut with an ellipsis or,
in the columns meant to be read (reasons, errors), wrapped. When that is not enough, text columns
are wrapped narrower; columns that still cannot fit are left out, and a line under the table
names them and says how to see them. No colour when stdout is not a
terminal or `NO_COLOR` is set.

Progress and spinners go to stderr, and only when stderr is a terminal, so that `--json` on
stdout stays clean and a log file gets no control characters.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import click

if TYPE_CHECKING:  # rich is imported where a table, a console or a progress bar is drawn
    from rich.console import Console

# Columns that explain something, or hold a long key another command takes (a monitor's name):
# wrapped, never cut.
WRAPPED = frozenset({"reason", "why", "detail", "error", "message", "note", "problem", "warning",
                     "value", "example", "monitor", "subject"})
CELL_MAX = 40  # a cut column is at most this wide when the terminal is short of room
UNBOUNDED = 100_000
# Short columns holding what another command takes as it is, like an id: never cut.
KEYS = frozenset({"device_type", "plugin"})


def _no_colour() -> bool:
    return bool(os.environ.get("NO_COLOR"))


def _stream_is_tty(stream: Any) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def stdout_console() -> Console:
    # Looked up at each call: CliRunner (tests) replaces sys.stdout, rich must not keep one.
    stream = sys.stdout
    tty = _stream_is_tty(stream)
    # Piped into a file or grep there is no terminal to fit: rows are not cut, unless COLUMNS
    # says how wide to be.
    width = None if tty or os.environ.get("COLUMNS") else UNBOUNDED
    from rich.console import Console

    return Console(file=stream, no_color=_no_colour() or not tty, highlight=False,
                   force_terminal=tty, soft_wrap=False, emoji=False, markup=False, width=width)


def _is_id_column(name: str) -> bool:
    return name in ("id", "uid") or name in KEYS or name.endswith(("_id", "_uid"))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple | set):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)


GAP = 2  # spaces between two columns
FLOOR = 14  # a column cut to fit is never narrower than this
HEADER_FLOOR = 10  # nor than its header, up to this many characters
WRAP_FLOOR = 20  # a wrapped column is never narrower than this


# When columns would be left out, a text column wraps down to this width (or its header's).
TIGHT_FLOOR = 10


def fit_widths(headers: Sequence[str], naturals: Sequence[int], width: int,
               fixed: Sequence[bool], tight: bool = False) -> list[int | None]:
    """The width of each column so that the table fits in `width`, None for a column left out.

    Each column has a floor: its whole width for a `fixed` one (an id), else a readable
    minimum, or, `tight`, the narrowest it can be wrapped to. The columns shown are the first
    ones whose floors fit (columns come in order of importance); the room left is shared out,
    the narrowest wants served first."""
    floors = [n if f else min(n, max(TIGHT_FLOOR, len(h)) if tight else max(
                  FLOOR, min(len(h), HEADER_FLOOR), WRAP_FLOOR if h in WRAPPED else 0))
              for h, n, f in zip(headers, naturals, fixed, strict=True)]
    shown, used = 0, -GAP
    for floor in floors:
        if shown and used + GAP + floor > width:
            break
        used += GAP + floor
        shown += 1
    widths: list[int | None] = [*floors[:shown], *([None] * (len(floors) - shown))]
    room = width - used
    wants = sorted(range(shown), key=lambda i: naturals[i] - floors[i])
    for served, i in enumerate(wants):
        share = room // (shown - served)
        grant = min(naturals[i] - floors[i], share)
        widths[i] = floors[i] + grant
        room -= grant
    return widths


def table(rows: Sequence[dict], empty: str = "(none)", columns: Sequence[str] | None = None,
          links: dict[str, str] | None = None) -> None:
    """Print `rows` (dicts with the same keys) as a table that fits the terminal; columns are
    in order of importance, and those that cannot fit are named below the table. `links` maps
    a column to the key of each row's URL: on a terminal, its cells are links to it."""
    if not rows:
        click.echo(empty)
        return
    names = list(columns or dict.fromkeys(key for row in rows for key in row))
    texts = {name: [_cell(row.get(name)) for row in rows] for name in names}
    naturals = [max([len(name), *map(len, texts[name])]) for name in names]
    from rich import box
    from rich.style import Style
    from rich.table import Table
    from rich.text import Text

    console = stdout_console()
    fixed = [_is_id_column(n) for n in names]
    widths = fit_widths(names, naturals, console.width, fixed)
    tight = False
    if None in widths:
        # Rather than leave columns out, wrap text columns (headers too) as narrow as needed.
        wrapped = fit_widths(names, naturals, console.width, fixed, tight=True)
        tight = wrapped.count(None) < widths.count(None)
        widths = wrapped if tight else widths
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False,
                 padding=(0, GAP // 2), collapse_padding=True)
    shown = [(name, width) for name, width in zip(names, widths, strict=True) if width is not None]
    natural = dict(zip(names, naturals, strict=True))
    for name, width in shown:
        wrap = name in WRAPPED or (tight and not _is_id_column(name) and width < natural[name])
        grid.add_column(name, width=width, no_wrap=not wrap,
                        overflow="fold" if wrap or _is_id_column(name) else "ellipsis")
    links = links if console.is_terminal else {}
    for index, row in enumerate(rows):
        grid.add_row(*(Text(texts[name][index], style=Style(link=row[links[name]]))
                       if name in (links or {}) and row.get(links[name]) else texts[name][index]
                       for name, _ in shown))
    console.print(grid)
    hidden = [name for name, width in zip(names, widths, strict=True) if width is None]
    if hidden:
        note = (f"({len(hidden)} more column{'s' * (len(hidden) != 1)} than the terminal has "
                f"room for: {', '.join(hidden)}; widen it or use --json)")
        click.echo(textwrap.fill(note, width=console.width))


def emit_json(data: Any) -> None:
    """Print `data` as JSON on stdout: the one output of a `--json` command."""
    click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def stderr_is_tty() -> bool:
    return _stream_is_tty(sys.stderr)


def _stderr_console() -> Console:
    from rich.console import Console

    return Console(file=sys.stderr, no_color=_no_colour(), highlight=False)


@contextlib.contextmanager
def spinner(label: str) -> Iterator[None]:
    """A spinner on stderr while a step of unknown length runs (loading, planning)."""
    if not stderr_is_tty():
        yield
        return
    with _stderr_console().status(label):
        yield


@contextlib.contextmanager
def progress(label: str, total: int) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr for `total` steps; yields the function that counts one step."""
    if not stderr_is_tty() or total == 0:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                   MofNCompleteColumn(), console=_stderr_console(), transient=True)
    with bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)


def warn(message: str) -> None:
    click.echo(message, err=True)


# -- what a command changed (or would change) ---------------------------------------------------

DONE, FAILED, PLANNED, SKIPPED = "done", "failed", "planned", "skipped"
UNCHANGED = "unchanged"  # already as asked: nothing to do, and nothing left undone


@attrs.frozen
class ChangeResult:
    """One change a writing command made, or would make, or could not make."""

    action: str  # e.g. "map company", "save ticket settings"
    subject: str  # what it is about, in words
    result: str  # done, failed, planned (a dry run), skipped, unchanged
    detail: str = ""  # null in JSON when empty
    ids: dict = attrs.field(factory=dict)  # the subject's and target's ids, e.g. company_id
    error: str | None = None  # why it failed or was skipped

    def as_json(self) -> dict:
        return {"action": self.action, "subject": self.subject, "ids": dict(self.ids),
                "detail": self.detail or None, "result": self.result, "error": self.error}


@attrs.frozen
class Report:
    """What a writing command did: each change with its result. `complete` is whether every
    change asked for was made (or, in a dry run, would be)."""

    changes: list[ChangeResult]
    dry_run: bool = False
    # What was not asked for and is not done, with why, e.g. devices not audited yet: said, but
    # not a failure. Each is a dict with `subject`, `ids` and `why`.
    left_out: list[dict] = attrs.field(factory=list)

    @property
    def complete(self) -> bool:
        return all(c.result in (DONE, PLANNED, UNCHANGED) for c in self.changes)

    def count(self, result: str) -> int:
        return sum(1 for c in self.changes if c.result == result)

    def as_json(self) -> dict:
        shown = {"dry_run": self.dry_run, "complete": self.complete,
                 "changes": [c.as_json() for c in self.changes],
                 "summary": {r: self.count(r) for r in (PLANNED, DONE, UNCHANGED, FAILED, SKIPPED)}}
        return shown | ({"left_out": self.left_out} if self.left_out else {})


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def show_report(report: Report, as_json: bool, done_text: str | None = None) -> None:
    """Print a report and exit 1 when something asked for was not done.

    In a table, the changes themselves (the plan of a dry run); what failed or was skipped, and
    why, on stderr; then the count. `done_text`: the one sentence that says it all when every
    change was made (a command that makes one change).
    """
    if as_json:
        emit_json(report.as_json())
    elif report.dry_run:
        planned = [c for c in report.changes if c.result == PLANNED]
        click.echo(f"Plan ({_plural(len(planned), 'change')}, nothing done):")
        table([{"action": c.action, "subject": c.subject, "detail": c.detail} for c in planned])
        _tell_left_out(report)
    elif done_text and report.complete:
        click.echo(done_text)
    else:
        done = [c for c in report.changes if c.result == DONE]
        if done:
            table([{"action": c.action, "subject": c.subject, "detail": c.detail} for c in done])
        _tell_left_out(report)
        click.echo(f"Done: {_plural(report.count(DONE), 'change')}, {report.count(FAILED)} "
                   f"failed, {report.count(SKIPPED)} skipped.")
    if not report.complete and not report.dry_run:
        raise click.exceptions.Exit(1)


LEFT_OUT_SHOWN = 10


def _tell_left_out(report: Report) -> None:
    by_why: dict[str, list[str]] = {}
    for item in report.left_out:
        by_why.setdefault(item["why"], []).append(item["subject"])
    for why, subjects in by_why.items():
        more = len(subjects) - LEFT_OUT_SHOWN
        listed = ", ".join(subjects[:LEFT_OUT_SHOWN]) + (f" and {more} more" if more > 0 else "")
        warn(f"Left out, {why}: {listed}")
    for change in report.changes:
        if change.result == FAILED:
            warn(f"Failed: {change.action} for {change.subject}: {change.error}")
        elif change.result == SKIPPED:
            warn(f"Skipped {change.subject}: {change.error}")
