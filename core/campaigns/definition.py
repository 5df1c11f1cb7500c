"""Campaigns: creation (with every template checked against its audience), audience, shape."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from core.campaigns.engagement import audience_condition, check_audience_campaign
from core.campaigns.lifecycle import Move, transition
from core.campaigns.schemas import CampaignCreate
from core.campaigns.templates import BodyTemplateError, compile_body, render_body
from core.contacts.filters import matching_contacts
from core.db import session_scope
from core.delivery.reconcile import awaiting_report
from core.errors import Conflict, Invalid, NotFound
from core.models import Campaign, Contact, Message, Variant, counted_messages, utcnow
from core.statuses import FINAL_CAMPAIGN_STATUSES, UNSENT_MESSAGE_STATUSES, CampaignKind

# Audiences are checked in full at creation up to this size, then by a sample.
RENDER_CHECK_LIMIT = 100_000
# How far in the past a `schedule_at` may lie (clock skew between the caller and us), at create
# and at launch; anything older is refused rather than sent at once without a word.
SCHEDULE_SKEW = timedelta(seconds=5)


class CampaignNotFound(NotFound):
    """No campaign has this id."""


class CampaignConflict(Conflict):
    """The campaign is not in a state that allows the request."""


class CampaignInvalid(Invalid):
    """The campaign cannot be created as asked; the message names the problem."""


def iso(value: Any) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat().replace("+00:00", "Z")


def _audience_rows(session: Session, campaign: Campaign, entities: tuple[Any, ...], chunk: int) -> Iterator[Any]:
    audience = campaign.audience or {}
    query = select(*entities).where(col(Contact.opted_out_at).is_(None)).order_by(col(Contact.id))
    if audience.get("contact_ids"):
        query = query.where(col(Contact.id).in_(audience["contact_ids"]))
    if (engaged := audience_condition(session, audience)) is not None:
        query = query.where(engaged)
    # Columns only: plain rows from the connection, without the ORM's loading (a million rows).
    run = session.execute if any(entity is Contact for entity in entities) else session.connection().execute
    if wanted := audience.get("attributes"):
        ids = sorted(session.scalars(matching_contacts(wanted)))
        for start in range(0, len(ids), chunk):
            yield from run(query.where(col(Contact.id).in_(ids[start : start + chunk])))
        return
    last_id = 0
    while True:
        rows = list(run(query.where(col(Contact.id) > last_id).limit(chunk)))
        if not rows:
            return
        first = rows[-1][0]
        last_id = (first if isinstance(first, int) else first.id) or last_id
        yield from rows


def iter_audience(session: Session, campaign: Campaign, *, chunk: int = 2000) -> Iterator[Contact]:
    """Contacts of the audience, opted-out ones excluded, in id order (a stable snapshot order).

    An attribute filter is answered by the index first (core/contacts/filters.py: the ids of the
    matching contacts, whatever their number, in one query), then its contacts are read by id."""
    for row in _audience_rows(session, campaign, (Contact,), chunk):
        yield row[0]


def audience_of(session: Session, campaign: Campaign, *, attributes: bool = False) -> list[tuple[int, dict[str, Any]]]:
    """(id, attributes) of the audience's contacts as `iter_audience` finds them, as plain rows (a
    million in seconds); the attributes are read only when asked for (else empty)."""
    if attributes:
        rows = _audience_rows(session, campaign, (col(Contact.id), col(Contact.attributes)), 20_000)
        return [(row[0], dict(row[1] or {})) for row in rows]
    return [(row[0], {}) for row in _audience_rows(session, campaign, (col(Contact.id),), 20_000)]


def as_utc(value: datetime) -> datetime:
    """An aware UTC time; a naive one is taken as UTC (as SQLite hands them back)."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def schedule_problem(schedule_at: datetime | None, now: datetime | None = None) -> str | None:
    """What is wrong with `schedule_at` (it lies in the past, beyond SCHEDULE_SKEW); None when fine."""
    if schedule_at is None:
        return None
    now = now or utcnow()
    when = as_utc(schedule_at)
    if when >= now - SCHEDULE_SKEW:
        return None
    return (
        f"schedule_at {iso(when)} lies in the past (it is {iso(now.replace(microsecond=0))}): "
        "give a time to come, or null to send at launch"
    )


def variants_of(session: Session, campaign_id: int) -> list[Variant]:
    return list(
        session.scalars(select(Variant).where(col(Variant.campaign_id) == campaign_id).order_by(col(Variant.id)))
    )


def check_templates(session: Session, campaign: Campaign, variants: list[Variant]) -> None:
    templates = [(v, compile_body(v.body, variant=v.name)) for v in variants if not v.is_control]
    for count, contact in enumerate(iter_audience(session, campaign)):
        if count >= RENDER_CHECK_LIMIT:
            break
        for variant, template in templates:
            render_body(template, contact, variant=variant.name)


