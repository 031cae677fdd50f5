"""The rmm_* hooks for Datto RMM: each is one or a few API calls plus a `wire` conversion."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

from psabridge.core import logs
from psabridge.core.callbacks import identifier, json_object
from psabridge.core.errors import InvalidCallback
from psabridge.core.hookspecs import hookimpl
from psabridge.core.models import (
    Alert,
    AlertWebhook,
    Connection,
    ConnectionReport,
    Device,
    DeviceDetails,
    Site,
)
from psabridge.plugins.rmm_datto import wire
from psabridge.plugins.rmm_datto.client import (
    DattoError,
    DattoNotFound,
    DattoUnreachable,
    client_for,
)

log = logs.get_logger(__name__)

# uid -> deviceClass of the devices listed during this run; the audit endpoint depends on it.
CLASSES_KEY = "datto.device_classes"
# uid -> portalUrl of the devices seen during this run: the link tickets carry.
URLS_KEY = "datto.device_urls"
AUDIT_PATHS = {"device": "device", "printer": "printer", "esxihost": "esxihost"}
PLATFORM_HOST = re.compile(r"^(?P<platform>[a-z0-9]+)-api\.centrastage\.net$", re.IGNORECASE)


@hookimpl
def rmm_check_connection(connection: Connection) -> ConnectionReport:
    try:
        account = client_for(connection).get("/v2/account")
    except DattoUnreachable as exc:
        return ConnectionReport(
            ok=False, detail=f"cannot reach Datto RMM at api_url: {logs.redact_text(str(exc.__cause__))}")
    except DattoError as exc:  # refused: the message names what to check
        return ConnectionReport(ok=False, detail=str(exc))
    return ConnectionReport(ok=True, detail=f"connected to account {account.get('name') or '?'}")


# -- sites ---------------------------------------------------------------------------------------


@hookimpl
def rmm_list_sites(connection: Connection) -> Iterator[Site]:
    for row in client_for(connection).pages("/v2/account/sites", "sites"):
        yield wire.site(row)


@hookimpl
def rmm_create_site(connection: Connection, name: str) -> Site:
    client = client_for(connection)
    try:
        # PUT creates here (§5), so it is not safe to repeat blindly: idempotent=False.
        response = client.request("PUT", "/v2/site", json={"name": name}, operation="site-create",
                                  idempotent=False)
    except DattoUnreachable:
        # The answer was lost; the site may exist. Find it before anyone creates it again.
        if (existing := _site_named(client, name)) is not None:
            return existing
        raise
    return wire.site(client.json(response))


def _site_named(client, name: str) -> Site | None:
    for row in client.pages("/v2/account/sites", "sites", {"siteName": name}):
        if row.get("name") == name:  # siteName is a partial match
            return wire.site(row)
    return None


# -- devices -------------------------------------------------------------------------------------


@hookimpl
def rmm_list_devices(connection: Connection, site_uid: str | None) -> Iterator[Device]:
    path = "/v2/account/devices" if site_uid is None else f"/v2/site/{site_uid}/devices"
    classes = connection.state.setdefault(CLASSES_KEY, {})
    urls = connection.state.setdefault(URLS_KEY, {})
    for row in client_for(connection).pages(path, "devices"):
        classes[str(row["uid"])] = row.get("deviceClass") or "unknown"
        device = wire.device(row)
        urls[device.uid] = rmm_device_url(connection, device)
        yield device


@hookimpl
def rmm_device_details(connection: Connection, device: Device) -> DeviceDetails:
    """Read the audit that fits the device's class; network devices have none (empty details)."""
    client = client_for(connection)
    device_class = connection.state.get(CLASSES_KEY, {}).get(device.uid)
    if device_class is None:  # not listed in this run: ask the device itself (one read)
        device_class = client.get(f"/v2/device/{device.uid}").get("deviceClass") or "unknown"
    kind = AUDIT_PATHS.get(device_class)
    if kind is None:
        return DeviceDetails()
    audit = client.get(f"/v2/audit/{kind}/{device.uid}")
    return wire.device_details(audit, device_class)


# -- alerts --------------------------------------------------------------------------------------


@hookimpl
def rmm_list_alerts(connection: Connection, resolved: bool, since: dt.datetime | None
                    ) -> Iterator[Alert]:
    """Every page of the account's open or resolved alerts, kept when newer than `since`.

    The API has no time filter and its order is not established, so every page is read.
    """
    state = "resolved" if resolved else "open"
    for row in client_for(connection).pages(f"/v2/account/alerts/{state}", "alerts"):
        alert = wire.alert(row)
        moment = (alert.resolved_at or alert.raised_at) if resolved else alert.raised_at
        if since is None or moment is None or moment > since:
            yield alert


