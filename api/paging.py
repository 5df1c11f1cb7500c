"""Cursor pagination shared by every list route: `{"items": [...], "next": cursor | null}`."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypedDict, TypeVar

from litestar.exceptions import ClientException
from sqlalchemy import Select
from sqlmodel import Session


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
        return int(text[3:])
    except ValueError:
        raise ClientException(f"cursor {cursor!r} is not one this API handed out") from None


def page(
    session: Session,
    query: Select[Row],
    id_column: Any,
    cursor: str | None,
    limit: int,
    shape: Callable[[Row], Item],
    keep: Callable[[Row], bool] | None = None,
) -> Page[Item]:
    """Rows after the cursor in id order, each shaped by `shape`; `keep` filters in Python (e.g. on
    JSON attributes)."""
    after = decode_cursor(cursor)
    items: list[Item] = []
    last_id = after
    exhausted = False
    while len(items) < limit and not exhausted:
        rows = list(session.scalars(query.where(id_column > last_id).order_by(id_column).limit(limit + 1)))
        exhausted = len(rows) <= limit
        for row in rows[:limit]:
            last_id = row.id or last_id
            if keep is None or keep(row):
                items.append(shape(row))
                if len(items) == limit:
                    break
        if not rows:
            break
    more = (
        not exhausted
        or len(items) == limit
        and bool(session.scalars(query.where(id_column > last_id).limit(1)).first())
    )
    return {"items": items, "next": encode_cursor(last_id) if more and items else None}
