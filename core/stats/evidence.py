"""The evidence per variant: the counts every A/B figure is computed from, read in a few grouped
queries. `core.stats.variants` (the /stats/variants route) shows them; `core.stats.winner` decides
on them (the test cohort); `core.stats.ab` turns them into chances, intervals and p-values.

Definitions (API.md "Definitions", `/stats/variants`):
- a contact counts once per campaign, by its latest counted message (core.stats.counting);
- `basis` is delivered when the provider reports delivery, else sent;
- `converters` are distinct contacts with a conversion attributed to one of the arm's messages
  (only the campaign's `conversion.event`, default `purchase`); `conversion_events` the events;
  `revenue` their sum; `revenue_sq` the sum over converting contacts of (that contact's revenue)²,
  so revenue per recipient has a mean and a variance over `recipients` (non-converters are 0);
- the control arm (`is_control`) holds the held-out contacts: `recipients` and the conversion
  fields are set; nothing is sent, so `sent`, `delivered`, `unique_clicks` are 0 and `basis` is
  `recipients`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, distinct, func, select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col

from core.campaigns.definition import get_campaign, variants_of
from core.models import Campaign, Click, Conversion, Message, Variant
from core.stats.conversions import conversion_event
from core.stats.counting import Counted, counted
from core.statuses import MessageStatus, Phase

EVERY_PHASE = "all"  # `phase="all"`: every counted phase (not only the messages of phase `all`)


@dataclass(frozen=True)
class ArmCounts:
    variant: str
    is_control: bool
    recipients: int
    sent: int = 0
    delivered: int = 0
    basis: int = 0  # delivered (else sent); the control's recipients
    unique_clicks: int = 0  # distinct contacts with a human click
    converters: int = 0
    conversion_events: int = 0
    revenue: float = 0.0
    revenue_sq: float = 0.0


CONTROL_NAME = "control"  # the control arm's name when no variant is marked is_control


def has_control(session: Session, campaign: Campaign, variants: list[Variant]) -> bool:
    """Does the campaign hold contacts out: `control_percent` > 0, a variant marked `is_control`, or
    held-out rows (one probe) whatever the settings say now."""
    if (campaign.control_percent or 0) > 0 or any(v.is_control for v in variants):
        return True
    return session.scalar(select(col(Message.id)).where(_held_out(campaign.id or 0)).limit(1)) is not None


def _control_name(variants: list[Variant]) -> str:
    marked = [v.name for v in variants if v.is_control]
    if marked:
        return marked[0]
    taken = {v.name for v in variants}
    return CONTROL_NAME if CONTROL_NAME not in taken else "held out"


def _where(session: Session, campaign_id: int, phase: str | None) -> Counted:
    return counted(session, campaign_id, phase=None if phase in (None, EVERY_PHASE) else phase)


def _held_out(campaign_id: int) -> ColumnElement[bool]:
    """The campaign's held-out rows, found through the (campaign_id, phase) index."""
    return and_(col(Message.campaign_id) == campaign_id, col(Message.phase) == Phase.CONTROL)


def _human_clicks(campaign_id: int) -> ColumnElement[bool]:
    return and_(col(Click.campaign_id) == campaign_id, col(Click.is_bot).is_(False))


@dataclass(frozen=True)
class _Conversions:
    converters: int = 0
    events: int = 0
    revenue: float = 0.0
    revenue_sq: float = 0.0


def _conversions(
    session: Session, campaign_id: int, where: ColumnElement[bool], event: str, *, by_variant: bool
) -> dict[int | None, _Conversions]:
    """Converters, events, revenue and Σ(revenue per contact)² of the conversions attributed to the
    messages `where` picks, per variant (or all together, key None): a contact's events are summed
    first (a subquery grouped by contact), so a contact converts once whichever attempt it came from.
    Read from the campaign's conversions (the index on `conversion.campaign_id`), each joined to its
    message."""
    keys: list[Any] = [col(Message.variant_id).label("arm")] if by_variant else []
    per_contact = (
        select(
            *keys,
            col(Conversion.contact_id).label("contact_id"),
            func.count().label("events"),
            func.coalesce(func.sum(col(Conversion.revenue)), 0.0).label("revenue"),
        )
        .select_from(Conversion)
        .join(Message, col(Message.id) == col(Conversion.message_id))
        .where(col(Conversion.campaign_id) == campaign_id, col(Conversion.name) == event, where)
        .group_by(*keys, col(Conversion.contact_id))
        .subquery()
    )
    arm = [per_contact.c.arm] if by_variant else []
    query = select(
        *arm,
        func.count(),
        func.sum(per_contact.c.events),
        func.sum(per_contact.c.revenue),
        func.sum(per_contact.c.revenue * per_contact.c.revenue),
    )
    if by_variant:
        query = query.group_by(per_contact.c.arm)
    out: dict[int | None, _Conversions] = {}
    for row in session.execute(query).all():
        key = row[0] if by_variant else None
        n, events, revenue, revenue_sq = row[-4:]
        if n:
            out[key] = _Conversions(int(n), int(events or 0), float(revenue or 0), float(revenue_sq or 0))
    return out


