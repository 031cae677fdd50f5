"""What a connector package hands the conformance kit, and how the kit talks to the connector.

The kit never calls a connector's functions directly: it registers the plugin object in a fresh
pluggy manager, exactly as an entry point would, and calls hooks through
:class:`psabridge.core.plugins.Connector`. A hook whose name or arguments do not match the
contract therefore fails here the way it would fail in production.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import pytest

from psabridge.core.errors import RemoteError
from psabridge.core.hookspecs import required_hooks
from psabridge.core.models import Connection, ConnectionReport, ConnectorInfo
from psabridge.core.plugins import ENTRY_POINT_GROUP, Connector, make_plugin_manager

# The hooks core/ calls on an enabled connector, as hookspecs.py marks them: a connector without
# one of them cannot do its job.
PSA_REQUIRED_HOOKS = required_hooks("psa")
RMM_REQUIRED_HOOKS = required_hooks("rmm")

Headers = Mapping[str, str]


@attrs.frozen
class TicketSetup:
    """Where the kit files its tickets: a company, the routing choices (routing field name to
    choice id, as `psa_ticket_options` declares them), and an open and a closed status."""

    company_id: str
    routing: Mapping[str, str]
    open_status_id: str | None
    closed_status_id: str


def _default_connect(name: str, transport: Any) -> Callable[[Mapping[str, str]], Connection]:
    return lambda settings: Connection(name, dict(settings), transport=transport)


@attrs.define(kw_only=True)
class _UnderTest:
    plugin: object
    """The object pluggy registers: your plugin module (what your entry point names) or instance."""
    name: str
    """The plugin's name, as its entry point would give it."""
    settings: Mapping[str, str]
    """Settings that work against your simulator or sandbox."""
    transport: Any = None
    """An httpx transport for in-process simulators; None means real network (or loopback)."""
    connect: Callable[[Mapping[str, str]], Connection] | None = None
    """Make a Connection from settings (e.g. to install fast retry options in `state`).
    Defaults to `Connection(name, settings, transport=transport)`."""
    entry_point: str | None = None
    """If set, the kit checks that the `psabridge` entry point of this name loads `plugin`."""
    page_size: int | None = None
    """The largest page your connector asks for; pagination checks seed more than this."""

    def connection(self, settings: Mapping[str, str] | None = None) -> Connection:
        connect = self.connect or _default_connect(self.name, self.transport)
        return connect(self.settings if settings is None else settings)


@attrs.define(kw_only=True)
class PsaUnderTest(_UnderTest):
    """A PSA connector and the callbacks that arrange data in its simulator or sandbox.

    Every callback is optional: the checks that need a missing one are skipped, and say so.
    """

    missing_id: str = "999999999"
    """An id that names no company, configuration or ticket (in your id format)."""
    add_companies: Callable[[int], Sequence[str]] | None = None
    """Create `n` companies in the remote; return their ids (pagination of psa_list_companies)."""
    add_tickets: Callable[[TicketSetup, int], Sequence[str]] | None = None
    """Create `n` tickets in the remote; return their ids (pagination of psa_changed_tickets)."""
    ticket_setup: Callable[[], TicketSetup] | None = None
    """Where to file tickets; by default the kit picks from psa_ticket_options and the companies."""
    callback_url: str = "https://psabridge.example.com/hooks/psa?token=kit"
    """The URL the callback checks register (only if you implement the callback hooks)."""
    ticket_callbacks: Callable[[str], Sequence[tuple[Headers, bytes]]] | None = None
    """The callbacks your PSA sent (or would send) to the registered URL since ticket `ticket_id`
    last changed, as (headers, body): the kit parses them with `psa_parse_ticket_callback`."""
    signs_callbacks: bool = False
    """Whether your PSA signs its callbacks with the `signing_secret` given at registration: the
    kit then checks that a wrong secret or a changed body is refused."""


@attrs.define(kw_only=True)
class RmmUnderTest(_UnderTest):
    """An RMM connector and the callbacks that arrange data in its simulator or sandbox."""

    missing_uid: str = "00000000-0000-4000-8000-000000000000"
    """A uid that names no alert or device (in your uid format)."""
    add_devices: Callable[[str, int], Sequence[str]] | None = None
    """Add `n` devices to the site `site_uid`; return their uids."""
    raise_alert: Callable[[str], str] | None = None
    """Raise an open alert on the device `device_uid`; return the alert's uid."""
    alert_webhooks: Callable[[str], Sequence[tuple[Headers, bytes]]] | None = None
    """The webhooks your RMM sends for the alert `alert_uid`, as (headers, body): the kit
    parses them with `rmm_parse_alert_webhook`."""


