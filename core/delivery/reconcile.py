"""Delivery reports that never came: looked up at the provider once they had time to come.

A message the provider accepted waits for its report (`sent`; `sending` with a provider id too).
A report can be lost — a gateway drops a callback, the fake provider's callbacks die with the
worker that scheduled them — and the message would stay `sent` forever. After a settle window
(`TEXTPULSE_STATUS_SETTLE_SECONDS`, run by the campaign workflow once sending ended), the
messages still waiting are asked about with the provider's optional `fetch_status` ability, and
the answers go through the same status machine as the webhooks' callbacks
(`core.delivery.status.ingest_callbacks`: stored in `status_event`, forward moves only, times,
`on_message_status` listeners), plus the opt-out of an unsubscribed recipient's error code.
A provider without the ability is not asked: its messages stay `sent`, and the campaign's
`progress.awaiting_report` counts them.

Set-based: the messages are read in id order, `SCAN_CHUNK` at a time, and asked about
`ASK_CHUNK` at a time, with a heartbeat after each call (a provider may answer one id per
request).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col

from core.db import session_scope
from core.delivery.replies import opt_out_unsubscribed
from core.delivery.status import RANK, Callback, StatusListener, ingest_callbacks
from core.delivery.status_writer import checked_updates
from core.hooks import abilities
from core.hooks.contracts import SendResult, StatusUpdate
from core.hooks.payloads import status_listener
from core.log import get_logger
from core.models import Message, utcnow
from core.statuses import FAILED_MESSAGE_STATUSES, MessageStatus

if TYPE_CHECKING:
    from core.hooks.registry import PluginRegistry

log = get_logger("textpulse.reconcile")

SCAN_CHUNK = 500  # messages read per query
ASK_CHUNK = 100  # provider message ids per fetch_status call, a heartbeat after each
# Handed to the provider and no final status yet.
AWAITING_STATUSES = (MessageStatus.SENT, MessageStatus.SENDING)
RAW = {"source": "fetch_status"}  # what `status_event.raw` says of a looked-up status


def awaiting_report() -> ColumnElement[bool]:
    """Messages handed to a provider (it gave an id) without a final status: they await a report."""
    return and_(col(Message.status).in_(AWAITING_STATUSES), col(Message.provider_message_id).is_not(None))


@dataclass
class ReconcileOutcome:
    asked: int = 0  # message ids the provider was asked about
    updated: int = 0  # messages whose status moved on an answer
    awaiting: int = 0  # the campaign's messages (test sends too) still awaiting a report afterwards


def count_awaiting(session: Session, campaign_id: int) -> int:
    """How many of the campaign's messages await a report (any phase, any age)."""
    return int(
        session.scalar(
            select(func.count()).select_from(Message).where(col(Message.campaign_id) == campaign_id, awaiting_report())
        )
        or 0
    )


def reconcile_statuses(
    engine: Engine,
    registry: PluginRegistry,
    campaign_id: int,
    *,
    settle_seconds: float,
    heartbeat: Callable[[], None] = lambda: None,
    scan_chunk: int = SCAN_CHUNK,
    ask_chunk: int = ASK_CHUNK,
) -> ReconcileOutcome:
    """Ask the provider about the campaign's messages awaiting a report for more than
    `settle_seconds` (since they were sent), and apply what it says. Safe to run again: what is
    final is never asked again; a provider that fails a call leaves those messages for next time."""
    scan_chunk, ask_chunk = min(max(scan_chunk, 1), 500), min(max(ask_chunk, 1), 500)
    cutoff = utcnow() - timedelta(seconds=max(settle_seconds, 0.0))
    handed_over = func.coalesce(col(Message.sent_at), col(Message.attempted_at), col(Message.status_changed_at))
    outcome = ReconcileOutcome()
    on_change = status_listener(engine, registry)
    last_id = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(col(Message.id), col(Message.provider), col(Message.provider_message_id), col(Message.status))
                .where(
                    col(Message.campaign_id) == campaign_id,
                    awaiting_report(),
                    col(Message.id) > last_id,
                    handed_over <= cutoff,
                )
                .order_by(col(Message.id))
                .limit(scan_chunk)
            ).all()
        if not rows:
            break
        last_id = rows[-1].id
        by_provider: dict[str, list[Any]] = {}
        for row in rows:
            by_provider.setdefault(row.provider, []).append(row)
        for name, group in by_provider.items():
            provider = registry.providers.get(name)
            if not abilities.can_fetch_status(provider):
                continue  # nothing to ask: they stay `sent` and count as awaiting a report
            for start in range(0, len(group), ask_chunk):
                part = group[start : start + ask_chunk]
                outcome.asked += len(part)
                outcome.updated += _ask(engine, provider, name, part, on_change)
                heartbeat()
        heartbeat()
    with session_scope(engine, read_only=True) as session:
        outcome.awaiting = count_awaiting(session, campaign_id)
    log.info(
        "statuses reconciled",
        campaign_id=campaign_id,
        asked=outcome.asked,
        updated=outcome.updated,
        awaiting=outcome.awaiting,
    )
    return outcome


def _ask(engine: Engine, provider: Any, name: str, rows: list[Any], on_change: StatusListener | None) -> int:
    """One fetch_status call for these messages, its news applied; returns how many messages moved."""
    wanted = {str(row.provider_message_id): row for row in rows}
    try:
        answers = abilities.fetch_status(provider, list(wanted))
    except Exception:  # a provider's failure leaves these for the next look; the others still go
        log.exception("fetch_status failed", provider=name, ids=len(wanted))
        return 0
    news: list[StatusUpdate] = []
    for update in answers:
        row = wanted.get(getattr(update, "provider_message_id", None) or "")
        if row is None:
            continue  # not asked about: ignored
        try:
            checked_updates([update], name)  # what fits a callback's columns fits here
        except Exception as exc:
            log.warning("fetch_status answer refused", provider=name, id=row.provider_message_id, error=str(exc))
            continue
        if RANK[update.status] > RANK.get(row.status, 0):  # no news (`sent` again) is not stored
            news.append(update)
    if not news:
        return 0
    moves: list[tuple[int, str, str]] = []

    def record(changes: Sequence[tuple[int, str, str]]) -> None:
        moves.extend(changes)
        if on_change is not None:
            on_change(changes)

    ingest_callbacks(engine, [Callback(name, news, dict(RAW))], on_change=record)
    moved = {message_id for message_id, _, _ in moves}
    codes = abilities.unsubscribed_error_codes(provider)
    if codes:  # e.g. Twilio 21610 reported on the message: the contact is opted out here too
        refused = [
            SendResult(wanted[upd.provider_message_id].id, False, error_code=upd.error_code)
            for upd in news
            if upd.status in FAILED_MESSAGE_STATUSES
            and upd.error_code in codes
            and wanted[upd.provider_message_id].id in moved
        ]
        opt_out_unsubscribed(engine, provider, refused)
    return len(moved)
