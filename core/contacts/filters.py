"""Attribute filters: which contacts an audience `{"attributes": {...}}` and `GET /api/contacts?
attribute.<name>=value` take in.

Every wanted key must match: a list means any of its values, anything else that one value.
Values compare as text (core/contacts/attributes.py `attribute_text`): `{"age": 30}` matches a
contact whose age is the number 30, or 30.0, or the string "30"; `true` matches the boolean and the
string "true"; an object matches the equal object (keys in any order), and a list attribute is
wanted inside a list (`{"tags": [["a", "b"]]}`). A wanted null matches the contacts that lack the
key (or hold null there, which is the same: null is never stored), so `{"vip": [true, null]}` is
"vip, or not said". An empty list matches nobody.

`matching_contacts` answers in SQL from the index (key, value, contact_id) of `contact_attribute`;
`attributes_match` is the same rule over one contact's attributes in Python (the welcome series'
check of its contact).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, exists, or_, select
from sqlmodel import col

from core.contacts.attributes import attribute_key, attribute_text, wanted_texts
from core.models import Contact, ContactAttribute

_TABLE: Table = ContactAttribute.__table__  # type: ignore[attr-defined]  # set by SQLModel, not in its stubs


def attributes_match(attributes: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Do these attributes (one contact's) match `wanted`, by the rule above?"""
    for key, value in wanted.items():
        texts, null = wanted_texts(value)
        have = attribute_text(attributes.get(key))
        if not (have in texts if have is not None else null):
            return False
    return True


def _key_condition(contact_id: Any, key: str, value: Any) -> ColumnElement[bool]:
    """The contact whose id is `contact_id` (a column) matches `key` at `value`: a probe of
    contact_attribute's primary key (contact_id, key)."""
    texts, null = wanted_texts(value)
    row = _TABLE.alias()
    same = (row.c.contact_id == contact_id, row.c.key == attribute_key(key))
    has = exists().where(*same, row.c.value.in_(texts))
    if not null:
        return has
    lacks = ~exists().where(*same)
    return or_(has, lacks) if texts else lacks


def matching_contacts(wanted: Mapping[str, Any]) -> Select[Any]:
    """The ids (column `contact_id`) of the contacts whose attributes match `wanted`, any order.

    One key drives: the key wanted without null with the fewest values, read as one range of
    ix_contact_attribute_key_value per value (one value: a range in contact id order, so a page
    of `contact_id > cursor` reads only itself); every other key is a probe. Only when every key
    wants null too does it go through the contacts."""
    texts = {key: wanted_texts(value) for key, value in wanted.items()}
    drivers = [key for key, (_, null) in texts.items() if not null]
    if not drivers:
        return select(col(Contact.id).label("contact_id")).where(
            *(_key_condition(col(Contact.id), k, v) for k, v in wanted.items())
        )
    driver = min(drivers, key=lambda key: len(texts[key][0]))
    hit = _TABLE.alias("hit")
    return select(hit.c.contact_id).where(
        hit.c.key == attribute_key(driver),
        hit.c.value.in_(texts[driver][0]),
        *(_key_condition(hit.c.contact_id, k, v) for k, v in wanted.items() if k != driver),
    )
