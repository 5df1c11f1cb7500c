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
  `recipients`. Its conversion fields are counted on an intention-to-treat basis, not through
  attribution (`intention_to_treat`), like the variants' side of every uplift.

Intention to treat (`intention_to_treat`): last-touch attribution gives a treated contact's purchase
to whichever campaign touched it last, and a contact whose message failed, was cancelled or never
sent is touched by nothing of this campaign, so comparing attributed conversions with the control's
is biased (failures, a cancel after the first batch, later campaigns aimed at engaged contacts all
take treated conversions away). So the comparison with the control counts, per arm, every contact
of the arm (sent or not) and whether it had an event named by the campaign's `conversion.event`
within [its touch, touch + `window_hours`], whoever the event is attributed to:
- a treated contact's touch is its first counted message's `sent_at`, else (refused by the provider)
  its `attempted_at` (when the batch holding it was handed over), else (never handed over: cancelled,
  paused for good, held, over the frequency cap) its `queued_at` (the audience snapshot);
- a held-out contact's touch is its `touched_at` (stamped beside each batch as the campaign sends,
  core/campaigns/audience.py `stamp_control_touch`, so it follows the same sending schedule), else
  its `queued_at` (the snapshot: the campaign never sent the batch beside it, like the treated rows
  that fall back to their `queued_at`).
