"""What an automation sends, through the campaigns' own path (API.md "Automations").

Two shapes, both campaign rows so every stats route, the export and the dashboard work for them:
- a campaign of the run (`create_send`): a campaign of kind `follow_up` or `automation` with
  `parent_id` and `run_id`, created and launched here, then sent by the campaign workflow as a
  child of the run: audience snapshot, batches, quiet hours, rate limit, opt-outs, control;
- one text to one contact (`text_contact`), in the automation's step campaign: one campaign of
  kind `automation` per automation, step and body (`<automation>: <step>`), running for as long as
  runs send through it, so a step's numbers add up across every contact's run. The message row is
  keyed per run (`c<campaign>-run<run>-<contact>`) and sent by `send_batch`, the campaign sender:
  claimed once, looked up at the provider when an attempt's outcome is unknown, never twice.
Before a text, the contact's own record decides (not the signals the run may have missed): an
opted-out contact, or one who did a `stop_on` since the run's start, gets nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import exists, select, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from core.automations import runs
from core.campaigns.bodies import render_pending
from core.campaigns.definition import CampaignInvalid, apply_move, create_campaign, get_campaign, iter_audience
from core.campaigns.idempotency import automation_key
from core.campaigns.launch_checks import check_launch
from core.campaigns.lifecycle import Move
from core.campaigns.schemas import CampaignCreate, ConversionIn, QuietHoursIn, TrackingIn
from core.db import session_scope
from core.delivery.sending import BatchOutcome, cancel_pending, send_batch
from core.hooks.registry import PluginRegistry
from core.models import Campaign, Click, Contact, Conversion, Message, Reply, Variant, utcnow
from core.statuses import CampaignKind, CampaignStatus, MessageStatus, Phase

STOP_KINDS = ("click", "reply", "conversion")


def _at(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None


def did_since(session: Session, contact_id: int, stop_on: Sequence[str], since: datetime | None) -> str | None:
    """The first of `stop_on` the contact did since `since` (click: a human's click; reply; conversion,
    or `conversion:<name>` for one event name), or None."""
    for kind in stop_on:
        what, _, name = kind.partition(":")
        if what == "click":
            query = (
                select(col(Click.id))
                .join(Message, col(Message.id) == col(Click.message_id))
                .where(col(Message.contact_id) == contact_id, col(Click.is_bot).is_(False))
            )
            if since is not None:
                query = query.where(col(Click.clicked_at) >= since)
        elif what == "reply":
            query = select(col(Reply.id)).where(col(Reply.contact_id) == contact_id)
            if since is not None:
                query = query.where(col(Reply.received_at) >= since)
        elif what == "conversion":
            query = select(col(Conversion.id)).where(col(Conversion.contact_id) == contact_id)
            if name:
                query = query.where(col(Conversion.name) == name)
            if since is not None:
                query = query.where(col(Conversion.occurred_at) >= since)
        else:
            raise ValueError(f"stop_on: {kind!r} is not one of {', '.join(STOP_KINDS)} (or conversion:<name>)")
        if session.scalar(select(exists(query))):
            return kind
    return None


def count_audience(engine: Engine, audience: dict[str, Any]) -> int:
    """How many contacts an audience (API.md "Campaign body") holds now, opted-out ones excluded."""
    with session_scope(engine, read_only=True) as session:
        return sum(1 for _ in iter_audience(session, Campaign(name="count", audience=audience)))


def create_send(
    engine: Engine,
    registry: PluginRegistry,
    *,
    run_id: int,
    name: str,
    body: str,
    audience: dict[str, Any],
    kind: str,
    parent_id: int | None,
    provider: str | None,
    tracking: dict[str, Any] | None = None,
    conversion: dict[str, Any] | None = None,
    quiet_hours: dict[str, Any] | None = None,
    rate_limit_per_second: float | None = None,
) -> tuple[int, bool] | None:
    """The run's campaign named `name`, created and launched (running); and whether it was
    created now. A retry finds the campaign an earlier attempt made and finishes its launch.
    None when the run has ended (cancelled): nothing is created, or what was just launched is
    cancelled again. CampaignInvalid (a 422's words) when it cannot be made."""
    with session_scope(engine, read_only=True) as session:
        if not runs.is_running(session, run_id):
            return None
        made = session.scalar(
            select(col(Campaign.id)).where(col(Campaign.run_id) == run_id, col(Campaign.name) == name)
        )
        parent = session.get(Campaign, parent_id) if parent_id is not None else None
    created = made is None
    if made is None:
        fields: dict[str, Any] = {
            "name": name,
            "provider": provider or (parent.provider if parent is not None else "fake"),
            "audience": audience,
            "variants": [{"name": "A", "body": body}],
            "quiet_hours": quiet_hours if quiet_hours is not None else (parent.quiet_hours if parent else None),
            "rate_limit_per_second": rate_limit_per_second,
        }
        if tracking is not None or parent is not None:
            fields["tracking"] = tracking if tracking is not None else parent.tracking  # type: ignore[union-attr]
        if conversion is not None or (parent is not None and parent.conversion):
            fields["conversion"] = conversion if conversion is not None else parent.conversion  # type: ignore[union-attr]
        try:
            data = CampaignCreate.model_validate(fields)
        except ValueError as exc:
            raise CampaignInvalid(f"the automation's campaign {name!r} is not valid: {exc}") from None
        made = int(
            create_campaign(
                engine, data, providers=set(registry.providers), kind=kind, parent_id=parent_id, run_id=run_id
            )["id"]
        )
    campaign_id = int(made)
    with session_scope(engine, read_only=True) as session:
        status = get_campaign(session, campaign_id).status
    if status == CampaignStatus.DRAFT:
        check_launch(engine, registry, campaign_id)
        apply_move(engine, campaign_id, Move.LAUNCH, launched_at=utcnow())
    # A cancel of the run may have come meanwhile, after it looked for the run's campaigns: then
    # this one is cancelled here (one of the two sees the other, whichever committed first).
    with session_scope(engine, read_only=True) as session:
        still = runs.is_running(session, run_id)
    if not still:
        apply_move(engine, campaign_id, Move.CANCEL)
        cancel_pending(engine, campaign_id)
        return None
    return campaign_id, created


@dataclass
class TextOutcome:
    status: str  # sent | failed | skipped | deferred
    reason: str | None = None
    campaign_id: int | None = None
    message_id: int | None = None
    resume_at: datetime | None = None


def _step_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """A step campaign's tracking, conversion and quiet hours, checked as a campaign body's are."""
    try:
        return {
            "tracking": TrackingIn.model_validate(settings.get("tracking") or {}).model_dump(),
            "conversion": ConversionIn.model_validate(c).model_dump() if (c := settings.get("conversion")) else None,
            "quiet_hours": QuietHoursIn.model_validate(q).model_dump() if (q := settings.get("quiet_hours")) else None,
        }
    except ValueError as exc:
        raise CampaignInvalid(f"the step's settings are not valid: {exc}") from None


def step_campaign(session: Session, *, automation: str, step: str, body: str, provider: str, **settings: Any) -> int:
    """The automation's campaign for `step` with this body and these settings, made (running) by
    the first run that texts it (another body or other settings: another campaign of that name);
    PostgreSQL: an advisory lock keeps two runs from making two (SQLite: the write lock)."""
    name = f"{automation}: {step}"[:200]
    wanted = _step_settings(settings)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"textpulse-step:{name}"})
    candidates = session.scalars(
        select(Campaign)
        .join(Variant, col(Variant.campaign_id) == col(Campaign.id))
        .where(
            col(Campaign.kind) == CampaignKind.AUTOMATION,
            col(Campaign.run_id).is_(None),
            col(Campaign.name) == name,
            col(Campaign.provider) == provider,
            col(Variant.body) == body,
        )
        .order_by(col(Campaign.id))
    ).all()
    for found in candidates:
        if (found.tracking, found.conversion, found.quiet_hours) == (
            wanted["tracking"],
            wanted["conversion"],
            wanted["quiet_hours"],
        ):
            return int(found.id or 0)
    campaign = Campaign(
        name=name,
        provider=provider,
        audience={"automation": automation, "step": step},
        status=CampaignStatus.RUNNING,
        kind=CampaignKind.AUTOMATION,
        launched_at=utcnow(),
        **wanted,
    )
    session.add(campaign)
    session.flush()
    session.add(Variant(campaign_id=campaign.id or 0, name="A", body=body))
    session.flush()
    return int(campaign.id or 0)


