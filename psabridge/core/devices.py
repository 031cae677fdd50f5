"""Keeping the store's audit cache current at the cost of pages, not one request per device.

An RMM's device list carries each device's last audit time; its hardware identity (serial,
manufacturer, model) costs one request per device. So the store keeps the details read at each
device's last audit (`store.device_details`), and only a device whose audit time moved since is
asked again. A repeat sync of an unchanged estate then reads the device pages and nothing else.

One device the RMM will not describe never stops the others: its read's error is reported in
`DetailsRefresh.failed`, and what the store holds for it stays as it was, so the next refresh
asks again.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from psabridge.core import logs
from psabridge.core.errors import PsabridgeError
from psabridge.core.models import Device, DeviceDetails

log = logs.get_logger(__name__)


@attrs.define
class DetailsRefresh:
    """What one refresh did: details per device uid, how many were read vs. reused, and the
    error of each device whose read failed (its `transient` says whether to expect it to pass)."""

    details: dict[str, DeviceDetails] = attrs.field(factory=dict)
    failed: dict[str, PsabridgeError] = attrs.field(factory=dict)
    fetched: int = 0
    cached: int = 0
    unaudited: int = 0


def refresh_device_details(connector, store, rmm: str, devices: Iterable[Device]) -> DetailsRefresh:
    """Return the details of `devices`, calling `rmm_device_details` only where the audit changed.

    `connector` is a `psabridge.core.plugins.Connector` bound to the RMM plugin named `rmm`.
    A device never audited (`last_audit` None) has no details to read and is skipped.
    A device whose cached audit time equals its `last_audit` reuses the cached details; any other
    is read through the hook and saved under its new audit time. A device whose read fails is
    left out of `details` and put in `failed`; the others are read all the same.
    """
    result = DetailsRefresh()
    for device in devices:
        if device.last_audit is None:
            result.unaudited += 1
            continue
        cached = store.device_details(rmm, device.uid)
        if cached is not None and cached[0] == device.last_audit:
            result.details[device.uid] = cached[1]
            result.cached += 1
            continue
        try:
            details = connector.call("rmm_device_details", device=device)
        except PsabridgeError as exc:
            # Nothing is saved: the cache keeps the earlier audit's time, so the next refresh
            # sees the audit as changed and asks again.
            result.failed[device.uid] = exc
            log.warning("device details not read", rmm=rmm, device=device.uid,
                        hostname=device.hostname, error=str(exc))
            continue
        store.save_device_details(rmm, device.uid, device.last_audit, details)
        result.details[device.uid] = details
        result.fetched += 1
    log.info("device_details_refreshed", rmm=rmm, fetched=result.fetched, cached=result.cached,
             unaudited=result.unaudited, failed=len(result.failed))
    return result
