"""A campaign's message and click numbers, as kept and as recounted (API.md "Stats summary").

The database keeps them: migration 0013's triggers add to `campaign_tally` what each write to
message, click and campaign_clicker changes (the rows' contributions after minus before), in the
writer's own transaction, whichever code path wrote. So `tally()` is one primary-key read, and
stays as exact as the writes: nothing here is called on a hot path.

`recount()` computes the same numbers from the rows, with the definitions of
core/stats/counting.py (a retried contact counts once, by its latest message; `attempts` counts
every counted message handed to the provider; clicks count on counted messages, whichever
attempt; unique = distinct contacts). It is the reference the tests hold the tallies to, and what
`repair()` (`textpulse stats recount`) writes back over a campaign's tally.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import astuple, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    and_,
    bindparam,
    case,
    cast,
    delete,
    distinct,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlmodel import Session, col

from core.delivery import frequency_cap
from core.delivery.replies import OPT_OUT_KEYWORDS
from core.models import (
    ERROR_TEXT_KEPT,
    CampaignClicker,
    CampaignClickKey,
    CampaignClickKeyContact,
    CampaignClickTiming,
    CampaignError,
    CampaignIttContact,
    CampaignIttTally,
    CampaignResponder,
    CampaignSlot,
    CampaignSlotContact,
    CampaignSlotFirst,
    CampaignTally,
    CampaignVariantContact,
    CampaignVariantEvent,
    CampaignVariantEventContact,
    CampaignVariantTally,
    Click,
    Conversion,
    Message,
    Reply,
    counted_messages,
)
from core.stats.counting import counted, handed_over, superseded_ids
from core.statuses import FAILED_MESSAGE_STATUSES, UNSENT_MESSAGE_STATUSES, MessageStatus, Phase

# Upper bounds (seconds) of the click-timing histogram; None is "later".
TIMING_BUCKETS: list[tuple[str, int | None]] = [
    ("under 1 min", 60),
    ("1–5 min", 300),
    ("5–15 min", 900),
    ("15–60 min", 3600),
    ("1–6 h", 6 * 3600),
    ("6–24 h", 24 * 3600),
    ("over 24 h", None),
]


@dataclass(frozen=True)
class Tally:
    """What a campaign's messages and clicks add up to."""

    recipients: int = 0  # contacts counted (each by its latest counted message)
    queued: int = 0
    sent: int = 0
    delivered: int = 0
    undelivered: int = 0
    failed: int = 0
    attempts: int = 0
    raw_total: int = 0  # clicks, bots' included
    bots_total: int = 0
    human_total: int = 0
    raw_unique: int = 0  # contacts who clicked
    human_unique: int = 0  # contacts with a click not a bot's
    replies: int = 0  # replies that are no keyword (migration 0014)
    repliers: int = 0  # contacts with such a reply
    stoppers: int = 0  # contacts with an opt-out keyword reply (STOP and its synonyms)
    conversion_events: int = 0  # conversions attributed to the campaign's counted messages
    converters: int = 0  # contacts with such a conversion
    revenue_micros: int = 0  # their revenue, in millionths
    unclicked_events: int = 0  # such conversions with no click of the contact before them
    direct_converters: int = 0  # contacts with such a conversion after a click (the funnel's `direct`)

    @property
    def revenue(self) -> float:
        return self.revenue_micros / 1_000_000


_LOCK_TALLIES = text(
    "SELECT campaign_id FROM campaign_tally WHERE campaign_id = ANY(:ids) ORDER BY campaign_id FOR NO KEY UPDATE"
)
_LOCK_TALLIES_OF_MESSAGES = text(
    "SELECT campaign_id FROM campaign_tally WHERE campaign_id IN "
    "(SELECT campaign_id FROM message WHERE id = ANY(:ids)) ORDER BY campaign_id FOR NO KEY UPDATE OF campaign_tally"
)


_MESSAGE = Message.__table__  # type: ignore[attr-defined]  # set by SQLModel, not in its stubs
_RETRY = _MESSAGE.alias("r")


def _connection(bind: Session | Connection) -> Connection:
    return bind.connection() if isinstance(bind, Session) else bind


