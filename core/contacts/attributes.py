"""Contact attributes as rows of `contact_attribute`: the text each value is kept and compared as.

`Contact.attributes` is the JSON a contact was given; `contact_attribute` holds one row per key
whose value is not null, with the value as text, so that attribute filters (core/contacts/filters.py)
are read off the index (key, value, contact_id) instead of every contact's JSON. The text of a value:
- a string as it is;
- `true` / `false` for a boolean;
- a number as its JSON text, an integral float as the integer (30.0 is `30`, 2.5 is `2.5`);
- a list or an object as compact JSON with sorted keys (its numbers as above);
- null: no row.
A key over 100 characters, or a text over 500, is kept as its beginning and the sha256 of the whole
(`bounded`): PostgreSQL's index entries are bounded, and two texts still compare equal exactly when
the whole texts do.

Whoever writes `Contact.attributes` calls `store_attributes` in the same transaction.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Table, delete
from sqlalchemy.engine import Connection
from sqlmodel import Session

from core.models import ContactAttribute

KEY_LIMIT = 100  # characters; the column is VARCHAR(100)
VALUE_LIMIT = 500  # characters: a key and a value of 4-byte characters stay under PostgreSQL's 2704-byte index entry
INSERT_ROWS = 1000  # rows per statement on SQLite (3 parameters each, far below its 32766)
HASH_MARK = "#sha256:"
_TABLE: Table = ContactAttribute.__table__  # type: ignore[attr-defined]  # set by SQLModel, not in its stubs
EXACT_FLOATS = 2**53  # beyond it an integral float is no exact integer: it keeps its JSON text


def _plain(value: Any) -> Any:
    """`value` with every integral float an int, at any depth (30.0 and 30 are one number)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < EXACT_FLOATS:
        return int(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def bounded(text: str, limit: int) -> str:
    """`text` if it has at most `limit` characters, else its beginning and the sha256 of the whole."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return text[: limit - len(HASH_MARK) - len(digest)] + HASH_MARK + digest


def attribute_text(value: Any) -> str | None:
    """The text an attribute value is stored and compared as; None for null (no row)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return bounded(text, VALUE_LIMIT)


def attribute_key(key: str) -> str:
    """The key as stored (`bounded` to the column)."""
    return bounded(str(key), KEY_LIMIT)


def attribute_rows(contact_id: int, attributes: Mapping[str, Any]) -> list[tuple[int, str, str]]:
    """The rows (contact_id, key, value) of `contact_attribute` for one contact's attributes."""
    rows = []
    for key, value in attributes.items():
        text = attribute_text(value)
        if text is not None:
            rows.append((contact_id, attribute_key(key), text))
    return rows


_UPSERT = ' ON CONFLICT (contact_id, "key") DO UPDATE SET value = excluded.value'
# PostgreSQL: every row in one statement, the columns as three arrays (no parameter limit).
_POSTGRES_WRITE = (
    'INSERT INTO contact_attribute (contact_id, "key", value)'
    " SELECT * FROM unnest(%s::bigint[], %s::varchar[], %s::text[])" + _UPSERT
)


@functools.lru_cache(maxsize=64)
def _sqlite_write(rows: int) -> str:
    return (
        f'INSERT INTO contact_attribute (contact_id, "key", value) VALUES {", ".join(["(?, ?, ?)"] * rows)}' + _UPSERT
    )


def write_attribute_rows(connection: Session | Connection, rows: list[tuple[int, str, str]]) -> None:
    """Insert or overwrite these rows in multi-row statements (SQLite: INSERT_ROWS rows each;
    PostgreSQL: one). Written for the driver: SQLAlchemy's `insert().values([...])` compiles each
    statement anew, which cost more than the writing itself (1 s per 30,000 rows), and an
    executemany is a statement per row."""
    conn = connection.connection() if isinstance(connection, Session) else connection
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(_POSTGRES_WRITE, tuple(list(column) for column in zip(*rows, strict=True)))
        return
    for start in range(0, len(rows), INSERT_ROWS):
        part = rows[start : start + INSERT_ROWS]
        conn.exec_driver_sql(_sqlite_write(len(part)), tuple(v for row in part for v in row))


def store_attributes(session: Session, changes: Mapping[int, Mapping[str, Any]]) -> None:
    """Write attribute values to `contact_attribute` in the session's transaction: `changes` maps
    a contact id to the keys that took a new value (all of a new contact's). One multi-row upsert
    (on SQLite, one per INSERT_ROWS rows) whatever the number of contacts, and one DELETE per key
    set to null."""
    rows: list[tuple[int, str, str]] = []
    cleared: dict[str, list[int]] = {}
    for contact_id, attributes in changes.items():
        for key, value in attributes.items():
            text = attribute_text(value)
            if text is None:
                cleared.setdefault(attribute_key(key), []).append(contact_id)
            else:
                rows.append((contact_id, attribute_key(key), text))
    for key, ids in cleared.items():
        for start in range(0, len(ids), INSERT_ROWS):
            batch = ids[start : start + INSERT_ROWS]
            session.execute(delete(_TABLE).where(_TABLE.c.key == key, _TABLE.c.contact_id.in_(batch)))
    write_attribute_rows(session, rows)


def wanted_texts(values: Any) -> tuple[list[str], bool]:
    """A filter's wanted value (a list: any of them) as (texts, whether null is wanted too)."""
    listed: Iterable[Any] = values if isinstance(values, list) else [values]
    texts: list[str] = []
    null = False
    for value in listed:
        text = attribute_text(value)
        if text is None:
            null = True
        elif text not in texts:
            texts.append(text)
    return texts, null
