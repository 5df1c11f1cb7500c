"""Audience snapshot (message rows with their tracked links) and sending in batches.

Both are safe to run again after a crash: a message row is keyed by campaign, phase and
contact, so a repeated snapshot creates only what is missing; a repeated send skips messages
that already have a provider id and asks the provider about those whose outcome is unknown.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.campaigns import get_campaign, iter_audience, variants_of
from core.db import session_scope
from core.delivery import apply_pending_events
from core.models import Contact, Link, Message, ShortCode, Variant, utcnow
from core.plugins import PluginRegistry
from core.providers import OutgoingMessage, SendResult
from core.rendering import render_message
from core.templates import BodyTemplateError, compile_body

CHUNK = 500


def idempotency_key(campaign_id: int, phase: str, contact_id: int) -> str:
    return f"c{campaign_id}-{phase}-{contact_id}"


def split_by_weight(total: int, weights: list[float]) -> list[int]:
    """Exact counts per weight that add up to `total` (largest remainder)."""
    weight_sum = sum(weights)
    if total <= 0 or weight_sum <= 0:
        return [0 for _ in weights]
    shares = [total * w / weight_sum for w in weights]
    counts = [int(s) for s in shares]
    order = sorted(range(len(weights)), key=lambda i: (shares[i] - counts[i], weights[i]), reverse=True)
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def assign_variants(contact_ids: list[int], variants: list[Variant], seed: int) -> dict[int, Variant]:
    """A deterministic shuffle (same answer on a retried activity), then exact weighted counts."""
    sendable = [v for v in variants if not v.is_control]
    shuffled = sorted(contact_ids)
    random.Random(seed).shuffle(shuffled)
    counts = split_by_weight(len(shuffled), [v.weight for v in sendable])
    assignment: dict[int, Variant] = {}
    start = 0
    for variant, count in zip(sendable, counts, strict=True):
        for contact_id in shuffled[start : start + count]:
            assignment[contact_id] = variant
        start += count
    return assignment


@dataclass
class Snapshot:
    recipients: int
    created: int
    batches: list[tuple[int, int]]  # (first message id, last message id), batch_size messages each


class _CodeMaker:
    """Draws short codes, redrawing any that exist already (checked per chunk in the database)."""

    def __init__(self, session: Session, shortener: Any) -> None:
        self.session = session
        self.shortener = shortener
        self.used: set[str] = set()

    def draw(self) -> str:
        while True:
            code = self.shortener.new_code()
            if code not in self.used:
                self.used.add(code)
                return code

    def collisions(self, codes: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(codes), 900):
            chunk = codes[start : start + 900]
            found.update(self.session.scalars(select(ShortCode.code).where(ShortCode.code.in_(chunk))))
        return found


def _links_for(session: Session, cache: dict[tuple[int, int], Link], campaign_id: int, variant_id: int,
               position: int, destination: str) -> Link:
    key = (variant_id, position)
    link = cache.get(key)
    if link is None:
        link = session.scalars(select(Link).where(Link.variant_id == variant_id, Link.position == position)).first()
        if link is None:
            link = Link(campaign_id=campaign_id, variant_id=variant_id, position=position, destination=destination)
            session.add(link)
            session.flush()
        cache[key] = link
    return link


def snapshot_audience(engine: Engine, registry: PluginRegistry, campaign_id: int, *, phase: str = "all",
                      batch_size: int = CHUNK, heartbeat: Callable[[], None] = lambda: None) -> Snapshot:
    """Create one queued message per audience contact (rendered, links tracked, segments counted)."""
    public_url = registry.context.settings.public_url
    with session_scope(engine) as session:
        campaign = get_campaign(session, campaign_id)
        variants = variants_of(session, campaign_id)
        contact_ids = [c.id for c in iter_audience(session, campaign) if c.id is not None]
    assignment = assign_variants(contact_ids, variants, seed=campaign_id)
    templates = {v.id: compile_body(v.body, variant=v.name) for v in variants if not v.is_control}
    created = 0
    link_cache: dict[tuple[int, int], Link] = {}
    for start in range(0, len(contact_ids), CHUNK):
        chunk_ids = contact_ids[start : start + CHUNK]
        with session_scope(engine) as session:
            existing = set(session.scalars(
                select(Message.contact_id).where(Message.campaign_id == campaign_id, Message.phase == phase,
                                                 Message.contact_id.in_(chunk_ids))
            ))
            contacts = session.scalars(select(Contact).where(Contact.id.in_(set(chunk_ids) - existing))).all()
            codes = _CodeMaker(session, registry.shortener)
            pending: list[tuple[Message, list[tuple[str, int, str]]]] = []
            for contact in sorted(contacts, key=lambda c: c.id or 0):
                variant = assignment.get(contact.id or 0)
                if variant is None:
                    continue
                tracked: list[tuple[str, int, str]] = []

                def tracked_url(position: int, destination: str, tracked: list[tuple[str, int, str]] = tracked,
                                codes: _CodeMaker = codes) -> str:
                    code = codes.draw()
                    tracked.append((code, position, destination))
                    return registry.shortener.tracked_url(code, public_url)

                message = Message(campaign_id=campaign_id, contact_id=contact.id or 0, variant_id=variant.id,
                                  phase=phase, phone=contact.phone, provider=campaign.provider, body="",
                                  idempotency_key=idempotency_key(campaign_id, phase, contact.id or 0))
                try:
                    rendered = render_message(templates[variant.id], contact, tracking=campaign.tracking or {},
                                              tracked_url=tracked_url, variant=variant.name)
                except BodyTemplateError as exc:
                    # The contact changed since creation: fail this one message, never the campaign.
                    message.status, message.error_code, message.error_text = "failed", "template_error", str(exc)
                    message.failed_at = utcnow()
                else:
                    message.body = rendered.body
                    message.characters = rendered.segments.characters
                    message.encoding = rendered.segments.encoding
                    message.segments = rendered.segments.segments
                pending.append((message, tracked))
            clashes = codes.collisions([code for _, tracked in pending for code, _, _ in tracked])
            session.add_all([message for message, _ in pending])
            session.flush()
            for message, tracked in pending:
                for code, position, destination in tracked:
                    if code in clashes:  # astronomically rare: redraw and patch the body
                        fresh = codes.draw()
                        message.body = message.body.replace(f"/r/{code}", f"/r/{fresh}")
                        code = fresh
                    link = _links_for(session, link_cache, campaign_id, message.variant_id or 0, position, destination)
                    session.add(ShortCode(code=code, message_id=message.id or 0, link_id=link.id or 0,
                                          destination=destination))
            created += len(pending)
        heartbeat()
    with session_scope(engine) as session:
        ids = list(session.scalars(
            select(Message.id).where(Message.campaign_id == campaign_id, Message.phase == phase,
                                     Message.status.in_(("queued", "sending"))).order_by(Message.id)
        ))
        recipients = len(assignment)
        campaign = get_campaign(session, campaign_id)
        campaign.recipients = max(campaign.recipients, recipients)
        session.add(campaign)
    batches = [(ids[i], ids[min(i + batch_size, len(ids)) - 1]) for i in range(0, len(ids), batch_size)]
    return Snapshot(recipients=recipients, created=created, batches=batches)


def cancel_pending(engine: Engine, campaign_id: int) -> int:
    """After a cancel: every message not yet handed to the provider becomes `cancelled`."""
    with session_scope(engine) as session:
        result = session.execute(
            update(Message).where(Message.campaign_id == campaign_id, Message.status == "queued",
                                  Message.provider_message_id.is_(None))
            .values(status="cancelled", error_text="campaign cancelled", status_changed_at=utcnow())
        )
        return int(result.rowcount or 0)


@dataclass
class BatchOutcome:
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    transient: int = 0
    transient_error: str | None = None


def send_batch(engine: Engine, registry: PluginRegistry, campaign_id: int, first_id: int, last_id: int,
               *, phase: str = "all") -> BatchOutcome:
    """Send the still-unsent messages of one batch; record every answer before returning."""
    outcome = BatchOutcome()
    with session_scope(engine) as session:
        campaign = get_campaign(session, campaign_id)
        provider = registry.provider(campaign.provider)
        rows = session.execute(
            select(Message, Contact.opted_out_at).join(Contact, Contact.id == Message.contact_id)
            .where(Message.campaign_id == campaign_id, Message.phase == phase, Message.id >= first_id,
                   Message.id <= last_id, Message.status.in_(("queued", "sending")),
                   Message.provider_message_id.is_(None))
            .order_by(Message.id)
        ).all()
        now = utcnow()
        to_send: list[Message] = []
        unknown: list[Message] = []
        for message, opted_out_at in rows:
            if opted_out_at is not None or campaign.status == "cancelled":
                message.status, message.status_changed_at = "cancelled", now
                message.error_text = "contact opted out" if opted_out_at is not None else "campaign cancelled"
                outcome.skipped += 1
            elif message.status == "sending":
                unknown.append(message)  # an earlier attempt's outcome is unknown
            else:
                to_send.append(message)
            session.add(message)
        if unknown:
            found = _find_sent(provider, unknown, registry.context.settings.public_url)
            for message in unknown:
                if message.id in found:
                    message.provider_message_id = found[message.id]
                    message.status, message.sent_at, message.status_changed_at = "sent", now, now
                    outcome.sent += 1
                else:
                    to_send.append(message)
        for message in to_send:
            message.status, message.attempted_at, message.attempts = "sending", now, message.attempts + 1
            session.add(message)
    if not to_send:
        return outcome
    callback_url = f"{registry.context.settings.public_url}/webhooks/{provider.name}/status"
    outgoing = [OutgoingMessage(m.id or 0, m.phone, m.body, m.idempotency_key, callback_url) for m in to_send]
    results = provider.send_batch(outgoing)
    _record_results(engine, provider.name, results, outcome)
    return outcome


def _find_sent(provider: Any, messages: list[Message], public_url: str) -> dict[int, str]:
    find_sent = getattr(provider, "find_sent", None)
    if find_sent is None:
        return {}
    callback_url = f"{public_url}/webhooks/{provider.name}/status"
    outgoing = [OutgoingMessage(m.id or 0, m.phone, m.body, m.idempotency_key, callback_url) for m in messages]
    return dict(find_sent(outgoing))


def _record_results(engine: Engine, provider_name: str, results: list[SendResult], outcome: BatchOutcome) -> None:
    now = utcnow()
    accepted: list[str] = []
    with session_scope(engine) as session:
        for result in results:
            values: dict[str, Any]
            if result.accepted:
                values = {"status": "sent", "provider_message_id": result.provider_message_id, "sent_at": now}
                accepted.append(result.provider_message_id or "")
                outcome.sent += 1
            elif result.transient:
                values = {"status": "queued", "error_code": result.error_code, "error_text": result.error_text}
                outcome.transient += 1
                outcome.transient_error = f"{result.error_code}: {result.error_text}"
            else:
                values = {"status": "failed", "error_code": result.error_code, "error_text": result.error_text,
                          "failed_at": now}
                outcome.failed += 1
            session.execute(update(Message).where(Message.id == result.message_id, Message.status == "sending")
                            .values(status_changed_at=now, **values))
    if accepted:
        apply_pending_events(engine, provider_name, accepted)
