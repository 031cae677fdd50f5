"""No alert lost at the edge of R27: Datto stamps alerts in whole milliseconds."""

from __future__ import annotations

import datetime as dt

from psabridge.core import sync, ticketing
from tests.reliability.world import set_up, world


def test_an_alert_raised_in_the_millisecond_ticketing_was_enabled_gets_a_ticket(tmp_path):
    with world(tmp_path / "state.db", seed=5, companies=4) as w:
        set_up(w)
        sync.run_pass(w.bridge)  # maps the devices
        device = w.store.device_mappings(*w.bridge.pair)[0].device_uid
        alert = w.datto.raise_alert(device)
        # Ticketing switched on 0.6 ms into the millisecond the alert is stamped with: the alert
        # may well have come after it, and an alert is never dropped on a guess.
        stamped = dt.datetime.fromtimestamp(alert["timestamp"] / 1000, dt.UTC)
        ticketing.set_ticketing_enabled(w.bridge, False)
        ticketing.set_ticketing_enabled(w.bridge, True, now=stamped + dt.timedelta(microseconds=600))
        report = sync.run_pass(w.bridge)
        row = w.store.alert_ticket(*w.bridge.pair, alert["alertUid"])
        assert (row.state, report.tickets_created) == ("open", 1), row.note
