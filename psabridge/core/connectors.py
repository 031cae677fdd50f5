"""The enabled connectors as typed objects: `bridge.psa.list_companies(filters)`.

Each method calls the hook of the same name (with the `psa_`/`rmm_` prefix) on the one plugin
the admin enabled, passing the connection, and has that hookspec's signature: an IDE follows
it and a type checker checks it. A hook the plugin does not implement raises NotSupported;
ask `supports("psa_list_configurations")` before calling an optional one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence

from psabridge.core.models import (
    Alert,
    AlertWebhook,
    Company,
    CompanyFilters,
    Configuration,
    ConfigurationChanges,
    ConfigurationType,
    ConnectionReport,
    ConnectorInfo,
    Device,
    DeviceDetails,
    Site,
    Ticket,
    TicketCallback,
    TicketDraft,
    TicketOptions,
)
from psabridge.core.plugins import Connector


class PsaConnector(Connector):
    """The enabled PSA connector: one method per `psa_*` hook."""

    def info(self) -> ConnectorInfo:
        return self.call_plain("connector_info")

    def check_connection(self) -> ConnectionReport:
        return self.call("psa_check_connection")

    def list_companies(self, filters: CompanyFilters) -> Iterator[Company]:
        return self.call("psa_list_companies", filters=filters)

    def list_configuration_types(self) -> list[ConfigurationType]:
        return self.call("psa_list_configuration_types")

    def match_configurations(self, company_id: str, devices: Sequence[Device],
                             details: dict) -> dict[str, list[Configuration]]:
        return self.call("psa_match_configurations", company_id=company_id, devices=devices,
                         details=details)

    def list_configurations(self, company_id: str) -> Iterator[Configuration]:
        return self.call("psa_list_configurations", company_id=company_id)

    def configuration_listing_cost(self) -> int | None:
        return self.call("psa_configuration_listing_cost")

    def list_all_configurations(self) -> Iterator[Configuration]:
        return self.call("psa_list_all_configurations")

    def get_configurations(self, ids: Sequence[str]) -> list[Configuration]:
        return self.call("psa_get_configurations", ids=ids)

    def create_configuration(self, configuration: Configuration) -> Configuration:
        return self.call("psa_create_configuration", configuration=configuration)

    def update_configuration(self, configuration_id: str,
                             changes: ConfigurationChanges) -> Configuration:
        return self.call("psa_update_configuration", configuration_id=configuration_id,
                         changes=changes)

    def unmap_configurations(self, configuration_ids: Sequence[str]) -> None:
        return self.call("psa_unmap_configurations", configuration_ids=configuration_ids)

    def ticket_options(self) -> TicketOptions:
        return self.call("psa_ticket_options")

    def create_ticket(self, draft: TicketDraft) -> Ticket:
        return self.call("psa_create_ticket", draft=draft)

    def find_ticket(self, marker: str) -> Ticket | None:
        return self.call("psa_find_ticket", marker=marker)

    def attach_configuration(self, ticket_id: str, configuration_id: str) -> None:
        return self.call("psa_attach_configuration", ticket_id=ticket_id,
                         configuration_id=configuration_id)

    def get_ticket(self, ticket_id: str) -> Ticket | None:
        return self.call("psa_get_ticket", ticket_id=ticket_id)

    def add_ticket_note(self, ticket_id: str, text: str) -> None:
        return self.call("psa_add_ticket_note", ticket_id=ticket_id, text=text)

    def close_ticket(self, ticket_id: str, closed_status_id: str) -> Ticket:
        return self.call("psa_close_ticket", ticket_id=ticket_id,
                         closed_status_id=closed_status_id)

    def changed_tickets(self, since: dt.datetime | None) -> Iterator[Ticket]:
        return self.call("psa_changed_tickets", since=since)

    def ticket_url(self, ticket_id: str) -> str:
        return self.call("psa_ticket_url", ticket_id=ticket_id)

    def register_ticket_callback(self, url: str, signing_secret: str) -> str:
        return self.call("psa_register_ticket_callback", url=url, signing_secret=signing_secret)

    def unregister_ticket_callback(self, url: str) -> None:
        return self.call("psa_unregister_ticket_callback", url=url)

    def parse_ticket_callback(self, headers: Mapping[str, str], body: bytes,
                              signing_secret: str) -> TicketCallback | None:
        return self.call("psa_parse_ticket_callback", headers=headers, body=body,
                         signing_secret=signing_secret)


class RmmConnector(Connector):
    """The enabled RMM connector: one method per `rmm_*` hook."""

    def info(self) -> ConnectorInfo:
        return self.call_plain("connector_info")

    def check_connection(self) -> ConnectionReport:
        return self.call("rmm_check_connection")

    def list_sites(self) -> Iterator[Site]:
        return self.call("rmm_list_sites")

    def create_site(self, name: str) -> Site:
        return self.call("rmm_create_site", name=name)

    def list_devices(self, site_uid: str | None) -> Iterator[Device]:
        return self.call("rmm_list_devices", site_uid=site_uid)

    def device_details(self, device: Device) -> DeviceDetails:
        return self.call("rmm_device_details", device=device)

    def list_alerts(self, resolved: bool, since: dt.datetime | None) -> Iterator[Alert]:
        return self.call("rmm_list_alerts", resolved=resolved, since=since)

    def get_alert(self, alert_uid: str) -> Alert | None:
        return self.call("rmm_get_alert", alert_uid=alert_uid)

    def resolve_alert(self, alert_uid: str) -> None:
        return self.call("rmm_resolve_alert", alert_uid=alert_uid)

    def device_url(self, device: Device) -> str:
        return self.call("rmm_device_url", device=device)

    def alert_url(self, alert: Alert) -> str:
        return self.call("rmm_alert_url", alert=alert)

    def site_url(self, site: Site) -> str:
        return self.call("rmm_site_url", site=site)

    def parse_alert_webhook(self, headers: Mapping[str, str], body: bytes) -> AlertWebhook | None:
        return self.call("rmm_parse_alert_webhook", headers=headers, body=body)


FACADES: dict[str, type[Connector]] = {"psa": PsaConnector, "rmm": RmmConnector}
