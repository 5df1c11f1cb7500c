"""Re-scoring: every stored click of a campaign judged again with the current bot filters.

After a filter changed (a network added, a threshold moved, a plugin enabled), `textpulse rescore
--campaign ID` (in the foreground) and `POST /api/campaigns/{id}/rescore` (a background job on a
worker, workflows/rescore.py) judge the campaign's clicks as the click
writer would now: each alone (the per-click filters), then together, in `clicked_at` order, with
the clicks of the together-filters' window before them. The clicks are read `chunk` at a time
(keyset by time and id, never all at once) and only the verdicts that changed are written, one
UPDATE per distinct verdict and chunk (`WHERE id IN (...)`). The counts (core/stats) read
`is_bot` from the rows, so every number follows at once.

What a re-judgement cannot see again is kept: a HEAD request (`head_request`, from the row's
verdict) and, when the click table has no `purpose` column, a prefetch header's `prefetch`.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, TypedDict

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Engine
from sqlmodel import col

from core.campaigns.definition import get_campaign
from core.db import session_scope
from core.hooks.contracts import BotFilter, JudgesTogether
from core.log import get_logger
from core.models import Click, Link, Message
from core.stats.tallies import lock_tallies
from core.tracking.bots import judge_clicks, judge_together, together_window
from core.tracking.clicks import ClickRecord
from core.tracking.codes import CodeTarget

log = get_logger("textpulse.rescore")

CHUNK = 5000
# Reasons that come from the request rather than from anything stored with the click: kept.
_HAS_PURPOSE = "purpose" in {f.name for f in fields(ClickRecord)} and "purpose" in Click.model_fields
KEPT_REASONS = frozenset({"head_request"} | (set() if _HAS_PURPOSE else {"prefetch"}))


class RescoreResult(TypedDict):
    """What a re-score did: the campaign's clicks judged, how many changed verdict, and how many
    are bots' and people's now."""

    clicks: int
    changed: int
    bots: int
    humans: int


@dataclass
class _Stored:
    id: int
    record: ClickRecord
    original: tuple[bool, float, tuple[str, ...]]  # the row's verdict before the re-score
    written: tuple[bool, float, tuple[str, ...]]  # the row's verdict now


def _aware(value: datetime | None) -> datetime | None:
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


def _verdict(record: ClickRecord) -> tuple[bool, float, tuple[str, ...]]:
    return (bool(record.reasons), float(record.bot_score), tuple(record.reasons))


def _record(click: Click, sent_at: datetime | None, destination: str) -> ClickRecord:
    old = tuple(click.bot_reasons or ())
    extra: dict[str, Any] = {"purpose": getattr(click, "purpose", None)} if _HAS_PURPOSE else {}
    kept = tuple(reason for reason in old if reason in KEPT_REASONS)
    return ClickRecord(
        CodeTarget(
            click.code,
            destination,
            click.message_id,
            click.link_id,
            click.contact_id,
            click.campaign_id,
            _aware(sent_at),
        ),
        _aware(click.clicked_at) or click.clicked_at,
        click.ip,
        click.user_agent,
        click.referer,
        probe="head_request" in old,
        reasons=kept,
        bot_score=1.0 if kept else 0.0,
        **extra,
    )


def rescore_campaign(
    engine: Engine,
    campaign_id: int,
    filters: Sequence[BotFilter] = (),
    together: Sequence[JudgesTogether] = (),
    *,
    chunk: int = CHUNK,
    progress: Callable[[int, int], None] | None = None,
) -> RescoreResult:
    """Judge every click of the campaign again and write the verdicts that changed; CampaignNotFound
    for an unknown campaign. `progress(clicks, changed)` is called after each chunk is written
    (the background job heartbeats with it: workflows/rescore.py)."""
    with session_scope(engine, read_only=True) as session:
        get_campaign(session, campaign_id)
        destinations = {
            link.id: link.destination
            for link in session.scalars(select(Link).where(col(Link.campaign_id) == campaign_id))
        }
    span = together_window(together)
    window: deque[_Stored] = deque()  # the last chunk's clicks the next chunk's together-filters see
    total = changed = 0
    after: tuple[datetime, int] | None = None
    while True:
        with session_scope(engine, read_only=True) as session:
            query = (
                select(Click, col(Message.sent_at))
                .join(Message, col(Message.id) == col(Click.message_id))
                .where(col(Click.campaign_id) == campaign_id)
                .order_by(col(Click.clicked_at), col(Click.id))
                .limit(chunk)
            )
            if after is not None:
                at, last_id = after
                query = query.where(
                    or_(col(Click.clicked_at) > at, and_(col(Click.clicked_at) == at, col(Click.id) > last_id))
                )
            rows = session.execute(query).all()
            stored = []
            for click, sent_at in rows:
                verdict = _verdict_of(click)
                record = _record(click, sent_at, destinations.get(click.link_id, ""))
                stored.append(_Stored(click.id or 0, record, verdict, verdict))
        if not stored:
            break
        after = (rows[-1][0].clicked_at, rows[-1][0].id or 0)
        records = [s.record for s in stored]
        judge_clicks(engine, records, filters)
        if together:
            cutoff = records[0].clicked_at - span
            while window and window[0].record.clicked_at < cutoff:
                gone = window.popleft()
                changed += gone.written != gone.original
            judge_together(together, records, [s.record for s in window])
        # The clicks of this chunk, and those of the window a together-filter re-judged.
        dirty = [s for s in (*window, *stored) if _verdict(s.record) != s.written]
        _write(engine, dirty)
        for s in dirty:
            s.written = _verdict(s.record)
        total += len(stored)
        if together:
            window.extend(stored)  # counted once no later chunk can change them
        else:
            changed += sum(s.written != s.original for s in stored)
        if progress is not None:
            progress(total, changed + sum(s.written != s.original for s in window))
        if len(rows) < chunk:
            break
    changed += sum(s.written != s.original for s in window)
    with session_scope(engine, read_only=True) as session:
        bots, humans = session.execute(
            select(
                func.count().filter(col(Click.is_bot).is_(True)),
                func.count().filter(col(Click.is_bot).is_(False)),
            ).where(col(Click.campaign_id) == campaign_id)
        ).one()
    log.info("clicks re-scored", campaign_id=campaign_id, clicks=total, changed=changed, bots=bots)
    return {"clicks": total, "changed": changed, "bots": int(bots or 0), "humans": int(humans or 0)}


def _verdict_of(click: Click) -> tuple[bool, float, tuple[str, ...]]:
    return (bool(click.is_bot), float(click.bot_score or 0.0), tuple(click.bot_reasons or ()))


def _write(engine: Engine, dirty: Sequence[_Stored]) -> None:
    """One UPDATE per distinct verdict: `WHERE id IN (...)`, 500 ids at a time."""
    if not dirty:
        return
    by_verdict: dict[tuple[bool, float, tuple[str, ...]], list[int]] = defaultdict(list)
    for s in dirty:
        by_verdict[_verdict(s.record)].append(s.id)
    with engine.begin() as conn:
        # Several UPDATEs: the tally rows first, in campaign id order (`lock_tallies`).
        lock_tallies(conn, {s.record.target.campaign_id for s in dirty})
        for (is_bot, score, reasons), ids in by_verdict.items():
            for start in range(0, len(ids), 500):
                conn.execute(
                    update(Click)
                    .where(col(Click.id).in_(ids[start : start + 500]))
                    .values(is_bot=is_bot, bot_score=score, bot_reasons=list(reasons))
                )
