"""In-memory PSA and RMM connectors, for testing core/ without HTTP.

They implement the hooks the way the contract says (including the edge cases: skipping missing
ids, idempotent resolves) and count every call, so engine tests can assert what was asked.
End-to-end tests run the same engine against the ConnectWise and Datto simulators.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import threading
import time

import attrs
import time_machine

from psabridge.core.errors import RemoteError
from psabridge.core.hookspecs import hookimpl
from psabridge.core.models import (
    Alert,
    Company,
    Configuration,
    ConfigurationType,
    ConnectionReport,
    ConnectorInfo,
    Device,
    DeviceDetails,
    Setting,
    Site,
    Ticket,
    TicketOptions,
)
from psabridge.plugins.connectwise import hooks as connectwise_hooks
from psabridge.plugins.rmm_datto import hooks as datto_hooks


def remote_now() -> dt.datetime:
    """The remote systems' clock: the real one, even while a test moves this host's clock."""
    hatch = time_machine.escape_hatch
    return dt.datetime.fromtimestamp(hatch.time.time() if hatch.is_travelling() else time.time(),
                                     dt.UTC)


class ServerError(RemoteError):
    """What a connector raises for a 5xx: the remote system's passing state."""

    transient = True


class MemoryPsa:
    def __init__(self):
        self.companies: dict[str, Company] = {}
        self.types: dict[str, ConfigurationType] = {}
        self.configurations: dict[str, Configuration] = {}
        self.unmatchable: dict[str, Exception] = {}  # company id -> what its candidates query raises
        self.calls: collections.Counter[str] = collections.Counter()
        self._ids = itertools.count(1000)
        self._init_tickets()

    def add_configuration(self, **fields) -> Configuration:
        configuration = Configuration(id=str(next(self._ids)), **fields)
        self.configurations[configuration.id] = configuration
        return configuration

    @hookimpl
    def connector_info(self):
        return ConnectorInfo("psa", "Memory PSA", (Setting("url", "URL", kind="url"),))

    @hookimpl
    def psa_check_connection(self, connection):
        return ConnectionReport(ok=True)

    @hookimpl
    def psa_list_companies(self, connection, filters):
        self.calls["list_companies"] += 1
        return iter(list(self.companies.values()))

    @hookimpl
    def psa_list_configuration_types(self, connection):
        self.calls["list_configuration_types"] += 1
        return list(self.types.values())

    @hookimpl
    def psa_match_configurations(self, connection, company_id, devices, details):
        self.calls["match_configurations"] += 1
        if company_id in self.unmatchable:
            raise self.unmatchable[company_id]
        found = {}
        for device in devices:
            serial = details[device.uid].serial_number
            found[device.uid] = [
                c for c in self.configurations.values()
                if c.company_id == company_id and (
                    (c.management_link and c.management_link == device.url)
                    or (serial and c.serial_number == serial) or c.name == device.hostname)
            ]
        return found

    @hookimpl
    def psa_get_configurations(self, connection, ids):
        self.calls["get_configurations"] += 1
        return [self.configurations[i] for i in ids if i in self.configurations]

    @hookimpl
    def psa_create_configuration(self, connection, configuration):
        self.calls["create_configuration"] += 1
        created = attrs.evolve(configuration, id=str(next(self._ids)), status="Active")
        self.configurations[created.id] = created
        return created

    @hookimpl
    def psa_update_configuration(self, connection, configuration_id, changes):
        self.calls["update_configuration"] += 1
        c = self.configurations[configuration_id]
        if changes.management_link is not None:
            c = attrs.evolve(c, management_link=changes.management_link)
        if changes.clear_management_link:
            c = attrs.evolve(c, management_link=None)
        if changes.active is not None:
            c = attrs.evolve(c, active=changes.active, status="Active" if changes.active else "Inactive")
        if changes.expiration_date is not None:
            c = attrs.evolve(c, expiration_date=changes.expiration_date)
        self.configurations[configuration_id] = c
        return c

    @hookimpl
    def psa_unmap_configurations(self, connection, configuration_ids):
        self.calls["unmap_configurations"] += 1
        self._maybe_fail("unmap_configurations")
        for cid in configuration_ids:
            if cid in self.configurations:
                self.configurations[cid] = attrs.evolve(self.configurations[cid], management_link=None)


    # -- tickets ---------------------------------------------------------------------------

    def _init_tickets(self):
        self.tickets: dict[str, Ticket] = {}
        self.descriptions: dict[str, str] = {}
        self.drafts: dict[str, object] = {}
        self.notes: dict[str, list[str]] = collections.defaultdict(list)
        self.options = TicketOptions()
        self.closed_statuses: set[str] = set()
        # (exception, "before" | "after"): the next create fails before or after the ticket exists
        self.fail_next_create: tuple[Exception, str] | None = None
        # when set, a create waits for it: the PSA is slow, another process acts meanwhile
        self.create_gate: threading.Event | None = None
        # hook name -> errors the next calls of that hook raise, one each
        self.fail_next: dict[str, list[Exception]] = collections.defaultdict(list)

    def _maybe_fail(self, hook: str) -> None:
        if self.fail_next[hook]:
            raise self.fail_next[hook].pop(0)

    @hookimpl
    def psa_ticket_options(self, connection):
        self.calls["ticket_options"] += 1
        return self.options

    @hookimpl
    def psa_create_ticket(self, connection, draft):
        self.calls["create_ticket"] += 1
        if self.create_gate is not None:
            self.create_gate.wait(timeout=30)
        failure, self.fail_next_create = self.fail_next_create, None
        if failure and failure[1] == "before":
            raise failure[0]
        ticket = Ticket(id=str(next(self._ids)), summary=draft.summary, company_id=draft.company_id,
                        status_id=draft.status_id, marker=draft.marker,
                        configuration_ids=(draft.configuration_id,) if draft.configuration_id else (),
                        last_updated=remote_now())
        self.tickets[ticket.id] = ticket
        self.drafts[ticket.id] = draft
        if failure:
            raise failure[0]
        return ticket

    @hookimpl
    def psa_find_ticket(self, connection, marker):
        self.calls["find_ticket"] += 1
        return next((t for t in self.tickets.values() if t.marker == marker), None)

    @hookimpl
    def psa_get_ticket(self, connection, ticket_id):
        self.calls["get_ticket"] += 1
        return self.tickets.get(ticket_id)

    @hookimpl
    def psa_add_ticket_note(self, connection, ticket_id, text):
        self.calls["add_ticket_note"] += 1
        self._maybe_fail("add_ticket_note")
        self.notes[ticket_id].append(text)

    @hookimpl
    def psa_close_ticket(self, connection, ticket_id, closed_status_id):
        self.calls["close_ticket"] += 1
        self._maybe_fail("close_ticket")
        return self.close(ticket_id, closed_status_id)

    def close(self, ticket_id, status_id):
        ticket = attrs.evolve(self.tickets[ticket_id], status_id=status_id, closed=True,
                              last_updated=remote_now())
        self.tickets[ticket_id] = ticket
        return ticket

    @hookimpl
    def psa_changed_tickets(self, connection, since):
        return iter(sorted((t for t in self.tickets.values()
                            if since is None or t.last_updated > since),
                           key=lambda t: t.last_updated))


    @hookimpl
    def psa_parse_ticket_callback(self, connection, headers, body, signing_secret):
        # Callbacks shaped as ConnectWise sends them: the tests post its bodies.
        return connectwise_hooks.psa_parse_ticket_callback(connection, headers, body,
                                                           signing_secret)


