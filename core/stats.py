"""Campaign statistics (API.md "Stats summary" and "Definitions").

Test sends (phase `test_send`) never count. Clicks flagged as bots are left out of the default
numbers and shown beside them (`bots_total`, `raw_*`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, distinct, func, select
from sqlmodel import Session

from core.campaigns import get_campaign, iso
from core.models import UNCOUNTED_PHASES, Click, Conversion, Message, Reply, utcnow

OPT_OUT_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})


def _rate(numerator: int, denominator: int) -> float:
    return round(numerator / denominator, 6) if denominator else 0.0


def summary(session: Session, campaign_id: int, *, reports_delivery: bool = True,
            include_bots: bool = False) -> dict[str, Any]:
    campaign = get_campaign(session, campaign_id)
    counted = and_(Message.campaign_id == campaign_id, Message.phase.notin_(UNCOUNTED_PHASES))
    m = session.execute(
        select(
            func.count(),
            func.sum(case((Message.status.in_(("queued", "sending")), 1), else_=0)),
            func.sum(case((Message.sent_at.is_not(None), 1), else_=0)),
            func.sum(case((Message.status == "delivered", 1), else_=0)),
            func.sum(case((Message.status == "undelivered", 1), else_=0)),
            func.sum(case((Message.status == "failed", 1), else_=0)),
        ).where(counted)
    ).one()
    messages, queued, sent, delivered, undelivered, failed = (int(v or 0) for v in m)
    real_clicks = and_(Click.campaign_id == campaign_id, Click.message_id == Message.id, Message.phase.notin_(UNCOUNTED_PHASES))
    c = session.execute(
        select(
            func.count(),
            func.count(distinct(Click.contact_id)),
            func.sum(case((Click.is_bot.is_(True), 1), else_=0)),
            func.sum(case((Click.is_bot.is_(False), 1), else_=0)),
            func.count(distinct(case((Click.is_bot.is_(False), Click.contact_id), else_=None))),
        ).select_from(Click).join(Message, real_clicks)
    ).one()
    raw_total, raw_unique, bots_total, human_total, human_unique = (int(v or 0) for v in c)
    r = session.execute(
        select(
            func.count(distinct(case((Reply.keyword.is_(None), Reply.contact_id), else_=None))),
            func.sum(case((Reply.keyword.is_(None), 1), else_=0)),
            func.count(distinct(case((Reply.keyword.in_(OPT_OUT_KEYWORDS), Reply.contact_id), else_=None))),
        ).where(Reply.campaign_id == campaign_id)
    ).one()
    repliers, replies, opt_outs = (int(v or 0) for v in r)
    conv = session.execute(
        select(func.count(), func.coalesce(func.sum(Conversion.revenue), 0)).where(Conversion.campaign_id == campaign_id)
    ).one()
    basis_name = "delivered" if reports_delivery else "sent"
    basis = delivered if reports_delivery else sent
    unique = raw_unique if include_bots else human_unique
    return {
        "campaign_id": campaign_id,
        "status": campaign.status,
        "recipients": max(campaign.recipients, messages),
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
