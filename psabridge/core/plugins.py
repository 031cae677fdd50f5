"""The plugin manager: discovery through entry points, plugin kinds, enable/disable/remove.

Built-in plugins register through the same `psabridge` entry-point group a third-party package
uses (see setup.cfg), so there is one way in. `PSABRIDGE_LOAD_PLUGINS=connectwise,sqlite` loads
only the named entry points, and an empty value loads none (tests register their own).
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import attrs
import pluggy

from psabridge.core import hookspecs, logs, secrets
from psabridge.core.errors import NotSupported, PluginError, SettingsError
from psabridge.core.models import Connection, ConnectionReport, JournalEntry, PluginKind, Setting
from psabridge.core.settings import normalise_settings, validate_settings, with_defaults
from psabridge.core.shared import SharedValues

if TYPE_CHECKING:  # core.store imports this module to encrypt old stores' secrets when opened
    from psabridge.core.store import Store

ENTRY_POINT_GROUP = "psabridge"
ENV_LOAD_PLUGINS = "PSABRIDGE_LOAD_PLUGINS"

log = logs.get_logger(__name__)


def make_plugin_manager(load_entrypoints: bool = True) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("psabridge")
    pm.add_hookspecs(hookspecs)
    if not load_entrypoints:
        return pm
    wanted = os.environ.get(ENV_LOAD_PLUGINS)
    if wanted is None:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    else:
        for name in filter(None, (n.strip() for n in wanted.split(","))):
            if not pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name):
                raise PluginError(f"{ENV_LOAD_PLUGINS} names {name!r}, which is not installed")
    return pm


@attrs.frozen
class PluginRecord:
    name: str
    kind: PluginKind
    title: str
    version: str
    settings: tuple[Setting, ...] = ()
    enabled: bool = False
    alert_priorities: tuple[str, ...] = ()  # an RMM's, when it has a fixed list


def _call_on(pm: pluggy.PluginManager, plugin: object, hook: str, **kwargs: Any):
    """Call `hook` on one plugin only (pluggy's subset caller with every other plugin removed)."""
    others = [p for p in pm.get_plugins() if p is not plugin]
    return pm.subset_hook_caller(hook, remove_plugins=others)(**kwargs)


def implements(pm: pluggy.PluginManager, name: str, hook: str) -> bool:
    plugin = pm.get_plugin(name)
    return any(impl.plugin is plugin for impl in getattr(pm.hook, hook).get_hookimpls())


def _version_of(pm: pluggy.PluginManager, plugin: object) -> str:
    for candidate, dist in pm.list_plugin_distinfo():
        if candidate is plugin:
            return dist.version
    module = getattr(plugin, "__name__", "")
    try:
        return importlib.metadata.version(module.split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return getattr(plugin, "__version__", "unknown")


def plugin_record(pm: pluggy.PluginManager, name: str, store: Store | None = None) -> PluginRecord:
    plugin = pm.get_plugin(name)
    if plugin is None:
        installed = ", ".join(sorted(n for n, _ in pm.list_name_plugin())) or "none"
        raise PluginError(f"no plugin named {name!r} is installed (installed: {installed})")
    info = _call_on(pm, plugin, "connector_info")
    priorities: tuple[str, ...] = ()
    if info is not None:
        kind, title, settings = info.kind, info.title, tuple(info.settings)
        priorities = tuple(info.alert_priorities)
    elif implements(pm, name, "storage_open"):
        kind, title, settings = "storage", name, ()
    else:
        kind, title, settings = "extension", name, ()
    state = store.plugin_state(name) if store is not None else None
    return PluginRecord(
        name=name, kind=kind, title=title, version=_version_of(pm, plugin), settings=settings,
        enabled=bool(state and state.enabled), alert_priorities=priorities,
    )


def list_plugins(pm: pluggy.PluginManager, store: Store | None = None) -> list[PluginRecord]:
    return sorted(
        (plugin_record(pm, name, store) for name, _ in pm.list_name_plugin()),
        key=lambda r: (r.kind, r.name),
    )


def _connector_record(pm, store, name) -> PluginRecord:
    record = plugin_record(pm, name, store)
    if record.kind not in ("psa", "rmm"):
        raise PluginError(
            f"{name} is a {record.kind} plugin; only PSA and RMM connectors are configured, "
            "enabled and disabled"
        )
    return record


# -- settings ------------------------------------------------------------------------------
#
# The store keeps secret settings sealed (or as `env:`/`file:` references): they are sealed on
# their way in and opened on their way out here, by `psabridge.core.secrets`.


def _secret_names(record: PluginRecord) -> list[str]:
    return [setting.name for setting in record.settings if setting.secret]


def configure_plugin(
    pm: pluggy.PluginManager,
    store: Store,
    name: str,
    values: Mapping[str, str | None],
    ask_secret: Callable[[Setting], str | None] | None = None,
    dry_run: bool = False,
) -> dict[str, str]:
    """Merge `values` (None = leave as is) into the plugin's stored settings and save them.

    A dry run checks the values and returns what would be saved, secrets not sealed (nor
    asked for), and saves nothing.

    URLs and `env:`/`file:` references are checked now; completeness is checked when the plugin
    is enabled. A secret that is neither given nor stored (or stored, but sealed with a key
    this installation does not have) is asked for with `ask_secret` (a hidden prompt in the CLI),
    after the given values passed their checks. Returns the settings as saved: secrets sealed.
    """
    record = _connector_record(pm, store, name)
    known = {s.name: s for s in record.settings}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise PluginError(
            f"{name} has no setting {', '.join(unknown)}; its settings are {', '.join(known)}"
        )
    given = {k: v for k, v in values.items() if v is not None}
    for key, value in given.items():
        if known[key].secret and not secrets.is_reference(value):
            logs.register_secret(value)
    # Given values are checked now (an empty one for a required setting too); a setting not
    # given at all is only an error once the plugin is enabled.
    validate_settings(name, [known[k] for k in given], given)
    references = {k: problem for k, v in given.items()
                  if known[k].secret and (problem := secrets.reference_problem(v.strip()))}
    if references:
        raise SettingsError(name, references)
    state = store.plugin_state(name)
    stored = dict(state.settings) if state else {}
    for setting in record.settings:
        missing = not given.get(setting.name) and not _usable(stored.get(setting.name))
        if setting.secret and missing and ask_secret and not dry_run:
            answer = ask_secret(setting)
            if not answer:
                if setting.required:  # saved empty, the plugin could not be enabled
                    validate_settings(name, [setting], {})
                continue
            logs.register_secret(answer)
            given[setting.name] = answer
    merged = {**stored, **normalise_settings(record.settings, given)}
    if dry_run:
        return merged
    saved = secrets.seal_settings(merged, _secret_names(record))
    store.save_settings(name, saved)
    log.info("plugin_configured", plugin=name, fields=sorted(given))
    return saved


def _usable(stored_secret: str | None) -> bool:
    """Whether a stored secret can be used here: present, and sealed (if it is) with our key."""
    if secrets.is_sealed(stored_secret):
        return secrets.can_unseal(stored_secret)
    return bool(stored_secret)


def plugin_settings(pm: pluggy.PluginManager, store: Store, name: str) -> dict[str, str]:
    """A connector's settings as its connection needs them: secrets unsealed, and read from
    the environment or the file an `env:`/`file:` reference names (now, never stored)."""
    state = store.plugin_state(name)
    declared = _declared_settings(pm, store, name)
    opened = secrets.open_settings(name, state.settings if state else {},
                                   [setting.name for setting in declared if setting.secret])
    return with_defaults(declared, opened)


def _declared_settings(pm: pluggy.PluginManager, store: Store, name: str) -> tuple[Setting, ...]:
    """A connector's declared settings. `serve` asks for every event, so the connector's
    declaration alone is read, not its whole record (whose version lookup reads the package's
    metadata files)."""
    plugin = pm.get_plugin(name)
    info = _call_on(pm, plugin, "connector_info") if plugin is not None else None
    if info is None or info.kind not in ("psa", "rmm"):
        return _connector_record(pm, store, name).settings  # raises, saying why
    return tuple(info.settings)


def seal_plaintext_secrets(pm: pluggy.PluginManager, store: Store) -> list[str]:
    """Encrypt, in place and in one transaction, the secrets a store written before they were
    encrypted keeps in plaintext. Returns the plugins whose secrets were sealed."""
    secret_names = {name: _secret_names(plugin_record(pm, name))
                    for name, _ in pm.list_name_plugin()}

    def holding_plaintext(states) -> list:
        return [state for state in states
                if any(secrets.needs_sealing(state.settings.get(secret))
                       for secret in secret_names.get(state.name, ()))]

    if not holding_plaintext(store.plugin_states()):  # the usual case: a read, no write lock
        return []
    with store.transaction():
        # Again under the write lock: another process opening the store may have sealed them.
        found = holding_plaintext(store.plugin_states())
        for state in found:
            store.save_settings(state.name, secrets.seal_settings(state.settings,
                                                                  secret_names[state.name]))
    if found:
        log.warning("secrets found in plaintext in the store were encrypted; back up the key "
                    "apart from the store (see docs/operating.md)",
                    plugins=[state.name for state in found])
    return [state.name for state in found]


def connection_for(
    pm: pluggy.PluginManager, store: Store, name: str, transport: Any = None
) -> Connection:
    """The Connection a remote hook of plugin `name` receives, from its stored settings, with the
    values it shares with the other processes on `store`."""
    return Connection(plugin=name, settings=plugin_settings(pm, store, name), transport=transport,
                      shared=SharedValues(store, name))


class Connector:
    """One connector bound to its connection, calling hooks by name:
    `connector.call("psa_list_companies", filters=f)`. Core uses the typed subclasses of
    `psabridge.core.connectors` (`bridge.psa.list_companies(f)`); the conformance kit calls by
    name, as a misspelt hook must fail there."""

    def __init__(self, pm: pluggy.PluginManager, connection: Connection):
        self.pm = pm
        self.connection = connection
        self.name = connection.plugin
        self._plugin = pm.get_plugin(self.name)

    def supports(self, hook: str) -> bool:
        return implements(self.pm, self.name, hook)

    def call(self, hook: str, **kwargs: Any):
        """Call a remote hook (one taking the connection) on this connector's plugin."""
        return self.call_plain(hook, connection=self.connection, **kwargs)

    def call_plain(self, hook: str, **kwargs: Any):
        """Call `hook` on this connector's plugin with exactly `kwargs`."""
        if not self.supports(hook):
            raise NotSupported(f"the {self.name} plugin does not implement {hook}")
        return _call_on(self.pm, self._plugin, hook, **kwargs)


# -- enable / disable / remove -------------------------------------------------------------


def enabled_plugins(pm: pluggy.PluginManager, store: Store, kind: str) -> list[str]:
    return [
        state.name
        for state in store.plugin_states()
        if state.enabled
        and pm.get_plugin(state.name) is not None
        and plugin_record(pm, state.name).kind == kind
    ]


def enable_plugin(
    pm: pluggy.PluginManager, store: Store, name: str, check: bool = True, transport: Any = None,
    dry_run: bool = False,
) -> ConnectionReport | None:
    """Enable a connector after validating its settings and the one-PSA rule.

    With `check`, the connection is tested first: a refused connection stops the enable, and
    missing permissions are kept as warnings and returned in the report. A dry run validates
    and stops there: it tests no connection and changes nothing.
    """
    record = _connector_record(pm, store, name)
    validate_settings(name, record.settings, plugin_settings(pm, store, name))
    if record.kind == "psa":
        others = [other for other in enabled_plugins(pm, store, "psa") if other != name]
        if others:
            other = others[0]
            raise PluginError(
                f"cannot enable {name}: the PSA plugin {other} is enabled and only one PSA can be "
                f"enabled at a time; disable it first with `psabridge plugins disable {other}`"
            )
    if dry_run:
        return None
    from psabridge.core.connectors import FACADES  # it builds on this module

    report = None
    connector = FACADES[record.kind](pm, connection_for(pm, store, name, transport))
    if check and connector.supports(f"{record.kind}_check_connection"):
        report = connector.check_connection()
        if not report.ok:
            raise PluginError(f"cannot enable {name}: {report.detail}")
        for permission in report.missing_permissions:
            store.add_warning(name, "permissions", f"the API user lacks {permission}")
    store.set_enabled(name, True)
    log.info("plugin_enabled", plugin=name)
    return report


def disable_plugin(pm: pluggy.PluginManager, store: Store, name: str) -> None:
    """Disable a connector; its settings and mappings stay as they are."""
    _connector_record(pm, store, name)
    store.set_enabled(name, False)
    log.info("plugin_disabled", plugin=name)


# The PSA's option recording the ticket callback URL `serve --public-url` registered, so that
# removing the PSA can unregister it: the PSA finds a registration by its URL, and the URL
# carries the webhook secret, which only `serve` is given. Sealed, as secret settings are.
TICKET_CALLBACK_OPTION = "ticket_callback"


def has_ticket_callback(store: Store, psa: str) -> bool:
    """Whether psabridge recorded a ticket callback it registered in `psa`."""
    recorded = store.option(psa, TICKET_CALLBACK_OPTION)
    return isinstance(recorded, dict) and bool(recorded.get("url"))


def registered_ticket_callback(store: Store, psa: str) -> str | None:
    """The ticket callback URL psabridge registered in `psa`, if it recorded one."""
    if not has_ticket_callback(store, psa):
        return None
    url = secrets.unseal(store.option(psa, TICKET_CALLBACK_OPTION)["url"], psa, "ticket callback URL")
    # Its token is the webhook secret: masked in whatever the unregistering logs, in any encoding.
    for name, value in parse_qsl(urlsplit(url).query):
        if name == "token":
            logs.register_secret(value)
    return url


def register_ticket_callback(bridge: Any, url: str, signing_secret: str) -> str:
    """Register `url` as the enabled PSA's ticket callback and record it in the store; a
    callback registered before at another URL (the webhook secret or the public address has
    changed since) is unregistered once the new one is in place. Returns the registration id."""
    psa = bridge.psa
    try:
        previous = registered_ticket_callback(bridge.store, psa.name)
    except secrets.SecretsError as exc:  # sealed with another key: it cannot be found again
        log.warning("earlier ticket callback not unregistered", plugin=psa.name, error=str(exc))
        previous = None
    registration = psa.register_ticket_callback(url, signing_secret)
    bridge.store.set_option(psa.name, TICKET_CALLBACK_OPTION, {"url": secrets.seal(url)})
    if previous and previous != url:
        psa.unregister_ticket_callback(previous)
    return registration


def remove_plugin(
    pm: pluggy.PluginManager, store: Store, name: str, transport: Any = None
) -> dict[str, int]:
    """Unmap the plugin's devices on the PSA side and, for a PSA, unregister the ticket
    callback `serve` registered in it; then purge all its rows from the store.

    The remote steps come first: if one fails, the store still lists what to undo and a rerun
    finishes the job. Configurations stay Active. Returns rows deleted per table.
    """
    from psabridge.core.connectors import PsaConnector  # it builds on this module

    record = _connector_record(pm, store, name)
    mappings = store.device_mappings_of(name)
    by_psa: dict[str, list[str]] = {}
    for mapping in mappings:
        by_psa.setdefault(mapping.psa, []).append(mapping.configuration_id)
    for psa, configuration_ids in by_psa.items():
        if pm.get_plugin(psa) is None:
            log.warning("psa plugin not installed; links left in place", plugin=psa)
            continue
        connector = PsaConnector(pm, connection_for(pm, store, psa, transport))
        connector.unmap_configurations(configuration_ids=configuration_ids)
        store.record(
            JournalEntry(psa, "unmap_configurations", ",".join(configuration_ids), "ok",
                         {"reason": f"remove {name}"})
        )
    callback = registered_ticket_callback(store, name) if record.kind == "psa" else None
    if callback:
        connector = PsaConnector(pm, connection_for(pm, store, name, transport))
        if connector.supports("psa_unregister_ticket_callback"):
            connector.unregister_ticket_callback(callback)
            # The target is where the callback went, without its token.
            store.record(JournalEntry(name, "unregister_ticket_callback", callback.split("?", 1)[0],
                                      "ok", {"reason": f"remove {name}"}))
    deleted = store.purge_plugin(name)
    log.info("plugin_removed", plugin=name, kind=record.kind, deleted=deleted)
    return deleted
