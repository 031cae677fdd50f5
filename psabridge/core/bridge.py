"""The running integration: the enabled PSA and RMM connectors, the store, and the options.

Every engine function (mapping, ticketing, sync) takes a `Bridge`. Remote writes go through
`Bridge.write`, which journals them, so the journal accounts for every change made elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import pluggy

from psabridge.core import coordination, logs
from psabridge.core.errors import PluginError
from psabridge.core.models import CompanyFilters, JournalEntry
from psabridge.core.plugins import Connector, connection_for, enabled_plugins
from psabridge.core.store import Store

T = TypeVar("T")
log = logs.get_logger(__name__)

# Integration options, per PSA plugin, with their defaults.
OPTION_DEFAULTS: dict[str, Any] = {
    "auto_map": False,  # Off until the admin has checked the matching
    "site_threshold": 85.0,  # minimum score for a suggested site
}


@attrs.define
class Bridge:
    pm: pluggy.PluginManager
    store: Store
    psa: Connector
    rmm: Connector
    _configuration_types: list | None = attrs.field(default=None, repr=False)
    _company_ids: set[str] | None = attrs.field(default=None, repr=False)

    @property
    def pair(self) -> tuple[str, str]:
        return self.psa.name, self.rmm.name

    def configuration_types(self) -> list:
        """The PSA's configuration types, read once per bridge: they change rarely and cost
        one request per type where questions live on their own endpoint (ConnectWise)."""
        if self._configuration_types is None:
            self._configuration_types = list(self.psa.call("psa_list_configuration_types"))
        return self._configuration_types

    def company_ids(self) -> set[str]:
        """Ids of the companies the PSA lists now (deleted ones are not listed), read once per
        bridge: a mapping whose company is gone must not have configurations created under it."""
        if self._company_ids is None:
            self._company_ids = {c.id for c in self.psa.call("psa_list_companies",
                                                             filters=CompanyFilters())
                                 if not c.deleted}
        return self._company_ids

    def option(self, name: str) -> Any:
        value = self.store.option(self.psa.name, name)
        return OPTION_DEFAULTS[name] if value is None else value

    def set_option(self, name: str, value: Any) -> None:
        if name not in OPTION_DEFAULTS:
            raise PluginError(f"unknown option {name!r}; options are {', '.join(OPTION_DEFAULTS)}")
        self.store.set_option(self.psa.name, name, value)

    def write(self, connector: Connector, action: str, target: str, call: Callable[[], T],
              **detail: Any) -> T:
        """Make one change on a remote system and journal how it ended.

        The intent is journalled first: a process killed while the request is in flight (after
        the remote system acted, before the answer was recorded) still leaves a trace of it.
        Nothing is sent by a holder whose lease covering this write was lost."""
        coordination.ensure_held()
        self.store.record(JournalEntry(connector.name, action, target, "intent", detail))
        try:
            result = call()
        except Exception as exc:
            self.store.record(JournalEntry(connector.name, action, target, "failed",
                                           {**detail, "error": logs.redact_text(str(exc))}))
            raise
        self.store.record(JournalEntry(connector.name, action, target, "ok", detail))
        return result


def open_bridge(
    pm: pluggy.PluginManager, store: Store, transports: Mapping[str, Any] | None = None
) -> Bridge:
    """The bridge between the enabled PSA and the enabled RMM.

    `transports` maps a plugin name to an httpx transport (a simulator mounted in-process).
    """
    transports = transports or {}
    connectors = {}
    for kind in ("psa", "rmm"):
        names = enabled_plugins(pm, store, kind)
        if not names:
            raise PluginError(
                f"no {kind.upper()} plugin is enabled; configure one with `psabridge configure "
                f"NAME ...` and enable it with `psabridge plugins enable NAME`"
            )
        if len(names) > 1:
            raise PluginError(
                f"several RMM plugins are enabled ({', '.join(names)}); psabridge maps one RMM "
                "to the PSA at a time: disable all but one"
            )
        name = names[0]
        connectors[kind] = Connector(pm, connection_for(pm, store, name, transports.get(name)))
    return Bridge(pm=pm, store=store, psa=connectors["psa"], rmm=connectors["rmm"])
