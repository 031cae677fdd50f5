"""What the `psabridge simulate ...` commands share: the `configure` command a simulator prints,
with its keys in files rather than on it; stopping cleanly on the signals that end a process; and
how the commands that drive a running simulator (`simulate raise-alert`, `simulate close-ticket`)
find it: a private control file with its URL and control token, removed when it stops."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import click
import httpx
import platformdirs

from psabridge.simulation import CONTROL_PREFIX

SIMULATOR_DIR_ENV = "PSABRIDGE_SIMULATOR_DIR"
SIMULATOR_TOKEN_ENV = "PSABRIDGE_SIMULATOR_TOKEN"


@contextmanager
def configure_command(plugin: str, settings: dict[str, str],
                      secret_settings: Iterable[str]) -> Iterator[str]:
    """The `psabridge configure PLUGIN` command line for a simulator's `settings`, with each of
    `secret_settings` written to a file of its own and named by `--NAME-file PATH`.

    A printed command line carrying the key would teach typing keys where `ps` and the shell's
    history keep them, and `configure` refuses them there. The files are private (a 0700 folder,
    0600 files) and removed when the block ends, that is when the simulator stops.
    """
    secret_settings = set(secret_settings)
    with tempfile.TemporaryDirectory(prefix=f"psabridge-simulate-{plugin}-") as folder:
        words = ["psabridge", "configure", plugin]
        for name, value in settings.items():
            flag = "--" + name.replace("_", "-")
            if name not in secret_settings:
                words += [flag, value]
                continue
            path = Path(folder) / name.replace("_", "-")
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
                file.write(value + "\n")
            words += [f"{flag}-file", str(path)]
        yield shlex.join(words)


@contextmanager
def stopping_on_terminate() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP stop the process as Ctrl-C does (KeyboardInterrupt),
    so that a simulator stopped by a service manager, `kill` or a closed terminal removes its key
    files as it does on Ctrl-C. The previous handlers are put back afterwards. Signals can only
    be handled in the main thread; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {number: signal.signal(number, interrupt) for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


# -- finding a running simulator ------------------------------------------------------------------


def control_folder() -> Path:
    """Where running simulators leave their control files: `PSABRIDGE_SIMULATOR_DIR`, else the
    user's runtime directory (`$XDG_RUNTIME_DIR/psabridge`), else the user's cache directory."""
    if os.environ.get(SIMULATOR_DIR_ENV):
        return Path(os.environ[SIMULATOR_DIR_ENV]).expanduser()
    # Only a runtime directory the session gave us: platformdirs' fallback for a missing one is
    # a fixed name in /tmp, which another user could have made first.
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "psabridge" / "simulators"
    return Path(platformdirs.user_cache_dir("psabridge")) / "simulators"


def control_file(plugin: str) -> Path:
    return control_folder() / f"{plugin}.json"


@contextmanager
def control_file_written(plugin: str, url: str, token: str) -> Iterator[Path]:
    """Within the block, `plugin`'s control file names this simulator (`url`, `token`, our pid):
    a 0600 file in a 0700 folder, replaced atomically. Removed at the end if it still holds our
    token (a simulator started later may have taken the name over)."""
    folder = control_folder()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = control_file(plugin)
    record = {"plugin": plugin, "url": url, "token": token, "pid": os.getpid()}
    temporary = folder / f".{plugin}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        json.dump(record, file)
    os.replace(temporary, path)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("token") == token:
                path.unlink()


@attrs.frozen
class SimulatorAddress:
    url: str
    token: str


def find_simulator(plugin: str, title: str, url: str | None = None) -> SimulatorAddress:
    """The running `plugin` simulator: `url` with the token from `PSABRIDGE_SIMULATOR_TOKEN` (or
    from the control file when it names that URL), else what its control file says."""
    path = control_file(plugin)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        record = None
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read the {title} simulator's control file {path}: {exc}") \
            from None
    if url:
        token = os.environ.get(SIMULATOR_TOKEN_ENV) or (
            record["token"] if record and record.get("url", "").rstrip("/") == url.rstrip("/") else None)
        if not token:
            raise click.ClickException(
                f"no control token for the simulator at {url}: set {SIMULATOR_TOKEN_ENV} to the token "
                f"in its control file (`token` in {path} on the machine it runs on)")
        return SimulatorAddress(url.rstrip("/"), token)
    if record is None:
        raise click.ClickException(
            f"no {title} simulator is running for this user (no {path}): start one with "
            f"`psabridge simulate {plugin}`, or give --url and {SIMULATOR_TOKEN_ENV}")
    if not _running(record.get("pid")):
        raise click.ClickException(
            f"the {title} simulator that wrote {path} (process {record.get('pid')}) is no longer "
            f"running: start one with `psabridge simulate {plugin}`")
    return SimulatorAddress(record["url"].rstrip("/"), record["token"])


def _running(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process with that number: ours has ended
        return False
    return True


def call_simulator(plugin: str, title: str, action: str, payload: dict,
                   url: str | None = None) -> dict:
    """Run `action` on the running `plugin` simulator; its answer, or a ClickException saying
    what went wrong (not running, unreachable, the simulator's own refusal)."""
    address = find_simulator(plugin, title, url)
    try:
        response = httpx.post(f"{address.url}{CONTROL_PREFIX}{action}", json=payload, timeout=15,
                              headers={"Authorization": f"Bearer {address.token}"})
    except httpx.HTTPError as exc:
        raise click.ClickException(
            f"cannot reach the {title} simulator at {address.url} ({type(exc).__name__}); is it "
            f"still running?") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        reason = body.get("error") if isinstance(body, dict) else None
        if response.status_code == 404 and reason is None:
            reason = f"{address.url} is not a psabridge {title} simulator"
        raise click.ClickException(f"{title} simulator: {reason or f'answered {response.status_code}'}")
    return body


def echo_result(result: dict, as_json: bool, line: str) -> None:
    """`result` as JSON, or the one line that says what was done."""
    click.echo(json.dumps(result, indent=2) if as_json else line)


def fault_options(command):
    """--latency, --error-rate, --throttle-rate and --drop-rate: the faults every simulator can
    inject (psabridge.simulation.Faults), as the same options on each `simulate` command."""
    for flag, kind, text in reversed((
        ("--latency", click.FloatRange(min=0), "Seconds added to every request."),
        ("--error-rate", click.FloatRange(0, 1), "Share of requests answered with a 5xx."),
        ("--throttle-rate", click.FloatRange(0, 1), "Share of requests answered 429 with Retry-After."),
        ("--drop-rate", click.FloatRange(0, 1), "Share of connections dropped without an answer."),
    )):
        command = click.option(flag, default=0.0, show_default=True, type=kind, help=text)(command)
    return command


def control_options(command):
    """--url and --json, which every command driving a simulator takes."""
    command = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(command)
    return click.option(
        "--url", default=None, metavar="URL",
        help=f"The simulator's URL, when it is not the one this user started here (the token then "
             f"comes from {SIMULATOR_TOKEN_ENV}).")(command)


# -- closing a ticket in whichever PSA's simulator ------------------------------------------------


def psa_simulator_choice(psa_titles: dict[str, str], enabled_psa: str | None,
                         chosen: str | None) -> str:
    """Which PSA's simulator `simulate close-ticket` drives: `chosen` (--psa), else the PSA
    enabled in the store, else the only PSA with a control file (a running simulator is
    preferred when several left one). `psa_titles` maps each installed PSA plugin to its title."""
    names = ", ".join(sorted(psa_titles)) or "none"
    if chosen:
        if chosen not in psa_titles:
            raise click.BadParameter(f"{chosen!r} is not an installed PSA plugin (PSA plugins: {names})",
                                     param_hint="'--psa'")
        return chosen
    if enabled_psa in psa_titles:
        return enabled_psa
    present = {name: _read_record(name) for name in psa_titles if control_file(name).exists()}
    if len(present) > 1:
        present = {name: record for name, record in present.items()
                   if record and _running(record.get("pid"))} or present
    if len(present) == 1:
        return next(iter(present))
    starts = " or ".join(f"`psabridge simulate {name}`" for name in sorted(psa_titles))
    if not present:
        raise click.ClickException(
            f"no PSA simulator is running for this user and no PSA is enabled in the store: start "
            f"one with {starts}, or name one with --psa NAME")
    raise click.ClickException(
        f"simulators of several PSAs are running ({', '.join(sorted(present))}) and no PSA is "
        f"enabled in the store: choose one with --psa NAME")


def _read_record(plugin: str) -> dict | None:
    try:
        record = json.loads(control_file(plugin).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


@click.command("close-ticket")
@click.argument("ticket_id", metavar="ID")
@click.option("--status", default=None, metavar="NAME",
              help="A closed status of the ticket's board or queue (default: its first closed status).")
@click.option("--psa", "psa", default=None, metavar="NAME",
              help="The PSA whose simulator to drive (default: the PSA enabled in the store, else "
                   "the only PSA simulator running).")
@control_options
@click.pass_context
def simulate_close_ticket(ctx, ticket_id, status, psa, url, as_json):
    """Close ticket ID in the running PSA simulator, as a technician would.

    The PSA calls back as for any change (to `psabridge serve`, if registered), and the next
    `psabridge sync` resolves the ticket's alert in the RMM."""
    from psabridge.cli import App
    from psabridge.core import plugins as plugins_lib

    app = ctx.ensure_object(App)
    records = [r for r in plugins_lib.list_plugins(app.pm) if r.kind == "psa"]
    titles = {record.name: record.title for record in records}
    plugin = psa_simulator_choice(titles, None if psa else _enabled_psa(app), psa)
    title = titles[plugin]
    payload = {"ticket": ticket_id} | ({"status": status} if status else {})
    result = call_simulator(plugin, title, "close-ticket", payload, url)
    echo_result(result, as_json, f"Closed ticket {result['ticket_id']} ({result['summary']}) in the "
                                 f"{title} simulator, on {result['board']}: status {result['status']}.")


def _enabled_psa(app) -> str | None:
    """The PSA enabled in the store, if the store exists: driving a simulator must not create one."""
    from psabridge.core import plugins as plugins_lib
    from psabridge.core.store import store_url

    try:
        url = store_url(app.db)
        if url.startswith("sqlite://") and not Path(url.removeprefix("sqlite://")).exists():
            return None
        enabled = plugins_lib.enabled_plugins(app.pm, app.store, "psa")
    except Exception:  # no readable store: fall back to the running simulators
        return None
    return enabled[0] if enabled else None
