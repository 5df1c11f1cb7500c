"""Retry-failed: a new round of `retry` rows for the contacts whose latest message failed for a
reason another attempt may fix (not an opted-out contact, not a permanent error).

Rounds are numbered from 1; a round's rows are keyed by (campaign, round, contact), so a retried
activity creates only what is missing.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from core.campaigns.audience import PhaseBatches, batches_of
from core.campaigns.bodies import EMPTY_BODY, TEMPLATE_ERROR
from core.campaigns.definition import get_campaign
from core.campaigns.idempotency import idempotency_key, retry_round_of
from core.db import session_scope
from core.delivery.sending import CHUNK
from core.hooks.registry import PluginRegistry
from core.models import Contact, Message
from core.statuses import AUDIENCE_PHASES, FAILED_MESSAGE_STATUSES, Phase

# Errors of ours that another attempt cannot fix (a template that does not render, an empty body);
# a provider names its own (Twilio: invalid number, unsubscribed, landline) in `permanent_error_codes`.
PERMANENT_ERRORS = frozenset({TEMPLATE_ERROR, EMPTY_BODY})


def retry_round(engine: Engine, campaign_id: int) -> int:
    """The number of the next retry round (1 for the first)."""
    with session_scope(engine, read_only=True) as session:
        keys = session.scalars(
            select(col(Message.idempotency_key)).where(
                col(Message.campaign_id) == campaign_id, col(Message.phase) == Phase.RETRY
            )
        )
        rounds = [retry_round_of(key) for key in keys]
    return max(rounds, default=0) + 1


def retryable(session: Session, registry: PluginRegistry, campaign_id: int) -> list[Message]:
    """Each contact's latest message, where it failed for a reason another attempt may fix."""
    campaign = get_campaign(session, campaign_id)
    permanent = PERMANENT_ERRORS | registry.permanent_error_codes(campaign.provider)
    latest: dict[int, Message] = {}
    for message in session.scalars(
        select(Message)
        .where(col(Message.campaign_id) == campaign_id, col(Message.phase).in_(AUDIENCE_PHASES))
        .order_by(col(Message.id))
    ):
        if message.contact_id is not None:  # always, in these phases (only a test send may have none)
            latest[message.contact_id] = message
    failed = [m for m in latest.values() if m.status in FAILED_MESSAGE_STATUSES and m.error_code not in permanent]
    opted_out = (
        set(
            session.scalars(
                select(col(Contact.id)).where(
                    col(Contact.id).in_([m.contact_id for m in failed]), col(Contact.opted_out_at).is_not(None)
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
            if contact_id is None:  # never: retryable() reads rows of the audience only
                continue
            key = idempotency_key(campaign_id, Phase.RETRY, contact_id, retry_round=round_)
            if session.scalar(select(col(Message.id)).where(col(Message.idempotency_key) == key)) is not None:
                continue  # a retried activity
            session.add(
                Message(
                    campaign_id=campaign_id,
                    contact_id=contact_id,
                    variant_id=message.variant_id,
                    phase=Phase.RETRY,
                    phone=message.phone,
                    provider=campaign.provider,
                    body="",
                    idempotency_key=key,
                )
            )
            created += 1
    return PhaseBatches(Phase.RETRY, created, batches_of(engine, campaign_id, Phase.RETRY, batch_size))
