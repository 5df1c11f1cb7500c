"""The click path's own use of the SQLite driver: its connection, and timestamps as SQLAlchemy
stores them.

Code lookups, message times and click inserts run on the driver's connection rather than through
SQLAlchemy on SQLite: a pool checkout and an execution cost several times a primary-key read or a
small batch's inserts (docs/benchmarks.md). Values then go in and come out in the format of
SQLAlchemy's SQLite DATETIME, so rows read the same whichever path wrote them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine


@contextmanager
def sqlite_driver(engine: Engine, kept: Any = None) -> Iterator[Any]:
    """The sqlite3 connection of `kept` (a connection its owner keeps, from
    `engine.raw_connection()`), or of one from the pool, given back afterwards. In autocommit
    (core/db.py): a transaction is begun in SQL where one is wanted."""
    raw = kept if kept is not None else engine.raw_connection()
    try:
        yield raw.dbapi_connection
    finally:
        if kept is None:
            raw.close()  # back to the pool


_SECOND_PREFIXES: dict[tuple[int, int, int, int], str] = {}  # a second -> "YYYY-MM-DD HH:MM:SS."


def sqlite_timestamp(value: datetime) -> str:
    """What SQLAlchemy's SQLite DATETIME stores for an aware datetime (in UTC, no offset), without
    its ~3 µs of type processing per value (tests/test_code_cache.py compares the two). Clicks
    come many to a second: the part up to the second is formatted once per second and kept."""
    offset = value.utcoffset()
    if offset is None:  # naive: taken as it is, as SQLAlchemy does
        return value.isoformat(" ", "microseconds")
    if offset:
        value = value.astimezone(UTC)
    second = (value.toordinal(), value.hour, value.minute, value.second)
    prefix = _SECOND_PREFIXES.get(second)
    if prefix is None:
        if len(_SECOND_PREFIXES) >= 4096:
            _SECOND_PREFIXES.clear()
        prefix = _SECOND_PREFIXES[second] = f"{value.year:04d}-{value:%m-%d %H:%M:%S}."
    return f"{prefix}{value.microsecond:06d}"


def sqlite_datetime(value: str | None) -> datetime | None:
    """A timestamp as SQLAlchemy's SQLite DATETIME stores it (UTC, no offset), aware."""
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)
