"""Contacts: validation of phone numbers (E.164) and upserts that keep every valid row."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from sqlalchemy import select
from sqlalchemy.engine import Engine

from core.db import session_scope
from core.models import Contact, utcnow


class InvalidContact(ValueError):
    pass


def normalize_phone(raw: Any) -> str:
    """E.164 for a number written with its country code; a clear error otherwise."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidContact("phone is required")
    text = raw.strip()
    if not text.startswith("+") and not text.startswith("00"):
        raise InvalidContact(f"{text!r} has no country code: write it in E.164, like +14155550123")
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidContact(f"{text!r} is not a phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidContact(f"{text!r} is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@dataclass
class ContactRow:
    phone: str
    name: str | None
    timezone: str | None
    attributes: dict[str, Any]


def validate_row(row: Any) -> ContactRow:
    if not isinstance(row, dict):
        raise InvalidContact("each contact must be an object with a 'phone'")
    phone = normalize_phone(row.get("phone"))
    name = row.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidContact("name must be a string")
    timezone = row.get("timezone")
    if timezone is not None:
        if not isinstance(timezone, str):
            raise InvalidContact("timezone must be a string")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidContact(f"timezone {timezone!r} is not an IANA time zone (e.g. Europe/Berlin)") from None
    attributes = row.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise InvalidContact("attributes must be an object")
    return ContactRow(phone=phone, name=name, timezone=timezone, attributes=attributes)


@dataclass
class UpsertResult:
    created: int = 0
    updated: int = 0
    invalid: list[dict[str, Any]] = field(default_factory=list)


def upsert_contacts(engine: Engine, rows: list[Any]) -> UpsertResult:
    """Upsert by phone; invalid rows are reported by index and the valid ones kept."""
    result = UpsertResult()
    valid: dict[str, ContactRow] = {}
    for index, row in enumerate(rows):
        try:
            contact = validate_row(row)
        except InvalidContact as exc:
            phone = row.get("phone") if isinstance(row, dict) else None
            result.invalid.append({"index": index, "phone": phone, "error": str(exc)})
            continue
        valid[contact.phone] = contact  # a phone twice in one request: the last row wins
    phones = list(valid)
    with session_scope(engine) as session:
        for start in range(0, len(phones), 500):
            chunk = phones[start : start + 500]
            existing = {c.phone: c for c in session.scalars(select(Contact).where(Contact.phone.in_(chunk)))}
            for phone in chunk:
                row = valid[phone]
                contact = existing.get(phone)
                if contact is None:
                    session.add(Contact(phone=phone, name=row.name, timezone=row.timezone, attributes=row.attributes))
                    result.created += 1
                else:
                    if row.name is not None:
                        contact.name = row.name
                    if row.timezone is not None:
                        contact.timezone = row.timezone
                    if row.attributes:
                        contact.attributes = {**(contact.attributes or {}), **row.attributes}
                    contact.updated_at = utcnow()
                    session.add(contact)
                    result.updated += 1
            session.flush()
    return result
