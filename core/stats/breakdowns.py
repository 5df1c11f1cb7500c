"""Breakdowns of a campaign beside the summary: links, devices, click timing, trend, funnel.

Clicks flagged as bots are left out unless asked for; test sends and the control group's held-out
rows never count (a held-out contact's conversion belongs to the control, shown by /stats/variants
only); conversions mean what they mean on the summary. A retried contact
counts once, by its latest message (core/stats/counting.py); clicks and conversions count whichever
attempt they came from (a contact once where contacts are counted). The trend counts per
15-minute UTC slot in SQL (GROUP BY slot, and slot and contact where contacts are counted) and
folds the slots into local buckets in Python, so SQLite and PostgreSQL give the same answer and a
million-recipient campaign reads a few thousand rows, not two million timestamps. Every zone's
offset is a whole number of quarter hours today, so a slot never straddles a local bucket; a slot
that would (a historical offset) is caught and that series is read row by row instead.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, distinct, func, literal_column, select
from sqlmodel import Session, col

from core.errors import BadParameter
from core.models import (
    CampaignClickKey,
    CampaignClickTiming,
    CampaignSlot,
    CampaignSlotFirst,
    CampaignVariantTally,
    Click,
    Conversion,
    Link,
    Message,
    Reply,
    Variant,
    counted_messages,
)
from core.stats.counting import counted
from core.stats.tallies import SLOT_COLUMNS, SLOT_SECONDS, TIMING_BUCKETS, Tally, first_clicks, micros, slot_of, tally
from core.statuses import MessageStatus
from core.zones import zone as named_zone


class ReportError(BadParameter):
    """A parameter of a report is wrong; the message names it."""


def _clicks(campaign_id: int, include_bots: bool) -> Any:
    condition = and_(col(Click.campaign_id) == campaign_id, counted_messages())
    return condition if include_bots else and_(condition, col(Click.is_bot).is_(False))


def links(session: Session, campaign_id: int) -> dict[str, Any]:
    """Clicks per tracked link (a link is a position in a variant's body), from the rows migration
    0016's triggers keep (`campaign_click_key`, dimension `link`)."""
    kept = {
        int(key): (human, contacts, bots)
        for key, human, contacts, bots in session.execute(
            select(
                col(CampaignClickKey.key),
                col(CampaignClickKey.human_clicks),
                col(CampaignClickKey.human_contacts),
                col(CampaignClickKey.bot_clicks),
            ).where(col(CampaignClickKey.campaign_id) == campaign_id, col(CampaignClickKey.dim) == "link")
        ).all()
    }
    return {"links": _link_rows(session, campaign_id, kept)}


def counted_links(session: Session, campaign_id: int) -> dict[str, Any]:
    """`links()` counted from the clicks: the reference its kept rows are held to."""
    counts = {
        link_id: (int(human or 0), int(unique or 0), int(bots or 0))
        for link_id, human, unique, bots in session.execute(
            select(
                col(Click.link_id),
                func.sum(case((col(Click.is_bot).is_(False), 1), else_=0)),
                func.count(distinct(case((col(Click.is_bot).is_(False), col(Click.contact_id)), else_=None))),
                func.sum(case((col(Click.is_bot).is_(True), 1), else_=0)),
            )
            .join(Message, col(Message.id) == col(Click.message_id))
            .where(_clicks(campaign_id, include_bots=True))
            .group_by(col(Click.link_id))
        ).all()
    }
    return {"links": _link_rows(session, campaign_id, counts)}


def _link_rows(session: Session, campaign_id: int, counts: dict[int, tuple[int, int, int]]) -> list[dict[str, Any]]:
    out = []
    for link, variant in session.execute(
        select(Link, col(Variant.name))
        .join(Variant, col(Variant.id) == col(Link.variant_id))
        .where(col(Link.campaign_id) == campaign_id)
        .order_by(col(Variant.name), col(Link.position))
    ).all():
        human, unique, bots = counts.get(link.id or 0, (0, 0, 0))
        out.append(
            {
                "link_id": link.id,
                "url": link.destination,
                "position": link.position,
                "variant": variant,
                "clicks": human,
                "unique_clicks": unique,
                "bot_clicks": bots,
            }
        )
    return out


def devices(session: Session, campaign_id: int, *, include_bots: bool = False) -> dict[str, Any]:
    """Clicks and distinct clickers per operating system and device (`other`: not known), people's
    unless `include_bots`; most clicks first (then by name). From migration 0016's kept rows."""

    def split(dim: str) -> list[dict[str, Any]]:
        key = CampaignClickKey
        clicks = col(key.human_clicks) + col(key.bot_clicks) if include_bots else col(key.human_clicks)
        unique = col(key.any_contacts) if include_bots else col(key.human_contacts)
        rows = session.execute(
            select(col(key.key), clicks, unique)
            .where(col(key.campaign_id) == campaign_id, col(key.dim) == dim, clicks > 0)
            .order_by(clicks.desc(), col(key.key))
        ).all()
        return [{"name": name, "clicks": int(n), "unique_clicks": int(u)} for name, n, u in rows]

    return {"os": split("os"), "device": split("device")}


def counted_devices(session: Session, campaign_id: int, *, include_bots: bool = False) -> dict[str, Any]:
    """`devices()` counted from the clicks."""

    def split(column: Any) -> list[dict[str, Any]]:
        # One expression with a literal (not a bound parameter): PostgreSQL must see the same
        # expression in SELECT and GROUP BY.
        name = func.coalesce(column, literal_column("'other'"))
        rows = session.execute(
            select(name, func.count(), func.count(distinct(col(Click.contact_id))))
            .join(Message, col(Message.id) == col(Click.message_id))
            .where(_clicks(campaign_id, include_bots))
            .group_by(name)
        ).all()
        ordered = sorted(rows, key=lambda row: (-int(row[1]), str(row[0])))
        return [{"name": name, "clicks": int(n), "unique_clicks": int(u)} for name, n, u in ordered]

    return {"os": split(col(Click.os)), "device": split(col(Click.device))}


def click_timing(session: Session, campaign_id: int, *, reports_delivery: bool = True) -> dict[str, Any]:
    """First human click per contact (the earliest, then the lowest id), measured from its
    message's delivery (else its send), or from its send when the provider reports no delivery.
    From the buckets migration 0016's triggers keep per clicker (`campaign_click_timing`)."""
    basis = "delivered" if reports_delivery else "sent"
    kept = dict(
        session.execute(
            select(col(CampaignClickTiming.bucket), col(CampaignClickTiming.contacts)).where(
                col(CampaignClickTiming.campaign_id) == campaign_id, col(CampaignClickTiming.basis) == basis
            )
        ).all()
    )
    return _timing(basis, [int(kept.get(i, 0)) for i in range(len(TIMING_BUCKETS))])


def counted_click_timing(session: Session, campaign_id: int, *, reports_delivery: bool = True) -> dict[str, Any]:
    """`click_timing()` counted from the clicks."""
    counts = [0] * len(TIMING_BUCKETS)
    for first in first_clicks(session, campaign_id).values():
        bucket = first.delivered_bucket if reports_delivery else first.sent_bucket
        if bucket is not None:
            counts[bucket] += 1
    return _timing("delivered" if reports_delivery else "sent", counts)


def _timing(basis: str, counts: list[int]) -> dict[str, Any]:
    return {
        "basis": basis,
        "buckets": [
            {"label": label, "upper_seconds": upper, "contacts": n}
            for (label, upper), n in zip(TIMING_BUCKETS, counts, strict=True)
        ],
    }


TREND_INTERVALS = ("hour", "day", "week", "month")


def _bucket_start(moment: datetime, interval: str, tz: ZoneInfo) -> datetime:
    """The start of the bucket holding `moment`, as a UTC instant (so the two 01:00 hours of a
    night the clocks go back stay two buckets); shown in `tz` by the caller."""
    local = moment.astimezone(tz)
    if interval == "hour":
        return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "week":
        day -= timedelta(days=day.weekday())
    elif interval == "month":
        day = day.replace(day=1)
    return day.replace(fold=0).astimezone(UTC)  # local midnight; its offset is the zone's at that time


def _conversions_of(campaign_id: int) -> Any:
    """The join from conversions to the campaign's counted messages (never the control group's
    held-out rows, never test sends): what every conversion count reads."""
    return and_(
        col(Message.id) == col(Conversion.message_id),
        col(Conversion.campaign_id) == campaign_id,
        counted_messages(),
    )


class _Folder:
    """Counts grouped by UTC slot in SQL, folded into the local buckets of `interval` in `zone`."""

    def __init__(self, session: Session, interval: str, zone: ZoneInfo) -> None:
        self.session, self.interval, self.zone = session, interval, zone
        self._buckets: dict[int, datetime | None] = {}

    def _slot(self, moment: Any) -> Any:
        return slot_of(self.session, moment)

    def bucket(self, slot: int) -> datetime | None:
        """The bucket holding all of the slot, None when the slot straddles two (or a change of offset)."""
        if slot not in self._buckets:
            start = datetime.fromtimestamp(int(slot) * SLOT_SECONDS, UTC)
            end = start + timedelta(seconds=SLOT_SECONDS, microseconds=-1)
            same = start.astimezone(self.zone).utcoffset() == end.astimezone(self.zone).utcoffset()
            first = _bucket_start(start, self.interval, self.zone)
            self._buckets[slot] = first if same and first == _bucket_start(end, self.interval, self.zone) else None
        return self._buckets[slot]

    # The shortest a bucket can be (a local hour across a change of clocks by half an hour; a day,
    # week or month across one by two hours at most), and a step no longer than any bucket.
    _SPANS = {
        "hour": (timedelta(minutes=30), timedelta(minutes=15)),
        "day": (timedelta(hours=22), timedelta(hours=1)),
        "week": (timedelta(days=7, hours=-2), timedelta(hours=1)),
        "month": (timedelta(days=28, hours=-2), timedelta(hours=6)),
    }

    def _next_start(self, start: datetime) -> datetime:
        """The start of the bucket after the one starting at `start`: a probe from the shortest a
        bucket can be, stepping less than any bucket is long, lands in the next bucket, never past it."""
        shortest, step = self._SPANS[self.interval]
        probe = start + shortest
        while (found := _bucket_start(probe, self.interval, self.zone)) <= start:
            probe += step
        return found

    def buckets_of(self, slots: list[int]) -> dict[int, datetime] | None:
        """Each slot's bucket, from the bucket bounds over the slots' span (a few date computations
        per bucket, not per slot); None when a bound falls inside a slot (a slot straddles)."""
        ordered = sorted(set(slots))
        if not ordered:
            return {}
        bounds = [_bucket_start(datetime.fromtimestamp(ordered[0] * SLOT_SECONDS, UTC), self.interval, self.zone)]
        while bounds[-1].timestamp() <= ordered[-1] * SLOT_SECONDS:
            bounds.append(self._next_start(bounds[-1]))
        seconds = [int(b.timestamp()) for b in bounds]
        out, i = {}, 0
        for slot in ordered:
            begin, end = slot * SLOT_SECONDS, (slot + 1) * SLOT_SECONDS
            while seconds[i + 1] <= begin:
                i += 1
            if end > seconds[i + 1] or seconds[i] > begin:
                return None
            out[slot] = bounds[i]
        return out

    def _rows(self, query: Any, moment: Any, keys: list[Any], values: list[Any]) -> list[Any] | None:
        slot = self._slot(moment).label("slot")
        rows = self.session.execute(
            query.add_columns(slot, *keys, *values).where(moment.is_not(None)).group_by(slot, *keys)
        ).all()
        return None if any(self.bucket(row[0]) is None for row in rows) else list(rows)

    def fold(self, query: Any, moment: Any) -> list[tuple[datetime, tuple[int, ...]]]:
        """(bucket, (rows,)) per slot of `query`'s rows by `moment`."""
        rows = self._rows(query, moment, [], [func.count()])
        if rows is None:  # a slot straddles buckets: row by row
            return [
                (_bucket_start(m, self.interval, self.zone), (1,))
                for (m,) in self.session.execute(query.add_columns(moment).where(moment.is_not(None)))
            ]
        return [(self.bucket(slot) or datetime.min, (int(n),)) for slot, n in rows]

    def fold_by_contact(
        self, query: Any, moment: Any, contact: Any, revenue: Any = None
    ) -> list[tuple[datetime, Any, tuple[Any, ...]]]:
        """(bucket, contact, (rows,) or (rows, Σ revenue)) per slot and contact of `query`'s rows."""
        values: list[Any] = [func.count()]
        if revenue is not None:
            values.append(func.coalesce(func.sum(revenue), 0.0))
        rows = self._rows(query, moment, [contact], values)
        if rows is None:  # a slot straddles buckets: row by row
            extra = [revenue] if revenue is not None else []
            return [
                (_bucket_start(row[0], self.interval, self.zone), row[1], (1, *(float(v or 0) for v in row[2:])))
                for row in self.session.execute(query.add_columns(moment, contact, *extra).where(moment.is_not(None)))
            ]
        return [
            (self.bucket(row[0]) or datetime.min, row[1], (int(row[2]), *(float(v or 0) for v in row[3:])))
            for row in rows
        ]


def _trend_params(interval: str, tz: str) -> ZoneInfo:
    if interval not in TREND_INTERVALS:
        raise ReportError(f"interval must be one of {', '.join(TREND_INTERVALS)}; got {interval!r}")
    zone = named_zone(tz)
    if zone is None:
        raise ReportError(f"tz {tz!r} is not an IANA time zone (e.g. Europe/Berlin)")
    return zone


def _new_bucket() -> dict[str, Any]:
    """A bucket's counts, its distinct contacts as sets."""
    return {
        "sent": 0,
        "delivered": 0,
        "clicks": 0,
        "unique_clicks": set(),
        "replies": 0,
        "conversions": set(),
        "conversion_events": 0,
        "revenue": 0,  # millionths, an exact sum
    }


def _trend_body(interval: str, tz: str, zone: ZoneInfo, buckets: dict[datetime, dict[str, Any]]) -> dict[str, Any]:
    def shown(key: str, value: Any) -> Any:
        if isinstance(value, set):
            return len(value)
        return round(value / 1_000_000, 6) if key == "revenue" else value

    return {
        "interval": interval,
        "tz": tz,
        "buckets": [
            {"start": start.astimezone(zone).isoformat(), **{k: shown(k, v) for k, v in b.items()}}
            for start, b in sorted(buckets.items())
        ],
    }


def trend(session: Session, campaign_id: int, *, interval: str = "day", tz: str = "UTC") -> dict[str, Any]:
    """Activity per hour, day, week or month in `tz`. Per bucket: messages sent and delivered, human
    clicks and distinct clickers, replies (keywords excepted), `conversions` = distinct converting
    contacts, `conversion_events` = events and `revenue` their sum (a contact converting on two days
    is a conversion of each day; the events add up to the summary's `conversion_events`).

    Read from the quarter-hour slots migration 0017's triggers keep: the counts per slot, and per
    (slot, gap) the contacts whose previous event of the kind is `gap` slots earlier (0: none), so
    that a contact counts in a bucket in its first slot there. A zone whose offset was once no whole
    number of quarter hours (a slot straddling two buckets) is counted from the rows instead."""
    zone = _trend_params(interval, tz)
    folder = _Folder(session, interval, zone)
    kept, gaps = CampaignSlot.__table__, CampaignSlotFirst.__table__  # type: ignore[attr-defined]
    connection = session.connection()  # Core rows: a few hundred tuples, no ORM loading
    slots = connection.execute(
        select(kept.c.slot, *(kept.c[name] for name in SLOT_COLUMNS)).where(kept.c.campaign_id == campaign_id)
    ).all()
    firsts = connection.execute(
        select(gaps.c.kind, gaps.c.slot, gaps.c.gap, gaps.c.contacts).where(
            gaps.c.campaign_id == campaign_id, gaps.c.contacts != 0
        )
    ).all()
    of_slot = folder.buckets_of([row[0] for row in slots] + [row[1] for row in firsts])
    if of_slot is None:
        return counted_trend(session, campaign_id, interval=interval, tz=tz)
    sums: dict[datetime, list[int]] = {}
    for slot, *values in slots:
        if any(values):
            start = of_slot[slot]
            into = sums.get(start) or sums.setdefault(start, [0] * len(values))
            for i, value in enumerate(values):
                into[i] += value
    distinct: dict[tuple[str, datetime], int] = defaultdict(int)
    for kind, slot, gap, contacts in firsts:
        start = of_slot[slot]
        if gap == 0 or slot - gap < int(start.timestamp()) // SLOT_SECONDS:
            distinct[(kind, start)] += contacts
    buckets: dict[datetime, dict[str, Any]] = {}
    for start in sums.keys() | {start for _, start in distinct}:
        sent, delivered, clicks, replies, events, revenue = sums.get(start, [0] * len(SLOT_COLUMNS))
        buckets[start] = {
            "sent": sent,
            "delivered": delivered,
            "clicks": clicks,
            "unique_clicks": distinct.get(("click", start), 0),
            "replies": replies,
            "conversions": distinct.get(("conversion", start), 0),
            "conversion_events": events,
            "revenue": revenue,
        }
    return _trend_body(interval, tz, zone, buckets)


def counted_trend(session: Session, campaign_id: int, *, interval: str = "day", tz: str = "UTC") -> dict[str, Any]:
    """`trend()` counted from the rows, per slot in SQL (GROUP BY slot, and slot and contact where
    contacts are counted), folded in Python; row by row where a slot straddles two buckets."""
    zone = _trend_params(interval, tz)
    buckets: dict[datetime, dict[str, Any]] = defaultdict(_new_bucket)
    folder = _Folder(session, interval, zone)
    latest = counted(session, campaign_id).latest
    for column, key in ((col(Message.sent_at), "sent"), (col(Message.delivered_at), "delivered")):
        for start, (n,) in folder.fold(select().select_from(Message).where(latest, column.is_not(None)), column):
            buckets[start][key] += n
    clicks = select().select_from(Click).join(Message, col(Message.id) == col(Click.message_id))
    clicks = clicks.where(_clicks(campaign_id, include_bots=False))
    for start, contact_id, (n,) in folder.fold_by_contact(clicks, col(Click.clicked_at), col(Click.contact_id)):
        bucket = buckets[start]
        bucket["clicks"] += n
        if contact_id is not None:
            bucket["unique_clicks"].add(contact_id)
    replies = select().select_from(Reply).where(col(Reply.campaign_id) == campaign_id, col(Reply.keyword).is_(None))
    for start, (n,) in folder.fold(replies, col(Reply.received_at)):
        buckets[start]["replies"] += n
    conversions = select().select_from(Conversion).join(Message, _conversions_of(campaign_id))
    for start, contact_id, (n, revenue) in folder.fold_by_contact(
        conversions, col(Conversion.occurred_at), col(Conversion.contact_id), micros(col(Conversion.revenue))
    ):
        bucket = buckets[start]
        if contact_id is not None:
            bucket["conversions"].add(contact_id)
        bucket["conversion_events"] += n
        bucket["revenue"] += int(revenue)
    return _trend_body(interval, tz, zone, buckets)


def variant_id_of(session: Session, campaign_id: int, name: str) -> int:
    """The id of the campaign's (sent, not held-out) variant named `name`; a ReportError naming the
    campaign's variants otherwise."""
    sendable = {
        v.name: v.id or 0
        for v in session.scalars(
            select(Variant).where(col(Variant.campaign_id) == campaign_id, col(Variant.is_control).is_(False))
        )
    }
    if name not in sendable:
        raise ReportError(f"variant must be one of {', '.join(sorted(sendable))}; got {name!r}")
    return sendable[name]


def funnel(session: Session, campaign_id: int, *, variant: str | None = None) -> dict[str, Any]:
    """Contacts at each step (of one variant, if given; never the control group); conversions split
    into direct (clicked first) and influenced, with `conversion_events` and `revenue` beside.

    The whole campaign's is read from its tally (one row, core/stats/tallies.py); one variant's
    from its kept row of every phase (migration 0018)."""
    if variant is None:
        return _funnel_of(tally(session, campaign_id))
    variant_id = variant_id_of(session, campaign_id, variant)
    row = session.get(CampaignVariantTally, (campaign_id, variant_id, "*"))
    numbers = Tally()
    if row is not None:
        numbers = Tally(
            sent=row.sent,
            delivered=row.delivered,
            human_unique=row.clickers,
            converters=row.converters,
            direct_converters=row.direct_converters,
            unclicked_events=row.unclicked_events,
            conversion_events=row.conversion_events,
            revenue_micros=row.revenue_micros,
        )
    return {**_funnel_of(numbers), "variant": variant}


def counted_funnel(session: Session, campaign_id: int, variant: str | None = None) -> dict[str, Any]:
    """`funnel()` counted from the rows (what the tally's funnel is held to)."""
    of_variant: tuple[Any, ...] = ()
    if variant is not None:
        of_variant = (col(Message.variant_id) == variant_id_of(session, campaign_id, variant),)
    # One message per contact (its latest): a sum is a count of contacts.
    sent, delivered = session.execute(
        select(
            func.sum(case((col(Message.sent_at).is_not(None), 1), else_=0)),
            func.sum(case((col(Message.status) == MessageStatus.DELIVERED, 1), else_=0)),
        ).where(counted(session, campaign_id).latest, *of_variant)
    ).one()
    clicked = session.scalar(
        select(func.count(distinct(col(Click.contact_id))))
        .join(Message, col(Message.id) == col(Click.message_id))
        .where(_clicks(campaign_id, include_bots=False), *of_variant)
    )
    direct, influenced, converted, events, revenue = session.execute(
        select(
            func.count(distinct(case((col(Conversion.clicked).is_(True), col(Conversion.contact_id)), else_=None))),
            func.count(distinct(case((col(Conversion.clicked).is_(False), col(Conversion.contact_id)), else_=None))),
            func.count(distinct(col(Conversion.contact_id))),
            func.count(),
            func.coalesce(func.sum(col(Conversion.revenue)), 0),
        )
        .select_from(Conversion)
        .join(Message, _conversions_of(campaign_id))
        .where(*of_variant)
    ).one()
    steps = [("sent", sent), ("delivered", delivered), ("clicked", clicked), ("converted", converted)]
    return {
        "variant": variant,
        "steps": [{"name": name, "contacts": int(n or 0)} for name, n in steps],
        "direct": int(direct or 0),
        # A contact with a direct conversion is not counted again as influenced.
        "influenced": int(converted or 0) - int(direct or 0) if influenced else 0,
        "conversion_events": int(events or 0),
        "revenue": float(revenue or 0),
    }


def _funnel_of(numbers: Tally) -> dict[str, Any]:
    """The campaign's funnel from its tally: the same definitions, kept by the database."""
    steps = [
        ("sent", numbers.sent),
        ("delivered", numbers.delivered),
        ("clicked", numbers.human_unique),
        ("converted", numbers.converters),
    ]
    return {
        "variant": None,
        "steps": [{"name": name, "contacts": n} for name, n in steps],
        "direct": numbers.direct_converters,
        # A contact with a direct conversion is not counted again as influenced.
        "influenced": numbers.converters - numbers.direct_converters if numbers.unclicked_events else 0,
        "conversion_events": numbers.conversion_events,
        "revenue": numbers.revenue,
    }
