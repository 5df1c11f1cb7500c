"""Short codes: what a code resolves to (fixed at send time), read one batch at a time.

The redirect's code cache (core/tracking/code_cache.py) is the caller: it reads the codes of
messages just sent ahead of their clicks (`recent_codes`) and any other at its click
(`resolve_codes`).
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Engine
from sqlmodel import col

from core.db import is_sqlite
from core.models import Message, ShortCode
from core.tracking.sqlite import sqlite_datetime, sqlite_driver, sqlite_timestamp


class CodeTarget(NamedTuple):
    """What a short code resolves to, all fixed at send time."""

    code: str
    destination: str
    message_id: int
    link_id: int
    contact_id: int | None  # None: a test send to a phone that is no contact
    campaign_id: int
    sent_at: datetime | None = None  # when the message went out (None: not yet, or not known)


# What a code resolves to (the fields of CodeTarget), in Core and in SQLite's own SQL.
_TARGETS = select(
    col(ShortCode.code),
    col(ShortCode.destination),
    col(ShortCode.message_id),
    col(ShortCode.link_id),
    col(Message.contact_id),
    col(Message.campaign_id),
    col(Message.sent_at),
).join(Message, col(Message.id) == col(ShortCode.message_id))
_TARGETS_SQLITE = (
    "SELECT s.code, s.destination, s.message_id, s.link_id, m.contact_id, m.campaign_id, m.sent_at"
    " FROM short_code s JOIN message m ON m.id = s.message_id"
)
_RESOLVE = _TARGETS.where(col(ShortCode.code).in_(bindparam("codes", expanding=True)))  # other databases


def _sqlite_target(row: Any) -> CodeTarget:
    return CodeTarget(row[0], row[1], row[2], row[3], row[4], row[5], sqlite_datetime(row[6]))


@lru_cache(maxsize=64)
def _resolve_sqlite(count: int) -> str:
    marks = "= ?" if count == 1 else f"IN ({','.join('?' * count)})"
    return f"{_TARGETS_SQLITE} WHERE s.code {marks}"


def resolve_codes(engine: Engine, codes: Sequence[str], *, sqlite_connection: Any = None) -> dict[str, CodeTarget]:
    """The targets of those `codes` that exist, in one query (a code's target never changes).

    On SQLite the query runs on the driver's own connection in autocommit: no transaction and no
    lock, a read of the WAL snapshot that never waits for the click writer. The redirect keeps one
    such connection (`sqlite_connection`, from `engine.raw_connection()`): a pool checkout and a
    SQLAlchemy execution cost several times the primary-key read itself.
    """
    if not codes:
        return {}
    if is_sqlite(engine):
        with sqlite_driver(engine, sqlite_connection) as driver:
            rows = driver.execute(_resolve_sqlite(len(codes)), tuple(codes)).fetchall()
        return {row[0]: _sqlite_target(row) for row in rows}
    with engine.connect() as conn:
        return {row[0]: CodeTarget(*row) for row in conn.execute(_RESOLVE, {"codes": list(codes)})}


def recent_codes(engine: Engine, sent_since: datetime, limit: int, known: Container[str] = ()) -> list[CodeTarget]:
    """The targets of codes in messages sent since `sent_since`, newest first, at most `limit`,
    leaving out the codes in `known` (those the caller has already)."""
    if is_sqlite(engine):  # the driver's rows as they come: a tenth of the cost of Core's
        with sqlite_driver(engine) as driver:
            rows = driver.execute(
                f"{_TARGETS_SQLITE} WHERE m.sent_at >= ? ORDER BY m.sent_at DESC LIMIT ?",
                (sqlite_timestamp(sent_since), limit),
            )
            return [_sqlite_target(row) for row in rows if row[0] not in known]
    sent_at = col(Message.sent_at)
    query = _TARGETS.where(sent_at >= sent_since).order_by(sent_at.desc()).limit(limit)
    with engine.connect() as conn:
        return [CodeTarget(*row) for row in conn.execute(query) if row[0] not in known]