class MemoryRmm:
    def __init__(self):
        self.sites: dict[str, Site] = {}
        self.devices: dict[str, Device] = {}
        self.details: dict[str, DeviceDetails] = {}
        self.unreadable: dict[str, Exception] = {}  # device uid -> what its details read raises
        self.alerts: dict[str, Alert] = {}
        self.calls: collections.Counter[str] = collections.Counter()
        self._ids = itertools.count(1)
        # when set, the next alert URL asked for waits for it: an RMM slow to answer, once
        self.alert_url_gate: threading.Event | None = None
        self.alert_url_held = threading.Event()  # set once the gate holds its caller

    def raise_alert(self, device: Device, monitor="disk C:", priority="High", **fields) -> Alert:
        alert = Alert(uid=fields.pop("uid", f"alert-{next(self._ids)}"), priority=priority,
                      device_uid=device.uid, site_uid=device.site_uid, monitor=monitor,
                      message=fields.pop("message", f"{monitor} needs attention"),
                      raised_at=fields.pop("raised_at", remote_now()),
                      device_name=device.hostname, **fields)
        self.alerts[alert.uid] = alert
        return alert

    def resolve(self, alert_uid):
        self.alerts[alert_uid] = attrs.evolve(self.alerts[alert_uid], resolved=True,
                                              resolved_at=remote_now())

    def add_device(self, hostname, site_uid, device_type="Desktop", **fields) -> Device:
        uid = fields.pop("uid", f"dev-{next(self._ids)}")
        details = fields.pop("details", DeviceDetails())
        device = Device(uid=uid, hostname=hostname, site_uid=site_uid, device_type=device_type,
                        url=f"https://rmm.example.com/device/{uid}", **fields)
        self.devices[uid] = device
        self.details[uid] = details
        return device

    @hookimpl
    def connector_info(self):
        return ConnectorInfo("rmm", "Memory RMM", (Setting("url", "URL", kind="url"),))

    @hookimpl
    def rmm_list_sites(self, connection):
        self.calls["list_sites"] += 1
        return iter(list(self.sites.values()))

    @hookimpl
    def rmm_create_site(self, connection, name):
        self.calls["create_site"] += 1
        site = Site(uid=f"site-{next(self._ids)}", name=name)
        self.sites[site.uid] = site
        return site

    @hookimpl
    def rmm_list_devices(self, connection, site_uid):
        self.calls["list_devices"] += 1
        return iter([d for d in self.devices.values() if site_uid in (None, d.site_uid)])

    @hookimpl
    def rmm_device_details(self, connection, device):
        self.calls["device_details"] += 1
        if device.uid in self.unreadable:
            raise self.unreadable[device.uid]
        return self.details[device.uid]

    @hookimpl
    def rmm_device_url(self, connection, device):
        return f"https://rmm.example.com/device/{device.uid}"

    @hookimpl
    def rmm_site_url(self, connection, site):
        return f"https://rmm.example.com/site/{site.uid}"

    @hookimpl
    def rmm_alert_url(self, connection, alert):
        gate, self.alert_url_gate = self.alert_url_gate, None
        if gate is not None:
            self.alert_url_held.set()
            gate.wait(timeout=30)
        return f"https://rmm.example.com/alert/{alert.uid}"

    @hookimpl
    def rmm_list_alerts(self, connection, resolved, since):
        self.calls["list_alerts"] += 1
        return iter([a for a in self.alerts.values() if a.resolved == resolved
                     and (since is None or (a.resolved_at or a.raised_at) > since)])

    @hookimpl
    def rmm_get_alert(self, connection, alert_uid):
        self.calls["get_alert"] += 1
        return self.alerts.get(alert_uid)

    @hookimpl
    def rmm_resolve_alert(self, connection, alert_uid):
        self.calls["resolve_alert"] += 1
        if not self.alerts[alert_uid].resolved:
            self.resolve(alert_uid)

    @hookimpl
    def rmm_parse_alert_webhook(self, connection, headers, body):
        # Webhooks shaped as Datto RMM sends them: the tests post its bodies.
        return datto_hooks.rmm_parse_alert_webhook(connection, headers, body)
