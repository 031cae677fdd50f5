"""The `psabridge` command line: thin click wrappers around library functions."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import sys
import tempfile
from pathlib import Path

import attrs
import click
import pluggy
from click.core import ParameterSource
from tabulate import tabulate

from psabridge import __version__
from psabridge.core import logs, lookups, mapping, sync, ticketing, webhooks
from psabridge.core import plugins as plugins_lib
from psabridge.core.bridge import Bridge, open_bridge
from psabridge.core.errors import PsabridgeError
from psabridge.core.models import CompanyFilters, Setting
from psabridge.core.settings import setting_envvar
from psabridge.core.store import Store, open_store, store_url

log = logs.get_logger(__name__)


@functools.cache
def default_plugin_manager() -> pluggy.PluginManager:
    return plugins_lib.make_plugin_manager()


@attrs.define
class App:
    """What every command needs; tests may pass their own plugin manager as `obj=App(pm=...)`."""

    pm: pluggy.PluginManager = attrs.field(factory=default_plugin_manager)
    db: str | None = None
    transports: dict = attrs.field(factory=dict)  # plugin name -> httpx transport (simulators)
    _store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.pm, store_url(self.db))
        return self._store

    def bridge(self) -> Bridge:
        return open_bridge(self.pm, self.store, self.transports)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class ErrorHandlingGroup(click.Group):
    """Turns errors into one line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PsabridgeError as exc:
            raise click.ClickException(logs.redact_text(str(exc))) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence for the CLI
            log.debug("unexpected error", exc_info=True)
            detail = logs.redact_text(f"{type(exc).__name__}: {exc}")
            raise click.ClickException(
                f"unexpected error: {detail} (run with -vv for the traceback)"
            ) from None


