"""Campaign statistics (API.md "Stats summary" and "Definitions").

Test sends (phase `test_send`) and held-out controls never count; a retried contact counts once,
by its latest message (core/stats/counting.py), and `attempts` counts every message handed to the
provider. Clicks flagged as bots are left out of the default numbers and shown beside them
(`bots_total`, `raw_*`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, distinct, func, select
from sqlmodel import Session, col

from core.campaigns.definition import get_campaign, iso
from core.delivery.replies import OPT_OUT_KEYWORDS
from core.models import Click, Conversion, Message, Reply, counted_messages, utcnow
from core.stats.counting import counted, handed_over, superseded_ids
from core.statuses import FAILED_MESSAGE_STATUSES, UNSENT_MESSAGE_STATUSES, MessageStatus


def _rate(numerator: int, denominator: int) -> float:
    return round(numerator / denominator, 6) if denominator else 0.0


def summary(
    session: Session, campaign_id: int, *, reports_delivery: bool = True, include_bots: bool = False
) -> dict[str, Any]:
    campaign = get_campaign(session, campaign_id)
    rows = counted(session, campaign_id)
    status = col(Message.status)
    m = session.execute(
        select(
            func.count(),
            func.sum(case((status.in_(UNSENT_MESSAGE_STATUSES), 1), else_=0)),
            func.sum(case((col(Message.sent_at).is_not(None), 1), else_=0)),
            func.sum(case((status == MessageStatus.DELIVERED, 1), else_=0)),
            func.sum(case((status == MessageStatus.UNDELIVERED, 1), else_=0)),
            func.sum(case((status == MessageStatus.FAILED, 1), else_=0)),
            func.sum(handed_over()),
        ).where(rows.latest)
    ).one()
    contacts, queued, sent, delivered, undelivered, failed, attempts = (int(v or 0) for v in m)
    if rows.deduplicated:  # the earlier attempts of retried contacts were handed over too
        earlier = select(func.sum(handed_over())).where(col(Message.id).in_(superseded_ids(campaign_id)))
        attempts += int(session.scalar(earlier) or 0)
    real_clicks = and_(
        col(Click.campaign_id) == campaign_id, col(Click.message_id) == col(Message.id), counted_messages()
    )
    is_bot = col(Click.is_bot)
    c = session.execute(
        select(
            func.count(),
            func.count(distinct(col(Click.contact_id))),
            func.sum(case((is_bot.is_(True), 1), else_=0)),
            func.sum(case((is_bot.is_(False), 1), else_=0)),
            func.count(distinct(case((is_bot.is_(False), col(Click.contact_id)), else_=None))),
        )
        .select_from(Click)
        .join(Message, real_clicks)
    ).one()
    raw_total, raw_unique, bots_total, human_total, human_unique = (int(v or 0) for v in c)
    keyword = col(Reply.keyword)
    r = session.execute(
        select(
            func.count(distinct(case((keyword.is_(None), col(Reply.contact_id)), else_=None))),
            func.sum(case((keyword.is_(None), 1), else_=0)),
            func.count(distinct(case((keyword.in_(OPT_OUT_KEYWORDS), col(Reply.contact_id)), else_=None))),
        ).where(col(Reply.campaign_id) == campaign_id)
    ).one()
    repliers, replies, opt_outs = (int(v or 0) for v in r)
    conv = session.execute(
        select(
            func.count(distinct(col(Conversion.contact_id))), func.coalesce(func.sum(col(Conversion.revenue)), 0)
        ).where(col(Conversion.campaign_id) == campaign_id)
    ).one()
    basis_name = "delivered" if reports_delivery else "sent"
    basis = delivered if reports_delivery else sent
    unique = raw_unique if include_bots else human_unique
    return {
        "campaign_id": campaign_id,
        "status": campaign.status,
        "recipients": max(campaign.recipients, contacts),
        "attempts": attempts,
        "queued": queued,
        "sent": sent,
        "delivered": delivered,
        "undelivered": undelivered,
        "failed": failed,
        "delivery_rate": _rate(delivered, sent),
        "clicks": {
            "total": raw_total if include_bots else human_total,
            "unique": unique,
            "bots_total": bots_total,
            "raw_total": raw_total,
            "raw_unique": raw_unique,
        },
        "ctr": _rate(unique, basis),
        "ctr_basis": basis_name,
        "replies": replies,
        "reply_rate": _rate(repliers, basis),
        "opt_outs": opt_outs,
        "conversions": int(conv[0] or 0),
        "revenue": float(conv[1] or 0),
        "bots": "included" if include_bots else "excluded",
        "updated_at": iso(utcnow()),
    }


def errors(session: Session, campaign_id: int) -> dict[str, Any]:
    """Messages that failed or went undelivered, per error code, with its text (`/stats/errors`).

    `share` is the code's part of those messages (the shares add up to 1); a code reported with
    several texts shows the most frequent one. Test sends do not count, and a retried contact counts
    by its latest message: a failure that a retry delivered is no longer listed.
    """
    failed = and_(counted(session, campaign_id).latest, col(Message.status).in_(FAILED_MESSAGE_STATUSES))
    code = func.coalesce(col(Message.error_code), "unknown")
    text_column = col(Message.error_text)
    rows = session.execute(select(code, text_column, func.count()).where(failed).group_by(code, text_column)).all()
    counts: dict[str, int] = {}
    texts: dict[str, tuple[int, str]] = {}
    for error_code, text, count in rows:
        counts[error_code] = counts.get(error_code, 0) + int(count)
        if text and (error_code not in texts or int(count) > texts[error_code][0]):
            texts[error_code] = (int(count), text)
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {
        "errors": [
            {"code": c, "text": texts.get(c, (0, None))[1], "count": n, "share": _rate(n, total)} for c, n in ranked
        ]
    }