def text_contact(
    engine: Engine,
    registry: PluginRegistry,
    *,
    run_id: int,
    automation: str,
    step: str,
    contact_id: int,
    body: str,
    provider: str = "fake",
    stop_on: Sequence[str] = (),
    since_epoch: float | None = None,
    tracking: dict[str, Any] | None = None,
    conversion: dict[str, Any] | None = None,
    quiet_hours: dict[str, Any] | None = None,
    progress: dict[str, Any] | None = None,
    frequency_cap: tuple[int, float] | None = None,
    heartbeat: Callable[[], None] = lambda: None,
) -> TextOutcome:
    """Text one contact for a run: once, whatever retries, unless the run ended, the contact
    opted out or did a `stop_on` since `since_epoch`."""
    if provider not in registry.providers:
        raise CampaignInvalid(f"provider {provider!r} is not enabled; enabled: {', '.join(sorted(registry.providers))}")
    with session_scope(engine) as session:
        campaign_id = step_campaign(
            session,
            automation=automation,
            step=step,
            body=body,
            provider=provider,
            tracking=tracking,
            conversion=conversion,
            quiet_hours=quiet_hours,
        )
        key = automation_key(campaign_id, run_id, contact_id)
        message = session.scalar(select(Message).where(col(Message.idempotency_key) == key))
        if message is None:
            why = _why_not(session, run_id, contact_id, stop_on, _at(since_epoch))
            if why is not None:
                return TextOutcome("skipped", why, campaign_id)
            contact = session.get(Contact, contact_id)
            assert contact is not None
            variant_id = session.scalar(select(col(Variant.id)).where(col(Variant.campaign_id) == campaign_id))
            message = Message(
                campaign_id=campaign_id,
                contact_id=contact_id,
                variant_id=variant_id,
                phase=Phase.ALL,
                phone=contact.phone,
                provider=provider,
                body="",
                idempotency_key=key,
            )
            session.add(message)
            runs.add_campaign(session, run_id, campaign_id)
            if progress is not None:
                runs.set_progress(session, run_id, progress)
            session.flush()
        message_id = int(message.id or 0)
        if message.status not in (MessageStatus.QUEUED, MessageStatus.SENDING):
            return _outcome(message, campaign_id, None)
        if message.status == MessageStatus.QUEUED:
            # Made earlier (a retry, or a text that waited for quiet hours to end): the run and the
            # contact's record decide again now. (A `sending` one may be at the provider already:
            # send_batch asks it before anything else.)
            why = _why_not(session, run_id, contact_id, stop_on, _at(since_epoch))
            if why is not None:
                message.status, message.error_text = MessageStatus.CANCELLED, f"not sent: {why}"
                message.status_changed_at = utcnow()
                session.add(message)
                return TextOutcome("skipped", why, campaign_id, message_id)
    render_pending(engine, registry, campaign_id, only=[message_id])
    outcome: BatchOutcome = send_batch(
        engine, registry, campaign_id, message_id, message_id, heartbeat=heartbeat, **_cap(frequency_cap)
    )
    if outcome.stopped == CampaignStatus.CANCELLED:  # the step's campaign was cancelled meanwhile
        return TextOutcome("skipped", "cancelled", campaign_id, message_id)
    if outcome.transient or outcome.stopped:
        # The provider failed for now, or the step's campaign is paused: the text stays queued and
        # the activity is retried (with backoff) until it goes or the run ends.
        raise TextPending(f"not sent yet: {'campaign ' + outcome.stopped if outcome.stopped else 'provider error'}")
    with session_scope(engine, read_only=True) as session:
        stored = session.get(Message, message_id)
        assert stored is not None
        return _outcome(stored, campaign_id, outcome.resume_at)