def lock_tallies(bind: Session | Connection, campaign_ids: Iterable[int]) -> None:
    """Take the tally rows of these campaigns (PostgreSQL), in campaign id order, at the start of a
    transaction of several statements that write their messages or clicks.

    Each statement's trigger takes the tally rows it changes, in campaign id order within the
    statement; but a transaction of several statements (one per message, a chunk per verdict) would
    take them in the order of its statements, and a click batch (one COPY over campaigns A and B)
    could hold A while waiting for B as the other held B while waiting for A: a deadlock. Taken
    first, all in order, two writers wait on each other in one direction only. SQLite: nothing
    (one writer at a time)."""
    conn = _connection(bind)
    ids = sorted({int(i) for i in campaign_ids})
    if conn.dialect.name != "postgresql" or not ids:
        return
    conn.execute(_LOCK_TALLIES, {"ids": ids})


def lock_tallies_of_messages(bind: Session | Connection, message_ids: Iterable[int]) -> None:
    """`lock_tallies` for the campaigns of these messages (one statement)."""
    conn = _connection(bind)
    ids = sorted({int(i) for i in message_ids})
    if conn.dialect.name != "postgresql" or not ids:
        return
    conn.execute(_LOCK_TALLIES_OF_MESSAGES, {"ids": ids})


def tally(session: Session, campaign_id: int) -> Tally:
    """The campaign's numbers as the database keeps them: one row read by its primary key."""
    # Columns, not the ORM object: a long-lived session's identity map would answer a stale row.
    table = CampaignTally.__table__  # type: ignore[attr-defined]  # set by SQLModel, not in its stubs
    row = session.execute(select(table).where(table.c.campaign_id == campaign_id)).first()
    if row is None:  # a campaign made before its tally row could be (never, since migration 0013)
        return Tally()
    return Tally(
        recipients=row.recipients,
        queued=row.queued,
        sent=row.sent,
        delivered=row.delivered,
        undelivered=row.undelivered,
        failed=row.failed,
        attempts=row.attempts,
        raw_total=row.clicks_raw,
        bots_total=row.clicks_bot,
        human_total=row.clicks_raw - row.clicks_bot,
        raw_unique=row.clickers_raw,
        human_unique=row.clickers_human,
        replies=row.replies,
        repliers=row.repliers,
        stoppers=row.stoppers,
        conversion_events=row.conversion_events,
        converters=row.converters,
        revenue_micros=row.revenue_micros,
        unclicked_events=row.unclicked_events,
        direct_converters=row.direct_converters,
    )


def recount(session: Session, campaign_id: int) -> Tally:
    """The campaign's numbers from its messages and clicks: a pass over both."""
    rows = counted(session, campaign_id)
    status = col(Message.status)
    m = session.execute(
        select(
            func.count(),
            func.sum(case((status.in_(UNSENT_MESSAGE_STATUSES), 1), else_=0)),
            func.sum(case((col(Message.sent_at).is_not(None), 1), else_=0)),
            func.sum(case((status == MessageStatus.DELIVERED, 1), else_=0)),
            func.sum(case((status == MessageStatus.UNDELIVERED, 1), else_=0)),
            func.sum(case((status == MessageStatus.FAILED, 1), else_=0)),
            func.sum(handed_over()),
        ).where(rows.latest)
    ).one()
    contacts, queued, sent, delivered, undelivered, failed, attempts = (int(v or 0) for v in m)
    if rows.deduplicated:  # the earlier attempts of retried contacts were handed over too
        earlier = select(func.sum(handed_over())).where(col(Message.id).in_(superseded_ids(campaign_id)))
        attempts += int(session.scalar(earlier) or 0)
    real_clicks = and_(
        col(Click.campaign_id) == campaign_id, col(Click.message_id) == col(Message.id), counted_messages()
    )
    is_bot = col(Click.is_bot)
    c = session.execute(
        select(
            func.count(),
            func.count(distinct(col(Click.contact_id))),
            func.sum(case((is_bot.is_(True), 1), else_=0)),
            func.sum(case((is_bot.is_(False), 1), else_=0)),
            func.count(distinct(case((is_bot.is_(False), col(Click.contact_id)), else_=None))),
        )
        .select_from(Click)
        .join(Message, real_clicks)
    ).one()
    raw_total, raw_unique, bots_total, human_total, human_unique = (int(v or 0) for v in c)
    keyword = col(Reply.keyword)
    r = session.execute(
        select(
            func.sum(case((keyword.is_(None), 1), else_=0)),
            func.count(distinct(case((keyword.is_(None), col(Reply.contact_id)), else_=None))),
            func.count(distinct(case((keyword.in_(OPT_OUT_KEYWORDS), col(Reply.contact_id)), else_=None))),
        ).where(col(Reply.campaign_id) == campaign_id)
    ).one()
    replies, repliers, stoppers = (int(v or 0) for v in r)
    v = session.execute(
        select(
            func.count(),
            func.count(distinct(col(Conversion.contact_id))),
            func.coalesce(func.sum(micros(col(Conversion.revenue))), 0),
            func.sum(case((col(Conversion.clicked).is_(False), 1), else_=0)),
            func.count(distinct(case((col(Conversion.clicked).is_(True), col(Conversion.contact_id)), else_=None))),
        )
        .select_from(Conversion)
        .join(Message, and_(col(Message.id) == col(Conversion.message_id), counted_messages()))
        .where(col(Conversion.campaign_id) == campaign_id)
    ).one()
    conversion_events, converters, revenue_micros, unclicked_events, direct_converters = (int(x or 0) for x in v)
    return Tally(
        contacts, queued, sent, delivered, undelivered, failed, attempts, raw_total, bots_total, human_total,
        raw_unique, human_unique, replies, repliers, stoppers, conversion_events, converters, revenue_micros,
        unclicked_events, direct_converters,
    )  # fmt: skip


