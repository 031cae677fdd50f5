"""What a connector learns once and every psabridge process on its store may reuse: an OAuth
token, the instance's codebase. Each process (every `sync --watch` worker, every `serve`
replica, every restart after a crash) would otherwise log in again, which on a fleet costs more
requests than the work itself.

A connector reaches its values through `connection.shared` (`SharedValues`): `get(name)` and
`put(name, value)`, strings the connector reads and writes in its own format (a token with its
expiry, say). Core knows nothing of what they mean; the connector decides when a value is stale
(near its expiry, refused by the API) and puts a fresh one.

A shared value may be a credential, so every one is kept like a secret setting: sealed with the
installation's key (`psabridge.core.secrets`) in the store's `options` table, under the plugin's
name, and removed with the plugin (`plugins remove`); the connector registers a credential it
reads back with `logs.register_secret`, so that no log shows it. Sharing is a saving,
never a condition: a value that cannot be read (no key here, sealed with another key, damaged)
counts as none, and one that cannot be written (a read-only store, no key can be made) stays
this process's own, so the connector logs in as it would alone.
"""

from __future__ import annotations

import attrs

from psabridge.core import logs, secrets
from psabridge.core.errors import PsabridgeError

log = logs.get_logger(__name__)

PREFIX = "shared:"  # option names of shared values: apart from the integration's options


@attrs.define
class SharedValues:
    """One plugin's shared values on one store."""

    store: object = attrs.field(repr=False)
    plugin: str

    def get(self, name: str) -> str | None:
        """The value last put under `name` by any process on the store, or None."""
        try:
            sealed = self.store.option(self.plugin, PREFIX + name)
        except PsabridgeError as exc:
            log.debug("shared_value_unreadable", plugin=self.plugin, name=name, reason=str(exc))
            return None
        if not isinstance(sealed, str) or not secrets.is_sealed(sealed):
            return None
        if not secrets.can_unseal(sealed):
            return None  # sealed under another installation's key, or damaged: as if absent
        return secrets.unseal(sealed, self.plugin, name)

    def put(self, name: str, value: str) -> bool:
        """Share `value` under `name` (replacing what was there); False when it could not be
        kept in the store (the caller goes on with it alone). A credential must already be
        registered with `logs.register_secret`, as whatever a connector receives from its API."""
        try:
            sealed = secrets.seal(value)
            # Not fenced: what a process learned from a remote system is true whoever learned it,
            # even a holder whose lease has just passed on.
            with self.store.transaction(fenced=False):
                self.store.set_option(self.plugin, PREFIX + name, sealed)
        except PsabridgeError as exc:
            log.debug("shared_value_not_kept", plugin=self.plugin, name=name, reason=str(exc))
            return False
        return True

    def forget(self, name: str) -> None:
        """Drop the value under `name`, for every process (it was refused)."""
        try:
            with self.store.transaction(fenced=False):
                self.store.set_option(self.plugin, PREFIX + name, None)
        except PsabridgeError as exc:
            log.debug("shared_value_not_forgotten", plugin=self.plugin, name=name, reason=str(exc))