@hookimpl
def rmm_get_alert(connection: Connection, alert_uid: str) -> Alert | None:
    try:
        return wire.alert(client_for(connection).get(f"/v2/alert/{alert_uid}"))
    except DattoNotFound:
        return None


@hookimpl
def rmm_resolve_alert(connection: Connection, alert_uid: str) -> None:
    """Resolve; if Datto refuses, succeed anyway when the alert is already resolved or gone.

    What Datto answers to resolving a resolved alert is not established (§5), so a refusal is
    checked against the alert itself rather than trusted or ignored.
    """
    client = client_for(connection)
    try:
        # Resolving twice leaves the same state, so retrying a lost answer is safe.
        client.request("POST", f"/v2/alert/{alert_uid}/resolve", operation="alert-resolve",
                       idempotent=True)
    except DattoError as refusal:
        if refusal.status not in (400, 404, 409):
            raise
        current = rmm_get_alert(connection, alert_uid)
        if current is not None and not current.resolved:
            raise
        log.info("alert_already_resolved_or_gone", alert=alert_uid, status=refusal.status)


# -- links ---------------------------------------------------------------------------------------


def portal_url(connection: Connection) -> str:
    """The web UI's base: the `portal_url` setting, else derived from the platform (§8)."""
    if configured := (connection.settings.get("portal_url") or "").strip():
        return configured.rstrip("/")
    api_url = connection.settings["api_url"].rstrip("/")
    parts = urlsplit(api_url)
    match = PLATFORM_HOST.match(parts.hostname or "")
    if match:
        return f"https://{match['platform'].lower()}.rmm.datto.com"
    return api_url


@hookimpl
def rmm_device_url(connection: Connection, device: Device) -> str:
    """The device's page. An alert names its device by uid only, and the portal's pages go by
    id: use the portalUrl seen when devices were listed, else read the device once."""
    if device.url:
        return device.url
    urls = connection.state.setdefault(URLS_KEY, {})
    if device.uid not in urls and device.id is None:
        try:
            known = wire.device(client_for(connection).get(f"/v2/device/{device.uid}"))
        except DattoNotFound:
            known = device
        urls[device.uid] = known.url or f"{portal_url(connection)}/device/{known.id or known.uid}"
    return urls.get(device.uid) or f"{portal_url(connection)}/device/{device.id or device.uid}"


@hookimpl
def rmm_alert_url(connection: Connection, alert: Alert) -> str:
    return f"{portal_url(connection)}/alert/{alert.uid}"


@hookimpl
def rmm_site_url(connection: Connection, site: Site) -> str:
    if site.url:
        return site.url
    return f"{portal_url(connection)}/site/{site.id or site.uid}"


# -- alert webhooks ----------------------------------------------------------------------------


@hookimpl
def rmm_parse_alert_webhook(connection: Connection, headers, body: bytes) -> AlertWebhook | None:
    """A Datto RMM alert webhook: a body template the admin writes, carrying at least
    {"alertUid": "[alert_uid]"}. Datto RMM signs nothing (API-NOTES §7) and gives no event id:
    an event is its alert and whether it was raised or resolved."""
    payload = json_object(body)
    uid = payload.get("alertUid", payload.get("alert_uid"))
    if uid is None or uid == "":
        raise InvalidCallback('no alertUid in the body; use the template {"alertUid": "[alert_uid]"}')
    return AlertWebhook(identifier(uid, "alertUid"), stated_alert_state(payload))


def stated_alert_state(payload: dict) -> str | None:
    """The alert's state as a Datto RMM webhook body says it: "raised", "resolved" or None.

    Datto's template variables include no such thing (API-NOTES §7), but the raise and the
    resolve can each have their own body, so an admin can write the state into it as a literal:
    `"event": "resolved"` (or `status`, `state`), or `"resolved": true`.
    """
    resolved = str(payload.get("resolved", "")).strip().lower()
    if resolved in ("true", "false"):
        return "resolved" if resolved == "true" else "raised"
    for field in ("event", "status", "state"):
        word = str(payload.get(field, "")).strip().lower()
        if word in ("raised", "resolved"):
            return word
    return None