def create_campaign(
    engine: Engine,
    data: CampaignCreate,
    *,
    providers: set[str],
    kind: str = CampaignKind.CAMPAIGN,
    parent_id: int | None = None,
    run_id: int | None = None,
) -> dict[str, Any]:
    """A draft campaign; an automation's names its kind, parent and run (API.md "Automations")."""
    check_audience_campaign(engine, data.audience.campaign)
    if data.provider not in providers:
        raise CampaignInvalid(f"provider {data.provider!r} is not enabled; enabled: {', '.join(sorted(providers))}")
    schedule_at = as_utc(data.schedule_at) if data.schedule_at is not None else None
    if (problem := schedule_problem(schedule_at)) is not None:
        raise CampaignInvalid(problem)
    campaign = Campaign(
        name=data.name,
        provider=data.provider,
        audience=data.audience.model_dump(exclude_none=True),
        control_percent=data.control_percent,
        ab_test=data.ab_test.model_dump() if data.ab_test else None,
        variant_by_attribute=data.variant_by_attribute,
        schedule_at=schedule_at,
        quiet_hours=data.quiet_hours.model_dump() if data.quiet_hours else None,
        rate_limit_per_second=data.rate_limit_per_second,
        tracking=data.tracking.model_dump(),
        conversion=data.conversion.model_dump() if data.conversion else None,
        kind=kind,
        parent_id=parent_id,
        run_id=run_id,
        follow_ups=[f.model_dump(exclude_none=True) for f in data.follow_ups] if data.follow_ups else None,
    )
    variants = [Variant(**v.model_dump()) for v in data.variants]
    # Rendered for the audience before anything is written, in a read-only unit: a big audience
    # takes a while, and no writer (clicks, callbacks) should wait behind it. Nothing is stored
    # when a body fails.
    with session_scope(engine, read_only=True) as session:
        try:
            check_templates(session, campaign, variants)
        except BodyTemplateError as exc:
            raise CampaignInvalid(str(exc)) from exc
    with session_scope(engine) as session:
        session.add(campaign)
        session.flush()
        for variant in variants:
            variant.campaign_id = campaign.id or 0
        session.add_all(variants)
        session.flush()
        return campaign_dict(session, campaign, variants)


def get_campaign(session: Session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise CampaignNotFound(f"campaign {campaign_id} does not exist")
    return campaign


def progress(session: Session, campaign: Campaign) -> dict[str, Any]:
    """Counts of the campaign's messages, in one query (by status, on ix_message_campaign_status)."""
    rows = session.execute(
        select(col(Message.status), func.count(), func.sum(case((awaiting_report(), 1), else_=0)))
        .where(col(Message.campaign_id) == campaign.id, counted_messages())
        .group_by(col(Message.status))
    ).all()
    counts: dict[str, int] = {status: n for status, n, _ in rows}
    total = sum(counts.values())
    pending = sum(counts.get(status, 0) for status in UNSENT_MESSAGE_STATUSES)
    return {
        "recipients": campaign.recipients or total,
        "messages": total,
        "pending": pending,
        "processed": total - pending,
        "fraction": round((total - pending) / total, 4) if total else 0.0,
        # Handed to the provider, no delivery report yet (sent; sending with a provider id).
        "awaiting_report": sum(int(awaiting or 0) for _, _, awaiting in rows),
    }


def campaign_dict(session: Session, campaign: Campaign, variants: list[Variant] | None = None) -> dict[str, Any]:
    variants = variants if variants is not None else variants_of(session, campaign.id or 0)
    return {
        "id": campaign.id,
        "name": campaign.name,
        "status": campaign.status,
        "provider": campaign.provider,
        "variants": [
            {"id": v.id, "name": v.name, "body": v.body, "weight": v.weight, "is_control": v.is_control}
            for v in variants
        ],
        "winner": campaign.winner,
        "progress": progress(session, campaign),
        "error": campaign.error,
        "created_at": iso(campaign.created_at),
        "launched_at": iso(campaign.launched_at),
        "completed_at": iso(campaign.completed_at),
        "audience": campaign.audience,
        "control_percent": campaign.control_percent,
        "ab_test": campaign.ab_test,
        "variant_by_attribute": campaign.variant_by_attribute,
        "schedule_at": iso(campaign.schedule_at),
        "quiet_hours": campaign.quiet_hours,
        "rate_limit_per_second": campaign.rate_limit_per_second,
        "tracking": campaign.tracking,
        "conversion": campaign.conversion,
        "kind": campaign.kind,
        "parent_id": campaign.parent_id,
        "run_id": campaign.run_id,
        "follow_ups": campaign.follow_ups or [],
    }


def apply_move(engine: Engine, campaign_id: int, move: Move | str, **fields: Any) -> bool:
    """Make a move of the transition table atomically (only from its source states); True if it moved."""
    step = transition(move)
    with session_scope(engine) as session:
        query = update(Campaign).where(col(Campaign.id) == campaign_id)
        if step.sources:
            query = query.where(col(Campaign.status).in_(step.sources))
        values: dict[str, Any] = {"status": step.target, **fields}
        if step.target in FINAL_CAMPAIGN_STATUSES:
            values.setdefault("completed_at", utcnow())
        result = session.exec(query.values(**values))
        return bool(result.rowcount)


def set_status(
    engine: Engine, campaign_id: int, status: str, *, only_from: tuple[str, ...] | None = None, **fields: Any
) -> bool:
    """Move a campaign to `status` from `only_from`: what workflow runs started before the transition
    table still ask for (their activity inputs name the status); new code calls `apply_move`."""
    with session_scope(engine) as session:
        query = update(Campaign).where(col(Campaign.id) == campaign_id)
        if only_from is not None:
            query = query.where(col(Campaign.status).in_(only_from))
        values: dict[str, Any] = {"status": status, **fields}
        if status in FINAL_CAMPAIGN_STATUSES:
            values.setdefault("completed_at", utcnow())
        result = session.exec(query.values(**values))
        return bool(result.rowcount)