The routes read these counts from rows the database keeps (migration 0020 for the intention to
treat, 0018 for the rest); the `counted_*` functions count the same from the rows, what the kept
rows are held to (tests/test_stat_tallies.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, distinct, func, literal, literal_column, select, union_all
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col

from core.campaigns.definition import get_campaign, variants_of
from core.models import (
    Campaign,
    CampaignIttTally,
    CampaignVariantEvent,
    CampaignVariantTally,
    Click,
    Conversion,
    Message,
    Variant,
    counted_messages,
)
from core.stats.conversions import conversion_event, conversion_window
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


def _clickers_by_variant(session: Session, campaign_id: int, *where: ColumnElement[bool]) -> dict[int | None, int]:
    """Distinct contacts with a human click, per variant id, over the messages `where` picks."""
    variant_id = col(Message.variant_id)
    return {
        vid: int(n or 0)
        for vid, n in session.execute(
            select(variant_id, func.count(distinct(col(Click.contact_id))))
            .select_from(Click)
            .join(Message, col(Message.id) == col(Click.message_id))
            .where(_human_clicks(campaign_id), variant_id.is_not(None), *where)
            .group_by(variant_id)
        ).all()
    }


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


def _within(session: Session, later: Any, earlier: Any, seconds: float) -> ColumnElement[bool]:
    """0 ≤ `later` − `earlier` ≤ `seconds`, in the dialect's own date arithmetic (SQLite: julian
    days, with a millisecond's tolerance for their floating point; PostgreSQL: epochs)."""
    if session.get_bind().dialect.name == "sqlite":
        apart = (func.julianday(later) - func.julianday(earlier)) * 86400.0
        return and_(apart >= -0.001, apart <= seconds + 0.001)
    apart = func.extract("epoch", later) - func.extract("epoch", earlier)
    return and_(apart >= 0, apart <= seconds)


def _windowed(session: Session, touches: Any, event: str, seconds: float) -> dict[Any, tuple[int, _Conversions]]:
    """Per arm of `touches` (a subquery of arm, contact_id, touch; one row per contact of an arm):
    (contacts, the conversions of the events named `event` within `seconds` after each contact's
    touch, a contact's events summed first)."""
    recipients = {
        arm: int(n or 0)
        for arm, n in session.execute(select(touches.c.arm, func.count()).group_by(touches.c.arm)).all()
    }
    hits = (
        select(
            touches.c.arm.label("arm"),
            touches.c.contact_id.label("contact_id"),
            func.count().label("events"),
            func.coalesce(func.sum(col(Conversion.revenue)), 0.0).label("revenue"),
        )
        .select_from(touches)
        .join(
            Conversion,
            and_(
                col(Conversion.contact_id) == touches.c.contact_id,
                col(Conversion.name) == event,
                _within(session, col(Conversion.occurred_at), touches.c.touch, seconds),
            ),
        )
        .group_by(touches.c.arm, touches.c.contact_id)
        .subquery()
    )
    converted = {
        arm: _Conversions(int(n or 0), int(events or 0), float(revenue or 0), float(revenue_sq or 0))
        for arm, n, events, revenue, revenue_sq in session.execute(
            select(
                hits.c.arm,
                func.count(),
                func.sum(hits.c.events),
                func.sum(hits.c.revenue),
                func.sum(hits.c.revenue * hits.c.revenue),
            ).group_by(hits.c.arm)
        ).all()
    }
    return {arm: (n, converted.get(arm, _Conversions())) for arm, n in recipients.items()}


def _itt_arm(name: str, is_control: bool, recipients: int, c: _Conversions) -> ArmCounts:
    return ArmCounts(
        variant=name,
        is_control=is_control,
        recipients=recipients,
        basis=recipients,
        converters=c.converters,
        conversion_events=c.events,
        revenue=c.revenue,
        revenue_sq=c.revenue_sq,
    )


def _itt_control(session: Session, campaign: Campaign, variants: list[Variant]) -> ArmCounts:
    """The control arm on an intention-to-treat basis: every held-out contact, touched at its
    `touched_at` (else its `queued_at`)."""
    campaign_id = campaign.id or 0
    touches = (
        select(
            literal(0).label("arm"),
            col(Message.contact_id).label("contact_id"),
            func.min(func.coalesce(col(Message.touched_at), col(Message.queued_at))).label("touch"),
        )
        .where(_held_out(campaign_id), col(Message.contact_id).is_not(None))
        .group_by(col(Message.contact_id))
        .subquery()
    )
    found = _windowed(session, touches, conversion_event(campaign), conversion_window(campaign).total_seconds())
    recipients, c = found.get(0, (0, _Conversions()))
    return _itt_arm(_control_name(variants), True, recipients, c)


def intention_to_treat(
    session: Session, campaign_id: int, *, phase: str | None = None, variants: list[Variant] | None = None
) -> dict[str, ArmCounts]:
    """Every arm's recipients and conversions on an intention-to-treat basis (module docstring), by
    variant name, the control arm too when the campaign holds contacts out: what every uplift
    compares. Read from migration 0020's kept rows (the variants' recipients from 0018's), three
    reads whatever the campaign's size; `phase` `retry` is counted from the rows
    (`counted_intention_to_treat`, what the kept rows are held to). `variants`: the campaign's,
    when the caller has read them."""
    kept_phase = KEPT_PHASES.get(phase)
    if kept_phase is None:
        return counted_intention_to_treat(session, campaign_id, phase=phase)
    campaign = get_campaign(session, campaign_id)
    variants = variants if variants is not None else variants_of(session, campaign_id)
    held_out = has_control(session, campaign, variants)
    return _kept_intention_to_treat(
        variants, _kept(session, campaign, kept_phase), _kept_itt(session, campaign_id), kept_phase, held_out
    )


def _kept_intention_to_treat(
    variants: list[Variant],
    kept: dict[int, tuple[Any, Any]],
    itt_rows: dict[tuple[int, str], Any],
    kept_phase: str,
    held_out: bool,
) -> dict[str, ArmCounts]:
    """The intention-to-treat arms from the kept rows: each variant's recipients from 0018's row
    (`_kept`), its conversions from 0020's, and the held-out group's when there is one."""
    out: dict[str, ArmCounts] = {}
    for variant in variants:
        if not variant.is_control:
            vid = variant.id or 0
            row = kept.get(vid, (None, None))[0]
            conversions = _kept_conversions(itt_rows.get((vid, kept_phase)))
            out[variant.name] = _itt_arm(variant.name, False, row.recipients if row is not None else 0, conversions)
    if held_out:
        control = _kept_control(variants, itt_rows)
        out[control.variant] = control
    return out


HELD_OUT = (0, str(Phase.CONTROL))  # migration 0020's key of the held-out group


def _kept_itt(session: Session, campaign_id: int) -> dict[tuple[int, str], Any]:
    """Migration 0020's rows of the campaign, by (variant id, phase)."""
    table = CampaignIttTally.__table__  # type: ignore[attr-defined]
    rows = session.connection().execute(select(table).where(table.c.campaign_id == campaign_id)).all()
    return {(row.variant_id, row.phase): row for row in rows}


def _kept_conversions(row: Any) -> _Conversions:
    if row is None:
        return _Conversions()
    return _Conversions(
        int(row.converters), int(row.events), row.revenue_micros / 1_000_000, row.revenue_sq_micros / 1_000_000
    )


def _kept_control(variants: list[Variant], itt: dict[tuple[int, str], Any]) -> ArmCounts:
    """The control arm on an intention-to-treat basis, from migration 0020's row of the held-out group."""
    row = itt.get(HELD_OUT)
    return _itt_arm(
        _control_name(variants), True, int(row.recipients) if row is not None else 0, _kept_conversions(row)
    )


def itt_contact_rows(session: Session, campaign: Campaign) -> Any:
    """(variant_id, phase, contact_id, events, revenue_micros) per arm key and contact with at least
    one event in its window, counted from the rows: what migration 0020 keeps in
    `campaign_itt_contact` (core/stats/tallies.py `repair` writes it)."""
    from core.stats.tallies import micros  # noqa: PLC0415  (tallies imports this module's callers)

    campaign_id = campaign.id or 0
    variant_id, phase, contact_id = col(Message.variant_id), col(Message.phase), col(Message.contact_id)
    treated = func.coalesce(col(Message.sent_at), col(Message.attempted_at), col(Message.queued_at))
    base = (col(Message.campaign_id) == campaign_id, contact_id.is_not(None))
    arms = union_all(
        select(
            literal_column("0").label("variant_id"),
            literal_column("'control'").label("phase"),
            contact_id.label("contact_id"),
            func.coalesce(col(Message.touched_at), col(Message.queued_at)).label("touch"),
        ).where(*base, phase == Phase.CONTROL),
        select(variant_id, literal_column("'*'"), contact_id, treated).where(
            *base, counted_messages(), variant_id.is_not(None)
        ),
        select(variant_id, phase, contact_id, treated).where(
            *base, phase.in_([Phase.TEST, Phase.REMAINDER]), variant_id.is_not(None)
        ),
    ).subquery()
    keys = (arms.c.variant_id, arms.c.phase, arms.c.contact_id)
    touches = select(*keys, func.min(arms.c.touch).label("touch")).group_by(*keys).subquery()
    seconds = conversion_window(campaign).total_seconds()
    found = (touches.c.variant_id, touches.c.phase, touches.c.contact_id)
    return (
        select(*found, func.count(), func.sum(micros(col(Conversion.revenue))))
        .select_from(touches)
        .join(
            Conversion,
            and_(
                col(Conversion.contact_id) == touches.c.contact_id,
                col(Conversion.name) == conversion_event(campaign),
                _within(session, col(Conversion.occurred_at), touches.c.touch, seconds),
            ),
        )
        .group_by(*found)
    )


def counted_intention_to_treat(session: Session, campaign_id: int, *, phase: str | None = None) -> dict[str, ArmCounts]:
    """`intention_to_treat` counted from the rows: a variant's contacts are those of its counted
    messages of `phase` (as `arms` counts them: the same `recipients`), each touched at its first
    such message; the control arm is the whole held-out group, as in `arms`. Attribution plays no
    part: an event counts for the arm whichever campaign it is attributed to. Three queries per
    side, set-based."""
    campaign = get_campaign(session, campaign_id)
    variants = variants_of(session, campaign_id)
    rows_of = _where(session, campaign_id, phase)
    variant_id = col(Message.variant_id)
    touch = func.coalesce(col(Message.sent_at), col(Message.attempted_at), col(Message.queued_at))
    touches = (
        select(variant_id.label("arm"), col(Message.contact_id).label("contact_id"), func.min(touch).label("touch"))
        .where(rows_of.every, variant_id.is_not(None), col(Message.contact_id).is_not(None))
        .group_by(variant_id, col(Message.contact_id))
        .subquery()
    )
    found = _windowed(session, touches, conversion_event(campaign), conversion_window(campaign).total_seconds())
    # The recipients as `arms` counts them (each contact's latest message), whichever of its messages
    # touched it first.
    recipients: dict[int | None, int] = dict(
        session.execute(
            select(variant_id, func.count()).where(rows_of.latest, variant_id.is_not(None)).group_by(variant_id)
        ).all()
    )
    out: dict[str, ArmCounts] = {}
    for variant in variants:
        if not variant.is_control:
            _, c = found.get(variant.id, (0, _Conversions()))
            out[variant.name] = _itt_arm(variant.name, False, int(recipients.get(variant.id, 0)), c)
    if has_control(session, campaign, variants):
        control = _itt_control(session, campaign, variants)
        out[control.variant] = control
    return out


def counted_arms(
    session: Session, campaign_id: int, *, phase: str | None = None, reports_delivery: bool = True
) -> list[ArmCounts]:
    """One ArmCounts per variant, counted from the rows (what `arms()` reads from its kept rows is
    held to this): in variant id order, the control arm when the campaign holds contacts out in the
    place of the variant marked `is_control`, else last.

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
    clickers = _clickers_by_variant(session, campaign_id, rows_of.every)
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

    return _placed(session, campaign, variants, arm, lambda: _itt_control(session, campaign, variants))


def _placed(
    session: Session,
    campaign: Campaign,
    variants: list[Variant],
    arm: Callable[[Variant], ArmCounts],
    control_arm: Callable[[], ArmCounts],
    *,
    held_out: bool | None = None,
) -> list[ArmCounts]:
    """The arms in variant id order, the control arm (`control_arm()`, if the campaign holds
    contacts out: `held_out` when the caller knows) in the place of the variant marked
    `is_control`, else last."""
    out: list[ArmCounts] = []
    control: ArmCounts | None = None
    if held_out if held_out is not None else has_control(session, campaign, variants):  # intention to treat
        control = control_arm()
    for variant in variants:
        if not variant.is_control:
            out.append(arm(variant))
        elif control is not None:  # the (first) variant marked as control stands for the held-out group
            out.append(control)
            control = None
    return out if control is None else [*out, control]


KEPT_PHASES = {
    None: "*",
    EVERY_PHASE: "*",
    str(Phase.TEST): str(Phase.TEST),
    str(Phase.REMAINDER): str(Phase.REMAINDER),
}
ALL_VARIANTS = 0  # migration 0018's variant_id of every variant together


def _kept(session: Session, campaign: Campaign, phase: str) -> dict[int, tuple[Any, Any]]:
    """Per variant id (ALL_VARIANTS too): its kept row of `phase` and that of its conversions named
    by the campaign's `conversion.event` (None where there is none)."""
    arm, event = CampaignVariantTally.__table__, CampaignVariantEvent.__table__  # type: ignore[attr-defined]
    connection = session.connection()
    rows = connection.execute(select(arm).where(arm.c.campaign_id == campaign.id, arm.c.phase == phase)).all()
    events = {
        row.variant_id: row
        for row in connection.execute(
            select(event).where(
                event.c.campaign_id == campaign.id, event.c.phase == phase, event.c.name == conversion_event(campaign)
            )
        ).all()
    }
    out: dict[int, tuple[Any, Any]] = {row.variant_id: (row, events.get(row.variant_id)) for row in rows}
    for variant_id, row in events.items():
        out.setdefault(variant_id, (None, row))
    return out


def _kept_arm(name: str, kept: tuple[Any, Any] | None, reports_delivery: bool) -> ArmCounts:
    row, event = kept or (None, None)
    sent, delivered = (row.sent, row.delivered) if row is not None else (0, 0)
    return ArmCounts(
        variant=name,
        is_control=False,
        recipients=row.recipients if row is not None else 0,
        sent=sent,
        delivered=delivered,
        basis=delivered if reports_delivery else sent,
        unique_clicks=row.clickers if row is not None else 0,
        converters=event.converters if event is not None else 0,
        conversion_events=event.events if event is not None else 0,
        revenue=event.revenue_micros / 1_000_000 if event is not None else 0.0,
        revenue_sq=float(event.revenue_sq) if event is not None else 0.0,
    )


def arms(
    session: Session, campaign_id: int, *, phase: str | None = None, reports_delivery: bool = True
) -> list[ArmCounts]:
    """One ArmCounts per variant (in variant id order) and the control arm when the campaign holds
    contacts out (in the place of the variant marked `is_control`, else last).

    `phase`: None or `all` = every counted phase; `test`, `remainder` = that phase's messages alone
    (`retry`: counted from the rows). The control arm is always the whole held-out group: it has no
    phase of its own (the held-out contacts are drawn from the whole audience, before the test
    split). Read from migration 0018's kept rows (the control arm's intention-to-treat counts from
    0020's), a few reads whatever the campaign's size."""
    if KEPT_PHASES.get(phase) is None:
        return counted_arms(session, campaign_id, phase=phase, reports_delivery=reports_delivery)
    return arms_and_overall(session, campaign_id, phase=phase, reports_delivery=reports_delivery)[0]


def arms_and_overall(
    session: Session,
    campaign_id: int,
    *,
    phase: str | None = None,
    reports_delivery: bool = True,
    variants: list[Variant] | None = None,
) -> tuple[list[ArmCounts], ArmCounts]:
    """`arms()` and `overall()` of the same phase, from one read of the kept rows. `variants`: the
    campaign's, when the caller has read them."""
    shown, everyone, _ = arms_overall_and_itt(
        session, campaign_id, phase=phase, reports_delivery=reports_delivery, variants=variants, itt=False
    )
    return shown, everyone


def arms_overall_and_itt(
    session: Session,
    campaign_id: int,
    *,
    phase: str | None = None,
    reports_delivery: bool = True,
    variants: list[Variant] | None = None,
    itt: bool = True,
) -> tuple[list[ArmCounts], ArmCounts, dict[str, ArmCounts]]:
    """`arms()`, `overall()` and (with `itt`, when the campaign holds contacts out, else {})
    `intention_to_treat()` of the same phase: what /stats/variants shows, from one read of each
    kind of kept row (three queries)."""
    kept_phase = KEPT_PHASES.get(phase)
    if kept_phase is None:
        counted = counted_arms(session, campaign_id, phase=phase, reports_delivery=reports_delivery)
        rows_itt = (
            counted_intention_to_treat(session, campaign_id, phase=phase)
            if itt and any(a.is_control for a in counted)
            else {}
        )
        return counted, counted_overall(session, campaign_id, phase=phase, reports_delivery=reports_delivery), rows_itt
    campaign = get_campaign(session, campaign_id)
    kept = _kept(session, campaign, kept_phase)
    variants = variants if variants is not None else variants_of(session, campaign_id)
    held_out = has_control(session, campaign, variants)
    itt_rows = _kept_itt(session, campaign_id) if held_out else {}
    shown = _placed(
        session,
        campaign,
        variants,
        lambda variant: _kept_arm(variant.name, kept.get(variant.id or 0), reports_delivery),
        lambda: _kept_control(variants, itt_rows),
        held_out=held_out,
    )
    treated = _kept_intention_to_treat(variants, kept, itt_rows, kept_phase, held_out) if itt and held_out else {}
    return shown, _kept_arm("all", kept.get(ALL_VARIANTS), reports_delivery), treated


def overall(
    session: Session, campaign_id: int, *, phase: str | None = None, reports_delivery: bool = True
) -> ArmCounts:
    """Every variant together ("all variants"), a contact once; never the control group. Read from
    migration 0018's kept rows (`variant_id` 0)."""
    kept_phase = KEPT_PHASES.get(phase)
    if kept_phase is None:
        return counted_overall(session, campaign_id, phase=phase, reports_delivery=reports_delivery)
    kept = _kept(session, get_campaign(session, campaign_id), kept_phase)
    return _kept_arm("all", kept.get(ALL_VARIANTS), reports_delivery)


def counted_overall(
    session: Session, campaign_id: int, *, phase: str | None = None, reports_delivery: bool = True
) -> ArmCounts:
    """Every variant together ("all variants"), a contact once; never the control group. Counted
    from the rows: what `overall()`'s kept rows are held to."""
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
        select(func.count(distinct(col(Click.contact_id))))
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


# -- matured evidence: what the A/B decision compares (docs/ab-testing.md, "Matured outcomes") --

from datetime import datetime, timedelta  # noqa: E402  (kept with the function that needs it)


def _seconds_between(session: Session, later: Any, earlier: Any) -> ColumnElement[Any]:
    """`later - earlier` in seconds, in the dialect's own date arithmetic (SQLite: julian days)."""
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0
    return func.extract("epoch", later) - func.extract("epoch", earlier)


def matured_arms(
    session: Session, campaign_id: int, *, horizon_seconds: float, now: datetime, reports_delivery: bool = True
) -> list[ArmCounts]:
    """The test cohort's evidence with every outcome's window fully elapsed, one ArmCounts per
    non-control variant (variant id order): only messages whose start is at least `horizon_seconds`
    before `now` count, and only what happened within `horizon_seconds` of that start.

    - `basis` (and `delivered`, `sent`): test messages delivered (else sent) at least H ago;
    - `unique_clicks`: distinct contacts with a human click within H of their message's delivery
      (else send), among those messages;
    - `recipients`: test messages sent (or failed unsent) at least H ago; `converters`,
      `conversion_events`, `revenue`, `revenue_sq`: the conversions attributed to them that
      occurred within H of the send.

    Every counted unit's outcome is final (nothing that happens later can change it), so the
    counts only accumulate units and each arm's rate is "within H" whatever the speed of its
    clicks or purchases: the sequential test's guarantee holds for it. `arms()` (counts as of
    now) is what /stats/variants shows. Four queries, set-based, over the test phase."""
    variants = [v for v in variants_of(session, campaign_id) if not v.is_control]
    campaign = get_campaign(session, campaign_id)
    rows_of = _where(session, campaign_id, Phase.TEST)
    variant_id = col(Message.variant_id)
    cutoff = now - timedelta(seconds=horizon_seconds)
    was_sent = col(Message.sent_at).is_not(None)
    sent_by = and_(was_sent, col(Message.sent_at) <= cutoff)
    delivered_at = func.coalesce(col(Message.delivered_at), col(Message.sent_at))
    delivered_by = and_(col(Message.status) == MessageStatus.DELIVERED, delivered_at <= cutoff)
    started = func.coalesce(col(Message.sent_at), col(Message.failed_at), col(Message.status_changed_at))
    unit = delivered_by if reports_delivery else sent_by
    unit_start = delivered_at if reports_delivery else col(Message.sent_at)
    messages = {
        vid: (int(n or 0), int(sent or 0), int(delivered or 0))
        for vid, n, sent, delivered in session.execute(
            select(
                variant_id,
                func.sum(case((started <= cutoff, 1), else_=0)),
                func.sum(case((sent_by, 1), else_=0)),
                func.sum(case((delivered_by, 1), else_=0)),
            )
            .where(rows_of.latest, variant_id.is_not(None))
            .group_by(variant_id)
        ).all()
    }
    clickers = _clickers_by_variant(
        session,
        campaign_id,
        rows_of.every,
        unit,
        _seconds_between(session, col(Click.clicked_at), unit_start) <= horizon_seconds,
    )
    per_contact = (
        select(
            variant_id.label("arm"),
            col(Conversion.contact_id).label("contact_id"),
            func.count().label("events"),
            func.coalesce(func.sum(col(Conversion.revenue)), 0.0).label("revenue"),
        )
        .select_from(Conversion)
        .join(Message, col(Message.id) == col(Conversion.message_id))
        .where(
            col(Conversion.campaign_id) == campaign_id,
            col(Conversion.name) == conversion_event(campaign),
            rows_of.every,
            variant_id.is_not(None),
            sent_by,
            _seconds_between(session, col(Conversion.occurred_at), col(Message.sent_at)) <= horizon_seconds,
        )
        .group_by(variant_id, col(Conversion.contact_id))
        .subquery()
    )
    converted = {
        arm: (int(n or 0), int(events or 0), float(revenue or 0), float(revenue_sq or 0))
        for arm, n, events, revenue, revenue_sq in session.execute(
            select(
                per_contact.c.arm,
                func.count(),
                func.sum(per_contact.c.events),
                func.sum(per_contact.c.revenue),
                func.sum(per_contact.c.revenue * per_contact.c.revenue),
            ).group_by(per_contact.c.arm)
        ).all()
    }
    out = []
    for variant in variants:
        recipients, sent, delivered = messages.get(variant.id, (0, 0, 0))
        converters, events, revenue, revenue_sq = converted.get(variant.id, (0, 0, 0.0, 0.0))
        out.append(
            ArmCounts(
                variant=variant.name,
                is_control=False,
                recipients=recipients,
                sent=sent,
                delivered=delivered,
                basis=delivered if reports_delivery else sent,
                unique_clicks=clickers.get(variant.id, 0),
                converters=converters,
                conversion_events=events,
                revenue=revenue,
                revenue_sq=revenue_sq,
            )
        )
    return out
