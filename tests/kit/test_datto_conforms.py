"""The Datto RMM connector passes the conformance kit, against its simulator in-process."""

from __future__ import annotations

import json

import pytest

import psabridge.plugins.rmm_datto as datto
from psabridge.core.http import RetryPolicy
from psabridge.core.models import Connection
from psabridge.plugins.rmm_datto.client import PAGE_MAX, ClientOptions, client_for
from psabridge.plugins.rmm_datto.simulator import DattoSimulator
from psabridge.testing import RmmConformance, RmmUnderTest

# Never really wait: not for retries, not for the client's own quota keeping.
OPTIONS = ClientOptions(retry=RetryPolicy(attempts=3, base_delay=0.001, max_retry_after=1.0),
                        sleep=lambda seconds: None)


def connect(settings, transport) -> Connection:
    connection = Connection("datto", dict(settings), transport=transport)
    client_for(connection, OPTIONS)
    return connection


class TestDattoInProcess(RmmConformance):
    @pytest.fixture
    def rmm_under_test(self):
        sim = DattoSimulator(seed=5, companies=2, alerts=4, sleep=lambda seconds: None)
        transport = sim.transport()

        def add_devices(site_uid: str, n: int) -> list[str]:
            return [sim.add_device(site_uid, f"KIT-PC-{i:04d}")["uid"] for i in range(n)]

        return RmmUnderTest(
            plugin=datto, name="datto", entry_point="datto",
            settings=sim.settings("http://datto.kit"), connect=lambda s: connect(s, transport),
            page_size=PAGE_MAX, add_devices=add_devices,
            raise_alert=lambda device_uid: sim.raise_alert(device_uid)["alertUid"],
            alert_webhooks=alert_webhooks,
        )


def alert_webhooks(alert_uid: str) -> list[tuple[dict, bytes]]:
    """Datto RMM POSTs the body template the admin wrote (docs/connectors/datto-rmm.md), its
    variables filled in: the bare template, and ones stating the alert's state."""
    headers = {"Content-Type": "application/json"}
    return [(headers, json.dumps({"alertUid": alert_uid}).encode()),
            (headers, json.dumps({"alertUid": alert_uid, "event": "raised"}).encode()),
            (headers, json.dumps({"alert_uid": alert_uid, "resolved": False}).encode())]