def micros(revenue: Any) -> Any:
    """A revenue in millionths, as migration 0014's triggers add it up."""
    return cast(func.round(func.coalesce(revenue, 0) * 1_000_000), BigInteger)


def repair(session: Session, campaign_id: int) -> tuple[Tally, Tally]:
    """Write the recount over the campaign's tally and clickers; returns (as kept, as recounted).

    `message.superseded` is recomputed first (a later retry row of the same contact exists), so
    that the next write's delta starts from what the recount counted.

    The tally row is locked first (PostgreSQL), so a writer of the campaign either committed before
    the recount reads (and is in it) or adds its delta after this commits (and was not in it)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(dialect.insert(CampaignTally).values(campaign_id=campaign_id).on_conflict_do_nothing())
    session.execute(select(CampaignTally).where(col(CampaignTally.campaign_id) == campaign_id).with_for_update())
    kept = tally(session, campaign_id)
    # The flag first (a message's contribution depends on it): what the triggers keep, as the rows
    # say now. Each row flipped moves its contribution (its UPDATE's trigger); the recount follows.
    later_retry = (
        select(1)
        .select_from(_RETRY)
        .where(
            _RETRY.c.campaign_id == _MESSAGE.c.campaign_id,
            _RETRY.c.contact_id == _MESSAGE.c.contact_id,
            _RETRY.c.phase == Phase.RETRY,
            _RETRY.c.id > _MESSAGE.c.id,
        )
        .exists()
    )
    session.execute(
        update(_MESSAGE)
        .where(_MESSAGE.c.campaign_id == campaign_id, _MESSAGE.c.superseded != later_retry)
        .values(superseded=later_retry)
    )
    session.execute(delete(CampaignClicker).where(col(CampaignClicker.campaign_id) == campaign_id))
    human = case((col(Click.is_bot).is_(False), 1), else_=0)
    bot = case((col(Click.is_bot).is_(True), 1), else_=0)
    clickers = (
        select(col(Click.campaign_id), col(Click.contact_id), func.sum(human), func.sum(bot))
        .join(Message, and_(col(Message.id) == col(Click.message_id), counted_messages()))
        .where(col(Click.campaign_id) == campaign_id, col(Click.contact_id).is_not(None))
        .group_by(col(Click.campaign_id), col(Click.contact_id))
    )
    session.execute(
        insert(CampaignClicker).from_select(["campaign_id", "contact_id", "human_clicks", "bot_clicks"], clickers)
    )
    _repair_breakdowns(session, campaign_id)
    _repair_trend(session, campaign_id)
    _repair_variants(session, campaign_id)
    _repair_itt(session, campaign_id)
    session.execute(delete(CampaignResponder).where(col(CampaignResponder.campaign_id) == campaign_id))
    keyword = col(Reply.keyword)
    responders = union_all(
        select(
            col(Reply.campaign_id).label("campaign_id"),
            col(Reply.contact_id).label("contact_id"),
            case((keyword.is_(None), 1), else_=0).label("replies"),
            case((keyword.in_(OPT_OUT_KEYWORDS), 1), else_=0).label("stops"),
            literal(0).label("conversions"),
            literal(0).label("clicked_conversions"),
        ).where(col(Reply.campaign_id) == campaign_id, col(Reply.contact_id).is_not(None)),
        select(
            col(Conversion.campaign_id),
            col(Conversion.contact_id),
            literal(0),
            literal(0),
            literal(1),
            case((col(Conversion.clicked).is_(True), 1), else_=0),
        )
        .join(Message, and_(col(Message.id) == col(Conversion.message_id), counted_messages()))
        .where(col(Conversion.campaign_id) == campaign_id),
    ).subquery()
    per_contact = (
        select(
            responders.c.campaign_id,
            responders.c.contact_id,
            func.sum(responders.c.replies),
            func.sum(responders.c.stops),
            func.sum(responders.c.conversions),
            func.sum(responders.c.clicked_conversions),
        )
        .group_by(responders.c.campaign_id, responders.c.contact_id)
        .having(func.sum(responders.c.replies) + func.sum(responders.c.stops) + func.sum(responders.c.conversions) > 0)
    )
    session.execute(
        insert(CampaignResponder).from_select(
            ["campaign_id", "contact_id", "replies", "stops", "conversions", "clicked_conversions"], per_contact
        )
    )
    session.execute(delete(CampaignError).where(col(CampaignError.campaign_id) == campaign_id))
    code = func.coalesce(_MESSAGE.c.error_code, "unknown")
    text_kept = func.substr(func.coalesce(_MESSAGE.c.error_text, ""), 1, ERROR_TEXT_KEPT)
    listed = and_(
        _MESSAGE.c.campaign_id == campaign_id,
        counted_messages(),
        _MESSAGE.c.superseded.is_(False),
        or_(
            _MESSAGE.c.status.in_(FAILED_MESSAGE_STATUSES),
            and_(_MESSAGE.c.status == MessageStatus.CANCELLED, _MESSAGE.c.error_code == frequency_cap.ERROR_CODE),
        ),
    )
    session.execute(
        insert(CampaignError).from_select(
            ["campaign_id", "code", "text", "messages"],
            select(_MESSAGE.c.campaign_id, code, text_kept, func.count())
            .where(listed)
            .group_by(_MESSAGE.c.campaign_id, code, text_kept),
        )
    )
    fresh = recount(session, campaign_id)
    row = session.get(CampaignTally, campaign_id, populate_existing=True)
    assert row is not None
    for name, value in _columns(fresh).items():
        setattr(row, name, value)
    session.add(row)
    session.flush()
    return kept, fresh


@dataclass(frozen=True)
class FirstClick:
    """A contact's first click of a person's in a campaign, and its click-timing buckets."""

    click_id: int
    at: datetime
    message_id: int
    delivered_bucket: int | None  # from its message's delivery, else its send
    sent_bucket: int | None  # from its send


def timing_bucket(clicked_at: datetime, start: datetime | None) -> int | None:
    """The index in TIMING_BUCKETS of a first click at `clicked_at` measured from `start`."""
    if start is None:
        return None
    seconds = max(0.0, (clicked_at - start).total_seconds())
    return next(i for i, (_, upper) in enumerate(TIMING_BUCKETS) if upper is None or seconds < upper)


def first_clicks(session: Session, campaign_id: int) -> dict[int, FirstClick]:
    """Each clicking contact's first click of a person's (the earliest, then the lowest id), from
    the clicks: what migration 0016's triggers keep in `campaign_clicker`."""
    first: dict[int, FirstClick] = {}
    for contact_id, click_id, clicked_at, message_id, delivered_at, sent_at in session.execute(
        select(
            col(Click.contact_id),
            col(Click.id),
            col(Click.clicked_at),
            col(Click.message_id),
            col(Message.delivered_at),
            col(Message.sent_at),
        )
        .join(Message, col(Message.id) == col(Click.message_id))
        .where(
            col(Click.campaign_id) == campaign_id,
            counted_messages(),
            col(Click.is_bot).is_(False),
            col(Click.contact_id).is_not(None),
        )
        .order_by(col(Click.clicked_at), col(Click.id))
    ).all():
        if contact_id not in first:
            delivered, sent = timing_bucket(clicked_at, delivered_at or sent_at), timing_bucket(clicked_at, sent_at)
            first[contact_id] = FirstClick(click_id, clicked_at, message_id, delivered, sent)
    return first


