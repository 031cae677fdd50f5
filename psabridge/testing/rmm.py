"""The RMM half of the conformance kit: `RmmConformance`, a battery of pytest checks.

Subclass it in your connector's tests and give it an `rmm_under_test` fixture returning an
:class:`~psabridge.testing.RmmUnderTest`; see :mod:`psabridge.testing.psa` for the pattern.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

import pytest

from psabridge.core.errors import InvalidCallback
from psabridge.core.models import Alert, AlertWebhook, Device, DeviceDetails, Site, utcnow
from psabridge.testing.harness import (
    RMM_REQUIRED_HOOKS,
    ConnectorChecks,
    Kit,
    RmmUnderTest,
    unique_marker,
)


def _absolute(url: str) -> bool:
    parts = urlsplit(url or "")
    return parts.scheme in ("http", "https") and bool(parts.netloc)


class RmmKit(Kit):
    subject: RmmUnderTest

    def site(self) -> Site:
        sites = [s for s in self.all("rmm_list_sites") if not s.system]
        assert sites, "rmm_list_sites returned no site that is not a system site: seed one"
        return sites[0]

    def devices(self, site_uid: str | None = None) -> list[Device]:
        return self.all("rmm_list_devices", site_uid=site_uid)

    def device(self) -> Device:
        live = [d for d in self.devices() if not d.deleted]
        assert live, "rmm_list_devices returned no device that is not deleted: seed one"
        return live[0]

    def open_alert(self) -> Alert:
        raise_alert = self.arrange("raise_alert")
        uid = raise_alert(self.device().uid)
        alert = self.call("rmm_get_alert", alert_uid=uid)
        assert alert is not None and alert.uid == uid, "rmm_get_alert does not find a raised alert"
        return alert


class RmmConformance(ConnectorChecks):
    """The checks every RMM connector passes. Provide an `rmm_under_test` fixture."""

    kind = "rmm"
    required_hooks = RMM_REQUIRED_HOOKS
    refused_listing = ("rmm_list_sites", {})

    @pytest.fixture
    def rmm(self, rmm_under_test: RmmUnderTest) -> RmmKit:
        return RmmKit(rmm_under_test, "rmm")

    @pytest.fixture
    def kit(self, rmm: RmmKit) -> RmmKit:
        return rmm

    # -- sites ---------------------------------------------------------------------------------

    def test_sites_have_distinct_uids(self, rmm):
        uids = [s.uid for s in rmm.all("rmm_list_sites")]
        assert uids and len(uids) == len(set(uids))

    def test_created_site_is_returned_and_listed(self, rmm):
        name = f"Kit Site {unique_marker()[-8:]}"
        site = rmm.call("rmm_create_site", name=name)
        assert site.uid and site.name == name
        listed = {s.uid: s for s in rmm.all("rmm_list_sites")}
        assert site.uid in listed and listed[site.uid].name == name

    # -- devices -------------------------------------------------------------------------------

    def test_devices_come_back_whole_across_pages(self, rmm):
        add = rmm.arrange("add_devices")
        if rmm.subject.page_size is None:
            pytest.skip("give RmmUnderTest.page_size to check pagination")
        site = rmm.site()
        added = list(add(site.uid, rmm.subject.page_size + 3))
        for scope in (None, site.uid):
            uids = [d.uid for d in rmm.devices(scope)]
            assert len(uids) == len(set(uids)), f"a device came back twice (site_uid={scope})"
            assert set(added) <= set(uids), f"{len(set(added) - set(uids))} devices lost (site_uid={scope})"

    def test_devices_of_a_site_belong_to_it_and_to_the_account(self, rmm):
        everything = {d.uid for d in rmm.devices()}
        for site in rmm.all("rmm_list_sites"):
            devices = rmm.devices(site.uid)
            assert {d.site_uid for d in devices} <= {site.uid}, f"site {site.name} lists another's devices"
            live = {d.uid for d in devices if not d.deleted}
            assert live <= everything, f"devices of site {site.name} are missing from the account's"

    def test_device_details_are_read_on_a_fresh_connection(self, rmm):
        device = rmm.device()
        fresh = RmmKit(rmm.subject, "rmm")  # nothing listed on this connection yet
        details = fresh.call("rmm_device_details", device=device)
        assert isinstance(details, DeviceDetails)
        assert details == rmm.call("rmm_device_details", device=device)

    def test_device_urls_are_absolute_stable_and_distinct(self, rmm):
        devices = rmm.devices()[:20]
        urls = [rmm.call("rmm_device_url", device=d) for d in devices]
        assert all(_absolute(u) for u in urls), urls
        assert len(set(urls)) == len(urls), "two devices share a URL: matching by link would confuse them"
        assert urls == [rmm.call("rmm_device_url", device=d) for d in devices]

    def test_site_url_is_absolute(self, rmm):
        assert _absolute(rmm.call("rmm_site_url", site=rmm.site()))

    # -- alerts --------------------------------------------------------------------------------

    def test_raised_alert_is_listed_open(self, rmm):
        alert = rmm.open_alert()
        assert alert.resolved is False
        assert alert.device_uid and alert.monitor
        assert _absolute(rmm.call("rmm_alert_url", alert=alert))
        listed = rmm.all("rmm_list_alerts", resolved=False, since=None)
        assert alert.uid in {a.uid for a in listed}
        assert not [a.uid for a in listed if a.resolved], "resolved alerts listed as open"

    def test_resolving_twice_succeeds_and_the_alert_is_listed_resolved(self, rmm):
        alert = rmm.open_alert()
        assert rmm.call("rmm_resolve_alert", alert_uid=alert.uid) is None
        rmm.call("rmm_resolve_alert", alert_uid=alert.uid)  # already resolved: must not fail
        assert rmm.call("rmm_get_alert", alert_uid=alert.uid).resolved is True
        listed = rmm.all("rmm_list_alerts", resolved=True, since=None)
        assert alert.uid in {a.uid for a in listed}
        assert all(a.resolved for a in listed), "open alerts listed as resolved"
        assert alert.uid not in {a.uid for a in rmm.all("rmm_list_alerts", resolved=False, since=None)}

    def test_get_missing_alert_returns_none(self, rmm):
        assert rmm.call("rmm_get_alert", alert_uid=rmm.subject.missing_uid) is None

    def test_alerts_since_the_future_are_none(self, rmm):
        rmm.open_alert()
        assert rmm.all("rmm_list_alerts", resolved=False, since=utcnow() + dt.timedelta(days=1)) == []

    def test_alerts_come_back_whole_across_pages(self, rmm):
        raise_alert = rmm.arrange("raise_alert")
        if rmm.subject.page_size is None:
            pytest.skip("give RmmUnderTest.page_size to check pagination")
        device = rmm.device()
        raised = [raise_alert(device.uid) for _ in range(rmm.subject.page_size + 3)]
        uids = [a.uid for a in rmm.all("rmm_list_alerts", resolved=False, since=None)]
        assert len(uids) == len(set(uids)), "an alert came back twice"
        assert set(raised) <= set(uids), f"{len(set(raised) - set(uids))} alerts were lost"

    def test_ids_are_strings(self, rmm):
        """Core treats every remote id as an opaque string; an int compares unequal to it."""
        sites = rmm.all("rmm_list_sites")
        devices = rmm.devices()
        ids = {"site": [s.uid for s in sites] + [s.id for s in sites if s.id is not None],
               "device": [d.uid for d in devices] + [d.id for d in devices if d.id is not None],
               "device site": [d.site_uid for d in devices]}
        if rmm.subject.raise_alert is not None:
            alert = rmm.open_alert()
            ids["alert"] = [alert.uid, alert.device_uid, alert.site_uid]
        for what, values in ids.items():
            wrong = [v for v in values if not isinstance(v, str)]
            assert not wrong, f"{what} ids must be strings, not {type(wrong[0]).__name__}: {wrong[:3]}"

    # -- alert webhooks (optional) ---------------------------------------------------------------

    def test_the_rmms_own_webhooks_are_parsed(self, rmm):
        rmm.require("rmm_parse_alert_webhook")
        sent = rmm.arrange("alert_webhooks")
        alert = rmm.open_alert()
        deliveries = list(sent(alert.uid))
        assert deliveries, "alert_webhooks gave no webhook for a raised alert"
        for headers, body in deliveries:
            parsed = rmm.call("rmm_parse_alert_webhook", body=body,
                              headers={k.lower(): v for k, v in dict(headers).items()})
            assert isinstance(parsed, AlertWebhook), "an alert's webhook must be parsed"
            assert parsed.alert_uid == alert.uid
            assert parsed.state in (None, "raised", "resolved")

    def test_a_body_the_rmm_does_not_send_is_refused(self, rmm):
        rmm.require("rmm_parse_alert_webhook")
        for body in (b"not json", b"[1, 2]", b'{"alertUid": {"nested": true}}'):
            with pytest.raises(InvalidCallback) as refused:
                rmm.call("rmm_parse_alert_webhook", headers={"content-type": "application/json"},
                         body=body)
            assert refused.value.reason.strip(), "say why the body is refused"
