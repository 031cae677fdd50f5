"""An event listener: every site mapped, configuration created, alert raised and ticket created,
written as one JSON line to the file named by PSABRIDGE_EVENT_LOG (an audit trail, or a feed for
a chat notifier).

A listener is a plugin like a connector, without `connector_info`: register the module under the
`psabridge` entry-point group (`event_log = event_log`) and it is called on every event, after
the change was made. tests/kit/test_event_log.py runs it.
"""

from __future__ import annotations

import json
import os
import threading

from psabridge.core.hookspecs import hookimpl
from psabridge.core.models import converter, utcnow

ENV_FILE = "PSABRIDGE_EVENT_LOG"
_lock = threading.Lock()  # the engine fires events from several worker threads


def write(event: str, **fields) -> None:
    path = os.environ.get(ENV_FILE)
    if not path:
        return
    line = json.dumps({"at": utcnow().isoformat(), "event": event,
                       **converter.unstructure(fields)}, sort_keys=True)
    with _lock, open(path, "a", encoding="utf-8") as log:
        log.write(line + "\n")


@hookimpl
def on_site_mapped(psa, rmm, company, site):
    write("site_mapped", psa=psa, rmm=rmm, company_id=company.id, company=company.name,
          site_uid=site.uid, site=site.name)


@hookimpl
def on_configuration_created(psa, device, configuration):
    write("configuration_created", psa=psa, device_uid=device.uid, hostname=device.hostname,
          configuration_id=configuration.id)


@hookimpl
def on_alert_raised(rmm, alert):
    write("alert_raised", rmm=rmm, alert_uid=alert.uid, priority=alert.priority,
          monitor=alert.monitor, device_uid=alert.device_uid)


@hookimpl
def on_ticket_created(psa, alert, ticket):
    write("ticket_created", psa=psa, ticket_id=ticket.id, summary=ticket.summary,
          alert_uid=alert.uid if alert else None)
