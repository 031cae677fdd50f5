"""The `psabridge` command line: thin click wrappers around library functions."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import click
import pluggy
from click.core import ParameterSource

from psabridge import __version__, output
from psabridge.core.errors import PsabridgeError

# Each command imports the engine's modules it needs in its own body: `psabridge --help` and a
# command's --help load none of them (mapping and its rapidfuzz, structlog and the rich and
# asyncio it loads, the models' cattrs, the store, httpx). benchmarks/startup.py measures it and
# tests/core/test_cli_startup.py checks which modules --help loads.
if TYPE_CHECKING:
    from psabridge.core import mapping, sync, ticketing
    from psabridge.core.bridge import Bridge
    from psabridge.core.models import Setting
    from psabridge.core.store import Store


def _log():
    from psabridge.core import logs

    return logs.get_logger(__name__)


@functools.cache
def default_plugin_manager() -> pluggy.PluginManager:
    from psabridge.core import plugins as plugins_lib

    return plugins_lib.make_plugin_manager()


@attrs.define
class App:
    """What every command needs; tests may pass their own plugin manager as `obj=App(pm=...)`."""

    # The installed plugins are loaded when a command first needs them, not when a command's
    # --help is shown.
    _pm: pluggy.PluginManager | None = None
    db: str | None = None
    transports: dict = attrs.field(factory=dict)  # plugin name -> httpx transport (simulators)
    _store: Store | None = None

    @property
    def pm(self) -> pluggy.PluginManager:
        if self._pm is None:
            self._pm = default_plugin_manager()
        return self._pm

    @property
    def store(self) -> Store:
        from psabridge.core.store import open_store, store_url

        if self._store is None:
            self._store = open_store(self.pm, store_url(self.db))
        return self._store

    def bridge(self) -> Bridge:
        from psabridge.core.bridge import open_bridge

        return open_bridge(self.pm, self.store, self.transports)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class CommandFailed(click.ClickException):
    """A command that could not do what was asked: "Error: ..." on stderr, or, when the logs
    were asked for as JSON (`--log-format json`), a `command_failed` event, so that stderr
    carries nothing but JSON lines."""

    def __init__(self, message: str, as_event: bool):
        super().__init__(message)
        self.as_event = as_event

    def show(self, file=None) -> None:
        if self.as_event:
            _log().error("command_failed", error=self.format_message())
        else:
            super().show(file)


_plugin_commands_registered = False


def register_plugin_commands() -> None:
    """Let the connectors add their commands (e.g. `simulate connectwise`) through the
    register_commands hook, once. Called when a command is looked for that is not psabridge's
    own, or when `simulate`'s commands are listed, rather than at import: those commands load
    the simulators and the web stack, which `psabridge --help` and every other command do not
    need."""
    global _plugin_commands_registered
    if not _plugin_commands_registered:
        _plugin_commands_registered = True
        default_plugin_manager().hook.register_commands(cli=cli)
        from psabridge.simulator_commands import simulate_close_ticket  # the PSA's, whichever

        simulate.add_command(simulate_close_ticket)


def configure_logging(ctx: click.Context) -> None:
    """Set logging up as the root command's options ask, once per run, when a command is about
    to run: not while one is only looked up or its --help shown, which need no logging stack
    (structlog loads rich and asyncio)."""
    root = ctx.find_root()
    if "log_format" not in root.params or root.meta.get("psabridge.logging_configured"):
        return
    from psabridge.core import logs

    root.meta["psabridge.logging_configured"] = True
    logs.configure_logging(root.params["verbose"], root.params["log_format"])


class Command(click.Command):
    """psabridge's commands: logging is set up when one runs."""

    def invoke(self, ctx: click.Context):
        configure_logging(ctx)
        return super().invoke(ctx)


class Group(click.Group):
    """A group of psabridge's commands (and of groups like it)."""

    command_class = Command
    group_class = type


class PluginCommandsGroup(Group):
    """A group the connectors add commands to: they are registered when first looked for.
    Their commands are click's own, so logging is set up as one of them is about to run."""

    def invoke(self, ctx: click.Context):
        configure_logging(ctx)
        return super().invoke(ctx)

    def list_commands(self, ctx: click.Context) -> list[str]:
        register_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        register_plugin_commands()
        return super().get_command(ctx, cmd_name)