def arms(
    session: Session, campaign_id: int, *, phase: str | None = None, reports_delivery: bool = True
) -> list[ArmCounts]:
    """One ArmCounts per variant (in variant id order) and the control arm when the campaign holds
    contacts out (in the place of the variant marked `is_control`, else last).

    `phase`: None or `all` = every counted phase; `test`, `remainder` (or `retry`) = that phase's
    messages alone. The control arm is always the whole held-out group: it has no phase of its own
    (the held-out contacts are drawn from the whole audience, before the test split).
    Seven queries at most, each one pass over the campaign's messages (or its conversions)."""
    campaign = get_campaign(session, campaign_id)
    variants = variants_of(session, campaign_id)
    rows_of = _where(session, campaign_id, phase)
    variant_id = col(Message.variant_id)
    event = conversion_event(campaign)
    # Each contact's latest message (a retry row keeps the variant of the message it retries), so
    # a count of messages is a count of contacts.
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
        ).all()
    }
    # Clicks and conversions: of whichever attempt they came from, each contact once.
    clickers = {
        vid: int(n or 0)
        for vid, n in session.execute(
            select(variant_id, func.count(distinct(col(Message.contact_id))))
            .select_from(Click)
            .join(Message, col(Message.id) == col(Click.message_id))
            .where(_human_clicks(campaign_id), rows_of.every, variant_id.is_not(None))
            .group_by(variant_id)
        ).all()
    }
    converted = _conversions(session, campaign_id, and_(rows_of.every, variant_id.is_not(None)), event, by_variant=True)

    def arm(variant: Variant) -> ArmCounts:
        recipients, sent, delivered = messages.get(variant.id, (0, 0, 0))
        c = converted.get(variant.id, _Conversions())
        return ArmCounts(
            variant=variant.name,
            is_control=False,
            recipients=recipients,
            sent=sent,
            delivered=delivered,
            basis=delivered if reports_delivery else sent,
            unique_clicks=clickers.get(variant.id, 0),
            converters=c.converters,
            conversion_events=c.events,
            revenue=c.revenue,
            revenue_sq=c.revenue_sq,
        )

    out: list[ArmCounts] = []
    control: ArmCounts | None = None
    if has_control(session, campaign, variants):
        held = int(
            session.scalar(select(func.count(distinct(col(Message.contact_id)))).where(_held_out(campaign_id))) or 0
        )
        c = _conversions(session, campaign_id, _held_out(campaign_id), event, by_variant=False).get(
            None, _Conversions()
        )
        control = ArmCounts(
            variant=_control_name(variants),
            is_control=True,
            recipients=held,
            basis=held,
            converters=c.converters,
            conversion_events=c.events,
            revenue=c.revenue,
            revenue_sq=c.revenue_sq,
        )
    for variant in variants:
        if not variant.is_control:
            out.append(arm(variant))
        elif control is not None:  # the (first) variant marked as control stands for the held-out group
            out.append(control)
            control = None
    return out if control is None else [*out, control]


def overall(
    session: Session, campaign_id: int, *, phase: str | None = None, reports_delivery: bool = True
) -> ArmCounts:
    """Every variant together ("all variants"), a contact once; never the control group."""
    campaign = get_campaign(session, campaign_id)
    rows_of = _where(session, campaign_id, phase)
    has_variant = col(Message.variant_id).is_not(None)
    recipients, sent, delivered = session.execute(
        select(
            func.count(),
            func.sum(case((col(Message.sent_at).is_not(None), 1), else_=0)),
            func.sum(case((col(Message.status) == MessageStatus.DELIVERED, 1), else_=0)),
        ).where(rows_of.latest, has_variant)
    ).one()
    clicked = session.scalar(
        select(func.count(distinct(col(Message.contact_id))))
        .select_from(Click)
        .join(Message, col(Message.id) == col(Click.message_id))
        .where(_human_clicks(campaign_id), rows_of.every, has_variant)
    )
    c = _conversions(
        session, campaign_id, and_(rows_of.every, has_variant), conversion_event(campaign), by_variant=False
    ).get(None, _Conversions())
    return ArmCounts(
        variant="all",
        is_control=False,
        recipients=int(recipients or 0),
        sent=int(sent or 0),
        delivered=int(delivered or 0),
        basis=int(delivered or 0) if reports_delivery else int(sent or 0),
        unique_clicks=int(clicked or 0),
        converters=c.converters,
        conversion_events=c.events,
        revenue=c.revenue,
        revenue_sq=c.revenue_sq,
    )
