"""Autotask records (dicts in the API's JSON shape) to and from psabridge's models, and the
connector's choices of where things go: the device link, the marker, the RMM links."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

import attrs

from psabridge.core.models import Company, Configuration, Ticket
from psabridge.plugins.autotask.errors import AutotaskError, UnexpectedAnswer

# Field lengths of what we write (entity-fields.json, REST values).
MAX_REFERENCE_TITLE = 200
MAX_REFERENCE_NUMBER = 100
MAX_SERIAL_NUMBER = 100
MAX_TITLE = 255
MAX_DESCRIPTION = 8000
MAX_EXTERNAL_ID = 50
MAX_NOTE_TITLE = 250
MAX_NOTE = 32000
MARKER_PREFIX = "psabridge:"
UDF_PREFIX = "udf:"
DEFAULT_LINK_FIELD = "referenceNumber"


def link_field_problem(value: str) -> str | None:
    """What is wrong with a `device_link_field` value, in words, or None (checked at configure;
    whether the user-defined field exists is checked by the connection check)."""
    try:
        LinkField.from_settings({"device_link_field": value})
    except AutotaskError as exc:
        return str(exc).removeprefix("device_link_field ")
    return None


@attrs.frozen
class LinkField:
    """Where a configuration item keeps its RMM device link (the `device_link_field` setting).

    Autotask has no management-link field, and whether an integration other than Datto's own
    may write the `rmmDevice*` fields is not established, so the link goes to `referenceNumber`
    (100 characters) by default, or to a text user-defined field named after `udf:`.
    """

    name: str
    udf: bool = False
    limit: int | None = MAX_REFERENCE_NUMBER

    @classmethod
    def from_settings(cls, settings: Mapping[str, str]) -> LinkField:
        raw = (settings.get("device_link_field") or "").strip() or DEFAULT_LINK_FIELD
        if raw.lower().startswith(UDF_PREFIX):
            name = raw[len(UDF_PREFIX):].strip()
            if not name:
                raise AutotaskError("device_link_field 'udf:' needs the user-defined field's name, "
                                    "e.g. udf:RMM Device Link")
            return cls(name, udf=True, limit=None)
        if raw.lower() == "referencenumber":
            return cls("referenceNumber")
        if raw.lower() == "serialnumber":
            raise AutotaskError("device_link_field cannot be serialNumber: psabridge matches "
                                "configuration items by serial number; use referenceNumber or udf:NAME")
        raise AutotaskError(f"device_link_field must be referenceNumber or udf:NAME (a text "
                            f"user-defined field of configuration items), not {raw[:60]!r}")

    def read(self, record: Mapping[str, Any]) -> str | None:
        if not self.udf:
            return _text(record.get(self.name)) or None
        return udf_value(record, self.name)

    def write(self, value: str | None) -> dict[str, Any]:
        """The body fragment setting the link (None or "" empties it)."""
        if value and self.limit is not None and len(value) > self.limit:
            raise AutotaskError(f"the device link ({len(value)} characters) does not fit "
                                f"{self.name} ({self.limit}); set device_link_field to a longer "
                                "user-defined field (udf:NAME)")
        if self.udf:
            return {"userDefinedFields": [{"name": self.name, "value": value or None}]}
        return {self.name: value or None}


def udf_value(record: Mapping[str, Any], name: str) -> str | None:
    """A user-defined field's value (names compare without case; absent list: no value)."""
    for field in record.get("userDefinedFields") or ():
        if isinstance(field, dict) and str(field.get("name", "")).casefold() == name.casefold():
            return _text(field.get("value")) or None
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise UnexpectedAnswer(f"Autotask sent a {type(value).__name__} where text belongs")


def _id(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def parse_datetime(text: Any) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise UnexpectedAnswer(f"Autotask sent {str(text)[:40]!r} where a date-time belongs") from None
    # Autotask keeps every date-time in UTC (API-NOTES §9).
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def datetime_text(value: dt.datetime | dt.date) -> str:
    """Autotask's form: ISO-8601 UTC with `Z` (a date is midnight UTC)."""
    if not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time(), dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def company_from(record: dict, type_labels: Mapping[str, str]) -> Company:
    company_type = type_labels.get(str(record.get("companyType")), "")
    return Company(
        id=str(record["id"]), identifier=_text(record.get("companyNumber")) or str(record["id"]),
        name=_text(record.get("companyName")),
        status="Active" if record.get("isActive") is not False else "Inactive",
        types=(company_type,) if company_type else (),
    )


def configuration_from(record: dict, link: LinkField, type_names: Mapping[str, str]) -> Configuration:
    warranty = parse_datetime(record.get("warrantyExpirationDate"))
    active = record.get("isActive") is not False
    type_id = _id(record.get("configurationItemType"))
    return Configuration(
        id=str(record["id"]), name=_text(record.get("referenceTitle")),
        company_id=_id(record.get("companyID")) or "",
        type_id=type_id, type_name=type_names.get(type_id or "", ""),
        status="Active" if active else "Inactive", active=active,
        serial_number=_text(record.get("serialNumber")) or None,
        management_link=link.read(record),
        expiration_date=warranty.date() if warranty else None,
    )


def ticket_from(record: dict, status_labels: Mapping[str, str], closed_ids: frozenset[str],
                configuration_ids: tuple[str, ...] | None = None) -> Ticket:
    status = _id(record.get("status"))
    if configuration_ids is None:
        primary = _id(record.get("configurationItemID"))
        configuration_ids = (primary,) if primary else ()
    return Ticket(
        id=str(record["id"]), summary=_text(record.get("title")),
        company_id=_id(record.get("companyID")) or "",
        status_id=status, status_name=status_labels.get(status or "", ""),
        closed=status in closed_ids, marker=_text(record.get("externalID")) or None,
        configuration_ids=configuration_ids,
        last_updated=parse_datetime(record.get("lastActivityDate")),
    )


def stored_marker(marker: str) -> str:
    """What goes into the ticket's `externalID` (50 characters, and filterable with `eq`).

    A short marker is stored as it is, so an admin can read it in Autotask; a longer one (core's
    `psabridge:datto:<uid>` is 52) becomes a digest that is just as unique and always fits.
    """
    if len(marker) <= MAX_EXTERNAL_ID:
        return marker
    return MARKER_PREFIX + hashlib.sha256(marker.encode()).hexdigest()[: MAX_EXTERNAL_ID - len(MARKER_PREFIX)]


def ticket_description(text: str, device_url: str | None, alert_url: str | None) -> str:
    """The description with the RMM links as lines of their own at its end, cut to fit: the
    links are kept whole and the text gives way."""
    links = [f"{label}: {url}" for label, url in (("RMM Device", device_url), ("RMM Alert", alert_url))
             if url and f"{label}: {url}" not in (text or "")]
    tail = "\n\n" + "\n".join(links) if links else ""
    body = (text or "").rstrip()
    room = MAX_DESCRIPTION - len(tail)
    if len(body) > room:
        body = body[: max(0, room - 1)] + "…"
    return (body + tail).strip("\n") if not body else body + tail


def fit(value: str | None, limit: int) -> str | None:
    return value[:limit] if value and len(value) > limit else value
