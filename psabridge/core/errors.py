"""Exceptions whose message is shown to the admin as one line: say what is wrong and what to do."""

from __future__ import annotations


class PsabridgeError(Exception):
    """Base of every error psabridge reports to a person."""


class PluginError(PsabridgeError):
    """A plugin cannot be found, enabled, disabled or removed as asked."""


class SettingsError(PsabridgeError):
    """One or more settings are invalid; `problems` maps each field to what is wrong with it."""

    def __init__(self, plugin: str, problems: dict[str, str]):
        self.plugin = plugin
        self.problems = dict(problems)
        lines = "; ".join(f"{field}: {problem}" for field, problem in self.problems.items())
        super().__init__(f"invalid settings for {plugin}: {lines}")


class NotSupported(PsabridgeError):
    """The plugin does not implement a hook that the operation needs."""


class RemoteError(PsabridgeError):
    """The remote system refused or failed a request. Connectors subclass this.

    `transient` says the failure is the remote side's passing state (5xx, throttled, no
    answer), not a problem with what was asked: trying again later may succeed. `setting`
    names the connector's setting at fault when the failure comes from one (a field it names
    that the remote system does not have): core then points at that setting, not at the record.
    """

    transient: bool = False
    setting: str | None = None


class StoreError(PsabridgeError):
    """The state store cannot be opened or used (corrupt, read-only, newer schema...)."""


class InvalidCallback(PsabridgeError, ValueError):
    """A callback or webhook body is not what its sender sends, or its signature does not hold.

    Raised by a connector's `psa_parse_ticket_callback` or `rmm_parse_alert_webhook`; core
    answers the request 400 with `reason` and changes nothing. Say what is wrong in words
    ("ID must be a positive integer"); never put a secret, nor the body, in the reason.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
