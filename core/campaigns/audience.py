"""Audience snapshot: who gets which variant in which phase, frozen as message rows at launch.

The audience (opted-out contacts excluded) is shuffled with the campaign id as seed, so a
retried activity plans exactly the same thing. Then, in this order:
- a control group of `control_percent` is held out (rows in phase `control`, never sent);
- with `variant_by_attribute`, a contact whose attribute names a variant gets that variant;
- with an A/B test, `test_percent` of the rest is split by weight (exact counts) into phase
  `test`, and the remainder is frozen in phase `remainder` without a variant: it gets the
  winner (or the fallback) later, rendered by `prepare_phase`;
- without a test, everyone left is split by weight into phase `all`.
Rows are keyed by (campaign, phase, contact): running a snapshot again creates only what is missing.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.campaigns.definition import get_campaign, iter_audience, variants_of
from core.campaigns.rendering import render_message
from core.campaigns.templates import BodyTemplateError, compile_body
from core.db import session_scope
from core.delivery.sending import CHUNK, idempotency_key, split_by_weight
from core.hooks.registry import PluginRegistry
from core.models import Contact, Link, Message, ShortCode, Variant, utcnow


@dataclass(frozen=True)
class Placement:
    phase: str  # control | test | remainder | all
    variant_id: int | None


def plan(campaign: Any, variants: list[Variant], contacts: list[tuple[int, dict[str, Any]]]) -> dict[int, Placement]:
    """contacts: (id, attributes) of the audience. Pure and deterministic."""
    sendable = [v for v in variants if not v.is_control]
    ids = sorted(cid for cid, _ in contacts)
    random.Random(campaign.id).shuffle(ids)
    placement: dict[int, Placement] = {}
    n_control = round(len(ids) * (campaign.control_percent or 0) / 100)
    for cid in ids[:n_control]:
        placement[cid] = Placement("control", None)
    rest = ids[n_control:]
    if campaign.variant_by_attribute:
        attributes = dict(contacts)
        by_name = {v.name.lower(): v for v in sendable}
        unmatched = []
        for cid in rest:
            value = str(attributes[cid].get(campaign.variant_by_attribute, "")).lower()
            if value in by_name:
                placement[cid] = Placement("all", by_name[value].id)
            else:
                unmatched.append(cid)
        rest = unmatched
    phase = "all"
    if campaign.ab_test:
        n_test = round(len(rest) * float(campaign.ab_test.get("test_percent", 20)) / 100)
        for cid in rest[n_test:]:
            placement[cid] = Placement("remainder", None)
        rest, phase = rest[:n_test], "test"
    # A variant marked as control takes its weight's share and holds it out.
    start = 0
    for variant, count in zip(variants, split_by_weight(len(rest), [v.weight for v in variants]), strict=True):
        for cid in rest[start : start + count]:
            placement[cid] = Placement("control" if variant.is_control else phase, variant.id)
        start += count
    return placement


@dataclass
class PhaseBatches:
    phase: str
    recipients: int
    batches: list[tuple[int, int]]  # (first message id, last message id)


def batches_of(engine: Engine, campaign_id: int, phase: str, batch_size: int = CHUNK) -> list[tuple[int, int]]:
    with session_scope(engine, read_only=True) as session:
        ids = list(
            session.scalars(
                select(Message.id)
                .where(
                    Message.campaign_id == campaign_id,
                    Message.phase == phase,
                    Message.status.in_(("queued", "sending")),
                    Message.variant_id.is_not(None),
                )
                .order_by(Message.id)
            )
        )
    return [(ids[i], ids[min(i + batch_size, len(ids)) - 1]) for i in range(0, len(ids), batch_size)]


def snapshot(
    engine: Engine,
    registry: PluginRegistry,
    campaign_id: int,
    *,
    batch_size: int = CHUNK,
    heartbeat: Callable[[], None] = lambda: None,
) -> PhaseBatches:
    """Create every row of the plan; render the rows that have a variant. Returns the first phase."""
    with session_scope(engine, read_only=True) as session:
        campaign = get_campaign(session, campaign_id)
        variants = variants_of(session, campaign_id)
        audience = [(c.id or 0, dict(c.attributes or {})) for c in iter_audience(session, campaign)]
    placement = plan(campaign, variants, audience)
    ordered = sorted(placement)
    for start in range(0, len(ordered), CHUNK):
        chunk = ordered[start : start + CHUNK]
        with session_scope(engine) as session:
            existing = set(
                session.execute(
                    select(Message.contact_id, Message.phase).where(
                        Message.campaign_id == campaign_id, Message.contact_id.in_(chunk)
                    )
                ).all()
            )
            phones = dict(session.execute(select(Contact.id, Contact.phone).where(Contact.id.in_(chunk))).all())
            for cid in chunk:
                where = placement[cid]
                if (cid, where.phase) in existing or cid not in phones:
                    continue
                held = where.phase == "control"
                session.add(
                    Message(
                        campaign_id=campaign_id,
                        contact_id=cid,
                        variant_id=where.variant_id,
                        phase=where.phase,
                        phone=phones[cid],
                        provider=campaign.provider,
                        body="",
                        idempotency_key=idempotency_key(campaign_id, where.phase, cid),
                        status="cancelled" if held else "queued",
                        error_text="held out: control group" if held else None,
                    )
                )
        heartbeat()
    first_phase = "test" if campaign.ab_test else "all"
    render_pending(engine, registry, campaign_id, heartbeat=heartbeat)
    with session_scope(engine) as session:
        stored = get_campaign(session, campaign_id)
        stored.recipients = sum(1 for p in placement.values() if p.phase != "control")
        session.add(stored)
    return PhaseBatches(first_phase, len(placement), batches_of(engine, campaign_id, first_phase, batch_size))


def prepare_phase(
    engine: Engine,
    registry: PluginRegistry,
    campaign_id: int,
    phase: str,
    *,
    variant: str | None,
    batch_size: int = CHUNK,
    heartbeat: Callable[[], None] = lambda: None,
) -> PhaseBatches:
    """Give the rows of `phase` that have no variant yet `variant` (None: all variants by weight)."""
    with session_scope(engine) as session:
        variants = [v for v in variants_of(session, campaign_id) if not v.is_control]
        chosen = [v for v in variants if v.name == variant] if variant else variants
        if not chosen:
            raise ValueError(f"campaign {campaign_id} has no variant named {variant!r}")
        ids = sorted(
            session.scalars(
                select(Message.id).where(
                    Message.campaign_id == campaign_id, Message.phase == phase, Message.variant_id.is_(None)
                )
            )
        )
        random.Random(campaign_id).shuffle(ids)
        start = 0
        for v, count in zip(chosen, split_by_weight(len(ids), [v.weight for v in chosen]), strict=True):
            part = ids[start : start + count]
            for i in range(0, len(part), CHUNK):
                session.execute(update(Message).where(Message.id.in_(part[i : i + CHUNK])).values(variant_id=v.id))
            start += count
    render_pending(engine, registry, campaign_id, heartbeat=heartbeat)
    total = len(ids)
    return PhaseBatches(phase, total, batches_of(engine, campaign_id, phase, batch_size))


def hold_phase(engine: Engine, campaign_id: int, phase: str, reason: str) -> int:
    """Never send the rows of `phase` (the A/B fallback `hold`)."""
    with session_scope(engine) as session:
        result = session.execute(
            update(Message)
            .where(Message.campaign_id == campaign_id, Message.phase == phase, Message.status == "queued")
            .values(status="cancelled", error_text=reason, status_changed_at=utcnow())
        )
        return int(result.rowcount or 0)


class ShortCodes:
    """Draws short codes from the shortener; `taken` finds those already stored (to redraw)."""

    def __init__(self, session: Session, shortener: Any) -> None:
        self.session, self.shortener, self.used = session, shortener, set[str]()

    def draw(self) -> str:
        while True:
            code = self.shortener.new_code()
            if code not in self.used:
                self.used.add(code)
                return code

    def taken(self, codes: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(codes), 900):
            found.update(self.session.scalars(select(ShortCode.code).where(ShortCode.code.in_(codes[i : i + 900]))))
        return found


def link_id_for(
    session: Session,
    cache: dict[tuple[int, int], int],
    campaign_id: int,
    variant_id: int,
    position: int,
    destination: str,
) -> int:
    """The Link row of (variant, position), created on first use."""
    key = (variant_id, position)
    if key not in cache:
        link = session.scalars(select(Link).where(Link.variant_id == variant_id, Link.position == position)).first()
        if link is None:
            link = Link(campaign_id=campaign_id, variant_id=variant_id, position=position, destination=destination)
            session.add(link)
            session.flush()
        cache[key] = link.id or 0
    return cache[key]


def render_pending(
    engine: Engine, registry: PluginRegistry, campaign_id: int, *, heartbeat: Callable[[], None] = lambda: None
) -> int:
    """Render queued rows that have a variant but no body yet: text, tracked links, segments."""
    public_url = registry.context.settings.public_url
    rendered = 0
    with session_scope(engine, read_only=True) as session:
        campaign = get_campaign(session, campaign_id)
        templates = {
            v.id: (v.name, compile_body(v.body, variant=v.name))
            for v in variants_of(session, campaign_id)
            if not v.is_control
        }
    links: dict[tuple[int, int], int] = {}
    while True:
        with session_scope(engine) as session:
            rows = session.execute(
                select(Message, Contact)
                .join(Contact, Contact.id == Message.contact_id)
                .where(
                    Message.campaign_id == campaign_id,
                    Message.status == "queued",
                    Message.body == "",
                    Message.variant_id.is_not(None),
                )
                .order_by(Message.id)
                .limit(CHUNK)
            ).all()
            if not rows:
                return rendered
            codes = ShortCodes(session, registry.shortener)
            pending: list[tuple[Message, list[tuple[str, int, str]]]] = []
            for message, contact in rows:
                name, template = templates[message.variant_id]
                tracked: list[tuple[str, int, str]] = []

                def tracked_url(
                    position: int,
                    destination: str,
                    tracked: list[tuple[str, int, str]] = tracked,
                    codes: ShortCodes = codes,
                ) -> str:
                    code = codes.draw()
                    tracked.append((code, position, destination))
                    return registry.shortener.tracked_url(code, public_url)

                try:
                    out = render_message(
                        template, contact, tracking=campaign.tracking or {}, tracked_url=tracked_url, variant=name
                    )
                except BodyTemplateError as exc:  # the contact changed since creation: this one fails
                    message.status, message.error_code, message.error_text = "failed", "template_error", str(exc)
                    message.failed_at = utcnow()
                    message.body = " "
                    tracked = []
                else:
                    if not out.body.strip():
                        message.status, message.error_code = "failed", "empty_body"
                        message.error_text, message.failed_at = f"variant {name!r} renders to an empty text", utcnow()
                    message.body, message.characters = out.body or " ", out.segments.characters
                    message.encoding, message.segments = out.segments.encoding, out.segments.segments
                pending.append((message, tracked))
            clashes = codes.taken([code for _, tracked in pending for code, _, _ in tracked])
            for message, tracked in pending:
                for code, position, destination in tracked:
                    if code in clashes:  # astronomically rare: redraw and put the new link in its place
                        fresh = codes.draw()
                        message.body = message.body.replace(
                            registry.shortener.tracked_url(code, public_url),
                            registry.shortener.tracked_url(fresh, public_url),
                        )
                        code = fresh
                    link_id = link_id_for(session, links, campaign_id, message.variant_id or 0, position, destination)
                    session.add(
                        ShortCode(code=code, message_id=message.id or 0, link_id=link_id, destination=destination)
                    )
                session.add(message)
            rendered += len(pending)
        heartbeat()


# Errors that another attempt cannot fix (invalid or unsubscribed number, landline, a template
# that does not render). A provider may name its own with a `permanent_error_codes` attribute.
PERMANENT_ERRORS = frozenset({"21211", "21610", "21614", "30005", "30006", "template_error", "empty_body"})


def retry_round(engine: Engine, campaign_id: int) -> int:
    """The number of the next retry round (1 for the first)."""
    with session_scope(engine, read_only=True) as session:
        keys = session.scalars(
            select(Message.idempotency_key).where(Message.campaign_id == campaign_id, Message.phase == "retry")
        )
        rounds = [int(k.split("-")[1][len("retry") :]) for k in keys]
    return max(rounds, default=0) + 1


def retryable(session: Session, registry: PluginRegistry, campaign_id: int) -> list[Message]:
    """Each contact's latest message, where it failed for a reason another attempt may fix."""
    campaign = get_campaign(session, campaign_id)
    provider = registry.providers.get(campaign.provider)
    permanent = PERMANENT_ERRORS | frozenset(getattr(provider, "permanent_error_codes", ()))
    latest: dict[int, Message] = {}
    for message in session.scalars(
        select(Message)
        .where(Message.campaign_id == campaign_id, Message.phase.in_(("all", "test", "remainder", "retry")))
        .order_by(Message.id)
    ):
        latest[message.contact_id] = message
    failed = [m for m in latest.values() if m.status in ("failed", "undelivered") and m.error_code not in permanent]
    opted_out = (
        set(
            session.scalars(
                select(Contact.id).where(
                    Contact.id.in_([m.contact_id for m in failed]), Contact.opted_out_at.is_not(None)
                )
            )
        )
        if failed
        else set()
    )
    return [m for m in failed if m.contact_id not in opted_out]


def snapshot_retry(
    engine: Engine,
    registry: PluginRegistry,
    campaign_id: int,
    round_: int,
    *,
    batch_size: int = CHUNK,
    heartbeat: Callable[[], None] = lambda: None,
) -> PhaseBatches:
    """A new `retry` row for each contact whose latest message failed for a reason worth retrying."""
    with session_scope(engine) as session:
        campaign = get_campaign(session, campaign_id)
        created = 0
        for message in retryable(session, registry, campaign_id):
            contact_id = message.contact_id
            key = f"c{campaign_id}-retry{round_}-{contact_id}"
            if session.scalar(select(Message.id).where(Message.idempotency_key == key)) is not None:
                continue  # a retried activity
            session.add(
                Message(
                    campaign_id=campaign_id,
                    contact_id=contact_id,
                    variant_id=message.variant_id,
                    phase="retry",
                    phone=message.phone,
                    provider=campaign.provider,
                    body="",
                    idempotency_key=key,
                )
            )
            created += 1
    render_pending(engine, registry, campaign_id, heartbeat=heartbeat)
    return PhaseBatches("retry", created, batches_of(engine, campaign_id, "retry", batch_size))