class Kit:
    """One connector registered in its own plugin manager, with a working Connection."""

    def __init__(self, subject: _UnderTest, kind: str):
        self.subject = subject
        self.kind = kind
        self.pm = make_plugin_manager(load_entrypoints=False)
        self.pm.register(subject.plugin, name=subject.name)
        self.connector = Connector(self.pm, subject.connection())

    # -- calling hooks -------------------------------------------------------------------------

    def call(self, hook: str, **kwargs: Any):
        return self.connector.call(hook, **kwargs)

    def all(self, hook: str, **kwargs: Any) -> list:
        """Call a hook that returns an iterator, and read it to the end."""
        return list(self.call(hook, **kwargs))

    def supports(self, hook: str) -> bool:
        return self.connector.supports(hook)

    def require(self, *hooks: str) -> None:
        missing = [h for h in hooks if not self.supports(h)]
        if missing:
            pytest.skip(f"{self.subject.name} does not implement {', '.join(missing)}")

    def arrange(self, callback_name: str) -> Callable:
        callback = getattr(self.subject, callback_name)
        if callback is None:
            pytest.skip(f"give {type(self.subject).__name__}.{callback_name} to run this check")
        return callback

    def info(self) -> ConnectorInfo:
        return self.call("connector_info")

    def refused_connector(self, sentinel: str) -> Connector:
        """A Connector whose every secret setting is `sentinel`, which the remote must refuse."""
        secrets = [s.name for s in self.info().settings if s.secret]
        assert secrets, (f"{self.subject.name} declares no secret setting; mark the credential "
                         "Setting(..., secret=True) so it is prompted for hidden and redacted")
        settings = {**self.subject.settings, **dict.fromkeys(secrets, sentinel)}
        return Connector(self.pm, self.subject.connection(settings))


def sentinel_secret() -> str:
    """A wrong secret no test registered anywhere, so a leak cannot hide behind redaction."""
    return f"kit-wrong-secret-{uuid.uuid4().hex}"


def unique_marker(label: str = "") -> str:
    return f"psabridge:kit:{label}{uuid.uuid4().hex}"


def entry_point_plugin(name: str) -> object:
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name == name:
            return entry_point.load()
    raise LookupError(f"no {ENTRY_POINT_GROUP!r} entry point named {name!r} is installed")


def exception_texts(exc: BaseException) -> list[str]:
    """str() and repr() of an exception and of every exception it was raised from."""
    texts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), *map(str, current.args)]
        current = current.__cause__ or current.__context__
    return texts


def as_utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class ConnectorChecks:
    """The checks PSA and RMM connectors share: registration, connection test, refused keys.

    A subclass names its `kind`, the hooks core calls (`required_hooks`), a listing hook to
    call with refused credentials (`refused_listing`), and provides a `kit` fixture.
    """

    kind: str
    required_hooks: tuple[str, ...]
    refused_listing: tuple[str, dict]

    def test_says_what_kind_it_is(self, kit):
        info = kit.info()
        assert info is not None, "connector_info must return a ConnectorInfo"
        assert info.kind == self.kind
        assert info.title
        names = [s.name for s in info.settings]
        assert len(names) == len(set(names)), f"setting names repeat: {names}"

    def test_implements_every_hook_core_calls(self, kit):
        missing = [h for h in self.required_hooks if not kit.supports(h)]
        assert not missing, f"{kit.subject.name} does not implement {', '.join(missing)}"

    def test_entry_point_loads_the_plugin(self, kit):
        if kit.subject.entry_point is None:
            pytest.skip(f"give the {self.kind.upper()} under test an entry_point to check the registration")
        assert entry_point_plugin(kit.subject.entry_point) is kit.subject.plugin

    def test_check_connection_accepts_working_settings(self, kit):
        hook = f"{self.kind}_check_connection"
        kit.require(hook)
        report = kit.call(hook)
        assert isinstance(report, ConnectionReport)
        assert report.ok, report.detail

    def test_check_connection_reports_refused_credentials_without_the_secret(self, kit, capsys, caplog):
        hook = f"{self.kind}_check_connection"
        kit.require(hook)
        secret = sentinel_secret()
        report = kit.refused_connector(secret).call(hook)
        assert report.ok is False
        assert report.detail, "say what to fix in detail"
        assert secret not in report.detail
        captured = capsys.readouterr()
        assert secret not in captured.out + captured.err + caplog.text

    def test_refused_credentials_raise_a_remote_error_without_the_secret(self, kit, capsys, caplog):
        secret = sentinel_secret()
        hook, kwargs = self.refused_listing
        with pytest.raises(RemoteError) as raised:
            list(kit.refused_connector(secret).call(hook, **kwargs))
        assert str(raised.value).strip(), "the message is shown to the admin: say what to fix"
        for text in exception_texts(raised.value):
            assert secret not in text
        captured = capsys.readouterr()
        assert secret not in captured.out + captured.err + caplog.text
