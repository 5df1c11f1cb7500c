"""Cursor pagination shared by every list route: `{"items": [...], "next": cursor | null}`."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypedDict, TypeVar

from litestar.exceptions import ClientException
from sqlalchemy import Select
from sqlmodel import Session

from core.campaigns.schemas import MAX_ID


class Identified(Protocol):
    """A table row with an integer id: what a page is ordered and cut by."""

    id: int | None


Row = TypeVar("Row", bound=Identified)
Item = TypeVar("Item")


class Page(TypedDict, Generic[Item]):
    """What `page()` returns: the shape of api/schemas' `...Page` TypedDicts, whatever the item."""

    items: list[Item]
    next: str | None


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith("id:"):
            raise ValueError(text)
        last_id = int(text[3:])
        if not 0 <= last_id <= MAX_ID:  # an id no table holds (and no query may be given)
            raise ValueError(text)
        return last_id
    except ValueError:
        raise ClientException(f"cursor {cursor!r} is not one this API handed out") from None


def page(
    session: Session,
    query: Select[Row],
    id_column: Any,
    cursor: str | None,
    limit: int,
    shape: Callable[[Row], Item],
    *,
    also: Sequence[Any] = (),
) -> Page[Item]:
    """Rows after the cursor in id order (`id_column`: the row's id, or a column equal to it that
    an index reads in order), each shaped by `shape`: one query of `limit + 1` rows, the last only
    to know whether there is more. `also`: other columns equal to the id (the other side of a
    join), which get the cursor's condition too: a planner does not carry a range across an
    equality, and PostgreSQL would otherwise read the joined table from its first row."""
    after = decode_cursor(cursor)
    where = [id_column > after, *(column > after for column in also)]
    rows = list(session.scalars(query.where(*where).order_by(id_column).limit(limit + 1)))
    more = len(rows) > limit
    return {
        "items": [shape(row) for row in rows[:limit]],
        "next": encode_cursor(rows[limit - 1].id or after) if more else None,
    }