class TextPending(RuntimeError):
    """The text is queued and will be tried again (a transient provider error, a paused campaign)."""


def _why_not(
    session: Session, run_id: int, contact_id: int, stop_on: Sequence[str], since: datetime | None
) -> str | None:
    """Why the contact gets no text now: the run ended, no such contact, opted out, or a `stop_on`."""
    if not runs.is_running(session, run_id):
        return "cancelled"
    contact = session.get(Contact, contact_id)
    if contact is None:
        return "no_contact"
    if contact.opted_out_at is not None:
        return "opted_out"
    stopped = did_since(session, contact_id, stop_on, since)
    return f"stopped:{stopped}" if stopped is not None else None


def _cap(frequency_cap: tuple[int, float] | None) -> dict[str, Any]:
    return {"frequency_cap": frequency_cap} if frequency_cap is not None else {}


def _outcome(message: Message, campaign_id: int, resume_at: datetime | None) -> TextOutcome:
    status = message.status
    if status in (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.SENDING):
        return TextOutcome("sent", None, campaign_id, message.id)
    if status == MessageStatus.QUEUED:
        if resume_at is None:
            raise TextPending("not sent yet: queued")
        return TextOutcome("deferred", "quiet_hours", campaign_id, message.id, resume_at)
    if status == MessageStatus.CANCELLED:
        reason = message.error_code or ("opted_out" if "opted out" in (message.error_text or "") else "cancelled")
        return TextOutcome("skipped", reason, campaign_id, message.id)
    return TextOutcome("failed", message.error_code or message.error_text, campaign_id, message.id)


def contact_info(engine: Engine, contact_id: int) -> dict[str, Any] | None:
    with session_scope(engine, read_only=True) as session:
        contact = session.get(Contact, contact_id)
        if contact is None:
            return None
        return {
            "created_at": runs.epoch(contact.created_at) or 0.0,
            "opted_out": contact.opted_out_at is not None,
            "attributes": dict(contact.attributes or {}),
        }


def campaign_state(engine: Engine, campaign_id: int) -> dict[str, Any]:
    with session_scope(engine, read_only=True) as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise CampaignInvalid(f"campaign {campaign_id} does not exist")
        return {
            "status": campaign.status,
            "kind": campaign.kind,
            "completed_at": runs.epoch(campaign.completed_at),
        }
