"""Breakdowns of a campaign beside the summary: links, devices, click timing, trend, funnel.

Clicks flagged as bots are left out unless asked for; test sends never count. A retried contact
counts once, by its latest message (core/stats/counting.py); clicks and conversions count whichever
attempt they came from (a contact once where contacts are counted). Time buckets are
computed in Python from the timestamps so SQLite and PostgreSQL give the same answer (the
trend of a million-recipient campaign reads two million timestamps: a few seconds).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import and_, case, distinct, func, literal_column, select
from sqlmodel import Session, col

from core.errors import BadParameter
from core.models import Click, Conversion, Link, Message, Reply, Variant, counted_messages
from core.stats.counting import counted
from core.statuses import MessageStatus, Phase

# Upper bounds (seconds) of the click-timing histogram; None is "later".
TIMING_BUCKETS: list[tuple[str, int | None]] = [
    ("under 1 min", 60),
    ("1–5 min", 300),
    ("5–15 min", 900),
    ("15–60 min", 3600),
    ("1–6 h", 6 * 3600),
    ("6–24 h", 24 * 3600),
    ("over 24 h", None),
]


class ReportError(BadParameter):
    """A parameter of a report is wrong; the message names it."""


def _clicks(campaign_id: int, include_bots: bool) -> Any:
    condition = and_(col(Click.campaign_id) == campaign_id, counted_messages())
    return condition if include_bots else and_(condition, col(Click.is_bot).is_(False))


def links(session: Session, campaign_id: int) -> dict[str, Any]:
    """Clicks per tracked link (a link is a position in a variant's body)."""
    return {"links": _link_rows(session, campaign_id)}


def _link_rows(session: Session, campaign_id: int) -> list[dict[str, Any]]:
    counts = {
        link_id: (int(total or 0), int(human or 0), int(unique or 0), int(bots or 0))
        for link_id, total, human, unique, bots in session.execute(
            select(
                col(Click.link_id),
                func.count(),
                func.sum(case((col(Click.is_bot).is_(False), 1), else_=0)),
                func.count(distinct(case((col(Click.is_bot).is_(False), col(Click.contact_id)), else_=None))),
                func.sum(case((col(Click.is_bot).is_(True), 1), else_=0)),
            )
            .join(Message, col(Message.id) == col(Click.message_id))
            .where(_clicks(campaign_id, include_bots=True))
            .group_by(col(Click.link_id))
        ).all()
    }
    out = []
    for link, variant in session.execute(
        select(Link, col(Variant.name))
        .join(Variant, col(Variant.id) == col(Link.variant_id))
        .where(col(Link.campaign_id) == campaign_id)
        .order_by(col(Variant.name), col(Link.position))
    ).all():
        _total, human, unique, bots = counts.get(link.id, (0, 0, 0, 0))
        out.append(
            {
                "link_id": link.id,
                "url": link.destination,
                "position": link.position,
                "variant": variant,
                "clicks": human,
                "unique_clicks": unique,
                "bot_clicks": bots,
            }
        )
    return out


def devices(session: Session, campaign_id: int, *, include_bots: bool = False) -> dict[str, Any]:
    def split(column: Any) -> list[dict[str, Any]]:
        # One expression with a literal (not a bound parameter): PostgreSQL must see the same
        # expression in SELECT and GROUP BY.
        name = func.coalesce(column, literal_column("'other'"))
        rows = session.execute(
            select(name, func.count(), func.count(distinct(col(Click.contact_id))))
            .join(Message, col(Message.id) == col(Click.message_id))
            .where(_clicks(campaign_id, include_bots))
            .group_by(name)
            .order_by(func.count().desc())
        ).all()
        return [{"name": name, "clicks": int(n), "unique_clicks": int(u)} for name, n, u in rows]

    return {"os": split(col(Click.os)), "device": split(col(Click.device))}


def click_timing(session: Session, campaign_id: int, *, reports_delivery: bool = True) -> dict[str, Any]:
    """First human click per contact, measured from its message's delivery (else its send)."""
    first: dict[int, tuple[datetime, datetime | None, datetime | None]] = {}
    for contact_id, clicked_at, delivered_at, sent_at in session.execute(
        select(col(Click.contact_id), col(Click.clicked_at), col(Message.delivered_at), col(Message.sent_at))
        .join(Message, col(Message.id) == col(Click.message_id))
        .where(_clicks(campaign_id, include_bots=False))
    ).all():
        if contact_id not in first or clicked_at < first[contact_id][0]:
            first[contact_id] = (clicked_at, delivered_at, sent_at)
    basis = "delivered" if reports_delivery else "sent"
    counts = [0] * len(TIMING_BUCKETS)
    for clicked_at, delivered_at, sent_at in first.values():
        start = (delivered_at if basis == "delivered" else None) or sent_at
        if start is None:
            continue
        seconds = max(0.0, (clicked_at - start).total_seconds())
        for i, (_, upper) in enumerate(TIMING_BUCKETS):
            if upper is None or seconds < upper:
                counts[i] += 1
                break
    return {
        "basis": basis,
        "buckets": [
            {"label": label, "upper_seconds": upper, "contacts": n}
            for (label, upper), n in zip(TIMING_BUCKETS, counts, strict=True)
        ],
    }


def _bucket_start(moment: datetime, interval: str, tz: ZoneInfo) -> datetime:
    local = moment.astimezone(tz)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "week":
        day -= timedelta(days=day.weekday())
    elif interval == "month":
        day = day.replace(day=1)
    return day


def trend(session: Session, campaign_id: int, *, interval: str = "day", tz: str = "UTC") -> dict[str, Any]:
    if interval not in ("day", "week", "month"):
        raise ReportError(f"interval must be day, week or month, got {interval!r}")
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportError(f"tz {tz!r} is not an IANA time zone (e.g. Europe/Berlin)") from None
    buckets: dict[datetime, dict[str, Any]] = defaultdict(
        lambda: {"sent": 0, "delivered": 0, "clicks": 0, "unique_clicks": set(), "replies": 0, "conversions": 0}
    )
    for sent_at, delivered_at in session.execute(
        select(col(Message.sent_at), col(Message.delivered_at)).where(counted(session, campaign_id).latest)
    ):
        if sent_at:
            buckets[_bucket_start(sent_at, interval, zone)]["sent"] += 1
        if delivered_at:
            buckets[_bucket_start(delivered_at, interval, zone)]["delivered"] += 1
    for clicked_at, contact_id in session.execute(
        select(col(Click.clicked_at), col(Click.contact_id))
        .join(Message, col(Message.id) == col(Click.message_id))
        .where(_clicks(campaign_id, include_bots=False))
    ):
        bucket = buckets[_bucket_start(clicked_at, interval, zone)]
        bucket["clicks"] += 1
        bucket["unique_clicks"].add(contact_id)
    for (received_at,) in session.execute(
        select(col(Reply.received_at)).where(col(Reply.campaign_id) == campaign_id, col(Reply.keyword).is_(None))
    ):
        buckets[_bucket_start(received_at, interval, zone)]["replies"] += 1
    for (occurred_at,) in session.execute(
        select(col(Conversion.occurred_at)).where(col(Conversion.campaign_id) == campaign_id)
    ):
        buckets[_bucket_start(occurred_at, interval, zone)]["conversions"] += 1
    return {
        "interval": interval,
        "tz": tz,
        "buckets": [
            {"start": start.isoformat(), **{k: (len(v) if k == "unique_clicks" else v) for k, v in b.items()}}
            for start, b in sorted(buckets.items())
        ],
    }


def funnel(session: Session, campaign_id: int) -> dict[str, Any]:
    """Contacts at each step; conversions split into direct (clicked first) and influenced."""
    # One message per contact (its latest): a sum is a count of contacts.
    sent, delivered = session.execute(
        select(
            func.sum(case((col(Message.sent_at).is_not(None), 1), else_=0)),
            func.sum(case((col(Message.status) == MessageStatus.DELIVERED, 1), else_=0)),
        ).where(counted(session, campaign_id).latest)
    ).one()
    clicked = session.scalar(
        select(func.count(distinct(col(Click.contact_id))))
        .join(Message, col(Message.id) == col(Click.message_id))
        .where(_clicks(campaign_id, include_bots=False))
    )
    direct, influenced, converted, revenue = session.execute(
        select(
            func.count(distinct(case((col(Conversion.clicked).is_(True), col(Conversion.contact_id)), else_=None))),
            func.count(distinct(case((col(Conversion.clicked).is_(False), col(Conversion.contact_id)), else_=None))),
            func.count(distinct(col(Conversion.contact_id))),
            func.coalesce(func.sum(col(Conversion.revenue)), 0),
        ).where(col(Conversion.campaign_id) == campaign_id)
    ).one()
    steps = [("sent", sent), ("delivered", delivered), ("clicked", clicked), ("converted", converted)]
    return {
        "steps": [{"name": name, "contacts": int(n or 0)} for name, n in steps],
        "direct": int(direct or 0),
        # A contact with a direct conversion is not counted again as influenced.
        "influenced": int(converted or 0) - int(direct or 0) if influenced else 0,
        "revenue": float(revenue or 0),
    }


def variants(
    session: Session, campaign_id: int, *, reports_delivery: bool = True, phase: str | None = None
) -> dict[str, Any]:
    """The summary per variant, "all variants" with each contact once, and who is winning.
    `phase="test"` reads the A/B test cohort alone (what the winner is picked on): its own
    messages, as the test sent them (a later retry of one is a `retry` row, not counted there)."""
    from core.campaigns.definition import get_campaign
    from core.stats.ab import Arm, compare

    campaign = get_campaign(session, campaign_id)
    metric = (campaign.ab_test or {}).get("metric", "ctr")
    rows_of = counted(session, campaign_id, phase=phase)
    variant_id = col(Message.variant_id)
    # Each contact's latest message (a retry row keeps the variant of the message it retries), so
    # a count of messages is a count of contacts; one grouped query for every variant.
    messages = {
        vid: (int(n or 0), int(sent or 0), int(delivered or 0))
        for vid, n, sent, delivered in session.execute(
            select(
                variant_id,
                func.count(),
                func.sum(case((col(Message.sent_at).is_not(None), 1), else_=0)),
                func.sum(case((col(Message.status) == MessageStatus.DELIVERED, 1), else_=0)),
            )
            .where(rows_of.latest, variant_id.is_not(None))
            .group_by(variant_id)
        )
    }

    # Clicks and conversions: of whichever attempt they came from, each contact once.
    def clickers(grouped: bool) -> Any:
        return (
            select(*([variant_id] if grouped else []), func.count(distinct(col(Click.contact_id))))
            .join(Message, col(Message.id) == col(Click.message_id))
            .where(_clicks(campaign_id, include_bots=False), rows_of.every, variant_id.is_not(None))
        )

    def conversions(grouped: bool) -> Any:
        return (
            select(
                *([variant_id] if grouped else []),
                func.count(distinct(col(Conversion.contact_id))),
                func.coalesce(func.sum(col(Conversion.revenue)), 0),
            )
            .join(Message, col(Message.id) == col(Conversion.message_id))
            .where(col(Conversion.campaign_id) == campaign_id, rows_of.every, variant_id.is_not(None))
        )

    clicked = {vid: int(n or 0) for vid, n in session.execute(clickers(True).group_by(variant_id))}
    converted = {
        vid: (int(n or 0), float(revenue or 0))
        for vid, n, revenue in session.execute(conversions(True).group_by(variant_id))
    }

    def counts(
        recipients: int, sent: int, delivered: int, clickers: int, conversions: int, revenue: float
    ) -> dict[str, Any]:
        basis = delivered if reports_delivery else sent
        return {
            "recipients": recipients,
            "sent": sent,
            "delivered": delivered,
            "unique_clicks": clickers,
            "ctr": round(clickers / basis, 6) if basis else 0.0,
            "conversions": conversions,
            "conversion_rate": round(conversions / basis, 6) if basis else 0.0,
            "revenue": revenue,
            "_basis": basis,
        }

    def variant_counts(vid: int | None) -> dict[str, Any]:
        return counts(*messages.get(vid, (0, 0, 0)), clicked.get(vid, 0), *converted.get(vid, (0, 0.0)))

    rows = []
    for variant in session.scalars(
        select(Variant).where(col(Variant.campaign_id) == campaign_id).order_by(col(Variant.id))
    ):
        row = {
            "variant": variant.name,
            "is_control": variant.is_control,
            **variant_counts(variant.id),
        }
        if variant.is_control:  # held out: nothing sent, the group's size is what there is to show
            row["recipients"] = int(
                session.scalar(
                    select(func.count()).where(
                        col(Message.campaign_id) == campaign_id,
                        col(Message.variant_id) == variant.id,
                        col(Message.phase) == Phase.CONTROL,
                    )
                )
                or 0
            )
        rows.append(row)
    arms = []
    for row in [r for r in rows if not r["is_control"]]:
        if metric in ("ctr", "unique_clicks"):
            arms.append(Arm(row["variant"], row["unique_clicks"], row["_basis"]))
        else:
            value = row["revenue"] / row["conversions"] if metric == "revenue" and row["conversions"] else 1.0
            arms.append(Arm(row["variant"], row["conversions"], row["_basis"], value))
    posteriors = {p.name: p for p in compare([a for a in arms if a.trials > 0], seed=campaign_id)}
    for row in rows:
        p = posteriors.get(row["variant"])
        row["chance_to_win"] = p.chance_to_win if p else None
        row["expected_loss"] = p.expected_loss if p else None
        row["interval"] = list(p.interval) if p else None
        row.pop("_basis")
    all_clicked = session.execute(clickers(False)).scalar()
    all_converted, all_revenue = session.execute(conversions(False)).one()
    all_variants = counts(
        sum(n for n, _, _ in messages.values()),
        sum(sent for _, sent, _ in messages.values()),
        sum(delivered for _, _, delivered in messages.values()),
        int(all_clicked or 0),
        int(all_converted or 0),
        float(all_revenue or 0),
    )
    all_variants.pop("_basis")
    return {"metric": metric, "variants": rows, "all_variants": all_variants, "winner": campaign.winner}
