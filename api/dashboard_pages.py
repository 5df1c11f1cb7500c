"""What the dashboard's pages show: the campaign list, a campaign's page, a contact's page
(automations and their runs: api/dashboard_automations.py).

Read with the same queries as the API (core/stats) where the API has them; the campaign list
counts sent, delivered and clickers for a whole page of campaigns in a handful of queries
whatever their number (each contact once, by its latest message, as the API counts).
"""

from __future__ import annotations

import math
from typing import Any

from litestar.exceptions import NotFoundException
from sqlalchemy import and_, case, distinct, func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from api.contacts import contact_dict
from api.dashboard_automations import campaign_automations
from api.rows import message_dict
from core.campaigns.definition import campaign_dict, get_campaign, iso, variants_of
from core.db import session_scope
from core.hooks import abilities
from core.hooks.registry import PluginRegistry
from core.models import Campaign, Click, Contact, Conversion, Link, Message, Reply, counted_messages
from core.stats import breakdowns, summary
from core.stats import variants as variant_stats
from core.stats.counting import latest_of_campaigns
from core.statuses import MessageStatus, Phase

MESSAGE_LOG_ROWS = 100
BOT_ROWS = 50  # the campaign page's latest bot verdicts
CONTACT_ROWS = 200
TREND_SERIES = (("sent", "Sent"), ("delivered", "Delivered"), ("clicks", "Clicks"))


