"""CW records (dicts in the API's JSON shape) to and from psabridge's models."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from psabridge.core.models import Company, Configuration, Ticket
from psabridge.plugins.connectwise.errors import UnexpectedAnswer

# Field limits from the 2025.1 spec (key-objects.md) for what we write.
MAX_CONFIGURATION_NAME = 100
MAX_MODEL_NUMBER = 50
MAX_SERIAL_NUMBER = 250
MAX_MANAGEMENT_LINK = 1000
MAX_SUMMARY = 100
MAX_EXTERNAL_XREF = 100
MARKER_PREFIX = "psabridge:"


def _name(reference: Any, key: str = "name") -> str:
    return str(reference.get(key) or "") if isinstance(reference, dict) else ""


def _id(reference: Any) -> str | None:
    if isinstance(reference, dict) and reference.get("id") is not None:
        return str(reference["id"])
    return None


def _text(record: dict, field: str, kind: str) -> str:
    """A text field as text. A number is written out (CW stores some codes as numbers); any
    other type means a broken answer, reported with the record to look at, not a crash later."""
    value = record.get(field)
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise UnexpectedAnswer(f"ConnectWise sent {kind} {record.get('id')} with a {type(value).__name__} "
                           f"as its {field}, where text belongs; check that record in ConnectWise")


def parse_datetime(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise UnexpectedAnswer(f"ConnectWise sent {text!r} where a date-time belongs") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def datetime_text(value: dt.date) -> str:
    """CW's date-time form for a date: midnight UTC, `Z` suffix."""
    return f"{value.isoformat()}T00:00:00Z"


def company_from(record: dict) -> Company:
    return Company(
        id=str(record["id"]), identifier=_text(record, "identifier", "company"),
        name=_text(record, "name", "company"),
        status=_name(record.get("status")),
        types=tuple(_name(t) for t in record.get("types") or () if _name(t)),
        deleted=bool(record.get("deletedFlag")),
    )


def configuration_from(record: dict) -> Configuration:
    warranty = parse_datetime(record.get("warrantyExpirationDate"))
    return Configuration(
        id=str(record["id"]), name=_text(record, "name", "configuration"),
        company_id=_id(record.get("company")) or "",
        type_id=_id(record.get("type")), type_name=_name(record.get("type")),
        status=_name(record.get("status")), active=record.get("activeFlag") is not False,
        serial_number=_text(record, "serialNumber", "configuration") or None,
        manufacturer=_name(record.get("manufacturer")) or None,
        model_number=_text(record, "modelNumber", "configuration") or None,
        management_link=_text(record, "managementLink", "configuration") or None,
        expiration_date=warranty.date() if warranty else None,
    )


def ticket_from(record: dict, configuration_ids: tuple[str, ...] = ()) -> Ticket:
    info = record.get("_info") or {}
    return Ticket(
        id=str(record["id"]), summary=_text(record, "summary", "ticket"),
        company_id=_id(record.get("company")) or "",
        status_id=_id(record.get("status")), status_name=_name(record.get("status")),
        closed=bool(record.get("closedFlag")), marker=record.get("externalXRef") or None,
        configuration_ids=configuration_ids, last_updated=parse_datetime(info.get("lastUpdated")),
    )


def stored_marker(marker: str) -> str:
    """What goes into `externalXRef` (<= 100 chars) for core's marker.

    Short markers are stored as they are, so an admin can read them in CW; a longer one is
    replaced by a digest that is just as unique and always fits.
    """
    if len(marker) <= MAX_EXTERNAL_XREF:
        return marker
    return MARKER_PREFIX + hashlib.sha256(marker.encode()).hexdigest()


def ticket_description(text: str, device_url: str | None, alert_url: str | None) -> str:
    """The ticket's initial description with the RMM links as their own lines, unless
    the text already carries them (core's description does): each link appears once."""
    lines = [text.rstrip()] if text else []
    present = set(text.splitlines()) if text else set()
    links = [f"{label}: {url}" for label, url in (("RMM Device", device_url), ("RMM Alert", alert_url))
             if url and f"{label}: {url}" not in present]
    if links:
        lines += ["", *links]
    return "\n".join(lines)