def _print_table(rows: list[dict], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
    elif rows:
        click.echo(tabulate(rows, headers="keys"))
    else:
        click.echo("(none)")


json_option = click.option("--json", "as_json", is_flag=True, help="Output JSON for scripts.")


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
    logs.configure_logging(verbose, log_format)
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
@pass_app
def plugins_enable(app: App, name: str, skip_check: bool):
    """Enable a connector (only one PSA at a time)."""
    report = plugins_lib.enable_plugin(app.pm, app.store, name, check=not skip_check)
    click.echo(f"Enabled {name}.")
    for permission in report.missing_permissions if report else ():
        click.echo(f"Warning: the API user lacks {permission}", err=True)


@plugins.command("disable")
@click.argument("name")
@pass_app
def plugins_disable(app: App, name: str):
    """Disable a connector; its settings and mappings are kept."""
    plugins_lib.disable_plugin(app.pm, app.store, name)
    click.echo(f"Disabled {name}; its settings and mappings are kept.")


@plugins.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def plugins_remove(app: App, name: str, yes: bool):
    """Remove a connector's settings, mappings and links; unmap its configurations."""
    if not yes:
        click.confirm(
            f"Remove every setting, mapping and link of {name} and unmap its devices?", abort=True
        )
    deleted = plugins_lib.remove_plugin(app.pm, app.store, name)
    summary = ", ".join(f"{table} {count}" for table, count in deleted.items() if count)
    click.echo(f"Removed {name} ({summary or 'nothing stored'}).")


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
        help_text = f"{setting.label}. {setting.help} (env {envvar})"
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

    def configure(**values):
        for setting in secrets:
            values[setting.name] = secret_value(values, setting.name,
                                                setting_envvar(name, setting.name),
                                                _in_a_sentence(setting.label))
        asked: set[str] = set()

        def ask_and_note(setting: Setting) -> str | None:
            asked.add(setting.name)
            return ask_secret(setting)

        saved = plugins_lib.configure_plugin(app.pm, app.store, name, values, ask_and_note)
        kept = [s for s in secrets if saved.get(s.name) and not values.get(s.name)
                and s.name not in asked]
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
    return click.Command(name, params=params, callback=configure, help=help_text)


class ConfigureGroup(click.Group):
    def _app(self, ctx: click.Context) -> App:
        return ctx.ensure_object(App)

    def list_commands(self, ctx):
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

dry_run_option = click.option("--dry-run", is_flag=True,
                              help="Print the plan: what would be created or changed; change nothing.")


def _split_choice(text: str) -> tuple[str, str | None]:
    key, _, value = text.partition("=")
    return key, (value or None)


def _changing_mappings(bridge: Bridge, dry_run: bool = False):
    """Plan and apply under the mapping lease, so that two commands (or a command and a sync
    pass) never plan from the same state; a dry run changes nothing and needs none."""
    return contextlib.nullcontext() if dry_run else mapping.mapping_lease(bridge)


def _run_plan(bridge: Bridge, plan: mapping.Plan, dry_run: bool, as_json: bool = False) -> None:
    rows = [{"action": c.action, "subject": c.subject, "detail": c.detail} for c in plan.changes]
    skipped = [{"subject": s, "why": why} for s, why in plan.skipped]
    if dry_run:
        if as_json:
            click.echo(json.dumps({"plan": rows, "skipped": skipped}, indent=2))
        else:
            click.echo(f"Plan ({len(rows)} change{'s' * (len(rows) != 1)}, nothing done):")
            _print_table(rows, False)
        for item in skipped if not as_json else ():
            click.echo(f"Skipped {item['subject']}: {item['why']}", err=True)
        return
    with click.progressbar(length=len(plan.changes), label="Applying",
                           file=None if sys.stderr.isatty() else io.StringIO()) as bar:
        outcome = mapping.apply(bridge, plan, progress=lambda change: bar.update(1))
    for change, error in outcome.failed:
        click.echo(f"Failed: {change.action} for {change.subject}: {error}", err=True)
    for subject, why in plan.skipped:
        click.echo(f"Skipped {subject}: {why}", err=True)
    click.echo(f"Done: {len(outcome.done)} change{'s' * (len(outcome.done) != 1)}, "
               f"{len(outcome.failed)} failed, {len(plan.skipped)} skipped.")
    if outcome.failed:
        raise click.exceptions.Exit(1)


@cli.group()
def companies():
    """Map PSA companies to RMM sites."""


mapping_view = click.option("--mapping", "view", type=click.Choice(["unmapped", "mapped", "all"]),
                            default="unmapped", show_default=True)


@companies.command("load")
@mapping_view
@click.option("--type", "company_type", help="Only companies of this type.")
@click.option("--status", help="Only companies with this status.")
@click.option("--search", help="Only companies whose name or identifier contains this.")
@json_option
@pass_app
def companies_load(app: App, view, company_type, status, search, as_json):
    """List companies with the suggested site and its score, or their mapped site."""
    filters = CompanyFilters(type=company_type, status=status, search=search)
    rows = []
    for row in mapping.load_companies(app.bridge(), view, filters):
        line = {"id": row.company.id, "company": row.company.name, "type": row.company_type,
                "status": row.company.status}
        if row.mapping:
            line |= {"site": row.mapping.site_name, "site_uid": row.mapping.site_uid,
                     "link": row.site_url}
        else:
            suggestion = row.suggestion
            line |= {"suggested site": suggestion.site_name if suggestion.site_uid
                     else f"Create New: {suggestion.site_name}",
                     "site_uid": suggestion.site_uid, "score": round(suggestion.score, 1)}
        rows.append(line)
    _print_table(rows, as_json)


@companies.command("map")
@click.argument("choices", nargs=-1)
@click.option("--suggested", is_flag=True, help="Map every unmapped company to its suggestion.")
@dry_run_option
@json_option
@pass_app
def companies_map(app: App, choices, suggested, dry_run, as_json):
    """Map companies: ID (its suggestion), ID=SITE_UID, or ID=new (create a site)."""
    bridge = app.bridge()
    chosen = None if suggested else dict(_split_choice(c) for c in choices)
    if chosen == {}:
        raise click.UsageError("name companies to map (ID, ID=SITE or ID=new) or pass --suggested")
    with _changing_mappings(bridge, dry_run):
        _run_plan(bridge, mapping.plan_company_mappings(bridge, chosen), dry_run, as_json)


@companies.command("unmap")
@click.argument("company_ids", nargs=-1, required=True)
@pass_app
def companies_unmap(app: App, company_ids):
    """Remove company-site mappings (devices keep their configurations)."""
    bridge = app.bridge()
    with _changing_mappings(bridge):
        removed = mapping.unmap_companies(bridge, company_ids)
    click.echo(f"Unmapped {len(removed)} compan{'y' if len(removed) == 1 else 'ies'}.")


@cli.group("device-types")
def device_types():
    """Map RMM device types to PSA configuration types (used for new configurations only)."""


@device_types.command("list")
@json_option
@pass_app
def device_types_list(app: App, as_json):
    """Each device type with its mapped or suggested configuration type."""
    rows = []
    for row in mapping.load_device_types(app.bridge()):
        chosen = row.configuration_type
        rows.append({
            "device type": row.device_type,
            "configuration type": chosen.name if chosen else "(none suitable)",
            "id": chosen.id if chosen else None,
            "mapped": row.mapped,
            "score": None if row.score is None else round(row.score, 1),
            "warning": "has required questions: cannot create configurations" if row.flagged else "",
        })
    _print_table(rows, as_json)


@device_types.command("map")
@click.argument("choices", nargs=-1)
@click.option("--suggested", is_flag=True, help="Map every unmapped device type to its suggestion.")
@pass_app
def device_types_map(app: App, choices, suggested):
    """Map device types: TYPE (its suggestion) or TYPE=CONFIGURATION_TYPE (id or name)."""
    bridge = app.bridge()
    chosen = dict(_split_choice(c) for c in choices)
    if suggested:
        chosen |= {r.device_type: None for r in mapping.load_device_types(bridge)
                   if not r.mapped and r.configuration_type}
    if not chosen:
        raise click.UsageError("name device types to map (TYPE or TYPE=CONFIG_TYPE) or pass --suggested")
    with _changing_mappings(bridge):
        for device_type, configuration_type in chosen.items():
            saved = mapping.map_device_type(bridge, device_type, configuration_type)
            click.echo(f"{device_type} -> {saved.configuration_type_name} ({saved.configuration_type_id})")


@cli.group()
def devices():
    """Map RMM devices to PSA configurations."""


@devices.command("load")
@mapping_view
@json_option
@pass_app
def devices_load(app: App, view, as_json):
    """List devices with the proposed configuration and why, or their mapping."""
    rows = []
    for row in mapping.load_devices(app.bridge(), view):
        match = row.match
        rows.append({
            "uid": row.device.uid, "device": row.device.hostname, "type": row.device.device_type,
            "company": row.company_name, "state": row.state,
            "configuration": (row.mapping.configuration_id if row.mapping else
                              match.configuration.id if match and match.configuration else
                              f"[{match.create_name}]" if match else ""),
            "step": match.step if match else "", "reason": match.reason if match else "",
        })
    _print_table(rows, as_json)


@devices.command("map")
@click.argument("choices", nargs=-1)
@click.option("--all", "map_all", is_flag=True, help="Map every unmapped audited device by its proposal.")
@dry_run_option
@json_option
@pass_app
def devices_map(app: App, choices, map_all, dry_run, as_json):
    """Map devices: UID (its proposal), UID=CONFIG_ID (manual choice) or UID=new."""
    bridge = app.bridge()
    if not (map_all or choices):
        raise click.UsageError("name devices to map (UID, UID=CONFIG or UID=new) or pass --all")
    with _changing_mappings(bridge, dry_run):
        if map_all:
            plan = mapping.plan_automatic_mapping(bridge)
        else:
            plan = mapping.plan_device_mappings(bridge, dict(_split_choice(c) for c in choices))
        _run_plan(bridge, plan, dry_run, as_json)


@devices.command("unmap")
@click.argument("device_uids", nargs=-1, required=True)
@dry_run_option
@pass_app
def devices_unmap(app: App, device_uids, dry_run):
    """Unmap devices; their configurations stay Active."""
    bridge = app.bridge()
    with _changing_mappings(bridge, dry_run):
        _run_plan(bridge, mapping.unmap_devices(bridge, device_uids), dry_run)


@devices.command("auto")
@click.argument("state", type=click.Choice(["on", "off"]))
@pass_app
def devices_auto(app: App, state):
    """Turn automatic mapping on or off (off by default)."""
    app.bridge().set_option("auto_map", state == "on")
    click.echo(f"Automatic mapping is {state}.")


@devices.command("map-now")
@dry_run_option
@pass_app
def devices_map_now(app: App, dry_run):
    """Run automatic mapping now (needs automatic mapping on)."""
    bridge = app.bridge()
    with _changing_mappings(bridge, dry_run):
        _run_plan(bridge, mapping.map_now(bridge), dry_run)


@cli.group()
def warnings():
    """Problems that stopped a creation."""


@warnings.command("list")
@json_option
@pass_app
def warnings_list(app: App, as_json):
    rows = [{"id": w.id, "plugin": w.plugin, "subject": w.subject, "message": w.message,
             "at": w.created_at.isoformat() if w.created_at else ""} for w in app.store.warnings()]
    _print_table(rows, as_json)


@warnings.command("clear")
@click.option("--plugin", help="Only this plugin's warnings.")
@pass_app
def warnings_clear(app: App, plugin):
    """Remove warnings; devices they held back are tried again by automatic mapping."""
    click.echo(f"Cleared {app.store.clear_warnings(plugin)} warnings.")


# -- look-ups: the ids the other commands ask for -------------------------------------------


def _print_lookup(rows: list[dict], as_json: bool) -> None:
    """A look-up's rows: as they are with --json; in the table, lists read as `a, b`."""
    if not as_json:
        rows = [{k: ", ".join(map(str, v)) if isinstance(v, list) else v for k, v in row.items()}
                for row in rows]
    _print_table(rows, as_json)


board_option = click.option("--board", metavar="BOARD", help="Only this board (its id or name).")


@cli.group("psa")
def psa_group():
    """Look up the PSA's ids: boards, statuses, types, priorities, sources, companies..."""


@psa_group.command("boards")
@json_option
@pass_app
def psa_boards(app: App, as_json):
    """Service boards, and whether tickets can be created on each (and why not)."""
    _print_lookup(lookups.boards(app.bridge()), as_json)


@psa_group.command("statuses")
@board_option
@json_option
@pass_app
def psa_statuses(app: App, board, as_json):
    """Board statuses (for --open-status and --closed-status of `ticketing set`)."""
    _print_lookup(lookups.statuses(app.bridge(), board), as_json)


@psa_group.command("types")
@board_option
@json_option
@pass_app
def psa_types(app: App, board, as_json):
    """Ticket types of each board (for --type of `ticketing set`)."""
    _print_lookup(lookups.ticket_types(app.bridge(), board), as_json)


@psa_group.command("subtypes")
@board_option
@json_option
@pass_app
def psa_subtypes(app: App, board, as_json):
    """Ticket subtypes of each board (for --subtype of `ticketing set`)."""
    _print_lookup(lookups.ticket_subtypes(app.bridge(), board), as_json)


@psa_group.command("priorities")
@json_option
@pass_app
def psa_priorities(app: App, as_json):
    """Ticket priorities (for --priority RMM=PSA_ID of `ticketing set`)."""
    _print_lookup(lookups.priorities(app.bridge()), as_json)


@psa_group.command("sources")
@json_option
@pass_app
def psa_sources(app: App, as_json):
    """Ticket sources (for --source of `ticketing set`)."""
    _print_lookup(lookups.sources(app.bridge()), as_json)


@psa_group.command("companies")
@click.option("--search", help="Only companies whose name contains this.")
@json_option
@pass_app
def psa_companies(app: App, search, as_json):
    """Companies, of every type and status (ids for `companies map`)."""
    _print_lookup(lookups.companies(app.bridge(), search), as_json)


@psa_group.command("configurations")
@click.option("--company", "company_id", required=True, metavar="ID", help="The company's id.")
@json_option
@pass_app
def psa_configurations(app: App, company_id, as_json):
    """A company's configurations (ids for `devices map UID=CONFIG_ID`)."""
    _print_lookup(lookups.configurations(app.bridge(), company_id), as_json)


@cli.group("rmm")
def rmm_group():
    """Look up the RMM's ids: sites, devices, monitors."""


@rmm_group.command("sites")
@json_option
@pass_app
def rmm_sites(app: App, as_json):
    """Sites (uids for `companies map ID=SITE_UID`)."""
    _print_lookup(lookups.sites(app.bridge()), as_json)


@rmm_group.command("devices")
@click.option("--site", "site_uid", metavar="UID", help="Only the devices of this site.")
@json_option
@pass_app
def rmm_devices(app: App, site_uid, as_json):
    """Devices (uids for `devices map` and `tickets create`)."""
    _print_lookup(lookups.devices(app.bridge(), site_uid), as_json)


@rmm_group.command("monitors")
@json_option
@pass_app
def rmm_monitors(app: App, as_json):
    """Monitors with open alerts now (names for `ticketing monitor`)."""
    _print_lookup(lookups.monitors(app.bridge()), as_json)


# -- tickets and the running integration ------------------------------------------------------


@cli.group("ticketing")
def ticketing_group():
    """Ticket settings: enable, source, priorities, attributes per origin, monitors, repeats."""


def _ticket_settings_rows(settings: ticketing.TicketSettings) -> list[dict]:
    rows = [{"setting": "enabled", "value": settings.enabled},
            {"setting": "source", "value": settings.source_id},
            {"setting": "repeat window (minutes)", "value": settings.repeat_minutes}]
    rows += [{"setting": f"priority {k}", "value": v} for k, v in sorted(settings.priorities.items())]
    for origin, a in sorted(settings.attributes.items()):
        rows.append({"setting": f"origin {origin}", "value": (
            f"board={a.board_id} type={a.type_id} subtype={a.subtype_id} "
            f"open={a.open_status_id} closed={a.closed_status_id}")})
    rows += [{"setting": f"monitor {m}", "value": f"tickets={'on' if o.create_tickets else 'off'}"}
             for m, o in sorted(settings.monitors.items())]
    return rows


@ticketing_group.command("show")
@json_option
@pass_app
def ticketing_show(app: App, as_json):
    """Show the ticket settings and check them against the PSA."""
    bridge = app.bridge()
    settings = ticketing.ticket_settings(bridge)
    _print_table(_ticket_settings_rows(settings), as_json)
    for problem in ticketing.check_ticket_settings(bridge, settings):
        click.echo(f"{problem.severity.capitalize()}: {problem.message}", err=True)


REPEAT_MINUTES_MAX = 7 * 24 * 60


def _priority_pair(text: str) -> tuple[str, str]:
    rmm_priority, _, psa_priority = text.partition("=")
    if not rmm_priority.strip() or not psa_priority.strip():
        raise click.BadParameter(f"{text!r} is not RMM=PSA_ID, e.g. Critical=1",
                                 param_hint="--priority")
    return rmm_priority.strip(), psa_priority.strip()


@ticketing_group.command("set")
@click.option("--source", help="PSA ticket source id (applies to tickets created afterwards).")
@click.option("--priority", "priorities", multiple=True, metavar="RMM=PSA_ID",
              callback=lambda ctx, param, values: [_priority_pair(v) for v in values],
              help="Map an RMM priority to a PSA priority id, e.g. Critical=1 (repeatable).")
@click.option("--origin", type=click.Choice(list(ticketing.ORIGINS)),
              help="Which origin's attributes to set.")
@click.option("--board", help="Board id for --origin.")
@click.option("--type", "type_id", help="Type id for --origin.")
@click.option("--subtype", help="Subtype id for --origin.")
@click.option("--open-status", help="Open status id for --origin.")
@click.option("--closed-status", help="Closed status id for --origin.")
@click.option("--repeat-minutes", type=click.IntRange(min=0, max=REPEAT_MINUTES_MAX),
              help="Repeating-alert window in minutes, at most a week (0 turns detection off).")
@pass_app
def ticketing_set(app: App, source, priorities, origin, board, type_id, subtype, open_status,
                  closed_status, repeat_minutes):
    """Change ticket settings; what is not given stays as it is."""
    bridge = app.bridge()
    settings = ticketing.ticket_settings(bridge)
    changes = {}
    if source:
        changes["source_id"] = source
    if priorities:
        changes["priorities"] = {**settings.priorities, **dict(priorities)}
    if repeat_minutes is not None:
        changes["repeat_minutes"] = repeat_minutes or None
    given = {"board_id": board, "type_id": type_id, "subtype_id": subtype,
             "open_status_id": open_status, "closed_status_id": closed_status}
    if any(given.values()):
        if not origin:
            raise click.UsageError("--board/--type/--subtype/--*-status need --origin alert|manual")
        current = settings.attributes.get(origin, ticketing.TicketAttributes())
        updated = attrs.evolve(current, **{k: v for k, v in given.items() if v})
        changes["attributes"] = {**settings.attributes, origin: updated}
    settings = attrs.evolve(settings, **changes)
    ticketing.save_ticket_settings(bridge, settings)
    for problem in ticketing.check_ticket_settings(bridge, settings):
        click.echo(f"{problem.severity.capitalize()}: {problem.message}", err=True)
    click.echo("Ticket settings saved.")


@ticketing_group.command("monitor")
@click.argument("monitor")
@click.option("--tickets/--no-tickets", default=True, help="Whether this monitor creates tickets.")
@pass_app
def ticketing_monitor(app: App, monitor, tickets):
    """Override ticket creation for one monitor."""
    bridge = app.bridge()
    settings = ticketing.ticket_settings(bridge)
    override = ticketing.MonitorOverride(create_tickets=tickets)
    ticketing.save_ticket_settings(bridge, attrs.evolve(settings, monitors={**settings.monitors,
                                                                            monitor: override}))
    click.echo(f"Monitor {monitor}: tickets {'on' if tickets else 'off'}.")


@ticketing_group.command("enable")
@pass_app
def ticketing_enable(app: App):
    """Turn ticketing on: alerts raised from now on make tickets."""
    ticketing.set_ticketing_enabled(app.bridge(), True)
    click.echo("Ticketing is on.")


@ticketing_group.command("disable")
@pass_app
def ticketing_disable(app: App):
    """Turn ticketing off; every ticket setting is kept."""
    ticketing.set_ticketing_enabled(app.bridge(), False)
    click.echo("Ticketing is off; its settings are kept.")


@cli.group()
def tickets():
    """Tickets made by psabridge."""


@tickets.command("list")
@json_option
@pass_app
def tickets_list(app: App, as_json):
    """Each alert psabridge has seen and what became of it."""
    bridge = app.bridge()
    rows = [{"alert": r.alert_uid, "state": r.state, "ticket": r.ticket_id, "monitor": r.monitor,
             "device": r.device_uid, "origin": r.origin, "note": r.note}
            for r in bridge.store.alert_tickets(*bridge.pair)]
    _print_table(rows, as_json)


@tickets.command("create")
@click.argument("device_uid")
@click.argument("summary")
@click.option("--description", default="")
@click.option("--request-id", help="Makes a retried command create the ticket once.")
@pass_app
def tickets_create(app: App, device_uid, summary, description, request_id):
    """Create a manual ticket for a mapped device."""
    bridge = app.bridge()
    device = next((d for d in bridge.rmm.call("rmm_list_devices", site_uid=None) if d.uid == device_uid),
                  None)
    if device is None:
        raise click.ClickException(f"the RMM has no device with uid {device_uid}")
    row = ticketing.create_manual_ticket(bridge, device, summary, description, request_id)
    click.echo(f"Ticket {row.ticket_id} for {device.hostname}.")


def _report_rows(report: sync.PassReport) -> list[dict]:
    return [{"what": k.replace("_", " "), "count": v} for k, v in attrs.asdict(report).items()
            if isinstance(v, int)]


@cli.command("sync")
@click.option("--once", "mode", flag_value="once", default=True, help="One pass (the default).")
@click.option("--watch", "mode", flag_value="watch", help="Repeat until interrupted.")
@click.option("--interval", type=click.FloatRange(min=1, max=24 * 3600), default=60,
              show_default=True,
              help="Seconds between passes with --watch.")
@dry_run_option
@json_option
@pass_app
def sync_command(app: App, mode, interval, dry_run, as_json):
    """Run the integration: mapping triggers, alerts to tickets, the round trip."""

    def show(report: sync.PassReport) -> None:
        if as_json:
            click.echo(json.dumps(attrs.asdict(report)))
            return
        if dry_run:
            click.echo(f"Plan ({len(report.planned)} changes, nothing done):")
            for line in report.planned:
                click.echo(f"  {line}")
            return
        _print_table(_report_rows(report), False)
        for error in report.errors:
            click.echo(f"Error: {error}", err=True)

    if mode == "once" or dry_run:
        report = sync.run_pass(app.bridge(), dry_run=dry_run)
        show(report)
        if report.errors:
            raise click.exceptions.Exit(1)
        return
    try:
        sync.watch(app.bridge, interval, show)
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
            # The PSA appends the record id to the URL, so the token must not be last.
            callback = webhooks.callback_url(public_url, secret)
            bridge.psa.call("psa_register_ticket_callback", url=callback)
            click.echo(f"Registered the {bridge.psa.name} ticket callback at "
                       f"{public_url.rstrip('/')}/hooks/psa")
    console = ConsoleApp(app.pm, app.store, app.transports)
    server = webhooks.listen(ServedApp(console, hooks), host, port)
    base = f"http://{host}:{port}"
    if hooks:
        click.echo(f"Listening on {base} (the console at /; POST /hooks/psa, /hooks/rmm)")
    else:
        click.echo(f"Listening on {base} (the console at /; webhooks are off: no webhook "
                   f"secret in {WEBHOOK_SECRET_ENV} or --secret-file)")
    if login_link or (login_link is None and not auth.has_password(app.store)):
        click.echo(f"One-time login link (valid {auth.LOGIN_LINK_SECONDS // 60} minutes): "
                   f"{base}/login/{console.links.issue()}")
    server.run()


@cli.group("console")
def console_group():
    """The web console's login (the console itself is served by `psabridge serve`)."""


@console_group.command("set-password", params=secret_options(
    "password", CONSOLE_PASSWORD_ENV, "console password",
    f"run without it to be prompted, or set {CONSOLE_PASSWORD_ENV} or --password-file PATH"))
@pass_app
def console_set_password(app: App, **given):
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
    auth.set_password(app.store, password)
    click.echo("Console password set.")


@cli.command("demo")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the generated MSP.")
@click.option("--companies", type=click.IntRange(min=2), default=12, show_default=True)
@pass_app
def demo_command(app: App, seed, companies):
    """Run the whole job against both simulators on loopback, on a fresh SQLite store.

    Uses --db if it names a file that does not exist yet, else a new file in a temporary folder.
    """
    from psabridge import demo  # imports the simulators, which only this command needs

    if app.db and "://" not in app.db:
        path = Path(app.db).expanduser().resolve()
    else:
        path = Path(tempfile.mkdtemp(prefix="psabridge-demo-")) / "psabridge.db"
    demo.run_demo(path, seed=seed, companies=companies, echo=click.echo)
    click.echo(f"\nDone. Inspect the result with: psabridge --db {path} tickets list")


@cli.group()
def simulate():
    """Run a service simulator on loopback (connectors add theirs here)."""


# Connectors add their commands (e.g. `simulate connectwise`) through the register_commands hook.
default_plugin_manager().hook.register_commands(cli=cli)
