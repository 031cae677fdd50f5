"""No alert lost or wrongly ticketed at the edge of R27, whatever the clocks say.

Datto stamps alerts in whole milliseconds, and its clock is not ours. So "from the moment
ticketing is switched on" is decided by what is open in the RMM at that moment, not by
comparing timestamps: an alert already open is skipped, one raised after is ticketed, even
when both carry the very same stamp.
"""

from __future__ import annotations

from psabridge.core import sync, ticketing
from tests.reliability.world import set_up, world


def test_alerts_just_before_and_just_after_switching_on_with_the_same_stamp(tmp_path):
    with world(tmp_path / "state.db", seed=5, companies=4) as w:
        set_up(w)
        sync.run_pass(w.bridge)  # maps the devices
        device = w.store.device_mappings(*w.bridge.pair)[0].device_uid
        ticketing.set_ticketing_enabled(w.bridge, False)
        before = w.datto.raise_alert(device)
        ticketing.set_ticketing_enabled(w.bridge, True)
        after = w.datto.raise_alert(device, {"@class": "antivirus_ctx", "status": "NOT_RUNNING",
                                             "productName": "Defender"})
        after["timestamp"] = before["timestamp"]  # the same millisecond, by the RMM's clock
        report = sync.run_pass(w.bridge)
        rows = {uid: w.store.alert_ticket(*w.bridge.pair, uid) for uid in
                (before["alertUid"], after["alertUid"])}
        assert rows[before["alertUid"]].state == "skipped"
        assert rows[before["alertUid"]].note == "raised while ticketing was off"
        assert rows[after["alertUid"]].state == "open" and report.tickets_created == 1
