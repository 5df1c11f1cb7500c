"""The frequency cap (API.md "Frequency cap"): at most N messages to a contact in any SECONDS,
across every campaign and automation. Test sends are never capped and never counted.

What counts is a message handed to the provider within the window: its `attempted_at` (when it
was last handed over) is in it, its phase counts (not `test_send`, not `control`) and its status
says the provider call was made and not answered "not now": `sending` (in flight, or its outcome
unknown: it may have gone out), `sent`, `delivered`, `undelivered`, or `failed` with an
`attempted_at` (refused by the provider or failed after it; a message that failed before any call,
say a body that did not render, has none). A message queued again after a transient error, or
cancelled, did not reach a phone by that attempt and does not count.

The cap is applied where a send activity claims one provider call's messages (core/delivery/
sending.py `_mark_sending`), in the claim's own transaction: one grouped query over the index on
(contact_id, attempted_at) for the call's contacts, then a message that would take its contact past
the cap is cancelled with error code `frequency_cap` instead of being marked `sending`: it is
never handed over, it counts in `recipients`, not in `sent`, and /stats/errors lists it.

Two campaigns (or automations) sending to one contact at the same moment: on SQLite every write
transaction begins IMMEDIATE, so claims run one at a time and each count sees every earlier claim:
the cap holds exactly. On PostgreSQL (READ COMMITTED) a count sees every claim committed before
it, but not one still in progress: two claim transactions for the same contact that overlap (each
a few milliseconds: count, cancel, mark) can both pass, so a contact may get one message over the
cap per such concurrent sender. Exact would take a lock per contact, one more statement per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import func, select
from sqlmodel import Session, col

from core.models import Message, counted_messages
from core.statuses import MessageStatus

ERROR_CODE = "frequency_cap"

# A message in one of these, with an `attempted_at`, was handed to the provider (see above).
HANDED_OVER_STATUSES = (
    MessageStatus.SENDING,
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.UNDELIVERED,
    MessageStatus.FAILED,
)


class Claimed(Protocol):
    """A message about to be claimed: its id and its contact (a Message row, or sending.Pending)."""

    @property
    def id(self) -> int | None: ...

    @property
    def contact_id(self) -> int | None: ...


def error_text(cap: tuple[int, float]) -> str:
    count, seconds = cap
    return f"frequency cap: {count} messages in {seconds:g} s reached"


def _window_start(now: datetime, seconds: float) -> datetime:
    try:
        return now - timedelta(seconds=seconds)
    except OverflowError:  # a window longer than the calendar: everything counts
        return datetime(1970, 1, 1, tzinfo=UTC)


def over_cap(session: Session, messages: Sequence[Claimed], cap: tuple[int, float], now: datetime) -> list[int]:
    """The ids of these messages (one provider call's) that would take their contact past the cap.

    Messages handed over in the window count, these messages themselves excepted; a contact's
    earlier message in this call counts toward its later one (a contact twice in one call)."""
    limit, seconds = cap
    contacts = sorted({m.contact_id for m in messages if m.contact_id is not None})
    if not contacts:
        return []
    rows = session.execute(
        select(col(Message.contact_id), func.count())
        .where(
            col(Message.contact_id).in_(contacts),
            col(Message.attempted_at) > _window_start(now, seconds),
            col(Message.status).in_(HANDED_OVER_STATUSES),
            counted_messages(),
            col(Message.id).notin_([m.id for m in messages]),
        )
        .group_by(col(Message.contact_id))
    ).all()
    sent = {int(contact_id): int(count) for contact_id, count in rows}
    over: list[int] = []
    for message in sorted(messages, key=lambda m: m.id or 0):
        if message.contact_id is None:
            continue
        if sent.get(message.contact_id, 0) >= limit:
            over.append(message.id or 0)
        else:
            sent[message.contact_id] = sent.get(message.contact_id, 0) + 1
    return over
