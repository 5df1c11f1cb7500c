"""Which messages a campaign's numbers count (API.md "Definitions").

A contact counts once per campaign, by its latest message among the counted phases (`all`,
`test`, `remainder`, `retry`; never `test_send` or `control`): `recipients` never exceeds the
audience, and a failure that a retry delivered is no longer a failure. `attempts` counts every
message handed to the provider, retries included.

Without retry-failed rows a campaign holds one counted message per contact (its `all` row, or
its `test` or `remainder` row), so its numbers read the messages as they are. Retry rows add a
later message for a contact (a retry row is always created after the message it retries, so it
has the higher id); then a message counts unless a later retry row of its contact replaces it:
an anti-join driven by the campaign's retry rows, set-based, never a loop in Python.

Whether a campaign has retry rows at all is one probe of the index on (campaign_id, phase), and
the same index finds its retry rows: a campaign without retries costs what it did before (no
anti-join), one with them a pass over its messages plus its retry rows.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, exists, or_, select
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import Select
from sqlmodel import Session, col

from core.models import Campaign, Message, counted_messages
from core.statuses import UNCOUNTED_PHASES, Phase


def has_retries(session: Session, campaign_id: int) -> bool:
    """Does the campaign hold retry-failed rows? One seek of the (campaign_id, phase) index."""
    return (
        session.scalar(
            select(col(Message.id))
            .where(col(Message.campaign_id) == campaign_id, col(Message.phase) == Phase.RETRY)
            .limit(1)
        )
        is not None
    )


def campaigns_with_retries(session: Session, campaign_ids: Collection[int]) -> set[int]:
    """Which of these campaigns hold retry-failed rows: one query, one index seek per campaign."""
    if not campaign_ids:
        return set()
    # A correlated scalar subquery with LIMIT 1 (not EXISTS, which PostgreSQL may turn into a
    # semi-join over every retry row of the table): a probe of the index per campaign.
    probe = (
        select(col(Message.id))
        .where(col(Message.campaign_id) == col(Campaign.id), col(Message.phase) == Phase.RETRY)
        .limit(1)
        .scalar_subquery()
    )
    return set(session.scalars(select(col(Campaign.id)).where(col(Campaign.id).in_(campaign_ids), probe.is_not(None))))


def _retry_rows(campaign_id: int) -> tuple[Any, ColumnElement[bool]]:
    """An alias of the message table and the clause that picks the campaign's retry rows from it
    through the (campaign_id, phase) index: as many rows read as there are retries."""
    retry = aliased(Message, name="later_retry")
    return retry, and_(col(retry.campaign_id) == campaign_id, col(retry.phase) == Phase.RETRY)


def superseded(campaign_id: int) -> ColumnElement[bool]:
    """True for a message of the campaign that a later retry row of the same contact replaces.

    `NOT superseded` is each contact's latest message: an anti-join driven by the retry rows (a
    hash anti-join on PostgreSQL, an index lookup per message on SQLite), one pass over the
    campaign. A message without a contact is never superseded."""
    retry, is_retry = _retry_rows(campaign_id)
    return exists().where(is_retry, col(retry.contact_id) == col(Message.contact_id), col(retry.id) > col(Message.id))


def superseded_ids(campaign_id: int) -> Select[Any]:
    """The ids of the campaign's counted messages that a later retry replaces, read from the retry
    rows (as many as there are retries, not a pass over the campaign)."""
    retry, is_retry = _retry_rows(campaign_id)
    earlier = aliased(Message, name="earlier")
    return (
        select(col(earlier.id))
        .select_from(retry)
        .join(
            earlier,
            and_(
                col(earlier.contact_id) == col(retry.contact_id),
                col(earlier.campaign_id) == campaign_id,
                col(earlier.id) < col(retry.id),
                col(earlier.phase).notin_(UNCOUNTED_PHASES),
            ),
        )
        .where(is_retry)
    )


@dataclass(frozen=True)
class Counted:
    """The where-clauses of a campaign's counted messages.

    `latest`: each contact's latest message (what statuses, recipients, sent, delivered and failed
    count); `every`: every counted message, retries included (attempts; clicks and conversions
    join it, since a click or a purchase belongs to the message it came from, whichever attempt
    that was). Both are the same clause when the campaign has no retry rows (`deduplicated` False).
    """

    campaign_id: int
    every: ColumnElement[bool]
    latest: ColumnElement[bool]
    deduplicated: bool


def counted(session: Session, campaign_id: int, *, phase: str | None = None) -> Counted:
    """The counted messages of a campaign (of one phase, if given)."""
    every = and_(col(Message.campaign_id) == campaign_id, counted_messages())
    if phase is not None:
        every = and_(every, col(Message.phase) == phase)
    # One message per contact per phase, except retry rows (one per round): dedup only where they are.
    if (phase is None or phase == Phase.RETRY) and has_retries(session, campaign_id):
        return Counted(campaign_id, every, and_(every, ~superseded(campaign_id)), True)
    return Counted(campaign_id, every, every, False)


def latest_of_campaigns(session: Session, campaign_ids: Collection[int]) -> list[ColumnElement[bool]]:
    """Each contact's latest counted message in any of these campaigns (the dashboard's list), as
    clauses to query one by one: the campaigns without retry rows together, as they are; each
    campaign with them through its own anti-join (driven by that campaign's retry keys)."""
    retried = campaigns_with_retries(session, campaign_ids)
    plain = [i for i in campaign_ids if i not in retried]
    clauses = [and_(col(Message.campaign_id).in_(plain), counted_messages())] if plain else []
    for campaign_id in sorted(retried):
        clauses.append(and_(col(Message.campaign_id) == campaign_id, counted_messages(), ~superseded(campaign_id)))
    return clauses


def handed_over() -> ColumnElement[int]:
    """1 for a message handed to the provider (marked sending at least once), else 0."""
    return case((or_(col(Message.attempts) > 0, col(Message.sent_at).is_not(None)), 1), else_=0)
