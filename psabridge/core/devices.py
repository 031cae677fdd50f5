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

from psabridge.core import logs, pacing
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


def refresh_device_details(connector, store, rmm: str, devices: Iterable[Device],
                           workers: int = 1) -> DetailsRefresh:
    """Return the details of `devices`, calling `rmm_device_details` only where the audit changed.

    `connector` is the `psabridge.core.connectors.RmmConnector` of the RMM plugin named `rmm`.
    A device never audited (`last_audit` None) has no details to read and is skipped.
    A device whose cached audit time equals its `last_audit` reuses the cached details; any other
    is read through the hook (on up to `workers` threads, in the caller's context) and saved
    under its new audit time, a group of devices per transaction. A device whose read fails is
    left out of `details` and put in `failed`; the others are read all the same.
    """
    result = DetailsRefresh()
    to_read = []
    for device in devices:
        if device.last_audit is None:
            result.unaudited += 1
            continue
        cached = store.device_details(rmm, device.uid)
        if cached is not None and cached[0] == device.last_audit:
            result.details[device.uid] = cached[1]
            result.cached += 1
            continue
        to_read.append(device)
    group = max(SAVE_GROUP, 8 * workers)
    for start in range(0, len(to_read), group):
        read = pacing.concurrently(lambda device: connector.device_details(device=device),
                                   to_read[start:start + group], workers)
        for outcome in read:
            device = outcome.item
            if outcome.error is not None:
                # Nothing is saved: the cache keeps the earlier audit's time, so the next
                # refresh sees the audit as changed and asks again.
                result.failed[device.uid] = outcome.error
                log.warning("device details not read", rmm=rmm, device=device.uid,
                            hostname=device.hostname, error=str(outcome.error))
                continue
            result.details[device.uid] = outcome.value
            result.fetched += 1
        # One commit per group: a crash loses at most a group's reads, which are read again.
        with store.transaction():
            for outcome in read:
                if outcome.error is None:
                    store.save_device_details(rmm, outcome.item.uid, outcome.item.last_audit,
                                              outcome.value)
    log.info("device_details_refreshed", rmm=rmm, fetched=result.fetched, cached=result.cached,
             unaudited=result.unaudited, failed=len(result.failed))
    return result


SAVE_GROUP = 100  # details read, then saved in one transaction
