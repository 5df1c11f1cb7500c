"""Bot judging: is a click a person's or a machine's (a link scanner, a chat app's preview)?

Every bot filter (plugins/botfilters.py and the `register_bot_filters` hook) judges every click
of a batch as it is stored; a click with a reason is a bot's, kept and flagged. Filters that ask
for them (`needs_message_times`) get when the click's text was sent and delivered, read for the
whole batch at once.

Filters that judge clicks together (`JudgesTogether`: a burst from one network, every link of a
message) see the batch with the clicks of the last few seconds before it (`judge_together`);
what they add to an earlier, stored click is written over its row by the caller (the click
writer, or a re-score: core/tracking/rescore.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import compress
from operator import attrgetter, itemgetter
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col

from core.db import is_sqlite
from core.hooks.abilities import needs_message_times
from core.hooks.contracts import BotFilter, JudgesTogether
from core.log import get_logger
from core.models import Message
from core.tracking.clicks import ClickRecord
from core.tracking.sqlite import sqlite_datetime, sqlite_driver

log = get_logger("textpulse.clicks")

# A delivery receipt comes seconds after the send, rarely minutes: a click this long after its
# text was sent is not looked up (its `delivered_at` stays None; a filter judges by `sent_at`).
DELIVERY_LOOKUP_WINDOW = timedelta(minutes=1)


def judge_clicks(
    engine: Engine, records: Sequence[ClickRecord], filters: Sequence[BotFilter] = (), *, sqlite_connection: Any = None
) -> None:
    """Settle each click's verdict in place: a HEAD request is a probe (`head_request`), then every
    bot filter gives a score and maybe a reason. A click with a reason is a bot's; its score is the
    highest given. A filter that fails is skipped (logged), the click judged by the others."""
    if any(needs_message_times(f) for f in filters):
        _fill_message_times(engine, records, sqlite_connection=sqlite_connection)
    judges = [(f.name, f.judge) for f in filters]
    for record in records:
        reasons = record.reasons
        score = record.bot_score if not reasons else max(record.bot_score, 1.0)
        found: list[str] | None = None  # the reasons, once one is added (most clicks have none)
        if record.probe and "head_request" not in reasons:
            found = [*reasons, "head_request"]
            score = 1.0
        for name, judge in judges:
            try:
                filter_score, reason = judge(record)
                if filter_score > score:
                    score = float(filter_score)
            except Exception as exc:
                log.warning("bot filter failed", filter=name, error=str(exc))
                continue
            if reason:
                if found is None:
                    found = list(reasons)
                if reason not in found:
                    found.append(reason)
        if found is not None:
            record.reasons = tuple(found)
        record.bot_score = score


def together_window(filters: Sequence[JudgesTogether]) -> timedelta:
    """How far back the together-filters look: the longest `window` of them."""
    return timedelta(seconds=max((float(f.window) for f in filters), default=0.0))


_CLICKED_AT = attrgetter("clicked_at")
_REASON = itemgetter(1)


def judge_together(
    filters: Sequence[JudgesTogether], clicks: Sequence[ClickRecord], recent: Sequence[ClickRecord]
) -> list[ClickRecord]:
    """Let each together-filter judge `clicks` (judged alone already) with the `recent` clicks
    before them (those of its own `window` before the first of `clicks`); add the reasons it gives,
    to recent clicks too. Returns the clicks, of both, whose verdict changed. A filter that fails,
    or answers the wrong number of verdicts, is skipped (logged)."""
    if not filters or not clicks:
        return []
    changed: dict[int, ClickRecord] = {}
    start = min(record.clicked_at for record in clicks)
    for bot_filter in filters:
        cutoff = start - timedelta(seconds=float(bot_filter.window))
        # In C (map, compress): a round reads the whole window, 100,000 clicks at 20,000 a second.
        seen = list(compress(recent, map(cutoff.__le__, map(_CLICKED_AT, recent))))
        try:
            verdicts = bot_filter.judge_together(clicks, seen)
        except Exception as exc:
            log.warning("bot filter failed", filter=bot_filter.name, error=str(exc))
            continue
        if len(verdicts) != len(seen) + len(clicks):
            log.warning(
                "bot filter answered the wrong number of verdicts",
                filter=bot_filter.name,
                verdicts=len(verdicts),
                clicks=len(seen) + len(clicks),
            )
            continue
        for place in compress(range(len(verdicts)), map(_REASON, verdicts)):  # those giving a reason
            score, reason = verdicts[place]
            record = seen[place] if place < len(seen) else clicks[place - len(seen)]
            if not reason or reason in record.reasons:
                continue
            record.reasons = (*record.reasons, reason)
            record.bot_score = max(record.bot_score, float(score))
            changed[id(record)] = record
    return list(changed.values())


def _fill_message_times(engine: Engine, records: Sequence[ClickRecord], *, sqlite_connection: Any = None) -> None:
    """Give each click its message's `sent_at` (known from the code) and, for clicks within
    DELIVERY_LOOKUP_WINDOW of that (or when it is unknown), `delivered_at`: one query a batch."""
    wanted = []
    for record in records:
        sent_at = record.sent_at = record.target.sent_at
        if sent_at is None or record.clicked_at - sent_at < DELIVERY_LOOKUP_WINDOW:
            wanted.append(record)
    ids = list({record.target.message_id for record in wanted})
    times: dict[int | None, tuple[datetime | None, datetime | None]] = {}
    if not ids:
        return
    if is_sqlite(engine):  # the driver's rows, timestamps parsed in C
        with sqlite_driver(engine, sqlite_connection) as driver:
            for start in range(0, len(ids), 512):
                chunk = ids[start : start + 512]
                # As many marks as the next power of two (the first id again in the rest): a
                # dozen statement texts in all, so they do not crowd the INSERTs out of the
                # driver's statement cache.
                size = 1 << (len(chunk) - 1).bit_length()
                padded = chunk + chunk[:1] * (size - len(chunk))
                rows = driver.execute(_message_times_sql(size), padded)
                times.update((row[0], (sqlite_datetime(row[1]), sqlite_datetime(row[2]))) for row in rows)
    else:
        with engine.connect() as conn:
            for start in range(0, len(ids), 900):
                query = select(col(Message.id), col(Message.sent_at), col(Message.delivered_at)).where(
                    col(Message.id).in_(ids[start : start + 900])
                )
                times.update((row[0], (row[1], row[2])) for row in conn.execute(query))
    for record in wanted:
        record.sent_at, record.delivered_at = times.get(record.target.message_id, (None, None))


@lru_cache(maxsize=16)
def _message_times_sql(count: int) -> str:
    return f"SELECT id, sent_at, delivered_at FROM message WHERE id IN ({','.join('?' * count)})"