def _repair_breakdowns(session: Session, campaign_id: int) -> None:
    """Migration 0016's rows of the campaign from its clicks, after `repair()` made its clickers
    afresh (their first clicks unset): the keys' click counts, the keys' clickers (whose inserts add
    the keys' distinct counts), then each clicker's first click (whose updates add the timing)."""
    for table in (CampaignClickKeyContact, CampaignClickKey, CampaignClickTiming):
        session.execute(delete(table).where(col(table.campaign_id) == campaign_id))
    keys = _click_keys(campaign_id)
    human, bots = func.sum(keys.c.human_clicks), func.sum(keys.c.bot_clicks)
    session.execute(
        insert(CampaignClickKey).from_select(
            ["campaign_id", "dim", "key", "human_clicks", "bot_clicks"],
            select(keys.c.campaign_id, keys.c.dim, keys.c.key, human, bots).group_by(
                keys.c.campaign_id, keys.c.dim, keys.c.key
            ),
        )
    )
    session.execute(
        insert(CampaignClickKeyContact).from_select(
            ["campaign_id", "dim", "key", "contact_id", "human_clicks", "bot_clicks"],
            select(keys.c.campaign_id, keys.c.dim, keys.c.key, keys.c.contact_id, human, bots)
            .where(keys.c.contact_id.is_not(None))
            .group_by(keys.c.campaign_id, keys.c.dim, keys.c.key, keys.c.contact_id),
        )
    )
    firsts = [
        {
            "c": campaign_id,
            "k": contact_id,
            "first_click_id": f.click_id,
            "first_at": f.at,
            "first_message_id": f.message_id,
            "delivered_bucket": f.delivered_bucket,
            "sent_bucket": f.sent_bucket,
        }
        for contact_id, f in first_clicks(session, campaign_id).items()
    ]
    if firsts:
        clicker = CampaignClicker.__table__  # type: ignore[attr-defined]
        session.connection().execute(
            update(clicker)
            .where(clicker.c.campaign_id == bindparam("c"), clicker.c.contact_id == bindparam("k"))
            .values({name: bindparam(name) for name in list(firsts[0])[2:]}),
            firsts,
        )