def campaign_rows(
    session: Session, registry: PluginRegistry, *, before: int | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Newest campaigns first with sent, delivered and CTR, in a few queries whatever their number."""
    query = select(Campaign).order_by(col(Campaign.id).desc()).limit(limit + 1)
    if before is not None:
        query = query.where(col(Campaign.id) < before)
    campaigns = list(session.scalars(query))
    ids = [c.id for c in campaigns[:limit]]
    # Each contact once, by its latest message (core/stats/counting.py): campaigns without
    # retry-failed rows in one query, each campaign with them in one of its own.
    messages: dict[int, tuple[int, int]] = {}
    for latest in latest_of_campaigns(session, [i for i in ids if i is not None]):
        for cid, sent, delivered in session.execute(
            select(
                col(Message.campaign_id),
                func.sum(case((col(Message.sent_at).is_not(None), 1), else_=0)),
                func.sum(case((col(Message.status) == MessageStatus.DELIVERED, 1), else_=0)),
            )
            .where(latest)
            .group_by(col(Message.campaign_id))
        ):
            messages[cid] = (int(sent or 0), int(delivered or 0))
    clickers = dict(
        session.execute(
            select(col(Click.campaign_id), func.count(distinct(col(Click.contact_id))))
            .join(Message, and_(col(Message.id) == col(Click.message_id), counted_messages()))
            .where(col(Click.campaign_id).in_(ids), col(Click.is_bot).is_(False))
            .group_by(col(Click.campaign_id))
        ).all()
    )
    rows = []
    for campaign in campaigns[:limit]:
        sent, delivered = messages.get(campaign.id or 0, (0, 0))
        basis = delivered if registry.reports_delivery(campaign.provider) else sent
        unique = int(clickers.get(campaign.id, 0))
        rows.append(
            {
                "id": campaign.id,
                "name": campaign.name,
                "status": campaign.status,
                "kind": campaign.kind,
                "sent": sent,
                "delivered": delivered,
                "ctr": round(unique / basis, 6) if basis else 0.0,
                "created_at": iso(campaign.created_at),
            }
        )
    return rows, len(campaigns) > limit


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at or above `value` (a round top for a chart's axis)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def trend_chart(trend: dict[str, Any], *, width: int = 720, height: int = 220) -> dict[str, Any] | None:
    """Geometry of the daily bar chart (sent, delivered, clicks side by side per day), drawn as SVG."""
    buckets = trend["buckets"]
    if not buckets:
        return None
    left, right, top, bottom = 44, 8, 10, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    ceiling = _nice_ceiling(max(b[key] for b in buckets for key, _ in TREND_SERIES))
    group = plot_w / len(buckets)
    bar = group * 0.8 / len(TREND_SERIES)
    bars, labels = [], []
    for i, bucket in enumerate(buckets):
        x0 = left + i * group + group * 0.1
        day = bucket["start"][:10]
        for j, (key, name) in enumerate(TREND_SERIES):
            h = plot_h * bucket[key] / ceiling
            bars.append(
                {
                    "series": key,
                    "x": round(x0 + j * bar, 1),
                    "y": round(top + plot_h - h, 1),
                    "w": round(max(bar - 1, 1), 1),
                    "h": round(h, 1),
                    "title": f"{day} · {name}: {bucket[key]:,}",
                }
            )
        labels.append({"x": round(left + (i + 0.5) * group, 1), "text": day[5:]})
    ticks = [{"y": round(top + plot_h - plot_h * f, 1), "text": f"{ceiling * f:,.0f}"} for f in (0, 0.5, 1)]
    return {
        "width": width,
        "height": height,
        "left": left,
        "right": width - right,
        "bars": bars,
        "labels": labels if len(labels) <= 31 else labels[:: math.ceil(len(labels) / 31)],
        "ticks": ticks,
        "series": TREND_SERIES,
        "baseline": top + plot_h,
    }


def campaign_page(engine: Engine, registry: PluginRegistry, campaign_id: int) -> dict[str, Any]:
    with session_scope(engine, read_only=True) as session:
        campaign = get_campaign(session, campaign_id)
        delivery = registry.reports_delivery(campaign.provider)
        names = {v.id: v.name for v in variants_of(session, campaign_id)}
        log = list(
            session.scalars(
                select(Message)
                .where(col(Message.campaign_id) == campaign_id)
                .order_by(col(Message.id))
                .limit(MESSAGE_LOG_ROWS + 1)
            )
        )
        timing = breakdowns.click_timing(session, campaign_id, reports_delivery=delivery)
        devices = breakdowns.devices(session, campaign_id)
        links = breakdowns.links(session, campaign_id)["links"]
        urls = {row["link_id"]: row["url"] for row in links}
        bots = [
            {
                "clicked_at": iso(c.clicked_at),
                "contact_id": c.contact_id,
                "phone": phone,
                "url": urls.get(c.link_id),
                "ip": c.ip,
                "user_agent": c.user_agent,
                "bot_score": c.bot_score,
                "bot_reasons": list(c.bot_reasons or []),
            }
            for c, phone in session.execute(
                select(Click, col(Message.phone))
                .join(Message, col(Message.id) == col(Click.message_id))
                .where(col(Click.campaign_id) == campaign_id, col(Click.is_bot).is_(True))
                .order_by(col(Click.id).desc())
                .limit(BOT_ROWS)
            )
        ]
        return {
            "bot_clicks": bots,
            "campaign": campaign_dict(session, campaign),
            "summary": summary.summary(
                session,
                campaign_id,
                reports_delivery=delivery,
                unsubscribed_codes=registry.unsubscribed_error_codes(campaign.provider),
            ),
            "variants": variant_stats.variants(session, campaign_id, reports_delivery=delivery),
            "links": links,
            "most_link_clicks": max([row["clicks"] + row["bot_clicks"] for row in links] + [1]),
            "devices": devices,
            "most_device_clicks": max([row["clicks"] for row in devices["os"] + devices["device"]] + [1]),
            "timing": timing,
            "most_timing": max([b["contacts"] for b in timing["buckets"]] + [1]),
            "trend": trend_chart(breakdowns.trend(session, campaign_id, interval="day")),
            "messages": [message_dict(m, names.get(m.variant_id)) for m in log[:MESSAGE_LOG_ROWS]],
            "more_messages": len(log) > MESSAGE_LOG_ROWS,
            # Messages awaiting a delivery report: does the provider say when asked, and after how long?
            "can_fetch_status": abilities.can_fetch_status(registry.providers.get(campaign.provider)),
            "settle": duration(registry.context.settings.status_settle_seconds),
            # Its follow-ups, the runs about it or that made it, its parent (API.md "Automations").
            "automations": campaign_automations(session, campaign),
        }


def duration(seconds: float) -> str:
    """900 → "15 minutes", 45 → "45 seconds", 7200 → "2 hours" (the settle window, a follow-up's
    delay, in words)."""
    for size, unit in ((3600, "hour"), (60, "minute"), (1, "second")):
        if seconds >= size and seconds % size == 0 or size == 1:
            n = seconds / size
            shown = f"{n:g}"
            return f"{shown} {unit}" + ("" if shown == "1" else "s")
    return f"{seconds:g} seconds"  # pragma: no cover - the loop always returns


def contact_page(engine: Engine, contact_id: int) -> dict[str, Any]:
    with session_scope(engine, read_only=True) as session:
        contact = session.get(Contact, contact_id)
        if contact is None:
            raise NotFoundException(f"contact {contact_id} does not exist")
        mine = col(Message.contact_id) == contact_id
        messages = [
            message_dict(m)
            for m in session.scalars(select(Message).where(mine).order_by(col(Message.id).desc()).limit(CONTACT_ROWS))
        ]
        clicks = [
            {
                "clicked_at": iso(c.clicked_at),
                "campaign_id": c.campaign_id,
                "url": url,
                "os": c.os,
                "device": c.device,
                "is_bot": c.is_bot,
                "bot_reasons": list(c.bot_reasons or []),
            }
            for c, url in session.execute(
                select(Click, col(Link.destination))
                .join(Link, col(Link.id) == col(Click.link_id))
                .where(col(Click.contact_id) == contact_id)
                .order_by(col(Click.id).desc())
                .limit(CONTACT_ROWS)
            )
        ]
        replies = [
            {"received_at": iso(r.received_at), "campaign_id": r.campaign_id, "body": r.body, "keyword": r.keyword}
            for r in session.scalars(
                select(Reply)
                .where(col(Reply.contact_id) == contact_id)
                .order_by(col(Reply.id).desc())
                .limit(CONTACT_ROWS)
            )
        ]
        # Every event of the contact; a conversion of a campaign only where one is attributed (the
        # campaign's event, within its window, last touch): held out by a control group, or not.
        conversions = [
            {
                "occurred_at": iso(c.occurred_at),
                "campaign_id": c.campaign_id,
                "name": c.name,
                "revenue": c.revenue,
                "clicked": c.clicked,
                "held_out": phase == Phase.CONTROL,
            }
            for c, phase in session.execute(
                select(Conversion, col(Message.phase))
                .outerjoin(Message, col(Message.id) == col(Conversion.message_id))
                .where(col(Conversion.contact_id) == contact_id)
                .order_by(col(Conversion.id).desc())
                .limit(CONTACT_ROWS)
            )
        ]
        touched = {row["campaign_id"] for row in messages + clicks + replies + conversions} - {None}
        campaigns = dict(
            session.execute(select(col(Campaign.id), col(Campaign.name)).where(col(Campaign.id).in_(touched))).all()
        )
        return {
            "contact": contact_dict(contact),
            "messages": messages,
            "clicks": clicks,
            "replies": replies,
            "conversions": conversions,
            "campaign_names": campaigns,
        }
