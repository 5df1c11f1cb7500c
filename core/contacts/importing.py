"""Contact import: rows checked one by one, upserted by phone, every valid row kept.

A merge adds the row's attributes to the contact's (a key given null is kept as null); the
contact_attribute rows of every contact created or changed follow in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col

from core.contacts.attributes import attribute_text, store_attributes
from core.contacts.phones import InvalidContact, normalize_phone
from core.db import session_scope
from core.hooks.contracts import ContactCreated
from core.models import Contact, utcnow
from core.zones import zone

CHUNK = 500


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
        if zone(timezone) is None:
            raise InvalidContact(f"timezone {timezone!r} is not an IANA time zone (e.g. Europe/Berlin)")
    attributes = row.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise InvalidContact("attributes must be an object")
    return ContactRow(phone=phone, name=name, timezone=timezone, attributes=attributes)


@dataclass
class UpsertResult:
    created: int = 0
    updated: int = 0
    invalid: list[dict[str, Any]] = field(default_factory=list)


def upsert_contacts(
    engine: Engine, rows: list[Any], *, on_created: Callable[[list[ContactCreated]], None] | None = None
) -> UpsertResult:
    """Upsert by phone; invalid rows are reported by index and the valid ones kept. `on_created`
    is told of the contacts created, after the commit."""
    result = UpsertResult()
    created: list[Contact] = []
    valid: dict[str, ContactRow] = {}
    for index, raw in enumerate(rows):
        try:
            checked = validate_row(raw)
        except InvalidContact as exc:
            phone = raw.get("phone") if isinstance(raw, dict) else None
            result.invalid.append({"index": index, "phone": phone, "error": str(exc)})
            continue
        valid[checked.phone] = checked  # a phone twice in one request: the last row wins
    phones = list(valid)
    with session_scope(engine) as session:
        for start in range(0, len(phones), CHUNK):
            chunk = phones[start : start + CHUNK]
            # Locked (PostgreSQL; in id order, so two upserts of overlapping chunks cannot deadlock):
            # two upserts of one contact at once would each merge into what it read, and the
            # attributes kept as text (contact_attribute) would hold both while the JSON holds the last.
            existing = {
                c.phone: c
                for c in session.scalars(
                    select(Contact).where(col(Contact.phone).in_(chunk)).order_by(col(Contact.id)).with_for_update()
                )
            }
            fresh: list[Contact] = []
            changed: dict[int, dict[str, Any]] = {}  # merged contacts: the keys whose text moved
            for phone in chunk:
                row = valid[phone]
                contact = existing.get(phone)
                if contact is None:
                    contact = Contact(phone=phone, name=row.name, timezone=row.timezone, attributes=row.attributes)
                    session.add(contact)
                    fresh.append(contact)
                    result.created += 1
                else:
                    if row.name is not None:
                        contact.name = row.name
                    if row.timezone is not None:
                        contact.timezone = row.timezone
                    if row.attributes:
                        before = contact.attributes or {}
                        contact.attributes = {**before, **row.attributes}
                        moved = {
                            k: v
                            for k, v in row.attributes.items()
                            if attribute_text(v) != attribute_text(before.get(k))
                        }
                        if moved:
                            changed[contact.id or 0] = moved
                    contact.updated_at = utcnow()
                    session.add(contact)
                    result.updated += 1
            session.flush()  # the new contacts get their ids
            store_attributes(session, {**{c.id or 0: c.attributes for c in fresh}, **changed})
            created.extend(fresh)
        events = [ContactCreated(c.id or 0, c.phone, c.created_at, dict(c.attributes or {})) for c in created]
    if on_created is not None and events:
        on_created(events)
    return result