def _click_keys(campaign_id: int) -> Any:
    """Every counted click of the campaign once per dimension of migration 0016 (link, os, device),
    with its key there: (campaign_id, dim, key, contact_id, human_clicks, bot_clicks)."""
    human = case((col(Click.is_bot).is_(False), 1), else_=0)
    bot = case((col(Click.is_bot).is_(True), 1), else_=0)
    keys = {
        "link": cast(col(Click.link_id), String),
        "os": func.coalesce(col(Click.os), "other"),
        "device": func.coalesce(col(Click.device), "other"),
    }
    return union_all(
        *(
            select(
                col(Click.campaign_id).label("campaign_id"),
                literal(dim, String).label("dim"),
                key.label("key"),
                col(Click.contact_id).label("contact_id"),
                human.label("human_clicks"),
                bot.label("bot_clicks"),
            )
            .join(Message, and_(col(Message.id) == col(Click.message_id), counted_messages()))
            .where(col(Click.campaign_id) == campaign_id)
            for dim, key in keys.items()
        )
    ).subquery()


SLOT_SECONDS = 900  # the trend's slot, a quarter hour: every zone's offset today is a multiple of it


def slot_of(session: Session, moment: Any) -> Any:
    """The quarter-hour UTC slot of `moment` (seconds since the epoch // 900), as migration 0017's
    triggers compute it."""
    if session.get_bind().dialect.name == "sqlite":
        return cast(func.strftime("%s", moment), Integer) // SLOT_SECONDS
    return cast(func.floor(func.extract("epoch", moment) / SLOT_SECONDS), BigInteger)


