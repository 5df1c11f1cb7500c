"""Cursor pagination shared by every list route: `{"items": [...], "next": cursor | null}`."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from litestar.exceptions import ClientException
from sqlmodel import Session


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
    query: Any,
    id_column: Any,
    cursor: str | None,
    limit: int,
    shape: Callable[[Any], dict[str, Any]],
    keep: Callable[[Any], bool] | None = None,
) -> dict[str, Any]:
    """Rows after the cursor in id order; `keep` filters in Python (e.g. on JSON attributes)."""
    after = decode_cursor(cursor)
    items: list[dict[str, Any]] = []
    last_id = after
    exhausted = False
    while len(items) < limit and not exhausted:
        rows = list(session.scalars(query.where(id_column > last_id).order_by(id_column).limit(limit + 1)))
        exhausted = len(rows) <= limit
        for row in rows[:limit]:
            last_id = row.id
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
