"""Sending a batch of a campaign's messages, safe to run again after a crash.

A batch first renders its rows that have no text yet (the snapshot makes them without one), in the
transaction that reads and locks them, with their short codes: what is sent is what is stored.

A repeated send skips messages that already have a provider id and asks the provider about
those whose outcome is unknown (marked `sending`, never answered) before sending them again.
Quiet hours are checked per recipient at send time: a message in its recipient's quiet hours
stays queued and the batch reports when it may go. Under a rate limit the batch paces itself.
The provider is called with a few messages at a time, each call only while the campaign is
still running: a pause or cancel stops the batch before its next call (`BatchOutcome.stopped`).
Under a frequency cap, a message that would take its contact past it is cancelled when its call's
messages are claimed, never handed over (core/delivery/frequency_cap.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from core.campaigns.bodies import RENDER_CHUNK, Bare, Rendered, Renderer
from core.campaigns.definition import get_campaign
from core.db import session_scope
from core.delivery import frequency_cap as cap_rules
from core.delivery.prepared import update_rows
from core.delivery.quiet_hours import is_quiet, quiet_until
from core.delivery.replies import opt_out_unsubscribed
from core.delivery.status import apply_pending_events
from core.hooks import abilities
from core.hooks.contracts import OutgoingMessage, Provider, SendResult
from core.hooks.registry import PluginRegistry
from core.models import Campaign, Contact, Message, utcnow
from core.stats.tallies import lock_tallies, lock_tallies_of_messages
from core.statuses import UNSENT_MESSAGE_STATUSES, CampaignStatus, MessageStatus, Phase

CHUNK = 500


def cancel_pending(engine: Engine, campaign_id: int) -> int:
    """After a cancel: every message not yet handed to the provider becomes `cancelled`.

    The campaign's tally row first (`lock_tallies`): this one UPDATE locks many message rows
    before its trigger wants the tally row, while a sender holding the tally row (it takes it
    first) may want one of those messages: a deadlock on PostgreSQL, seen in the suite."""
    with session_scope(engine) as session:
        lock_tallies(session, [campaign_id])
        result = session.exec(
            update(Message)
            .where(
                col(Message.campaign_id) == campaign_id,
                col(Message.status) == MessageStatus.QUEUED,
                col(Message.provider_message_id).is_(None),
            )
            .values(status=MessageStatus.CANCELLED, error_text="campaign cancelled", status_changed_at=utcnow())
        )
        return int(result.rowcount or 0)


@dataclass
class BatchOutcome:
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    transient: int = 0
    transient_error: str | None = None
    deferred: int = 0  # in their recipients' quiet hours: still queued
    resume_at: datetime | None = None  # when the first of those may go
    stopped: str | None = None  # the campaign's status when a pause or cancel stopped the batch
    capped: int = 0  # over the frequency cap: cancelled, never handed over (counted in skipped too)


@dataclass(slots=True)
class Pending:
    """A message of the batch still to send: a plain row (no ORM object on the send path)."""

    id: int
    campaign_id: int
    contact_id: int | None
    phone: str
    body: str
    idempotency_key: str
    status: str
    attempted_at: datetime | None


_MESSAGE = Message.__table__  # type: ignore[attr-defined]  # set by SQLModel, not in its stubs
_CAMPAIGN = Campaign.__table__  # type: ignore[attr-defined]
# The columns of a `Pending`, in its fields' order (after `campaign_id`, which the batch knows).
_PENDING_COLUMNS = (
    col(Message.id),
    col(Message.contact_id),
    col(Message.phone),
    col(Message.body),
    col(Message.idempotency_key),
    col(Message.status),
    col(Message.attempted_at),
)
_BY_ID = _MESSAGE.c.id == bindparam("mid")


def send_batch(
    engine: Engine,
    registry: PluginRegistry,
    campaign_id: int,
    first_id: int,
    last_id: int,
    *,
    phase: str = Phase.ALL,
    heartbeat: Callable[[], None] = lambda: None,
    frequency_cap: tuple[int, float] | None = None,
) -> BatchOutcome:
    """Send the still-unsent messages of one batch; record every answer before returning.
    `frequency_cap`: (count, seconds), the settings' `frequency_cap` (never applied to test sends).

    The batch's rows without a body yet are rendered first, in the transaction that reads them
    (with their short codes): a campaign's texts are made as they are sent, so the first batch goes
    out as soon as the snapshot has made the rows, however large the audience."""
    outcome = BatchOutcome()
    # An earlier attempt's outcome is unknown (marked `sending`, never answered): ask the provider
    # first, before any lock (it is a call over the network). What it has is sent; the rest was
    # not, and is queued again like any. Rows still `sending` below take the answer.
    found = _ask_about_unknown(engine, registry, campaign_id, phase, first_id, last_id)
    with session_scope(engine) as session:
        campaign = get_campaign(session, campaign_id)
        provider = registry.provider(campaign.provider)
        # The tally row before the messages (PostgreSQL): the statements below may move counts
        # (a found send, an opt-out, a text that does not render), which takes it after the rows
        # locked here; `cancel_pending` takes it first, then these rows.
        lock_tallies(session, [campaign_id])
        rows = session.execute(
            select(
                *_PENDING_COLUMNS,
                col(Message.variant_id),
                col(Contact.opted_out_at),
                col(Contact.timezone),
                col(Contact.name),
                col(Contact.attributes),
            )
            .join(Contact, col(Contact.id) == col(Message.contact_id))
            .where(
                col(Message.campaign_id) == campaign_id,
                col(Message.phase) == phase,
                col(Message.id) >= first_id,
                col(Message.id) <= last_id,
                col(Message.status).in_(UNSENT_MESSAGE_STATUSES),
                col(Message.provider_message_id).is_(None),
            )
            .order_by(col(Message.id))
            # PostgreSQL: a STOP committing meanwhile is seen here; the contacts are not locked
            # (SQLite: no-op).
            .with_for_update(of=Message)
        ).all()
        messages = [Pending(r[0], campaign_id, r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]
        found = {m.id: found[m.id] for m in messages if m.status == MessageStatus.SENDING and m.id in found}
        now = utcnow()
        to_send: list[Pending] = []
        bare: list[Bare] = []
        requeue: list[int] = []
        stops: dict[str, list[int]] = {}
        for message, row in zip(messages, rows, strict=True):
            opted_out_at, timezone = row[8], row[9]
            if message.id in found:
                message.status = MessageStatus.SENT
                outcome.sent += 1
            elif opted_out_at is not None or campaign.status == CampaignStatus.CANCELLED:
                reason = "contact opted out" if opted_out_at is not None else "campaign cancelled"
                stops.setdefault(reason, []).append(message.id)
                outcome.skipped += 1
            else:
                if message.status == MessageStatus.SENDING:
                    requeue.append(message.id)
                    message.status = MessageStatus.QUEUED
                if is_quiet(now, timezone, campaign.quiet_hours):
                    outcome.deferred += 1
                    until = quiet_until(now, timezone, campaign.quiet_hours)
                    outcome.resume_at = until if outcome.resume_at is None else min(outcome.resume_at, until)
                    continue
                if message.body == "" and row[7] is not None:
                    bare.append(
                        Bare(
                            message.id,
                            row[7],
                            message.contact_id,
                            message.phone,
                            row[10],
                            timezone,
                            dict(row[11] or {}),
                        )
                    )
                to_send.append(message)
        if found:
            session.execute(
                update(_MESSAGE)
                .where(_BY_ID)
                .values(
                    status=MessageStatus.SENT, provider_message_id=bindparam("pid"), sent_at=now, status_changed_at=now
                ),
                [{"mid": mid, "pid": pid} for mid, pid in found.items()],
            )
        for reason, ids in stops.items():
            session.execute(
                update(Message)
                .where(col(Message.id).in_(ids))
                .values(status=MessageStatus.CANCELLED, error_text=reason, status_changed_at=now)
            )
        if requeue:
            session.execute(update(Message).where(col(Message.id).in_(requeue)).values(status=MessageStatus.QUEUED))
        if bare:
            renderer = Renderer(session, registry, campaign_id)
            texts: dict[int, Rendered] = {}
            for i in range(0, len(bare), RENDER_CHUNK):  # a large batch: heartbeats between pieces
                texts |= renderer.render(session, bare[i : i + RENDER_CHUNK])
                heartbeat()
            for message in to_send:
                if (text := texts.get(message.id)) is not None:
                    message.body = text.body
                    if text.failed:  # cannot be rendered: failed, never handed over
                        message.status = MessageStatus.FAILED
                        outcome.failed += 1
            to_send = [m for m in to_send if m.status != MessageStatus.FAILED]
    heartbeat()
    guard = phase != Phase.TEST_SEND  # a test send goes out whatever the campaign's status
    cap = frequency_cap if guard else None  # and is never capped
    callback_url = f"{registry.context.settings.public_url}/webhooks/{provider.name}/status"
    pacer = _Pacer(campaign.rate_limit_per_second, provider.name)
    start = 0
    while start < len(to_send):
        pacer.wait(heartbeat)
        part = to_send[start : start + pacer.chunk()]
        start += len(part)
        claim = _mark_sending(engine, part, campaign_id if guard else None, cap)
        outcome.capped += len(claim.capped)
        outcome.skipped += len(claim.capped)
        if not claim.sending:
            if claim.capped:
                continue  # the whole call was over the cap
            status = _status_of(engine, campaign_id)
            if guard and status != CampaignStatus.RUNNING:
                # Paused or cancelled meanwhile: nothing more goes to the provider. A paused
                # batch's messages stay queued for the resume; a cancel's end `cancelled`.
                outcome.stopped = status
                break
            continue  # another attempt of this batch holds these rows
        part = [m for m in part if m.id in claim.sending]
        began = time.monotonic()
        outgoing = [OutgoingMessage(m.id, m.phone, m.body, m.idempotency_key, callback_url) for m in part]
        results = provider.send_batch(outgoing)
        pacer.sent(len(part), time.monotonic() - began)
        record_results(engine, provider.name, results, outcome)
        opt_out_unsubscribed(engine, provider, results)  # e.g. Twilio 21610
        heartbeat()
        if outcome.transient:
            break  # the activity is retried with backoff; the rest waits for that
    return outcome


class _Pacer:
    """How many messages go in the next provider call, and when.

    Small calls are what make pause and cancel take effect within a second: the campaign's
    status is checked before every call (folded into the UPDATE that marks the call's messages
    `sending`), so a call is the most that can still go out after a pause. A call is sized to
    take about TARGET_SECONDS by the time the last one took per message (starting at one
    message, doubling at most, at most MAX_CHUNK); under a rate limit also at most a fifth of a
    second's worth, one call every fifth of a second. The size a provider's calls reached is where
    the process's next batch for it starts (not at one message again: a fast provider's batch of
    1,000 would take eleven calls where four do).
    """

    MAX_CHUNK = 250
    TARGET_SECONDS = 0.2
    _learned: ClassVar[dict[tuple[str, float | None], int]] = {}

    def __init__(self, rate: float | None, provider: str = "") -> None:
        self.rate, self.key = rate, (provider, rate)
        self.cap = max(1, min(self.MAX_CHUNK, int(rate * self.TARGET_SECONDS))) if rate else self.MAX_CHUNK
        self.size = min(self.cap, self._learned.get(self.key, 1))
        self.next_at = 0.0

    def chunk(self) -> int:
        return self.size

    def sent(self, count: int, seconds: float) -> None:
        per_message = seconds / max(1, count)
        fit = int(self.TARGET_SECONDS / per_message) if per_message > 0 else self.cap
        self.size = max(1, min(self.cap, fit, self.size * 2))
        self._learned[self.key] = self.size
        if self.rate:
            self.next_at = time.monotonic() + count / self.rate - seconds

    def wait(self, heartbeat: Callable[[], None]) -> None:
        """Sleep until the rate limit lets the next call go, heartbeating at least every second."""
        while (left := self.next_at - time.monotonic()) > 0:
            time.sleep(min(left, 1.0))
            heartbeat()


def _status_of(engine: Engine, campaign_id: int) -> str:
    with session_scope(engine, read_only=True) as session:
        return str(session.scalar(select(col(Campaign.status)).where(col(Campaign.id) == campaign_id)))


@dataclass
class _Claim:
    sending: set[int]  # marked `sending`: this provider call hands them over
    capped: set[int]  # over the frequency cap: cancelled instead


def _mark_sending(
    engine: Engine, messages: list[Pending], campaign_id: int | None, frequency_cap: tuple[int, float] | None = None
) -> _Claim:
    """Claim the messages for one provider call: mark them `sending` (recorded before the provider
    is called: if we die meanwhile, the outcome is known to be unknown) and answer the ids claimed.
    Only rows still queued are taken, so two attempts of one batch never both send a message; with
    `campaign_id`, only while that campaign is running: none once it is paused or cancelled,
    decided by the same statement, so no second query and no gap. With `frequency_cap`, the
    messages that would take their contact past it are cancelled instead, under the same
    conditions and in the same transaction (one grouped query more; none without a cap)."""
    # Core statements on the tables, not the ORM's bulk UPDATE (its bookkeeping cost more than the
    # claim, which runs per provider call); one ORM attribute anywhere would route them there.
    m, c = _MESSAGE.c, _CAMPAIGN.c
    claimable = [m.status == MessageStatus.QUEUED, m.provider_message_id.is_(None)]
    if campaign_id is not None:
        claimable.append(select(c.id).where(c.id == campaign_id, c.status == CampaignStatus.RUNNING).exists())
    ids = [m.id for m in messages]
    capped: set[int] = set()
    with session_scope(engine) as session:
        session.connection()  # begin (on SQLite: hold the write lock, so the count below is exact)
        # The tally rows before the messages, as every writer of several messages takes them.
        lock_tallies(session, {m.campaign_id for m in messages})
        now = utcnow()
        if frequency_cap is not None and (over := cap_rules.over_cap(session, messages, frequency_cap, now)):
            cancel = {
                "status": MessageStatus.CANCELLED,
                "error_code": cap_rules.ERROR_CODE,
                "error_text": cap_rules.error_text(frequency_cap),
                "status_changed_at": now,
            }
            statement = update(_MESSAGE).where(m.id.in_(over), *claimable).values(**cancel)
            capped = set(session.connection().execute(statement.returning(m.id)).scalars())
            ids = [i for i in ids if i not in over]
        if not ids:
            return _Claim(set(), capped)
        values = {"status": MessageStatus.SENDING, "attempted_at": now, "attempts": m.attempts + 1}
        statement = update(_MESSAGE).where(m.id.in_(ids), *claimable).values(**values)
        return _Claim(set(session.connection().execute(statement.returning(m.id)).scalars()), capped)


def _ask_about_unknown(
    engine: Engine, registry: PluginRegistry, campaign_id: int, phase: str, first_id: int, last_id: int
) -> dict[int, str]:
    """The provider's ids of the batch's messages marked `sending` that it has (`_find_sent`)."""
    with session_scope(engine, read_only=True) as session:
        campaign = get_campaign(session, campaign_id)
        rows = session.execute(
            select(*_PENDING_COLUMNS).where(
                col(Message.campaign_id) == campaign_id,
                col(Message.phase) == phase,
                col(Message.id) >= first_id,
                col(Message.id) <= last_id,
                col(Message.status) == MessageStatus.SENDING,
                col(Message.provider_message_id).is_(None),
            )
        ).all()
        if not rows:
            return {}
        unknown = [Pending(r[0], campaign_id, r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]
        provider = registry.provider(campaign.provider)
        return _find_sent(session, provider, unknown, registry.context.settings.public_url)


def _find_sent(session: Session, provider: Provider, messages: list[Pending], public_url: str) -> dict[int, str]:
    """The provider's ids of messages an earlier attempt handed over (outcome unknown). An id that
    already belongs to another message (say, the failed message a retry row retries, same phone,
    same body) is not this one's."""
    if not abilities.can_find_sent(provider):
        return {}
    callback_url = f"{public_url}/webhooks/{provider.name}/status"
    outgoing = [
        OutgoingMessage(m.id, m.phone, m.body, m.idempotency_key, callback_url, attempted_at=m.attempted_at)
        for m in messages
    ]
    found = abilities.find_sent(provider, outgoing)
    if not found:
        return {}
    taken = set(
        session.scalars(
            select(col(Message.provider_message_id)).where(
                col(Message.provider) == provider.name, col(Message.provider_message_id).in_(list(found.values()))
            )
        )
    )
    return {message_id: sid for message_id, sid in found.items() if sid not in taken}