SLOT_COLUMNS = ("sent", "delivered", "clicks", "replies", "conversion_events", "revenue_micros")


def _repair_trend(session: Session, campaign_id: int) -> None:
    """Migration 0017's rows of the campaign from its rows: the slots' counts, then each contact's
    slots with a click or a conversion (whose inserts set their gaps and count the firsts)."""
    for table in (CampaignSlotContact, CampaignSlotFirst, CampaignSlot):
        session.execute(delete(table).where(col(table.campaign_id) == campaign_id))
    latest = counted(session, campaign_id).latest
    human = case((col(Click.is_bot).is_(False), 1), else_=0)
    counted_click = and_(col(Message.id) == col(Click.message_id), counted_messages())
    counted_conversion = and_(col(Message.id) == col(Conversion.message_id), counted_messages())

    def part(moment: Any, source: Any, **values: Any) -> Any:
        columns = [(values.get(name, literal(0))).label(name) for name in SLOT_COLUMNS]
        return source.add_columns(slot_of(session, moment).label("slot"), *columns).where(moment.is_not(None))

    parts = union_all(
        part(col(Message.sent_at), select().select_from(Message).where(latest), sent=literal(1)),
        part(col(Message.delivered_at), select().select_from(Message).where(latest), delivered=literal(1)),
        part(
            col(Click.clicked_at),
            select().select_from(Click).join(Message, counted_click).where(col(Click.campaign_id) == campaign_id),
            clicks=human,
        ),
        part(
            col(Reply.received_at),
            select().select_from(Reply).where(col(Reply.campaign_id) == campaign_id, col(Reply.keyword).is_(None)),
            replies=literal(1),
        ),
        part(
            col(Conversion.occurred_at),
            select()
            .select_from(Conversion)
            .join(Message, counted_conversion)
            .where(col(Conversion.campaign_id) == campaign_id),
            conversion_events=literal(1),
            revenue_micros=micros(col(Conversion.revenue)),
        ),
    ).subquery()
    session.execute(
        insert(CampaignSlot).from_select(
            ["campaign_id", "slot", *SLOT_COLUMNS],
            select(literal(campaign_id), parts.c.slot, *(func.sum(parts.c[name]) for name in SLOT_COLUMNS)).group_by(
                parts.c.slot
            ),
        )
    )
    for kind, moment, source, events in (
        (
            "click",
            col(Click.clicked_at),
            select(col(Click.contact_id).label("contact_id"))
            .join(Message, counted_click)
            .where(col(Click.campaign_id) == campaign_id),
            human,
        ),
        (
            "conversion",
            col(Conversion.occurred_at),
            select(col(Conversion.contact_id).label("contact_id"))
            .join(Message, counted_conversion)
            .where(col(Conversion.campaign_id) == campaign_id),
            literal(1),
        ),
    ):
        rows = (
            source.add_columns(slot_of(session, moment).label("slot"), events.label("events"))
            .where(moment.is_not(None), source.selected_columns.contact_id.is_not(None))
            .subquery()
        )
        session.execute(
            insert(CampaignSlotContact).from_select(
                ["campaign_id", "kind", "contact_id", "slot", "events"],
                select(
                    literal(campaign_id), literal(kind, String), rows.c.contact_id, rows.c.slot, func.sum(rows.c.events)
                )
                .group_by(rows.c.contact_id, rows.c.slot)
                .having(func.sum(rows.c.events) > 0),
            )
        )


VARIANT_PHASES = (Phase.TEST, Phase.REMAINDER)  # the phases migration 0018 keeps a row of, beside `*`