class ErrorHandlingGroup(click.Group):
    """Turns errors into one line on stderr and a non-zero exit, never a traceback. A name that
    is not one of psabridge's own commands may be a connector's (`register_plugin_commands`)."""

    command_class = Command
    group_class = Group

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and not _plugin_commands_registered:
            register_plugin_commands()
            command = super().get_command(ctx, cmd_name)
        return command

    def invoke(self, ctx: click.Context):
        as_event = ctx.params.get("log_format") == "json"
        try:
            return super().invoke(ctx)
        except PsabridgeError as exc:
            from psabridge.core import logs

            configure_logging(ctx)  # CommandFailed may be shown as an event
            raise CommandFailed(logs.redact_text(str(exc)), as_event) from None
        except CommandFailed:
            raise
        except click.ClickException as exc:
            if as_event and not isinstance(exc, click.UsageError):
                configure_logging(ctx)
                raise CommandFailed(exc.format_message(), as_event) from None
            raise
        except (click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence for the CLI
            from psabridge.core import logs

            configure_logging(ctx)
            _log().debug("unexpected error", exc_info=True)
            detail = logs.redact_text(f"{type(exc).__name__}: {exc}")
            raise CommandFailed(
                f"unexpected error: {detail} (run with -vv for the traceback)", as_event
            ) from None


def _print_table(rows: list[dict], as_json: bool) -> None:
    if as_json:
        output.emit_json(rows)
    else:
        output.table(rows)


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Output JSON for scripts (docs/cli-json.md describes it).")
dry_run_option = click.option("--dry-run", is_flag=True,
                              help="Show what would change; change nothing.")


def _changes(action: str, subject: str, dry_run: bool, detail: str = "", **ids) -> output.Report:
    """The report of a command that makes one change, and made it (or, dry, would make it)."""
    result = output.PLANNED if dry_run else output.DONE
    return output.Report([output.ChangeResult(action, subject, result, detail, ids)], dry_run)


@click.group(cls=ErrorHandlingGroup)
@click.version_option(__version__, prog_name="psabridge")
@click.option("--db", envvar="PSABRIDGE_DB", metavar="PATH|URL",
              help="State store: a SQLite file path or a store URL (default: user data dir).")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option("--log-format", type=click.Choice(["auto", "console", "json"]), default="auto",
              show_default=True, help="Log rendering; auto is console on a terminal, else JSON.")
@click.pass_context
def cli(ctx: click.Context, db: str | None, verbose: int, log_format: str):
    """psabridge: map RMM sites, devices and alerts to PSA companies, configurations and tickets."""
    app = ctx.ensure_object(App)
    if db is not None:  # an empty --db is an error (store_url says so), not the default
        app.db = db
    ctx.call_on_close(app.close)


pass_app = click.make_pass_decorator(App, ensure=True)


# -- plugins --------------------------------------------------------------------------------


@cli.group()
def plugins():
    """List, enable, disable and remove connector plugins."""


@plugins.command("list")
@json_option
@pass_app
def plugins_list(app: App, as_json: bool):
    """List installed plugins: name, kind, version, enabled."""
    from psabridge.core import plugins as plugins_lib

    records = plugins_lib.list_plugins(app.pm, app.store)
    rows = [
        {"name": r.name, "kind": r.kind, "title": r.title, "version": r.version,
         "enabled": r.enabled if r.kind in ("psa", "rmm") else None}
        for r in records
    ]
    _print_table(rows, as_json)


@plugins.command("enable")
@click.argument("name")
@click.option("--skip-check", is_flag=True, help="Do not test the connection first.")
@dry_run_option
@json_option
@pass_app
def plugins_enable(app: App, name: str, skip_check: bool, dry_run: bool, as_json: bool):
    """Enable a connector (only one PSA at a time).

    A dry run checks the settings and the one-PSA rule, but not the connection."""
    from psabridge.core import plugins as plugins_lib

    was_enabled = plugins_lib.plugin_record(app.pm, name, app.store).enabled
    with output.spinner(f"Testing the connection to {name}"):
        report = plugins_lib.enable_plugin(app.pm, app.store, name, check=not skip_check,
                                           transport=app.transports.get(name), dry_run=dry_run)
    missing = list(report.missing_permissions) if report else []
    for permission in missing:
        output.warn(f"Warning: the API user lacks {permission}")
    detail = "; ".join(filter(None, (
        report.detail.strip().rstrip(".") if report else "",
        f"the API user lacks {', '.join(missing)}" if missing else "")))
    said = f": {detail}." if detail else "."
    if was_enabled:
        # Enabling again checks the settings (and the connection) as they are now.
        checked = "its settings checked again" + (", the connection not tested"
                                                  if skip_check or dry_run else "")
        result = output.Report([output.ChangeResult(
            "enable plugin", name, output.UNCHANGED, "; ".join(filter(None, (
                "already enabled", checked, detail))), {"plugin": name})], dry_run)
        output.show_report(result, as_json,
                           done_text=f"{name} is already enabled; {checked}" + said)
        return
    output.show_report(_changes("enable plugin", name, dry_run, detail, plugin=name), as_json,
                       done_text=f"Enabled {name}" + said)


@plugins.command("disable")
@click.argument("name")
@dry_run_option
@json_option
@pass_app
def plugins_disable(app: App, name: str, dry_run: bool, as_json: bool):
    """Disable a connector; its settings and mappings are kept."""
    from psabridge.core import plugins as plugins_lib

    plugins_lib.plugin_record(app.pm, name)  # an unknown name is an error, dry or not
    if not dry_run:
        plugins_lib.disable_plugin(app.pm, app.store, name)
    output.show_report(_changes("disable plugin", name, dry_run,
                                "its settings and mappings are kept", plugin=name),
                       as_json, done_text=f"Disabled {name}; its settings and mappings are kept.")


@plugins.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@dry_run_option
@json_option
@pass_app
def plugins_remove(app: App, name: str, yes: bool, dry_run: bool, as_json: bool):
    """Remove a connector's settings, mappings and links; unmap its configurations."""
    from psabridge.core import plugins as plugins_lib

    plugins_lib.plugin_record(app.pm, name)
    callback = plugins_lib.has_ticket_callback(app.store, name)
    if dry_run:
        mapped = len(app.store.device_mappings_of(name))
        detail = (f"unmap {mapped} configuration{'s' * (mapped != 1)} in the PSA, "
                  f"{'unregister the ticket callback psabridge registered in it, ' * bool(callback)}"
                  "then delete its settings, mappings, links and warnings")
        output.show_report(_changes("remove plugin", name, True, detail, plugin=name), as_json)
        return
    if not yes:
        click.confirm(
            f"Remove every setting, mapping and link of {name}, unmap its devices"
            f"{' and unregister its ticket callback' * bool(callback)}?", abort=True,
            err=True)
    with output.spinner(f"Removing {name}"):
        psas = plugins_lib.enabled_plugins(app.pm, app.store, "psa")
        deleted = plugins_lib.remove_plugin(app.pm, app.store, name,
                                            transport=app.transports.get(psas[0] if psas else name))
    summary = ", ".join(f"{table} {count}" for table, count in deleted.items() if count)
    unregistered = "; its ticket callback is unregistered" * bool(callback)
    report = _changes("remove plugin", name, False, f"deleted: {summary or 'nothing stored'}"
                      f"{unregistered}", plugin=name)
    output.show_report(report, as_json,
                       done_text=f"Removed {name} ({summary or 'nothing stored'}){unregistered}.")


# -- configure ------------------------------------------------------------------------------


def _in_a_sentence(label: str) -> str:
    """A setting's label as it reads inside a sentence: `Private key` becomes `private key`, and
    `API secret key` stays as it is."""
    return label if label[1:2].isupper() else label[:1].lower() + label[1:]


def _refuse_on_the_command_line(alternatives: str):
    """A click callback for a secret's option: the value may come from its environment variable,
    never from the command line, where `ps` and the shell's history would show it."""

    def refuse(ctx: click.Context, param: click.Parameter, value):
        if value is not None and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE:
            flag = param.opts[0]
            raise click.UsageError(f"{flag} would show in `ps` and shell history; {alternatives}",
                                   ctx=ctx)
        return value

    return refuse


def secret_options(name: str, envvar: str, label: str, alternatives: str) -> list[click.Option]:
    """The options of a secret: `--NAME-file PATH` (or env `ENVVAR_FILE`), and a hidden `--NAME`
    that exists to take the value from `envvar` and to refuse it on the command line, saying
    what to do instead (`alternatives`)."""
    flag = "--" + name.replace("_", "-")
    return [
        click.Option([flag, name], envvar=envvar, hidden=True,
                     callback=_refuse_on_the_command_line(alternatives)),
        click.Option([f"{flag}-file", f"{name}_file"], envvar=f"{envvar}_FILE", metavar="PATH",
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help=f"Read the {label} from PATH (one trailing newline is dropped); or set "
                          f"{envvar}."),
    ]


def secret_value(values: dict, name: str, envvar: str, label: str) -> str | None:
    """The secret `name` as given by its environment variable or its file, taking both options
    out of `values`; None when neither was given."""
    from_env, path = values.pop(name, None), values.pop(f"{name}_file", None)
    if path is None:
        return from_env
    if from_env is not None:
        raise click.UsageError(f"the {label} is given twice, in {envvar} and in "
                               f"--{name.replace('_', '-')}-file; give it once")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.UsageError(f"cannot read the {label} from {path}: {exc}") from None
    secret = text.removesuffix("\n").removesuffix("\r")  # the newline an editor or echo adds
    if not secret:
        raise click.UsageError(f"{path} is empty; it should hold the {label}")
    return secret


def _configure_command(app: App, name: str) -> click.Command:
    from psabridge.core import plugins as plugins_lib
    from psabridge.core.settings import setting_envvar

    record = plugins_lib.plugin_record(app.pm, name)
    params = []
    secrets = [s for s in record.settings if s.secret]
    for setting in record.settings:
        envvar = setting_envvar(name, setting.name)
        if setting.secret:
            flag = "--" + setting.name.replace("_", "-")
            params += secret_options(
                setting.name, envvar, _in_a_sentence(setting.label),
                f"set {envvar} or run without it to be prompted, or {flag}-file PATH")
            continue
        default = f"; default {setting.default}" if setting.default is not None else ""
        help_text = f"{setting.label}. {setting.help} (env {envvar}{default})"
        params.append(click.Option(
            ["--" + setting.name.replace("_", "-"), setting.name], envvar=envvar, help=help_text,
        ))

    def ask_secret(setting: Setting) -> str | None:
        if not sys.stdin.isatty():
            # Piped in (`... | psabridge configure`), or no input at all (a service, CI): read
            # a line without a prompt; nothing means unset, and `plugins enable` will say so.
            return sys.stdin.readline().strip() or None
        try:
            return click.prompt(setting.label, hide_input=True, default="", show_default=False)
        except click.Abort:
            return None

    def configure(dry_run: bool = False, **values):
        for setting in secrets:
            values[setting.name] = secret_value(values, setting.name,
                                                setting_envvar(name, setting.name),
                                                _in_a_sentence(setting.label))
        asked: set[str] = set()

        def ask_and_note(setting: Setting) -> str | None:
            asked.add(setting.name)
            return ask_secret(setting)

        saved = plugins_lib.configure_plugin(app.pm, app.store, name, values, ask_and_note,
                                             dry_run=dry_run)
        kept = [s for s in secrets if saved.get(s.name) and not values.get(s.name)
                and s.name not in asked]
        if dry_run:
            given = sorted(k for k, v in values.items() if v is not None)
            click.echo(f"Would save {', '.join(given) or 'no setting'} for {name}; nothing "
                       "saved (a dry run asks for no secret).")
            return
        shown = {
            s.name: ("(kept)" if s in kept else "(set)" if saved.get(s.name) else "(not set)")
            if s.secret else saved.get(s.name, "(not set)")
            for s in record.settings
        }
        click.echo(f"Saved settings for {name}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
        for setting in kept:  # a stored secret is not asked for again: say how to replace it
            flag = "--" + setting.name.replace("_", "-")
            click.echo(f"The stored {_in_a_sentence(setting.label)} was kept; to replace it, set "
                       f"{setting_envvar(name, setting.name)} or give {flag}-file PATH.",
                       err=True)

    help_text = f"Configure the {record.title} connector."
    if secrets:
        names = ", ".join(_in_a_sentence(s.label) for s in secrets)
        help_text += (f" Secrets ({names}) are never taken from the command line, where `ps` and "
                      "the shell's history would show them: each is asked for with hidden input, "
                      "or read from its environment variable or a file.")
    params.append(click.Option(["--dry-run"], is_flag=True,
                               help="Check the values and say what would be saved; save nothing."))
    return Command(name, params=params, callback=configure, help=help_text)


class ConfigureGroup(Group):
    def _app(self, ctx: click.Context) -> App:
        return ctx.ensure_object(App)

    def list_commands(self, ctx):
        from psabridge.core import plugins as plugins_lib

        app = self._app(ctx)
        return [r.name for r in plugins_lib.list_plugins(app.pm) if r.kind in ("psa", "rmm")]

    def get_command(self, ctx, name):
        app = self._app(ctx)
        if app.pm.get_plugin(name) is None:
            return None
        return _configure_command(app, name)


@cli.group(cls=ConfigureGroup)
def configure():
    """Set a connector's settings (secrets from a hidden prompt, an environment variable or a file)."""


# -- mapping ----------------------------------------------------------------------------------


def _split_choice(text: str, what: str) -> tuple[str, str | None]:
    """KEY or KEY=CHOICE; KEY alone (None) takes the suggestion, so an empty choice after `=`
    is refused rather than read as one."""
    key, sep, value = (part.strip() for part in text.partition("="))
    if not key:
        raise click.UsageError(f"{text!r} names no {what}: give {what.upper()} or "
                               f"{what.upper()}=CHOICE")
    if sep and not value:
        raise click.UsageError(f"{text!r} has nothing after '=': give {key}=CHOICE, or {key} "
                               "alone to take its suggestion")
    return key, value or None


def _one_choice_each(pairs, what: str, names: dict | None = None) -> dict:
    """The choices by key; a key given twice with different choices is a usage error, not
    the last one silently winning."""
    def folded(value):
        return value.casefold() if isinstance(value, str) else value

    chosen: dict = {}
    for key, value in pairs:
        if key in chosen and folded(chosen[key]) != folded(value):
            def shown(v):
                return "its suggestion" if v is None else repr((names or {}).get(v, v))
            raise click.UsageError(f"{what} {key} is given twice, with different choices "
                                   f"({shown(chosen[key])} and {shown(value)}): give it once")
        chosen[key] = value
    return chosen


def _changing_mappings(bridge: Bridge, dry_run: bool = False):
    """Plan and apply under the mapping lease, so that two commands (or a command and a sync
    pass) never plan from the same state; a dry run changes nothing and needs none."""
    from psabridge.core import mapping

    return contextlib.nullcontext() if dry_run else mapping.mapping_lease(bridge)


def _plan_results(plan: mapping.Plan, outcome: mapping.Outcome | None) -> list[output.ChangeResult]:
    failed = {id(change): error for change, error in outcome.failed} if outcome else {}
    results = []
    for change in plan.changes:
        if outcome is None:
            result, error = output.PLANNED, None
        elif id(change) in failed:
            result, error = output.FAILED, failed[id(change)]
        else:
            result, error = output.DONE, None
        results.append(output.ChangeResult(change.action, change.subject, result, change.detail,
                                           dict(change.ids), error))
    for subject, why in plan.skipped:
        results.append(output.ChangeResult("skip", subject, output.SKIPPED, "",
                                           dict(plan.skipped_ids.get(subject, {})), why))
    return results


NOT_AUDITED = "not audited by the RMM yet (each can be mapped after its first audit)"


def _run_plan(bridge: Bridge, plan: mapping.Plan, dry_run: bool, as_json: bool = False,
              unchanged: list[output.ChangeResult] = ()) -> None:
    """Show a plan (dry run) or apply it, then report each change; exit 1 when a change failed
    or something asked for was left out."""
    from psabridge.core import mapping

    outcome = None
    if not dry_run:
        with output.progress("Applying", len(plan.changes)) as step:
            outcome = mapping.apply(bridge, plan, progress=lambda change: step())
    report = output.Report([*_plan_results(plan, outcome), *unchanged], dry_run, _left_out(plan))
    output.show_report(report, as_json)


def _left_out(plan: mapping.Plan) -> list[dict]:
    return [{"subject": subject, "ids": {"device_uid": uid}, "why": NOT_AUDITED}
            for subject, uid in plan.not_audited]


def _planning(what: str = "Planning"):
    return output.spinner(f"{what}: reading the PSA and the RMM")


@cli.group()
def companies():
    """Map PSA companies to RMM sites."""


mapping_view = click.option("--mapping", "view", type=click.Choice(["unmapped", "mapped", "all"]),
                            default="unmapped", show_default=True)


def _company_row(row: mapping.CompanyRow) -> dict:
    line = {"company_id": row.company.id, "company": row.company.name,
            "identifier": row.company.identifier, "type": row.company_type,
            "status": row.company.status, "mapped": row.mapping is not None}
    if row.mapping:
        return line | {"site_uid": row.mapping.site_uid, "site": row.mapping.site_name,
                       "site_url": row.site_url, "suggestion": None}
    suggestion = row.suggestion
    runner_up = suggestion.runner_up
    return line | {"site_uid": None, "site": None, "site_url": None, "suggestion": {
        "site_uid": suggestion.site_uid, "site": suggestion.site_name,
        "create_new": suggestion.site_uid is None, "score": round(suggestion.score, 1),
        "reason": suggestion.reason,
        "runner_up": None if runner_up is None else {
            "site_uid": runner_up.site_uid, "site": runner_up.site_name,
            "score": round(runner_up.score, 1)}}}


def _company_table_row(line: dict) -> dict:
    """One table row for mapped and unmapped companies alike: the site is the mapped one, or
    the suggestion."""
    suggestion = line["suggestion"] or {}
    runner_up = suggestion.get("runner_up")
    site = line["site"] if line["mapped"] else (
        ("Create New " if suggestion["create_new"] else "") + suggestion["site"])
    return {"company_id": line["company_id"], "company": line["company"],
            "mapped": line["mapped"], "site": site, "score": suggestion.get("score"),
            "reason": suggestion.get("reason", ""),
            "runner_up": f"{runner_up['site']} ({runner_up['score']:.0f})" if runner_up else "",
            "type": line["type"], "site_uid": line["site_uid"] or suggestion.get("site_uid"),
            "status": line["status"], "site_url": line["site_url"]}


@companies.command("load")
@mapping_view
@click.option("--type", "company_type", help="Only companies of this type.")
@click.option("--status", help="Only companies with this status.")
@click.option("--search", help="Only companies whose name or identifier contains this.")
@json_option
@pass_app
def companies_load(app: App, view, company_type, status, search, as_json):
    """List companies with the suggested site, why, and the runner-up; or their mapped site."""
    from psabridge.core import mapping
    from psabridge.core.models import CompanyFilters

    filters = CompanyFilters(type=company_type, status=status, search=search)
    with output.spinner("Reading companies from the PSA and sites from the RMM"):
        rows = [_company_row(row) for row in mapping.load_companies(app.bridge(), view, filters)]
    if as_json:
        output.emit_json(rows)
    else:
        shown = [_company_table_row(line) for line in rows]
        columns = [k for k in dict.fromkeys(k for row in shown for k in row) if k != "site_url"]
        output.table(shown, columns=columns, links={"site": "site_url"})


RUNNER_UP = "runner-up"
SKIP = "skip"


def _site_choice(bridge: Bridge, row: mapping.CompanyRow | None, choice: str | None,
                 sites: list[dict]) -> str | None:
    """A choice for one company as `plan_company_mappings` takes it: None (the suggestion),
    NEW, or a site uid (given by uid, id or name, or as `runner-up`)."""
    from psabridge.core import lookups, mapping

    if choice is None:
        return None
    if choice.casefold() == mapping.NEW:
        return mapping.NEW
    if choice.casefold() == RUNNER_UP:
        runner_up = row.suggestion.runner_up if row and row.suggestion else None
        if runner_up is None:
            name = row.company.name if row else "this company"
            raise click.ClickException(f"{name} has no runner-up site; name a site instead")
        return runner_up.site_uid
    return lookups.site_uid(bridge, choice, sites)


def _review(rows: list[mapping.CompanyRow], site_uid) -> dict[str, str | None]:
    """Ask, company by company, what to do with its suggestion; `site_uid` resolves a site's
    name or uid (an unknown one is asked again)."""
    from psabridge.core import lookups, mapping

    choices: dict[str, str | None] = {}
    for row in rows:
        suggestion = row.suggestion
        runner_up = suggestion.runner_up
        proposed = (f"site {suggestion.site_name!r} (score {suggestion.score:.0f})"
                    if suggestion.site_uid else f"Create New {suggestion.site_name!r}")
        click.echo(f"\n{row.company.name} ({row.company.id}): {proposed}; {suggestion.reason}",
                   err=True)
        options = "[a]ccept, [n]ew site, [s]kip, or a site's name or uid"
        if runner_up:
            click.echo(f"  runner-up: {runner_up.site_name!r} (score {runner_up.score:.0f})",
                       err=True)
            options = "[a]ccept, [r]unner-up, [n]ew site, [s]kip, or a site's name or uid"
        while True:
            answer = click.prompt(f"  {options}", default="a", err=True).strip()
            key = answer.casefold()
            if key in ("a", "accept"):
                choices[row.company.id] = None
            elif key in ("r", RUNNER_UP):
                if runner_up is None:
                    click.echo(f"  {row.company.name} has no runner-up site", err=True)
                    continue
                choices[row.company.id] = runner_up.site_uid
            elif key in ("n", mapping.NEW):
                choices[row.company.id] = mapping.NEW
            elif key not in ("s", SKIP):
                try:
                    choices[row.company.id] = site_uid(answer)
                except lookups.NotFound as exc:
                    click.echo(f"  {exc}", err=True)
                    continue
            break
    return choices


@companies.command("map")
@click.argument("choices", nargs=-1)
@click.option("--suggested", is_flag=True,
              help="Every unmapped company to its suggestion (except those named or --skip).")
@click.option("--review", is_flag=True,
              help="Ask company by company: accept, runner-up, new site, skip, or another site.")
@click.option("--skip", "skipped", multiple=True, metavar="COMPANY",
              help="Leave this company out of --suggested or --review (repeatable).")
@dry_run_option
@json_option
@pass_app
def companies_map(app: App, choices, suggested, review, skipped, dry_run, as_json):
    """Map companies: COMPANY (its suggestion), COMPANY=SITE, COMPANY=runner-up or COMPANY=new.

    COMPANY is an id, identifier or name; SITE a site's uid, id or name. With --suggested the
    companies not named take their suggestions."""
    from psabridge.core import lookups, mapping

    if not (choices or suggested or review):
        raise click.UsageError("name companies to map (COMPANY, COMPANY=SITE, COMPANY=runner-up "
                               "or COMPANY=new), or pass --suggested or --review")
    bridge = app.bridge()
    with _planning("Reading companies and sites"):
        psa_companies = lookups.companies(bridge)
        sites = lookups.sites(bridge)
        rows = {r.company.id: r for r in mapping.load_companies(bridge, "all")}
        named = {}
        for key, choice in (_split_choice(c, "company") for c in choices):
            company = lookups.company_id(bridge, key, psa_companies)
            named = _one_choice_each(
                [*named.items(), (company, _site_choice(bridge, rows.get(company), choice, sites))],
                "company", {s["uid"]: s["name"] for s in sites})
        left_out = {lookups.company_id(bridge, name, psa_companies) for name in skipped}
    if suggested or review:
        unmapped = [r for r in rows.values() if r.mapping is None
                    and r.company.id not in named and r.company.id not in left_out]
        extra = (_review(unmapped, lambda text: lookups.site_uid(bridge, text, sites)) if review
                 else {r.company.id: None for r in unmapped})
        named = {**extra, **named}
    wanted = named
    with _changing_mappings(bridge, dry_run):
        with _planning():
            plan = mapping.plan_company_mappings(bridge, wanted)
        planned = {c.ids.get("company_id") for c in plan.changes}
        unchanged = [output.ChangeResult("map company", f"{rows[c].company.name} ({c})",
                                         output.UNCHANGED, f"already mapped to site "
                                         f"{rows[c].mapping.site_name}",
                                         {"company_id": c, "site_uid": rows[c].mapping.site_uid})
                     for c in wanted if c not in planned and c in rows and rows[c].mapping]
        _run_plan(bridge, plan, dry_run, as_json, unchanged)


def _mapped_company_id(bridge: Bridge, text: str, mapped: list, psa_companies: list[dict]) -> str:
    """A company to unmap: among the mapped ones (even if the PSA no longer lists it), else
    among the PSA's companies."""
    from psabridge.core import lookups

    try:
        return lookups.resolve("mapped company", text,
                               [(m.company_id, m.company_name) for m in mapped],
                               "`psabridge companies load --mapping mapped`", where="psabridge")
    except lookups.Ambiguous:
        raise
    except lookups.NotFound:
        return lookups.company_id(bridge, text, psa_companies)


@companies.command("unmap")
@click.argument("companies_given", metavar="COMPANY...", nargs=-1, required=True)
@dry_run_option
@json_option
@pass_app
def companies_unmap(app: App, companies_given, dry_run, as_json):
    """Remove company-site mappings (devices keep their configurations); by id or name."""
    from psabridge.core import lookups, mapping

    bridge = app.bridge()
    mapped = bridge.store.company_mappings(*bridge.pair)
    psa_companies: list[dict] = []
    ids = []
    for text in companies_given:
        if not psa_companies and text not in {m.company_id for m in mapped}:
            psa_companies = lookups.companies(bridge)
        ids.append(_mapped_company_id(bridge, text, mapped, psa_companies))
    with _changing_mappings(bridge, dry_run):
        plan = mapping.plan_company_unmaps(bridge, ids)
        planned = {c.ids["company_id"] for c in plan.changes}
        unchanged = [output.ChangeResult("unmap company", company_id, output.UNCHANGED,
                                         "not mapped", {"company_id": company_id, "site_uid": None})
                     for company_id in dict.fromkeys(ids) if company_id not in planned]
        _run_plan(bridge, plan, dry_run, as_json, unchanged)


@cli.group("device-types")
def device_types():
    """Map RMM device types to PSA configuration types (used for new configurations only)."""


@device_types.command("list")
@json_option
@pass_app
def device_types_list(app: App, as_json):
    """Each device type with its mapped or suggested configuration type."""
    from psabridge.core import mapping

    rows = []
    with output.spinner("Reading device types and configuration types"):
        loaded = mapping.load_device_types(app.bridge())
    for row in loaded:
        chosen = row.configuration_type
        rows.append({
            "device_type": row.device_type,
            "configuration_type_id": chosen.id if chosen else None,
            "configuration_type": chosen.name if chosen else None,
            "mapped": row.mapped,
            "score": None if row.score is None else round(row.score, 1),
            "can_create": chosen is not None and not row.flagged,
            "warning": chosen.unusable if row.flagged
            else None if chosen else "no configuration type is similar enough: name one",
        })
    _print_table(rows, as_json)


@device_types.command("map")
@click.argument("choices", nargs=-1)
@click.option("--suggested", is_flag=True, help="Map every unmapped device type to its suggestion.")
@dry_run_option
@json_option
@pass_app
def device_types_map(app: App, choices, suggested, dry_run, as_json):
    """Map device types: TYPE (its suggestion) or TYPE=CONFIGURATION_TYPE (id or name)."""
    from psabridge.core import lookups, mapping

    pairs = [_split_choice(c, "device type") for c in choices]
    if not (pairs or suggested):
        raise click.UsageError("name device types to map (TYPE or TYPE=CONFIG_TYPE) or pass --suggested")
    bridge = app.bridge()
    with _changing_mappings(bridge, dry_run):
        with _planning():
            loaded = mapping.load_device_types(bridge)
            known = [r.device_type for r in loaded]
            chosen = _one_choice_each([(lookups.device_type(bridge, key, known), value)
                                       for key, value in pairs], "device type")
            if suggested:
                chosen = {**{r.device_type: None for r in loaded
                             if not r.mapped and r.configuration_type}, **chosen}
            plan = mapping.plan_device_type_mappings(bridge, chosen)
        planned = {c.subject for c in plan.changes}
        current = {r.device_type: r.configuration_type for r in loaded if r.mapped}
        unchanged = [output.ChangeResult(
            "map device type", t, output.UNCHANGED,
            f"already mapped to configuration type {current[t].name}" if t in current
            else "already mapped",
            {"device_type": t, "configuration_type_id": current[t].id if t in current else None})
            for t in chosen if t not in planned]
        _run_plan(bridge, plan, dry_run, as_json, unchanged)


@cli.group()
def devices():
    """Map RMM devices to PSA configurations."""


@devices.command("load")
@mapping_view
@json_option
@pass_app
def devices_load(app: App, view, as_json):
    """List devices with the proposed configuration and why, or their mapping."""
    from psabridge.core import mapping

    rows = []
    with output.spinner("Reading devices and proposing configurations"):
        loaded = mapping.load_devices(app.bridge(), view)
    for row in loaded:
        match = row.match
        proposed = match.configuration if match else None
        rows.append({
            "device_uid": row.device.uid, "hostname": row.device.hostname,
            "device_type": row.device.device_type, "company_id": row.company_id,
            "company": row.company_name, "state": row.state,
            "configuration_id": (row.mapping.configuration_id if row.mapping else
                                 proposed.id if proposed else None),
            "configuration": (row.configuration_name if row.mapping else
                              proposed.name if proposed else None),
            "create_new": None if row.mapping or not match else proposed is None,
            "new_name": match.create_name if match and proposed is None else None,
            "step": match.step if match else None,
            "reason": (match.reason or None) if match else None,
            "problem": row.problem or None,
        })
    if as_json:
        output.emit_json(rows)
        return
    # The hostname names the device (DEVICE takes it): the uid, long, comes last, so that a
    # narrow terminal leaves it out (and says so) before the reasons.
    output.table([{"hostname": r["hostname"], "type": r["device_type"], "company": r["company"],
                   "state": r["state"],
                   "configuration": r["configuration_id"] or (
                       f"new [{r['new_name']}]" if r["new_name"] else ""),
                   "step": r["step"], "reason": r["reason"] or r["problem"],
                   "device_uid": r["device_uid"]} for r in rows])


def _device_choices(bridge: Bridge, choices: tuple[str, ...]) -> dict[str, str | None]:
    """DEVICE[=CONFIGURATION] choices with devices by uid, id or hostname, and configurations
    by id or name among the configurations of the device's company."""
    from psabridge.core import lookups, mapping

    rmm_devices = lookups.devices(bridge)
    by_uid = {d["uid"]: d for d in rmm_devices}
    companies_of_sites = {m.site_uid: m.company_id
                          for m in bridge.store.company_mappings(*bridge.pair)}
    wanted: dict[str, str | None] = {}
    for key, value in (_split_choice(c, "device") for c in choices):
        uid = lookups.device_uid(bridge, key, rmm_devices)
        company = companies_of_sites.get(by_uid[uid]["site_uid"])
        if value and value.casefold() == mapping.NEW:
            value = mapping.NEW
        elif value and company:
            value = lookups.configuration_id(bridge, value, company)
        wanted = _one_choice_each([*wanted.items(), (uid, value)], "device")
    return wanted


@devices.command("map")
@click.argument("choices", nargs=-1)
@click.option("--all", "map_all", is_flag=True, help="Map every unmapped audited device by its proposal.")
@dry_run_option
@json_option
@pass_app
def devices_map(app: App, choices, map_all, dry_run, as_json):
    """Map devices: DEVICE (its proposal), DEVICE=CONFIGURATION (your choice) or DEVICE=new.

    DEVICE is a uid, id or hostname; CONFIGURATION an id or name."""
    from psabridge.core import mapping

    bridge = app.bridge()
    if not (map_all or choices):
        raise click.UsageError("name devices to map (DEVICE, DEVICE=CONFIGURATION or DEVICE=new) "
                               "or pass --all")
    with _changing_mappings(bridge, dry_run):
        if map_all and not dry_run:  # planned and applied side by side, a group at a time
            with _planning("Mapping"):
                plan, outcome = mapping.map_automatically(bridge)
            output.show_report(output.Report(_plan_results(plan, outcome), dry_run,
                                             _left_out(plan)), as_json)
            return
        with _planning():
            if map_all:
                plan = mapping.plan_automatic_mapping(bridge)
                wanted = {}
            else:
                wanted = _device_choices(bridge, choices)
                plan = mapping.plan_device_mappings(bridge, wanted)
        touched = ({c.ids.get("device_uid") for c in plan.changes}
                   | {ids.get("device_uid") for ids in plan.skipped_ids.values()})
        mapped = {m.device_uid: m.configuration_id
                  for m in bridge.store.device_mappings(*bridge.pair)}
        unchanged = [output.ChangeResult("map device", uid, output.UNCHANGED,
                                         f"already mapped to configuration {mapped.get(uid)}",
                                         {"device_uid": uid, "configuration_id": mapped.get(uid)})
                     for uid in wanted if uid not in touched]
        _run_plan(bridge, plan, dry_run, as_json, unchanged)


@devices.command("unmap")
@click.argument("devices_given", metavar="DEVICE...", nargs=-1, required=True)
@dry_run_option
@json_option
@pass_app
def devices_unmap(app: App, devices_given, dry_run, as_json):
    """Unmap devices (by uid, id or hostname); their configurations stay Active."""
    from psabridge.core import lookups, mapping

    bridge = app.bridge()
    mapped = {m.device_uid for m in bridge.store.device_mappings(*bridge.pair)}
    try:
        with _asking("the RMM's devices"):
            rmm_devices = lookups.devices(bridge)
    except PsabridgeError:
        if not set(devices_given) <= mapped:
            raise
        rmm_devices = []  # uids of mapped devices need no RMM; only their hostnames are missed
    uids = []
    for text in devices_given:
        if text in mapped:  # also a device the RMM no longer lists
            uids.append(text)
            continue
        uids.append(lookups.device_uid(bridge, text, rmm_devices))
    hostnames = {d["uid"]: d["hostname"] for d in rmm_devices}
    with _changing_mappings(bridge, dry_run):
        plan = mapping.unmap_devices(bridge, uids, hostnames)
        planned = {c.ids["device_uid"] for c in plan.changes}
        unchanged = [output.ChangeResult("unmap device", mapping.device_subject(uid, hostnames),
                                         output.UNCHANGED, "not mapped",
                                         {"device_uid": uid, "configuration_id": None})
                     for uid in dict.fromkeys(uids) if uid not in planned]
        _run_plan(bridge, plan, dry_run, as_json, unchanged)


@devices.command("auto")
@click.argument("state", type=click.Choice(["on", "off"]), required=False)
@dry_run_option
@json_option
@pass_app
def devices_auto(app: App, state, dry_run, as_json):
    """Turn automatic mapping on or off (off by default); without ON|OFF, show whether it is on."""
    bridge = app.bridge()
    current = bool(bridge.option("auto_map"))
    if state is None:
        if as_json:
            output.emit_json({"auto_map": current})
        else:
            click.echo(f"Automatic mapping is {'on' if current else 'off'}.")
        return
    wanted = state == "on"
    if wanted == current:
        report = output.Report([output.ChangeResult(
            "set automatic mapping", "automatic mapping", output.UNCHANGED, f"already {state}",
            {"auto_map": wanted})], dry_run)
    else:
        if not dry_run:
            bridge.set_option("auto_map", wanted)
        report = _changes("set automatic mapping", "automatic mapping", dry_run, state,
                          auto_map=wanted)
    output.show_report(report, as_json, done_text=f"Automatic mapping is {state}.")


@devices.command("map-now")
@dry_run_option
@json_option
@pass_app
def devices_map_now(app: App, dry_run, as_json):
    """Run automatic mapping now (needs automatic mapping on)."""
    from psabridge.core import mapping

    bridge = app.bridge()
    with _changing_mappings(bridge, dry_run):
        with _planning():
            plan = mapping.map_now(bridge)
        _run_plan(bridge, plan, dry_run, as_json)


@cli.group()
def warnings():
    """Problems that stopped a creation."""


@warnings.command("list")
@click.option("--plugin", help="Only this plugin's warnings.")
@json_option
@pass_app
def warnings_list(app: App, plugin, as_json):
    """Warnings: what could not be done, for which subject, since when."""
    rows = [{"warning_id": str(w.id), "plugin": w.plugin, "subject": w.subject, "message": w.message,
             "created_at": w.created_at.isoformat() if w.created_at else None}
            for w in app.store.warnings(plugin)]
    _print_table(rows, as_json)


@warnings.command("clear")
@click.option("--plugin", help="Only this plugin's warnings.")
@dry_run_option
@json_option
@pass_app
def warnings_clear(app: App, plugin, dry_run, as_json):
    """Remove warnings; devices they held back are tried again by automatic mapping."""
    from psabridge.core import plugins as plugins_lib

    if plugin:
        plugins_lib.plugin_record(app.pm, plugin)  # a misspelt name clears nothing: say so
    present = app.store.warnings(plugin)
    cleared = len(present) if dry_run else app.store.clear_warnings(plugin)
    result = output.PLANNED if dry_run else output.DONE
    report = output.Report([output.ChangeResult("clear warning", w.subject, result, w.message,
                                                {"warning_id": str(w.id), "plugin": w.plugin})
                            for w in present], dry_run)
    output.show_report(report, as_json, done_text=f"Cleared {cleared} warnings.")


# -- the store itself ------------------------------------------------------------------------


@cli.group("store")
def store_group():
    """The state store itself: move it between engines (SQLite, PostgreSQL)."""


@store_group.command("copy")
@click.argument("source", metavar="SRC")
@click.argument("destination", metavar="DST")
@click.option("--replace", is_flag=True,
              help="DST may hold rows: replace them with SRC's (else a non-empty DST is refused).")
@dry_run_option
@json_option
@pass_app
def store_copy(app: App, source: str, destination: str, replace: bool, dry_run: bool,
               as_json: bool):
    """Copy every table of the store SRC into DST (a SQLite path or a store URL), secrets
    included, and check the row counts of each table. Stop psabridge's workers first.

    A dry run counts SRC's rows per table and checks DST, writing nothing (a DST file that
    does not exist yet is not created)."""
    from psabridge.core.errors import StoreError
    from psabridge.core.store import masked_url, open_store, store_url
    from psabridge.core.store_copy import copy_store, planned_copy

    urls = [store_url(source), store_url(destination)]
    if urls[0] == urls[1]:
        raise click.UsageError("SRC and DST are the same store")
    with contextlib.ExitStack() as stack:
        stores = []
        for label, url in zip(("SRC", "DST"), urls, strict=True):
            path = Path(url.removeprefix("sqlite://")) if url.startswith("sqlite://") else None
            if dry_run and label == "DST" and path and not path.exists() and path.parent.is_dir():
                stores.append(None)  # it would be created, empty: a dry run leaves it uncreated
                continue
            try:
                opened = open_store(app.pm, url)
            except StoreError as exc:  # the store's own words say --db: name the argument
                raise StoreError(str(exc).replace("--db (or PSABRIDGE_DB)", label)
                                 .replace("--db ", f"{label} ")) from None
            stack.callback(opened.close)
            stores.append(opened)
        names = [masked_url(url) for url in urls]
        if dry_run:
            report = planned_copy(*stores, *names, replace=replace)
        else:
            report = copy_store(*stores, *names, replace=replace)
    if as_json:
        output.emit_json({"source": report.source, "destination": report.destination,
                          "replaced": report.replaced, "total_rows": report.total,
                          "tables": [{"table": t, "rows": n} for t, n in report.rows.items()],
                          "dry_run": dry_run})
    else:
        counts = ", ".join(f"{t} {n}" for t, n in report.rows.items() if n) or "no rows"
        if dry_run:
            click.echo(f"Would copy {report.total} rows from {report.source} to "
                       f"{report.destination} ({counts})"
                       + ("; its rows would be replaced" if report.replaced else "")
                       + "; nothing written (dry run).")
        else:
            click.echo(f"Copied {report.total} rows from {report.source} to {report.destination} "
                       f"({counts}); every table's count checked.")


# -- look-ups: the ids the other commands ask for -------------------------------------------


def _print_lookup(rows: list[dict], as_json: bool, columns: list[str] | None = None) -> None:
    """A look-up's rows; the table shows `columns` first (the most useful), then the rest."""
    if as_json or not rows:
        _print_table(rows, as_json)
        return
    first = columns or []
    output.table(rows, columns=[*first, *(k for k in rows[0] if k not in first)])


def _asking(what: str):
    return output.spinner(f"Reading {what}")


within_option = click.option(
    "--within", metavar="ID_OR_NAME",
    help="Only those of this choice of the scoping field (a board, an issue type...).")


@cli.group("psa")
def psa_group():
    """Look up the PSA's ids: ticket fields, statuses, priorities, sources, companies..."""


@psa_group.command("routing")
@json_option
@pass_app
def psa_routing(app: App, as_json):
    """The PSA's ticket routing fields (for --route FIELD=... of `ticketing set`)."""
    from psabridge.core import lookups

    with _asking("the PSA's ticket options"):
        rows = lookups.routing_fields(app.bridge())
    _print_lookup(rows, as_json)


@psa_group.command("choices")
@click.argument("field")
@within_option
@json_option
@pass_app
def psa_choices(app: App, field, within, as_json):
    """The choices of one routing field (`psa routing` names them), and whether tickets can be
    created with each (and why not)."""
    from psabridge.core import lookups

    with _asking("the PSA's ticket options"):
        rows = lookups.routing_choices(app.bridge(), field, within)
    _print_lookup(rows, as_json, ["id", "name", "scope", "default", "usable", "why"])


@psa_group.command("statuses")
@within_option
@click.option("--board", "board", hidden=True, help="Same as --within.")
@json_option
@pass_app
def psa_statuses(app: App, within, board, as_json):
    """Ticket statuses (for --open-status and --closed-status of `ticketing set`)."""
    from psabridge.core import lookups

    with _asking("the PSA's ticket statuses"):
        rows = lookups.statuses(app.bridge(), within or board)
    _print_lookup(rows, as_json, ["id", "name", "scope", "closed", "default"])


@psa_group.command("priorities")
@json_option
@pass_app
def psa_priorities(app: App, as_json):
    """Ticket priorities (for --priority RMM=PSA_PRIORITY of `ticketing set`)."""
    from psabridge.core import lookups

    with _asking("the PSA's priorities"):
        rows = lookups.priorities(app.bridge())
    _print_lookup(rows, as_json)


@psa_group.command("sources")
@json_option
@pass_app
def psa_sources(app: App, as_json):
    """Ticket sources (for --source of `ticketing set`)."""
    from psabridge.core import lookups

    with _asking("the PSA's ticket sources"):
        rows = lookups.sources(app.bridge())
    _print_lookup(rows, as_json)


@psa_group.command("companies")
@click.option("--search", help="Only companies whose name contains this.")
@json_option
@pass_app
def psa_companies(app: App, search, as_json):
    """Companies, of every type and status (for `companies map`)."""
    from psabridge.core import lookups

    with _asking("the PSA's companies"):
        rows = lookups.companies(app.bridge(), search)
    _print_lookup(rows, as_json)


@psa_group.command("configurations")
@click.option("--company", required=True, metavar="COMPANY",
              help="The company: its id, identifier or name.")
@json_option
@pass_app
def psa_configurations(app: App, company, as_json):
    """A company's configurations (for `devices map DEVICE=CONFIGURATION`)."""
    from psabridge.core import lookups

    bridge = app.bridge()
    with _asking("the company's configurations"):
        rows = lookups.configurations(bridge, lookups.company_id(bridge, company))
    _print_lookup(rows, as_json)


@cli.group("rmm")
def rmm_group():
    """Look up the RMM's ids: sites, devices, monitors."""


@rmm_group.command("sites")
@json_option
@pass_app
def rmm_sites(app: App, as_json):
    """Sites (for `companies map COMPANY=SITE`)."""
    from psabridge.core import lookups

    with _asking("the RMM's sites"):
        rows = lookups.sites(app.bridge())
    if as_json or not rows:
        _print_table(rows, as_json)
        return
    output.table(rows, columns=["uid", "name", "system", "id"], links={"name": "url"})


@rmm_group.command("devices")
@click.option("--site", metavar="SITE", help="Only the devices of this site (its uid, id or name).")
@json_option
@pass_app
def rmm_devices(app: App, site, as_json):
    """Devices (for `devices map` and `tickets create`)."""
    from psabridge.core import lookups

    bridge = app.bridge()
    with _asking("the RMM's devices"):
        rows = lookups.devices(bridge, lookups.site_uid(bridge, site) if site else None)
    _print_lookup(rows, as_json)


@rmm_group.command("monitors")
@json_option
@pass_app
def rmm_monitors(app: App, as_json):
    """Monitors with open alerts now (names for `ticketing monitor`)."""
    from psabridge.core import lookups

    with _asking("the RMM's open alerts"):
        rows = lookups.monitors(app.bridge())
    _print_lookup(rows, as_json, ["monitor", "open_alerts", "devices", "creates_ticket"])


# -- tickets and the running integration ------------------------------------------------------


@cli.group("ticketing")
def ticketing_group():
    """Ticket settings: enable, source, priorities, attributes per origin, monitors, repeats."""


def _ticket_settings_json(settings: ticketing.TicketSettings,
                          problems: list[ticketing.Problem]) -> dict:
    def attributes(a: ticketing.TicketAttributes | None) -> dict | None:
        return None if a is None else attrs.asdict(a)

    return {
        "enabled": settings.enabled,
        "enabled_at": settings.enabled_at.isoformat() if settings.enabled_at else None,
        "source_id": settings.source_id,
        "repeat_minutes": settings.repeat_minutes,
        "priorities": [{"rmm_priority": k, "psa_priority_id": v}
                       for k, v in sorted(settings.priorities.items())],
        "attributes": [{"origin": origin, **attributes(a)}
                       for origin, a in sorted(settings.attributes.items())],
        "monitors": [{"monitor": m, "create_tickets": o.create_tickets,
                      "attributes": attributes(o.attributes)}
                     for m, o in sorted(settings.monitors.items())],
        "problems": [{"severity": p.severity, "message": p.message} for p in problems],
    }


def _ticket_settings_rows(shown: dict, names: dict[str, dict[str, str]]) -> list[dict]:
    """The table of `ticketing show`; `names` maps each kind of id (a routing field's name,
    "status", "priority", "source") to the PSA's names of its ids."""
    def named(kind: str, value: str | None) -> str:
        if value is None:
            return ""
        name = names.get(kind, {}).get(value)
        return f"{name} ({value})" if name else f"{value} (unknown to the PSA)"

    rows = [{"setting": "enabled", "value": "yes" if shown["enabled"] else "no"},
            {"setting": "source", "value": named("source", shown["source_id"])},
            {"setting": "repeat window (minutes)", "value": shown["repeat_minutes"] or "off"}]
    rows += [{"setting": f"priority {p['rmm_priority']}",
              "value": named("priority", p["psa_priority_id"])} for p in shown["priorities"]]
    for a in shown["attributes"]:
        values = [f"{field}={named(field, value)}" for field, value in a["routing"].items()]
        values += [f"{label}={named('status', a[key])}" for label, key in (
            ("open", "open_status_id"), ("closed", "closed_status_id")) if a[key]]
        rows.append({"setting": f"origin {a['origin']}", "value": ", ".join(values)})
    rows += [{"setting": f"monitor {m['monitor']}",
              "value": f"tickets {'on' if m['create_tickets'] else 'off'}"}
             for m in shown["monitors"]]
    return rows


def _option_names(options) -> dict[str, dict[str, str]]:
    """The PSA's names of its ids, kind by kind: ids of different kinds may be the same number
    (Autotask's priority 4 and source 4), so each kind is looked up in its own list."""
    kinds = {f.name: f.choices for f in options.routing}
    kinds.update(status=options.statuses, priority=options.priorities, source=options.sources)
    return {kind: {item.id: item.name for item in items} for kind, items in kinds.items()}


@ticketing_group.command("show")
@json_option
@pass_app
def ticketing_show(app: App, as_json):
    """Show whether ticketing is on, the ticket settings, and check them against the PSA."""
    from psabridge.core import ticketing

    bridge = app.bridge()
    settings = ticketing.ticket_settings(bridge)
    with _asking("the PSA's ticket options"):
        options = bridge.psa.ticket_options()
    problems = ticketing.check_ticket_settings(bridge, settings, options)
    shown = _ticket_settings_json(settings, problems)
    if as_json:
        output.emit_json(shown)
        return
    output.table(_ticket_settings_rows(shown, _option_names(options)))
    for problem in problems:
        output.warn(f"{problem.severity.capitalize()}: {problem.message}")


REPEAT_MINUTES_MAX = 7 * 24 * 60


def _priority_pair(text: str) -> tuple[str, str]:
    rmm_priority, _, psa_priority = text.partition("=")
    if not rmm_priority.strip() or not psa_priority.strip():
        raise click.BadParameter(f"{text!r} is not RMM=PSA_PRIORITY, e.g. Critical=1",
                                 param_hint="--priority")
    return rmm_priority.strip(), psa_priority.strip()


def _setting_words(key: str, value) -> str:
    """A setting's value as the change's detail says it: no Python spellings."""
    if key == "repeat_minutes":
        return f"{value} minutes" if value else "off"
    if key == "create_tickets":
        return "tickets on" if value else "tickets off"
    if value is None:
        return "not set"
    if isinstance(value, dict):
        flat = {**value.get("routing", {}), **{k: v for k, v in value.items() if k != "routing"}}
        return ", ".join(f"{k.removesuffix('_id').replace('_', ' ')} {v}"
                         for k, v in flat.items() if v is not None) or "none"
    return str(value)


def _setting_detail(item: dict, label: str) -> str:
    parts = []
    for key, value in item.items():
        if key == label or (value is None and key != "create_tickets"):
            continue
        if key == "create_tickets":
            parts.append(_setting_words(key, value))
        elif key == "attributes":
            parts.append(f"attributes: {_setting_words(key, value)}")
        elif key == "routing":
            parts += [f"{field} {choice}" for field, choice in value.items()]
        else:
            name = key.removesuffix("_id").replace("_", " ").replace("psa ", "PSA ")
            parts.append(f"{name} {value}")
    return ", ".join(parts)


SETTING_GROUPS = (("priorities", "rmm_priority", "priority"), ("attributes", "origin", "origin"),
                  ("monitors", "monitor", "monitor"))


def _setting_changes(before: ticketing.TicketSettings, after: ticketing.TicketSettings,
                     dry_run: bool) -> list[output.ChangeResult]:
    """One change per setting that differs, with the new value's ids."""
    result = output.PLANNED if dry_run else output.DONE
    old, new = (_ticket_settings_json(s, []) for s in (before, after))
    changes = []
    for key in ("source_id", "repeat_minutes"):
        if old[key] != new[key]:
            detail = f"{_setting_words(key, old[key])} -> {_setting_words(key, new[key])}"
            changes.append(output.ChangeResult("set", key.removesuffix("_id"), result, detail,
                                               {key: new[key]}))
    for group, label, noun in SETTING_GROUPS:
        was = {item[label]: item for item in old[group]}
        for item in new[group]:
            if was.get(item[label]) != item:
                ids = {k: v for k, v in item.items() if k.endswith("_id")}
                ids.update({f"{field}_id": v for field, v in item.get("routing", {}).items()})
                changes.append(output.ChangeResult("set", f"{noun} {item[label]}", result,
                                                   _setting_detail(item, label),
                                                   {label: item[label], **ids}))
    return changes


def _save_settings(bridge: Bridge, before: ticketing.TicketSettings,
                   after: ticketing.TicketSettings, dry_run: bool, as_json: bool,
                   options=None, done_text: str | None = None) -> None:
    """Check the new settings against the PSA and save them, unless that would add an error
    (then nothing is saved and the command exits 1)."""
    from psabridge.core import ticketing

    with _asking("the PSA's ticket options"):
        options = options or bridge.psa.ticket_options()
    changes = _setting_changes(before, after, dry_run)
    problems = ticketing.change_ticket_settings(bridge, after, options,
                                                dry_run=dry_run or not changes)
    if not as_json:
        for problem in problems:
            output.warn(f"{problem.severity.capitalize()}: {problem.message}")
    if not changes:
        changes = [output.ChangeResult("set", "ticket settings", output.UNCHANGED,
                                       "already as asked")]
    output.show_report(output.Report(changes, dry_run), as_json, done_text=done_text)


def _route_pair(text: str) -> tuple[str, str]:
    field, equals, value = text.partition("=")
    if not field.strip() or not equals:
        raise click.BadParameter(f"{text!r} is not FIELD=NAME_OR_ID, e.g. board=\"Help Desk\", "
                                 "or FIELD= to unset it (`psabridge psa routing` lists the fields)",
                                 param_hint="--route")
    return field.strip(), value.strip()


@ticketing_group.command("set")
@click.option("--source", help="PSA ticket source, id or name (for tickets created afterwards).")
@click.option("--priority", "priorities", multiple=True, metavar="RMM=PSA_PRIORITY",
              callback=lambda ctx, param, values: [_priority_pair(v) for v in values],
              help="Map an RMM priority (one of the RMM's own, case aside) to a PSA priority "
                   "(id or name), e.g. Critical=1 (repeatable).")
@click.option("--origin", type=click.Choice(["alert", "manual"]),  # ticketing.ORIGINS
              help="Which origin's attributes to set.")
@click.option("--route", "routes", multiple=True, metavar="FIELD=NAME_OR_ID",
              callback=lambda ctx, param, values: [_route_pair(v) for v in values],
              help="Set a routing field of the PSA for --origin, by the choice's id or name; "
                   "FIELD= (nothing after =) unsets it, leaving it to the PSA's default "
                   "(repeatable; `psabridge psa routing` lists the fields, `psabridge psa "
                   "choices FIELD` their choices).")
@click.option("--board", help="Same as --route board=BOARD.")
@click.option("--type", "type_id", help="Same as --route type=TYPE.")
@click.option("--subtype", help="Same as --route subtype=SUBTYPE.")
@click.option("--open-status", help="Open status for --origin: id or name.")
@click.option("--closed-status", help="Closed status for --origin: id or name.")
@click.option("--repeat-minutes", type=click.IntRange(min=0, max=REPEAT_MINUTES_MAX),
              help="Repeating-alert window in minutes, at most a week (0 turns detection off).")
@dry_run_option
@json_option
@pass_app
def ticketing_set(app: App, source, priorities, origin, routes, board, type_id, subtype,
                  open_status, closed_status, repeat_minutes, dry_run, as_json):
    """Change ticket settings; what is not given stays as it is.

    Every value is checked against the PSA first: an unknown one, or settings that would not
    work (a choice that cannot take tickets, an open status that is closed...), save nothing
    and exit 1."""
    from psabridge.core import lookups, ticketing

    for flag, value in (("--source", source), ("--board", board), ("--type", type_id),
                        ("--subtype", subtype), ("--open-status", open_status),
                        ("--closed-status", closed_status)):
        if value is not None and not value.strip():
            raise click.UsageError(f"{flag} is empty: give an id or a name (the `psabridge psa` "
                                   f"commands list them), or leave {flag} out to keep it as it is")
    asked = list(routes) + [(field, value) for field, value in (
        ("board", board), ("type", type_id), ("subtype", subtype)) if value]
    if (asked or open_status or closed_status) and not origin:
        raise click.UsageError("--route/--board/--type/--subtype/--*-status need --origin "
                               "alert|manual")
    bridge = app.bridge()
    before = ticketing.ticket_settings(bridge)
    with _asking("the PSA's ticket options"):
        options = bridge.psa.ticket_options()
    changes: dict = {}
    if source:
        changes["source_id"] = lookups.source_id(bridge, source, options)
    if priorities:
        wanted: dict[str, str] = {}
        for rmm, psa in priorities:
            name, psa_id = lookups.rmm_priority(bridge, rmm), lookups.priority_id(bridge, psa,
                                                                                  options)
            if wanted.get(name, psa_id) != psa_id:
                raise click.UsageError(f"--priority maps the RMM priority {name} twice, to PSA "
                                       f"priorities {wanted[name]} and {psa_id}: give it once")
            wanted[name] = psa_id
        renamed = {n.casefold() for n in wanted}  # an earlier spelling of the same priority
        changes["priorities"] = {**{k: v for k, v in before.priorities.items()
                                    if k.casefold() not in renamed}, **wanted}
    if repeat_minutes is not None:
        changes["repeat_minutes"] = repeat_minutes or None
    if asked or open_status or closed_status:
        current = before.attributes.get(origin, ticketing.TicketAttributes())
        changes["attributes"] = {**before.attributes, origin: _routed(
            bridge, options, current, asked, open_status, closed_status)}
    _save_settings(bridge, before, attrs.evolve(before, **changes), dry_run, as_json, options)


def _routed(bridge: Bridge, options, current: ticketing.TicketAttributes,
            asked: list[tuple[str, str]], open_status: str | None,
            closed_status: str | None) -> ticketing.TicketAttributes:
    """`current` with the routing choices and statuses asked for, each resolved by id or name
    within the scope chosen (now or before): scoping fields first, as the PSA declares them."""
    from psabridge.core import lookups

    fields: dict[str, str] = {}
    for field, value in asked:
        name = lookups.routing_field(options, field).name
        if fields.get(name, value) != value:
            raise click.UsageError(f"--route sets {name} twice ({fields[name]!r} and {value!r}): "
                                   "give it once")
        fields[name] = value
    routing = dict(current.routing)
    for declared in options.routing:
        if fields.get(declared.name) == "":  # FIELD=: unset, the PSA's default applies
            routing.pop(declared.name, None)
        elif declared.name in fields:
            routing[declared.name] = lookups.route_id(bridge, declared.name,
                                                      fields[declared.name], routing, options)
    scope = routing.get(options.status_scope) if options.status_scope else None
    if (open_status or closed_status) and options.status_scope and not scope:
        field = options.field(options.status_scope)
        raise click.UsageError(f"statuses belong to a {field.label.lower() if field else 'scope'}"
                               f": set one first with --route {options.status_scope}=...")
    statuses = {key: lookups.status_id(bridge, text, scope, options)
                for key, text in (("open_status_id", open_status),
                                  ("closed_status_id", closed_status)) if text}
    return attrs.evolve(current, routing=routing, **statuses)


@ticketing_group.command("monitor")
@click.argument("monitor")
@click.option("--tickets/--no-tickets", default=True, help="Whether this monitor creates tickets.")
@dry_run_option
@json_option
@pass_app
def ticketing_monitor(app: App, monitor, tickets, dry_run, as_json):
    """Override ticket creation for one monitor (`psabridge rmm monitors` lists them)."""
    from psabridge.core import lookups, ticketing

    if not monitor.strip():
        raise click.UsageError("MONITOR is empty: give a monitor's name (`psabridge rmm "
                               "monitors` lists those raising alerts now)")
    bridge = app.bridge()
    before = ticketing.ticket_settings(bridge)
    with _asking("the RMM's open alerts"):
        monitor, seen = lookups.monitor_name(bridge, monitor, before.monitors)
    if not seen:
        output.warn(f"Note: no open alert names the monitor {monitor!r} now, so it cannot be "
                    "checked; it is saved as given (`psabridge rmm monitors` lists the monitors "
                    "raising alerts)")
    current = before.monitors.get(monitor, ticketing.MonitorOverride())
    override = attrs.evolve(current, create_tickets=tickets)
    after = attrs.evolve(before, monitors={**before.monitors, monitor: override})
    _save_settings(bridge, before, after, dry_run, as_json,
                   done_text=f"Monitor {monitor}: tickets {'on' if tickets else 'off'}.")


def _set_ticketing(app: App, enabled: bool, dry_run: bool, as_json: bool, done_text: str) -> None:
    from psabridge.core import ticketing

    bridge = app.bridge()
    settings = ticketing.ticket_settings(bridge)
    state = "on" if enabled else "off"
    if enabled:
        ticketing.check_can_enable(bridge, settings)
    if settings.enabled == enabled:
        report = output.Report([output.ChangeResult(
            "set ticketing", "ticketing", output.UNCHANGED, f"already {state}",
            {"enabled": enabled})], dry_run)
    else:
        if not dry_run:
            with output.spinner("Recording the alerts open now"):
                ticketing.set_ticketing_enabled(bridge, enabled)
        report = _changes("set ticketing", "ticketing", dry_run, state, enabled=enabled)
    output.show_report(report, as_json, done_text=done_text)


@ticketing_group.command("enable")
@dry_run_option
@json_option
@pass_app
def ticketing_enable(app: App, dry_run, as_json):
    """Turn ticketing on: alerts raised from now on make tickets."""
    _set_ticketing(app, True, dry_run, as_json, "Ticketing is on.")


@ticketing_group.command("disable")
@dry_run_option
@json_option
@pass_app
def ticketing_disable(app: App, dry_run, as_json):
    """Turn ticketing off; every ticket setting is kept."""
    _set_ticketing(app, False, dry_run, as_json, "Ticketing is off; its settings are kept.")


@cli.group()
def tickets():
    """Tickets made by psabridge."""


@tickets.command("list")
@json_option
@pass_app
def tickets_list(app: App, as_json):
    """Each alert psabridge has seen and what became of it."""
    bridge = app.bridge()
    rows = [{"alert_uid": r.alert_uid, "state": r.state, "ticket_id": r.ticket_id,
             "monitor": r.monitor, "device_uid": r.device_uid, "origin": r.origin,
             "note": r.note or None}
            for r in bridge.store.alert_tickets(*bridge.pair)]
    _print_table(rows, as_json)


@tickets.command("create")
@click.argument("device")
@click.argument("summary")
@click.option("--description", default="")
@click.option("--request-id", help="Makes a retried command create the ticket once.")
@dry_run_option
@json_option
@pass_app
def tickets_create(app: App, device, summary, description, request_id, dry_run, as_json):
    """Create a manual ticket for a mapped device (DEVICE: its uid, id or hostname)."""
    from psabridge.core import lookups, ticketing

    if not summary.strip():
        raise click.UsageError("SUMMARY is empty: say in a few words what the ticket is about")
    bridge = app.bridge()
    with _asking("the RMM's devices"):
        found = lookups.device(bridge, device)
    uid = found.uid
    if dry_run:
        # What a real run checks first, so that a dry run does not plan what cannot be done.
        if uid not in {m.device_uid for m in bridge.store.device_mappings(*bridge.pair)}:
            raise ticketing.TicketingError(
                f"{found.hostname} is not mapped to a configuration; a manual ticket needs a "
                "mapped device: map it with `psabridge devices map`")
        report = _changes("create ticket", found.hostname, True, summary, device_uid=uid,
                          ticket_id=None)
    else:
        with output.spinner("Creating the ticket"):
            row = ticketing.create_manual_ticket(bridge, found, summary, description, request_id)
        report = _changes("create ticket", found.hostname, False, summary, device_uid=uid,
                          ticket_id=row.ticket_id)
    output.show_report(report, as_json,
                       done_text=None if dry_run else f"Ticket {report.changes[0].ids['ticket_id']} "
                                                      f"for {found.hostname}.")


def _report_rows(report: sync.PassReport) -> list[dict]:
    return [{"what": k.replace("_", " "), "count": v} for k, v in attrs.asdict(report).items()
            if isinstance(v, int)]


@cli.command("sync")
@click.option("--once", is_flag=True, help="One pass (the default).")
@click.option("--watch", is_flag=True, help="Repeat until interrupted.")
@click.option("--interval", type=click.FloatRange(min=1, max=24 * 3600), default=60,
              show_default=True,
              help="Seconds between passes with --watch.")
@dry_run_option
@json_option
@pass_app
def sync_command(app: App, once, watch, interval, dry_run, as_json):
    """Run the integration: mapping triggers, alerts to tickets, the round trip."""
    from psabridge.core import logs, sync

    if once and watch:
        raise click.UsageError("--once and --watch contradict each other: give one (--once, "
                               "one pass, is the default)")
    mode = "watch" if watch else "once"

    def show(report: sync.PassReport) -> None:
        if as_json:
            click.echo(json.dumps(attrs.asdict(report)))
            return
        if dry_run:
            count = len(report.planned)
            click.echo(f"Plan ({count} change{'s' * (count != 1)}, nothing done):")
            for line in report.planned:
                click.echo(f"  {line}")
            return
        _print_table(_report_rows(report), False)
        for error in report.errors:
            if logs.rendering() == "json":  # stderr carries nothing but JSON lines then
                _log().error("pass_error", error=error)
            else:
                click.echo(f"Error: {logs.redact_text(error)}", err=True)

    if mode == "once" or dry_run:
        report = sync.run_pass(app.bridge(), dry_run=dry_run)
        show(report)
        if report.errors:
            raise click.exceptions.Exit(1)
        return
    try:
        sync.watch(sync.live_bridge(app.bridge(), app.transports), interval, show)
    except KeyboardInterrupt:
        click.echo("Stopped.")


WEBHOOK_SECRET_ENV = "PSABRIDGE_WEBHOOK_SECRET"
CONSOLE_PASSWORD_ENV = "PSABRIDGE_CONSOLE_PASSWORD"


@cli.command("serve", params=secret_options("secret", WEBHOOK_SECRET_ENV, "webhook secret",
                                            f"set {WEBHOOK_SECRET_ENV} or --secret-file PATH"))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8787, show_default=True)
@click.option("--public-url", metavar="URL",
              help="The address the PSA reaches this server at; when given, the PSA's ticket "
                   "callback is registered there (idempotent). Needs the webhook secret.")
@click.option("--login-link/--no-login-link", default=None,
              help="Print a one-time console login link (default: only when no console "
                   "password is set).")
@pass_app
def serve_command(app: App, host, port, public_url, login_link, **secret_given):
    """Serve the web console, and the webhooks when a webhook secret is set.

    The console (http://HOST:PORT/) needs a login: the password set with `psabridge console
    set-password`, or the one-time link printed at start. It binds to 127.0.0.1 by default.

    The webhooks (POST /hooks/psa for PSA ticket callbacks, /hooks/rmm for RMM alert webhooks)
    are served only when a webhook secret is given, from PSABRIDGE_WEBHOOK_SECRET or
    --secret-file, never from the command line. Senders present it in an `Authorization:
    Bearer` or `X-Psabridge-Token` header, or as `?token=` in the URL (percent-encoded).
    They serve the PSA and RMM enabled when it starts; while either is disabled, their events
    are answered 202 and ignored, and handled again once it is enabled again.
    """
    from psabridge.console import auth
    from psabridge.console.app import ConsoleApp
    from psabridge.console.server import ServedApp
    from psabridge.core import webhooks  # the web stack: only `serve` needs it
    from psabridge.core.settings import trusted_proxies

    proxies = trusted_proxies()  # a bad value stops here, before anything listens
    secret = secret_value(secret_given, "secret", WEBHOOK_SECRET_ENV, "webhook secret")
    if public_url and not secret:
        raise click.UsageError(f"--public-url registers the webhook callback, which needs the "
                               f"webhook secret: set {WEBHOOK_SECRET_ENV} or --secret-file PATH")
    hooks = None
    if secret:
        webhooks.check_secret(secret)  # before any connection is made
        bridge = app.bridge()
        hooks = webhooks.WebhookApp(webhooks.LiveBridge(bridge, app.transports), secret)
        if public_url:
            from psabridge.core import plugins as plugins_lib

            plugins_lib.register_ticket_callback(bridge, webhooks.callback_url(public_url, secret),
                                                 webhooks.signing_secret(secret))
            click.echo(f"Registered the {bridge.psa.name} ticket callback at "
                       f"{public_url.rstrip('/')}/hooks/psa")
    console = ConsoleApp(app.pm, app.store, app.transports, trusted_proxies=proxies)
    server = webhooks.listen(ServedApp(console, hooks), host, port)
    base = f"http://{host}:{port}"
    if not _is_loopback(host):
        click.echo(f"Warning: serving on {host}, reachable from other machines, over plain HTTP: "
                   "passwords and session cookies cross the network unencrypted; put a TLS "
                   "reverse proxy in front, or bind to 127.0.0.1.", err=True)
    if hooks:
        click.echo(f"Listening on {base} (the console at /; POST /hooks/psa, /hooks/rmm)")
    else:
        click.echo(f"Listening on {base} (the console at /; webhooks are off: no webhook "
                   f"secret in {WEBHOOK_SECRET_ENV} or --secret-file)")
    if login_link or (login_link is None and not auth.has_password(app.store)):
        click.echo(f"One-time login link (valid {auth.LOGIN_LINK_SECONDS // 60} minutes): "
                   f"{base}/login/{console.links.issue()}")
    server.run()


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may well resolve to another interface


@cli.group("console")
def console_group():
    """The web console's login (the console itself is served by `psabridge serve`)."""


@console_group.command("set-password", params=secret_options(
    "password", CONSOLE_PASSWORD_ENV, "console password",
    f"run without it to be prompted, or set {CONSOLE_PASSWORD_ENV} or --password-file PATH"))
@click.option("--dry-run", is_flag=True, help="Check the password; save nothing.")
@pass_app
def console_set_password(app: App, dry_run: bool, **given):
    """Set the console's login password (hidden prompt, PSABRIDGE_CONSOLE_PASSWORD, or
    --password-file; never on the command line). Only its argon2 hash is stored."""
    from psabridge.console import auth

    password = secret_value(given, "password", CONSOLE_PASSWORD_ENV, "console password")
    if password is None:
        if not sys.stdin.isatty():
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = click.prompt("Console password", hide_input=True,
                                    confirmation_prompt=True)
    if not password:
        raise click.UsageError(f"no password given: type one at the prompt, or set "
                               f"{CONSOLE_PASSWORD_ENV} or --password-file PATH")
    if dry_run:
        auth.check_new_password(password)
        click.echo("The console password would be set; nothing saved (dry run).")
        return
    auth.set_password(app.store, password)
    click.echo("Console password set.")


@cli.command("demo")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the simulated MSP: the same as `psabridge simulate` serves by default.")
@click.option("--companies", type=click.IntRange(min=2), default=12, show_default=True,
              help="How many client companies the simulated MSP has.")
@click.option("--psa", type=click.Choice(["connectwise", "autotask"]), default="connectwise",
              show_default=True, help="Which PSA's simulator the demo runs on.")
@pass_app
def demo_command(app: App, seed, companies, psa):
    """Run the whole job against both simulators on loopback, on a fresh SQLite store.

    Configures and enables both connectors, maps companies to sites, device types and devices,
    sets up ticketing, then raises alerts, resolves some in the RMM and closes tickets in the
    PSA, and prints what each step did and a summary.

    The store is new: --db (or PSABRIDGE_DB) must name a file that does not exist yet, and an
    existing store is refused, never changed; without either, a new file in a temporary folder.
    """
    import tempfile

    from psabridge import demo  # imports the simulators, which only this command needs

    if app.db and "://" not in app.db:
        path = Path(app.db).expanduser().resolve()
    else:
        path = Path(tempfile.mkdtemp(prefix="psabridge-demo-")) / "psabridge.db"
    demo.run_demo(path, seed=seed, companies=companies, echo=click.echo, psa=psa)
    click.echo(f"\nDone. Inspect the result with: psabridge --db {path} tickets list")


@cli.group(cls=PluginCommandsGroup)
def simulate():
    """Run a service simulator on loopback, and act in a running one (raise an alert, close a
    ticket...). Connectors add their commands here."""


