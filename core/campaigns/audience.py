"""Audience snapshot: who gets which variant in which phase, frozen as message rows at launch.

The audience (opted-out contacts excluded) is shuffled with the campaign id as seed, so a
retried activity plans exactly the same thing. Then, in this order:
- a control group of `control_percent` is held out (rows in phase `control`, never sent);
- with `variant_by_attribute`, a contact whose attribute names a variant gets that variant;
- with an A/B test, `test_percent` of the rest is split by weight (exact counts) into phase
  `test`, and the remainder is frozen in phase `remainder` without a variant: it gets the
  winner (or the fallback) later, from `prepare_phase`;
- without a test, everyone left is split by weight into phase `all`.
Rows are keyed by (campaign, phase, contact): running a snapshot again creates only what is missing.
A held-out row is a touch at the time the campaign sent its other messages (API.md `/stats/variants`):
rows are created in contact id order whatever their phase, so control rows are interleaved with the
others, and `stamp_control_touch` stamps (`touched_at`) the control rows beside each batch as it is
handed over; last-touch attribution (core/stats/conversions.py) and the control group's windows
(core/stats/evidence.py `intention_to_treat`) read it. So the control group's touch times follow the
sending of the campaign (a rate limit over hours, the wait of an A/B test) like the treated rows'.
Rows are made without their text: each batch renders its own rows as it sends them
(core/delivery/sending.py, with `core.campaigns.bodies`), so the first batch of a million-recipient
campaign goes as soon as the rows exist. Retry-failed rounds are `core.campaigns.retry`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, bindparam, cast, func, literal, select, text, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col
from sqlmodel.sql.sqltypes import UTCDateTime

from core.campaigns.definition import audience_of, get_campaign, variants_of
from core.db import session_scope
from core.delivery.sending import CHUNK
from core.hooks.registry import PluginRegistry
from core.models import Campaign, Message, Variant, utcnow
from core.statuses import UNSENT_MESSAGE_STATUSES, MessageStatus, Phase


@dataclass(frozen=True)
class Placement:
    phase: Phase  # control | test | remainder | all
    variant_id: int | None


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


def plan(
    campaign: Campaign, variants: list[Variant], contacts: list[tuple[int, dict[str, Any]]]
) -> dict[int, Placement]:
    """contacts: (id, attributes) of the audience. Pure and deterministic."""
    sendable = [v for v in variants if not v.is_control]
    ids = sorted(cid for cid, _ in contacts)
    random.Random(campaign.id).shuffle(ids)
    placement: dict[int, Placement] = {}
    n_control = round(len(ids) * (campaign.control_percent or 0) / 100)
    for cid in ids[:n_control]:
        placement[cid] = Placement(Phase.CONTROL, None)
    rest = ids[n_control:]
    if campaign.variant_by_attribute:
        attributes = dict(contacts)
        by_name = {v.name.lower(): v for v in sendable}
        unmatched = []
        for cid in rest:
            value = str(attributes[cid].get(campaign.variant_by_attribute, "")).lower()
            if value in by_name:
                placement[cid] = Placement(Phase.ALL, by_name[value].id)
            else:
                unmatched.append(cid)
        rest = unmatched
    phase = Phase.ALL
    if campaign.ab_test:
        n_test = round(len(rest) * float(campaign.ab_test.get("test_percent", 20)) / 100)
        for cid in rest[n_test:]:
            placement[cid] = Placement(Phase.REMAINDER, None)
        rest, phase = rest[:n_test], Phase.TEST
    # A variant marked as control takes its weight's share and holds it out.
    start = 0
    for variant, count in zip(variants, split_by_weight(len(rest), [v.weight for v in variants]), strict=True):
        for cid in rest[start : start + count]:
            placement[cid] = Placement(Phase.CONTROL if variant.is_control else phase, variant.id)
        start += count
    return placement


@dataclass
class PhaseBatches:
    phase: str
    recipients: int
    batches: list[tuple[int, int]]  # (first message id, last message id)


def batches_of(engine: Engine, campaign_id: int, phase: str, batch_size: int = CHUNK) -> list[tuple[int, int]]:
    with session_scope(engine, read_only=True) as session:
        ids = [
            message_id or 0
            for message_id in session.scalars(
                select(col(Message.id))
                .where(
                    col(Message.campaign_id) == campaign_id,
                    col(Message.phase) == phase,
                    col(Message.status).in_(UNSENT_MESSAGE_STATUSES),
                    col(Message.variant_id).is_not(None),
                )
                .order_by(col(Message.id))
            )
        ]
    return [(ids[i], ids[min(i + batch_size, len(ids)) - 1]) for i in range(0, len(ids), batch_size)]


def snapshot(
    engine: Engine,
    registry: PluginRegistry,
    campaign_id: int,
    *,
    batch_size: int = CHUNK,
    heartbeat: Callable[[], None] = lambda: None,
) -> PhaseBatches:
    """Create every row of the plan (without its text: each batch renders its own rows as it sends,
    core/delivery/sending.py). Returns the first phase.

    Plain rows all the way, no ORM object per contact: the audience's ids in one pass, then one
    INSERT ... SELECT per chunk of the plan (`_insert_rows`), which skips the rows a previous
    attempt made (the idempotency key is unique)."""
    with session_scope(engine, read_only=True) as session:
        campaign = get_campaign(session, campaign_id)
        variants = variants_of(session, campaign_id)
        audience = audience_of(session, campaign, attributes=bool(campaign.variant_by_attribute))
    placement = plan(campaign, variants, audience)
    ordered = sorted(placement)
    del audience
    for start in range(0, len(ordered), SNAPSHOT_CHUNK):
        chunk = [(cid, placement[cid]) for cid in ordered[start : start + SNAPSHOT_CHUNK]]
        with session_scope(engine) as session:
            _insert_rows(session, campaign_id, campaign.provider, chunk)
        heartbeat()
    first_phase = Phase.TEST if campaign.ab_test else Phase.ALL
    with session_scope(engine) as session:
        stored = get_campaign(session, campaign_id)
        stored.recipients = sum(1 for p in placement.values() if p.phase != Phase.CONTROL)
        session.add(stored)
    return PhaseBatches(first_phase, len(placement), batches_of(engine, campaign_id, first_phase, batch_size))


SNAPSHOT_CHUNK = 10_000  # contacts per transaction


# One statement per chunk: the plan goes in as one parameter (JSON on SQLite, arrays on
# PostgreSQL), the database joins it to the contacts for their phones (a contact deleted meanwhile
# gets no row) and skips the rows a previous attempt made (the idempotency key, which the
# statement spells as core/campaigns/idempotency.py does: `c{campaign}-{phase}-{contact}`).
_COLUMNS = (
    "campaign_id, contact_id, variant_id, phase, phone, provider, body, idempotency_key, status, error_text, "
    "characters, encoding, segments, attempts, superseded, queued_at, status_changed_at"
)
_ROW = (
    ":campaign_id, p.contact_id, p.variant_id, p.phase, c.phone, :provider, '', "
    "'c' || :campaign_id || '-' || p.phase || '-' || p.contact_id, "
    f"CASE WHEN p.phase = '{Phase.CONTROL}' THEN '{MessageStatus.CANCELLED}' ELSE '{MessageStatus.QUEUED}' END, "
    f"CASE WHEN p.phase = '{Phase.CONTROL}' THEN 'held out: control group' END, "
    "0, 'GSM-7', 1, 0, false, :now, :now"
)
_INSERT_SQLITE = text(
    f"INSERT INTO message ({_COLUMNS}) SELECT {_ROW} FROM ("
    "SELECT value ->> 0 AS contact_id, value ->> 1 AS phase, value ->> 2 AS variant_id FROM json_each(:plan)"
    ") AS p JOIN contact c ON c.id = p.contact_id WHERE true ON CONFLICT (idempotency_key) DO NOTHING"
).bindparams(bindparam("now", type_=UTCDateTime()))
_INSERT_POSTGRESQL = text(
    f"INSERT INTO message ({_COLUMNS}) SELECT {_ROW} FROM "
    "unnest(CAST(:ids AS bigint[]), CAST(:phases AS text[]), CAST(:variants AS bigint[])) "
    "AS p(contact_id, phase, variant_id) "
    "JOIN contact c ON c.id = p.contact_id ORDER BY p.contact_id ON CONFLICT (idempotency_key) DO NOTHING"
).bindparams(bindparam("now", type_=UTCDateTime()))


def _insert_rows(session: Session, campaign_id: int, provider: str, chunk: list[tuple[int, Placement]]) -> None:
    """The message rows of `chunk` (contact id, placement), in contact id order."""
    given = {"campaign_id": campaign_id, "provider": provider, "now": utcnow()}
    if session.get_bind().dialect.name == "postgresql":
        given |= {
            "ids": [cid for cid, _ in chunk],
            "phases": [str(where.phase) for _, where in chunk],
            "variants": [where.variant_id for _, where in chunk],
        }
        session.execute(_INSERT_POSTGRESQL, given)
        return
    plan = json.dumps([[cid, str(where.phase), where.variant_id] for cid, where in chunk])
    session.execute(_INSERT_SQLITE, {**given, "plan": plan})


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
            message_id or 0
            for message_id in session.scalars(
                select(col(Message.id)).where(
                    col(Message.campaign_id) == campaign_id,
                    col(Message.phase) == phase,
                    col(Message.variant_id).is_(None),
                )
            )
        )
        random.Random(campaign_id).shuffle(ids)
        start = 0
        for v, count in zip(chosen, split_by_weight(len(ids), [v.weight for v in chosen]), strict=True):
            part = ids[start : start + count]
            for i in range(0, len(part), CHUNK):
                session.execute(update(Message).where(col(Message.id).in_(part[i : i + CHUNK])).values(variant_id=v.id))
            start += count
    total = len(ids)  # rendered as their batches are sent
    return PhaseBatches(phase, total, batches_of(engine, campaign_id, phase, batch_size))


def hold_phase(engine: Engine, campaign_id: int, phase: str, reason: str) -> int:
    """Never send the rows of `phase` (the A/B fallback `hold`)."""
    with session_scope(engine) as session:
        result = session.exec(
            update(Message)
            .where(
                col(Message.campaign_id) == campaign_id,
                col(Message.phase) == phase,
                col(Message.status) == MessageStatus.QUEUED,
            )
            .values(status=MessageStatus.CANCELLED, error_text=reason, status_changed_at=utcnow())
        )
        return int(result.rowcount or 0)


STAMPED_PHASES = (Phase.ALL, Phase.TEST, Phase.REMAINDER)  # a first attempt: a retry round is no touch


KNUTH = 2654435761  # Knuth's multiplicative hash: id * KNUTH mod 2**32 spreads consecutive ids


def stamp_control_touch(engine: Engine, campaign_id: int, first_message_id: int, last_message_id: int) -> int:
    """After a batch of the campaign was handed over: stamp the control rows beside it with the
    batch's send time (its earliest `sent_at`, else its earliest `attempted_at` when the provider
    refused all of it) as their `touched_at`, unless they carry one already. Returns rows stamped.

    The control rows beside a batch of phase P are those whose ids lie after the previous row of P
    (the last row of the previous batch) up to the batch's last id, and beyond it for the last batch
    of P: consecutive batches share the control rows out between them, none left over. For the test
    phase of an A/B campaign, only `test_percent` of them (by id modulo 1000, a fixed spread over
    the audience's order), since the test cohort is that share of the audience: the others are
    stamped beside the remainder, whose batches come after the wait. So the control group's touch
    times have the distribution of the treated rows'. A batch of retry rows stamps nothing.
    A handful of index seeks and one update bounded by the batch's id range per batch."""
    of_campaign = col(Message.campaign_id) == campaign_id
    with session_scope(engine) as session:
        phase = session.scalar(select(col(Message.phase)).where(col(Message.id) == first_message_id, of_campaign))
        if phase not in STAMPED_PHASES:
            return 0
        in_phase = (of_campaign, col(Message.phase) == phase)
        batch = (*in_phase, col(Message.id) >= first_message_id, col(Message.id) <= last_message_id)
        sent, attempted = session.execute(
            select(func.min(col(Message.sent_at)), func.min(col(Message.attempted_at))).where(*batch)
        ).one()
        when = sent or attempted
        if when is None:  # nothing of the batch was handed over: not sent yet
            return 0
        previous = session.scalar(
            select(func.max(col(Message.id))).where(*in_phase, col(Message.id) < first_message_id)
        )
        more = session.scalar(select(col(Message.id)).where(*in_phase, col(Message.id) > last_message_id).limit(1))
        beside: list[Any] = [of_campaign, col(Message.phase) == Phase.CONTROL, col(Message.touched_at).is_(None)]
        if previous is not None:
            beside.append(col(Message.id) > previous)
        if more is not None:
            beside.append(col(Message.id) <= last_message_id)
        if phase == Phase.TEST:
            campaign = get_campaign(session, campaign_id)
            share = float((campaign.ab_test or {}).get("test_percent", 20)) / 100
            # A share of the control rows by a hash of the id (consecutive ids spread evenly, small
            # campaigns too): the rest are touched beside the remainder, after the wait.
            hashed = cast(col(Message.id), BigInteger) * literal(KNUTH, BigInteger) % literal(2**32, BigInteger)
            beside.append(hashed % 1000 < round(share * 1000))
        result = session.exec(update(Message).where(*beside).values(touched_at=when))
        return int(result.rowcount or 0)