def _per_arm(variant: Any, phase: Any, where: Any, source: Any, values: dict[str, Any], extra: dict[str, Any]) -> Any:
    """`source`'s rows once per key of migration 0018 (their variant or every variant, 0; their
    phase, if kept, or every phase, `*`), with `values` (a function of whether the key is of every
    phase) labelled: a UNION ALL."""
    parts = []
    for whole_v in (False, True):
        for whole_p in (False, True):
            arm = [
                (literal(0) if whole_v else variant).label("variant_id"),
                (literal("*", String) if whole_p else cast(phase, String)).label("phase"),
            ]
            chosen = [expr(whole_p).label(name) for name, expr in values.items()]
            condition = and_(where, variant.is_not(None), true() if whole_p else phase.in_(VARIANT_PHASES))
            parts.append(source.add_columns(*arm, *(e.label(n) for n, e in extra.items()), *chosen).where(condition))
    return union_all(*parts).subquery()


def _repair_itt(session: Session, campaign_id: int) -> None:
    """Migration 0020's rows of the campaign from its rows: the held-out contacts, then each contact's
    events within its arm's window (whose inserts add the tally's converters, events and revenue)."""
    from core.campaigns.definition import get_campaign  # noqa: PLC0415
    from core.stats.evidence import itt_contact_rows  # noqa: PLC0415  (evidence reads the tallies' kin)

    session.execute(delete(CampaignIttContact).where(col(CampaignIttContact.campaign_id) == campaign_id))
    session.execute(delete(CampaignIttTally).where(col(CampaignIttTally.campaign_id) == campaign_id))
    held_out = session.scalar(
        select(func.count()).where(
            col(Message.campaign_id) == campaign_id,
            col(Message.phase) == Phase.CONTROL,
            col(Message.contact_id).is_not(None),
        )
    )
    if held_out:
        session.execute(
            insert(CampaignIttTally).values(
                campaign_id=campaign_id, variant_id=0, phase=str(Phase.CONTROL), recipients=held_out
            )
        )
    rows = itt_contact_rows(session, get_campaign(session, campaign_id)).subquery()
    session.execute(
        insert(CampaignIttContact).from_select(
            ["campaign_id", "variant_id", "phase", "contact_id", "events", "revenue_micros"],
            select(literal(campaign_id), *rows.c),
        )
    )


