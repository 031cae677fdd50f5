"""The `psabridge` command line: thin click wrappers around library functions."""

from __future__ import annotations

import functools
import json

import attrs
import click
import pluggy
from tabulate import tabulate

from psabridge import __version__
from psabridge.core import logs
from psabridge.core import plugins as plugins_lib
from psabridge.core.errors import PsabridgeError
from psabridge.core.models import Setting
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
    _store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.pm, store_url(self.db))
        return self._store

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
    app.db = db or app.db
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


def _configure_command(app: App, name: str) -> click.Command:
    record = plugins_lib.plugin_record(app.pm, name)
    params = []
    for setting in record.settings:
        envvar = f"PSABRIDGE_{name.upper()}_{setting.name.upper()}"
        help_text = f"{setting.label}. {setting.help} (env {envvar})"
        params.append(click.Option(
            ["--" + setting.name.replace("_", "-"), setting.name], envvar=envvar, help=help_text,
        ))

    def ask_secret(setting: Setting) -> str | None:
        try:
            return click.prompt(setting.label, hide_input=True, default="", show_default=False)
        except click.Abort:  # no terminal and nothing piped in: `plugins enable` will say so
            return None

    def configure(**values):
        saved = plugins_lib.configure_plugin(app.pm, app.store, name, values, ask_secret)
        shown = {
            s.name: ("(set)" if saved.get(s.name) else "(not set)") if s.secret
            else saved.get(s.name, "(not set)")
            for s in record.settings
        }
        click.echo(f"Saved settings for {name}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))

    return click.Command(name, params=params, callback=configure,
                         help=f"Configure the {record.title} connector.")


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
    """Set a connector's settings (secrets from a hidden prompt or environment variable)."""


@cli.group()
def simulate():
    """Run a service simulator on loopback (connectors add theirs here)."""


# Connectors add their commands (e.g. `simulate connectwise`) through the register_commands hook.
default_plugin_manager().hook.register_commands(cli=cli)
