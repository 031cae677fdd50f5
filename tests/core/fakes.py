"""Throw-away plugins for tests of core/: small, explicit, and recording what they were asked."""

from __future__ import annotations

from psabridge.core.hookspecs import hookimpl
from psabridge.core.models import ConnectionReport, ConnectorInfo, Setting


class OtherPsa:
    """A minimal second PSA connector, as a third party would write one."""

    def __init__(self, report: ConnectionReport | None = None, fail_with: Exception | None = None):
        self.unmapped: list[list[str]] = []
        self.report = report or ConnectionReport(ok=True)
        self.fail_with = fail_with
        self.fail_unmap_with: Exception | None = None

    @hookimpl
    def connector_info(self):
        return ConnectorInfo(
            kind="psa",
            title="Other PSA",
            settings=(
                Setting("url", "URL", kind="url"),
                Setting("token", "API token", secret=True),
            ),
        )

    @hookimpl
    def psa_check_connection(self, connection):
        if self.fail_with:
            raise self.fail_with
        return self.report

    @hookimpl
    def psa_unmap_configurations(self, connection, configuration_ids):
        if self.fail_unmap_with:
            raise self.fail_unmap_with
        self.unmapped.append(list(configuration_ids))