def _repair_variants(session: Session, campaign_id: int) -> None:
    """Migration 0018's rows of the campaign from its rows: each arm's message and conversion counts,
    then its contacts (whose inserts add the distinct counts), per conversion name likewise."""
    tables = (
        CampaignVariantContact,
        CampaignVariantEventContact,
        CampaignVariantEvent,
        CampaignVariantTally,
    )
    for table in tables:
        session.execute(delete(table).where(col(table.campaign_id) == campaign_id))
    one, zero = literal(1), literal(0)
    message_variant, message_phase = col(Message.variant_id), col(Message.phase)
    counted_rows = and_(col(Message.campaign_id) == campaign_id, counted_messages())
    latest = col(Message.superseded).is_(False)
    delivered = col(Message.status) == MessageStatus.DELIVERED
    tally_columns = ["recipients", "sent", "delivered", "conversion_events", "unclicked_events", "revenue_micros"]

    def latest_if(whole_p: bool, condition: Any = None) -> Any:
        chosen = [c for c in (latest if whole_p else None, condition) if c is not None]
        return case((and_(*chosen), 1), else_=0) if chosen else one

    messages = _per_arm(
        message_variant,
        message_phase,
        counted_rows,
        select(),
        {
            "recipients": lambda w: latest_if(w),
            "sent": lambda w: latest_if(w, col(Message.sent_at).is_not(None)),
            "delivered": lambda w: latest_if(w, delivered),
            "conversion_events": lambda w: zero,
            "unclicked_events": lambda w: zero,
            "revenue_micros": lambda w: zero,
        },
        {},
    )
    conversion_of = select().select_from(Conversion).join(Message, col(Message.id) == col(Conversion.message_id))
    conversions = _per_arm(
        message_variant,
        message_phase,
        and_(counted_rows, col(Conversion.campaign_id) == campaign_id),
        conversion_of,
        {
            "recipients": lambda w: zero,
            "sent": lambda w: zero,
            "delivered": lambda w: zero,
            "conversion_events": lambda w: one,
            "unclicked_events": lambda w: case((col(Conversion.clicked).is_(False), 1), else_=0),
            "revenue_micros": lambda w: micros(col(Conversion.revenue)),
        },
        {"name": col(Conversion.name), "contact_id": col(Conversion.contact_id), "clicked": col(Conversion.clicked)},
    )
    both = union_all(
        select(messages.c.variant_id, messages.c.phase, *(messages.c[n] for n in tally_columns)),
        select(conversions.c.variant_id, conversions.c.phase, *(conversions.c[n] for n in tally_columns)),
    ).subquery()
    session.execute(
        insert(CampaignVariantTally).from_select(
            ["campaign_id", "variant_id", "phase", *tally_columns],
            select(
                literal(campaign_id), both.c.variant_id, both.c.phase, *(func.sum(both.c[n]) for n in tally_columns)
            ).group_by(both.c.variant_id, both.c.phase),
        )
    )
    arm = [conversions.c.variant_id, conversions.c.phase]
    session.execute(
        insert(CampaignVariantEvent).from_select(
            ["campaign_id", "variant_id", "phase", "name", "events", "revenue_micros"],
            select(
                literal(campaign_id), *arm, conversions.c.name, func.sum(conversions.c.conversion_events),
                func.sum(conversions.c.revenue_micros),
            ).group_by(*arm, conversions.c.name),
        )
    )  # fmt: skip
    session.execute(
        insert(CampaignVariantEventContact).from_select(
            ["campaign_id", "variant_id", "phase", "name", "contact_id", "events", "revenue_micros"],
            select(
                literal(campaign_id), *arm, conversions.c.name, conversions.c.contact_id,
                func.sum(conversions.c.conversion_events), func.sum(conversions.c.revenue_micros),
            )
            .where(conversions.c.contact_id.is_not(None))
            .group_by(*arm, conversions.c.name, conversions.c.contact_id),
        )
    )  # fmt: skip
    clicks = _per_arm(
        message_variant,
        message_phase,
        and_(counted_rows, col(Click.campaign_id) == campaign_id, col(Click.contact_id).is_not(None)),
        select().select_from(Click).join(Message, col(Message.id) == col(Click.message_id)),
        {"human_clicks": lambda w: case((col(Click.is_bot).is_(False), 1), else_=0), "conversions": lambda w: zero,
         "clicked_conversions": lambda w: zero},
        {"contact_id": col(Click.contact_id)},
    )  # fmt: skip
    member = ["human_clicks", "conversions", "clicked_conversions"]
    by_contact = union_all(
        select(clicks.c.variant_id, clicks.c.phase, clicks.c.contact_id, *(clicks.c[n] for n in member)),
        select(
            conversions.c.variant_id, conversions.c.phase, conversions.c.contact_id, zero.label("human_clicks"),
            conversions.c.conversion_events.label("conversions"),
            case((conversions.c.clicked.is_(True), 1), else_=0).label("clicked_conversions"),
        ).where(conversions.c.contact_id.is_not(None)),
    ).subquery()  # fmt: skip
    session.execute(
        insert(CampaignVariantContact).from_select(
            ["campaign_id", "variant_id", "phase", "contact_id", *member],
            select(
                literal(campaign_id), by_contact.c.variant_id, by_contact.c.phase, by_contact.c.contact_id,
                *(func.sum(by_contact.c[n]) for n in member),
            ).group_by(by_contact.c.variant_id, by_contact.c.phase, by_contact.c.contact_id),
        )
    )  # fmt: skip


def _columns(numbers: Tally) -> dict[str, int]:
    """The tally row's columns for these numbers."""
    (recipients, queued, sent, delivered, undelivered, failed, attempts, raw, bots, _, clickers, humans, *rest) = (
        astuple(numbers)
    )
    replies, repliers, stoppers, conversion_events, converters, revenue_micros, unclicked, direct = rest
    return {
        "replies": replies,
        "repliers": repliers,
        "stoppers": stoppers,
        "conversion_events": conversion_events,
        "converters": converters,
        "revenue_micros": revenue_micros,
        "unclicked_events": unclicked,
        "direct_converters": direct,
        "recipients": recipients,
        "queued": queued,
        "sent": sent,
        "delivered": delivered,
        "undelivered": undelivered,
        "failed": failed,
        "attempts": attempts,
        "clicks_raw": raw,
        "clicks_bot": bots,
        "clickers_raw": clickers,
        "clickers_human": humans,
    }