def record_results(engine: Engine, provider_name: str, results: list[SendResult], outcome: BatchOutcome) -> None:
    """Store a provider call's answers on messages marked `sending` (test sends use it too): one
    statement per kind of answer (an UPDATE from a VALUES list on PostgreSQL, an executemany on
    SQLite), so a call of a hundred messages costs three statements, not a hundred."""
    accepted: list[dict[str, Any]] = []
    transient: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for result in results:
        if result.accepted:
            accepted.append({"mid": result.message_id, "pid": result.provider_message_id})
            outcome.sent += 1
        elif result.transient:
            transient.append({"mid": result.message_id, "code": result.error_code, "text": result.error_text})
            outcome.transient += 1
            outcome.transient_error = f"{result.error_code}: {result.error_text}"
        else:
            failed.append({"mid": result.message_id, "code": result.error_code, "text": result.error_text})
            outcome.failed += 1
    with session_scope(engine) as session:
        session.connection()  # begin (on SQLite: hold the write lock) before stamping the time, so
        now = utcnow()  # that sent_at trails the commit by no more than these updates (the redirect
        # fetches the codes of messages sent since its last look, with a few seconds of overlap)
        # The campaigns' tally rows first, in id order (`lock_tallies`).
        lock_tallies_of_messages(session, (result.message_id for result in results))
        stamp = {"status_changed_at": now}
        _answer(session, accepted, {"status": MessageStatus.SENT, "sent_at": now, **stamp}, provider_message_id="pid")
        _answer(session, transient, {"status": MessageStatus.QUEUED, **stamp}, error_code="code", error_text="text")
        done = {"status": MessageStatus.FAILED, "failed_at": now, **stamp}
        _answer(session, failed, done, error_code="code", error_text="text")
    if accepted:
        apply_pending_events(engine, provider_name, [row["pid"] or "" for row in accepted])


def _answer(session: Session, rows: list[dict[str, Any]], constants: dict[str, Any], **columns: str) -> None:
    """Set `constants` and, per row, `columns` (column name → key of `rows`) on the rows still
    `sending` whose id is the row's `mid`."""
    update_rows(session, "answer", _MESSAGE, rows, columns=columns, constants=constants, where=lambda: [_STILL_SENDING])


_STILL_SENDING = _MESSAGE.c.status == MessageStatus.SENDING
