"""One meaning of conversion (API.md "Definitions"), carrier opt-outs, hourly trends and 400s for
unknown filter values (issue 15).

Rows are built directly through the engine so each test knows the right answer; the expected
numbers are computed here from the test's own list of touches and events (`_oracle`), never read
back from the code under test. The last test runs a campaign with a control group through the real
workflow, to see the held-out rows stamped with the campaign's first send.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import select
from sqlmodel import Session, col

from api.clicks import export_rows
from core.campaigns.audience import KNUTH, stamp_control_touch
from core.campaigns.idempotency import idempotency_key
from core.db import make_engine, session_scope
from core.errors import BadParameter
from core.models import Campaign, Click, Contact, Conversion, Link, Message, Reply, Variant
from core.stats import breakdowns, evidence, summary
from core.stats.conversions import record_conversion
from core.statuses import MessageStatus, Phase
from tests.live import LiveService, wait_for

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_phones = itertools.count(1000)


# -- building rows ------------------------------------------------------------------------------
def _contacts(session: Session, n: int) -> list[int]:
    ids = []
    for _ in range(n):
        contact = Contact(phone=f"+1415556{next(_phones):04d}")
        session.add(contact)
        session.flush()
        ids.append(contact.id or 0)
    return ids


def _campaign(
    session: Session,
    name: str,
    *,
    variants: tuple[str, ...] = ("A",),
    conversion: dict[str, Any] | None = None,
    provider: str = "fake",
    control_percent: float = 0,
    before_0008: bool = False,
) -> tuple[Campaign, dict[str, Variant]]:
    """`before_0008`: into a schema migrated only up to before 0008 (no `kind`, `parent_id`, … yet)."""
    campaign = Campaign(
        name=name, provider=provider, conversion=conversion, control_percent=control_percent, status="completed"
    )
    if before_0008:
        full = Campaign.__table__  # type: ignore[attr-defined]
        later = ("id", "kind", "parent_id", "run_id", "follow_ups")
        columns = [c for c in full.columns if c.name not in later]
        old_table = sa.table("campaign", *(sa.column(c.name, c.type) for c in columns), sa.column("id"))
        values = {c.name: getattr(campaign, c.name) for c in columns}
        result: Any = session.execute(old_table.insert().values(values).returning(old_table.c.id))
        campaign.id = result.scalar_one()
    else:
        session.add(campaign)
        session.flush()
    made = {}
    for v in variants:
        variant = Variant(campaign_id=campaign.id or 0, name=v, body=f"Hi from {v} https://shop.example")
        session.add(variant)
        session.flush()
        made[v] = variant
    return campaign, made


def _sent(
    session: Session,
    campaign: Campaign,
    variant: Variant,
    contact_id: int,
    at: datetime,
    *,
    status: MessageStatus = MessageStatus.DELIVERED,
    error_code: str | None = None,
    phase: Phase = Phase.ALL,
    before_0006: bool = False,
) -> Message:
    accepted = not (status == MessageStatus.FAILED and error_code is not None and error_code.startswith("21"))
    message = Message(
        campaign_id=campaign.id or 0,
        contact_id=contact_id,
        variant_id=variant.id,
        phase=phase,
        phone=f"+1{contact_id:010d}",
        body="Hi",
        status=status,
        provider=campaign.provider,
        idempotency_key=idempotency_key(campaign.id or 0, phase, contact_id, variant_id=variant.id),
        error_code=error_code,
        attempts=1,
        attempted_at=at,
        sent_at=at if accepted else None,
        delivered_at=at + timedelta(seconds=5) if status == MessageStatus.DELIVERED else None,
        failed_at=at + timedelta(seconds=5) if status in (MessageStatus.FAILED, MessageStatus.UNDELIVERED) else None,
        queued_at=at - timedelta(minutes=1),
    )
    return _store(session, message, before_0006=before_0006)


def _store(session: Session, message: Message, *, before_0006: bool = False) -> Message:
    """Add the row; `before_0006`: into a schema migrated only up to 0005 (no `touched_at` yet, nor
    0013's `superseded`)."""
    if not before_0006:
        session.add(message)
        session.flush()
        return message
    table = Message.__table__  # type: ignore[attr-defined]
    later = ("id", "touched_at", "superseded")
    values = {c.name: getattr(message, c.name) for c in table.columns if c.name not in later}
    result: Any = session.execute(table.insert().values(values))
    message.id = result.inserted_primary_key[0]
    return message


def _held_out(
    session: Session, campaign: Campaign, contact_id: int, queued: datetime, *, before_0006: bool = False
) -> Message:
    """A control row as core/campaigns/audience.py `snapshot` makes it: cancelled, never sent."""
    message = Message(
        campaign_id=campaign.id or 0,
        contact_id=contact_id,
        variant_id=None,
        phase=Phase.CONTROL,
        phone=f"+1{contact_id:010d}",
        body="",
        status=MessageStatus.CANCELLED,
        provider=campaign.provider,
        idempotency_key=idempotency_key(campaign.id or 0, Phase.CONTROL, contact_id),
        error_text="held out: control group",
        queued_at=queued,
    )
    return _store(session, message, before_0006=before_0006)


def _click(session: Session, message: Message, at: datetime, *, bot: bool = False) -> None:
    link = session.scalars(select(Link).where(col(Link.variant_id) == message.variant_id)).first()
    if link is None:
        link = Link(campaign_id=message.campaign_id, variant_id=message.variant_id or 0, position=0, destination="x")
        session.add(link)
        session.flush()
    session.add(
        Click(
            code=f"k{message.id}{int(at.timestamp())}",
            campaign_id=message.campaign_id,
            message_id=message.id or 0,
            link_id=link.id or 0,
            contact_id=message.contact_id,
            clicked_at=at,
            is_bot=bot,
        )
    )
    session.flush()


# -- the independent answer ---------------------------------------------------------------------
@dataclass(frozen=True)
class Touch:
    contact: int
    at: datetime
    campaign: int
    message: int
    event: str = "purchase"
    window: timedelta = timedelta(hours=72)
    control: bool = False


@dataclass(frozen=True)
class Event:
    contact: int
    name: str
    at: datetime
    revenue: float = 0.0


def _oracle(touches: list[Touch], events: list[Event]) -> dict[Event, Touch | None]:
    """Each event's owner by the definition: the contact's latest touch at or before it (held-out
    rows included), if the event has that campaign's name and falls in its window."""
    owners: dict[Event, Touch | None] = {}
    for event in events:
        before = [t for t in touches if t.contact == event.contact and t.at <= event.at]
        last = max(before, key=lambda t: (t.at, t.message), default=None)
        ok = last is not None and event.name == last.event and event.at - last.at <= last.window
        owners[event] = last if ok else None
    return owners


def _expected(
    owners: dict[Event, Touch | None], campaign: int, messages: set[int] | None = None
) -> tuple[int, int, float]:
    """(converting contacts, events, revenue) of a campaign's sent messages (never its control)."""
    mine = [
        e
        for e, t in owners.items()
        if t is not None and t.campaign == campaign and not t.control and (messages is None or t.message in messages)
    ]
    return len({e.contact for e in mine}), len(mine), round(sum(e.revenue for e in mine), 6)


def _record(engine: Any, event: Event) -> dict[str, Any]:
    return record_conversion(
        engine, {"contact_id": event.contact, "name": event.name, "revenue": event.revenue, "occurred_at": event.at}
    )


def _export(engine: Any, campaign_id: int) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO("".join(export_rows(engine, campaign_id)))))


# -- the definitions on one campaign ------------------------------------------------------------
def test_only_the_campaigns_event_counts_and_every_route_agrees(database_url: str) -> None:
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        # No conversion settings: the event is `purchase`, the window 72 h.
        campaign, variants = _campaign(session, "Default event", variants=("A", "B"))
        cid = campaign.id or 0
        people = _contacts(session, 6)
        touches, by_contact = [], {}
        for i, contact in enumerate(people):
            m = _sent(session, campaign, variants["A" if i < 3 else "B"], contact, T0)
            touches.append(Touch(contact, T0, cid, m.id or 0))
            by_contact[contact] = m
        _click(session, by_contact[people[0]], T0 + timedelta(minutes=1))
        _click(session, by_contact[people[4]], T0 + timedelta(minutes=2), bot=True)  # a bot click: not "direct"
        a_messages = {by_contact[c].id or 0 for c in people[:3]}
        # A named event, on a campaign of its own.
        named, named_variants = _campaign(session, "Sign-ups", conversion={"event": "signup", "window_hours": 24})
        nid = named.id or 0
        signer = _contacts(session, 1)[0]
        nm = _sent(session, named, named_variants["A"], signer, T0)
        touches.append(Touch(signer, T0, nid, nm.id or 0, event="signup", window=timedelta(hours=24)))
    hour = timedelta(hours=1)
    events = [
        Event(people[0], "purchase", T0 + hour, 10),
        Event(people[0], "purchase", T0 + 2 * hour, 5),
        Event(people[0], "page_view", T0 + 3 * hour),
        Event(people[1], "signup", T0 + hour, 99),
        Event(people[1], "page_view", T0 + hour),
        Event(people[3], "purchase", T0 + 26 * hour, 7.5),  # the next day
        Event(people[4], "purchase", T0 + 2 * hour, 4),
        Event(people[5], "purchase", T0 + 80 * hour, 3),  # after the 72 h window
        Event(signer, "purchase", T0 + hour, 50),  # not what the sign-up campaign counts
        Event(signer, "signup", T0 + 2 * hour),
        Event(signer, "signup", T0 + 30 * hour),  # after its 24 h window
    ]
    answers = {e: _record(engine, e) for e in events}
    owners = _oracle(touches, events)
    for event, answer in answers.items():
        owner = owners[event]
        assert (answer["campaign_id"], answer["message_id"]) == (
            (owner.campaign, owner.message) if owner else (None, None)
        ), event
    assert answers[events[0]]["attribution"] == "direct"
    assert answers[events[6]]["attribution"] == "influenced"  # only a bot clicked
    assert answers[events[2]]["attribution"] is None
    with session_scope(engine, read_only=True) as session:  # every event is kept: the contact's history
        stored = session.scalars(select(Conversion)).all()
        assert sorted((x.contact_id, x.name, x.occurred_at) for x in stored) == sorted(
            (e.contact, e.name, e.at) for e in events
        )

    contacts, n_events, revenue = _expected(owners, cid)
    assert (contacts, n_events, revenue) == (3, 4, 26.5)  # people 0, 3, 4: page_view/signup never count
    with session_scope(engine, read_only=True) as session:
        s = summary.summary(session, cid)
        assert (s["conversions"], s["conversion_events"], s["revenue"]) == (contacts, n_events, revenue)
        funnel = breakdowns.funnel(session, cid)
        steps = {step["name"]: step["contacts"] for step in funnel["steps"]}
        assert steps == {"sent": 6, "delivered": 6, "clicked": 1, "converted": contacts}
        assert (funnel["direct"], funnel["influenced"]) == (1, 2)
        assert (funnel["conversion_events"], funnel["revenue"], funnel["variant"]) == (n_events, revenue, None)
        only_a = breakdowns.funnel(session, cid, variant="A")
        a_contacts, a_events, a_revenue = _expected(owners, cid, a_messages)
        assert {step["name"]: step["contacts"] for step in only_a["steps"]} == {
            "sent": 3,
            "delivered": 3,
            "clicked": 1,
            "converted": a_contacts,
        }
        assert (only_a["direct"], only_a["influenced"], only_a["conversion_events"], only_a["revenue"]) == (
            1,
            0,
            a_events,
            a_revenue,
        )
        only_b = breakdowns.funnel(session, cid, variant="B")
        assert only_b["steps"][3]["contacts"] + only_a["steps"][3]["contacts"] == contacts
        assert only_b["conversion_events"] + a_events == n_events
        with pytest.raises(BadParameter, match="variant must be one of A, B; got 'Z'"):
            breakdowns.funnel(session, cid, variant="Z")

        trend = breakdowns.trend(session, cid)["buckets"]
        per_day: dict[str, list[Event]] = defaultdict(list)
        for e, t in owners.items():
            if t is not None and t.campaign == cid:
                per_day[e.at.date().isoformat()].append(e)
        assert {b["start"][:10]: (b["conversions"], b["conversion_events"], b["revenue"]) for b in trend} == {
            day: (len({e.contact for e in evs}), len(evs), round(sum(e.revenue for e in evs), 6))
            for day, evs in per_day.items()
        }
        assert sum(b["conversion_events"] for b in trend) == n_events
        assert round(sum(b["revenue"] for b in trend), 6) == revenue

        n = summary.summary(session, nid)
        assert (n["conversions"], n["conversion_events"], n["revenue"]) == _expected(owners, nid) == (1, 1, 0.0)

    rows = _export(engine, cid)
    assert sum(int(r["conversions"]) for r in rows) == contacts
    assert sum(int(r["conversion_events"]) for r in rows) == n_events
    assert round(sum(float(r["revenue"]) for r in rows), 6) == revenue
    first = next(r for r in rows if r["message_id"] == str(by_contact[people[0]].id))
    assert (first["conversions"], first["conversion_events"], first["revenue"]) == ("1", "2", "15.0")


# -- last touch across campaigns, and the control group -------------------------------------------
def test_last_touch_across_campaigns_and_a_held_out_contact(database_url: str) -> None:
    engine = make_engine(database_url)
    hour = timedelta(hours=1)
    with session_scope(engine) as session:
        c, other = _contacts(session, 2)
        earlier, ev = _campaign(session, "Earlier")
        held, hv = _campaign(session, "With a control group", control_percent=50)
        later, lv = _campaign(session, "Later")
        e_msg = _sent(session, earlier, ev["A"], c, T0)
        control_row = _held_out(session, held, c, queued=T0 + hour)
        h_msg = _sent(session, held, hv["A"], other, T0 + 2 * hour)  # the campaign's first send
        unsent = _sent(session, held, hv["A"], _contacts(session, 1)[0], T0 + 2 * hour, status=MessageStatus.QUEUED)
        unsent.sent_at = unsent.attempted_at = None  # queued, never handed over
        session.add(unsent)
        eid, hid, lid = earlier.id or 0, held.id or 0, later.id or 0
        control_id, h_id, e_id, unsent_id = control_row.id or 0, h_msg.id or 0, e_msg.id or 0, unsent.id or 0

    # Before the campaign sends, a held-out row is no touch at all.
    assert stamp_control_touch(engine, hid, unsent_id, unsent_id) == 0  # nothing of that batch was sent
    before_stamp = _record(engine, Event(c, "purchase", T0 + 3 * hour, 1))
    assert (before_stamp["campaign_id"], before_stamp["message_id"]) == (eid, e_id)
    # The batch that sent `other` stamps the control rows with that first send, once.
    assert stamp_control_touch(engine, hid, h_id, h_id) == 1
    assert stamp_control_touch(engine, hid, h_id, h_id) == 0
    with session_scope(engine) as session:
        stamped = session.get(Message, control_id)
        assert stamped is not None and stamped.touched_at == T0 + 2 * hour
        assert stamped.sent_at is None and stamped.attempted_at is None  # never handed to the provider
        # The later campaign's message to the same contact.
        later_campaign = session.get(Campaign, lid)
        assert later_campaign is not None
        l_id = _sent(session, later_campaign, lv["A"], c, T0 + 5 * hour).id or 0

    touches = [
        Touch(c, T0, eid, e_id),
        Touch(c, T0 + 2 * hour, hid, control_id, control=True),
        Touch(other, T0 + 2 * hour, hid, h_id),
        Touch(c, T0 + 5 * hour, lid, l_id),
    ]
    events = [
        Event(c, "purchase", T0 + hour, 20),  # before the held-out campaign sent: the earlier one's
        Event(c, "purchase", T0 + 4 * hour, 30),  # after: the control group's, not the earlier campaign's
        Event(c, "page_view", T0 + 4 * hour),  # not a conversion of anyone
        Event(other, "purchase", T0 + 4 * hour, 8),
        Event(c, "purchase", T0 + 6 * hour, 40),  # a later message of another campaign still wins
    ]
    answers = {e: _record(engine, e) for e in events}
    owners = _oracle(touches, events)
    for event, answer in answers.items():
        owner = owners[event]
        assert (answer["campaign_id"], answer["message_id"]) == (
            (owner.campaign, owner.message) if owner else (None, None)
        ), event
    held_out_answer = answers[events[1]]
    assert (held_out_answer["campaign_id"], held_out_answer["message_id"], held_out_answer["attribution"]) == (
        hid,
        control_id,
        "control",
    )
    assert answers[events[4]]["campaign_id"] == lid and answers[events[4]]["attribution"] == "influenced"

    with session_scope(engine, read_only=True) as session:
        e = summary.summary(session, eid)
        # The earlier campaign: the event before the held-out campaign sent, and the one recorded
        # before the stamp (when the held-out row was not yet a touch).
        assert (e["conversions"], e["conversion_events"], e["revenue"]) == (1, 2, 21.0)
        assert _expected(owners, eid) == (1, 1, 20.0)
        h = summary.summary(session, hid)
        # The control group's conversion never counts on the summary, the funnel or the trend.
        assert (h["conversions"], h["conversion_events"], h["revenue"]) == _expected(owners, hid) == (1, 1, 8.0)
        funnel = breakdowns.funnel(session, hid)
        assert (funnel["steps"][3]["contacts"], funnel["conversion_events"], funnel["revenue"]) == (1, 1, 8.0)
        trend = breakdowns.trend(session, hid)["buckets"]
        assert sum(b["conversion_events"] for b in trend) == 1
        assert round(sum(b["revenue"] for b in trend), 6) == 8.0
        later_stats = summary.summary(session, lid)
        assert (later_stats["conversions"], later_stats["revenue"]) == _expected(owners, lid)[::2] == (1, 40.0)
        # ... while the conversion is the control row's, for /stats/variants to count.
        held_out = session.scalars(select(Conversion).where(col(Conversion.message_id) == control_id)).all()
        assert [(x.campaign_id, x.revenue, x.clicked) for x in held_out] == [(hid, 30.0, False)]
    rows = _export(engine, hid)
    control = next(r for r in rows if r["phase"] == "control")
    assert (control["conversions"], control["conversion_events"], control["revenue"]) == ("1", "1", "30.0")


# -- opt-outs: STOP replies and the carrier's "unsubscribed" -------------------------------------
def test_opt_outs_count_stop_replies_and_carrier_opt_outs(database_url: str) -> None:
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        campaign, v = _campaign(session, "Carrier", provider="twilio")
        cid = campaign.id or 0
        at_send, in_report, stopper, both, failed, fine = _contacts(session, 6)
        _sent(session, campaign, v["A"], at_send, T0, status=MessageStatus.FAILED, error_code="21610")
        _sent(session, campaign, v["A"], in_report, T0, status=MessageStatus.UNDELIVERED, error_code="21610")
        stop_msg = _sent(session, campaign, v["A"], stopper, T0)
        both_msg = _sent(session, campaign, v["A"], both, T0, status=MessageStatus.FAILED, error_code="21610")
        _sent(session, campaign, v["A"], failed, T0, status=MessageStatus.FAILED, error_code="30003")
        _sent(session, campaign, v["A"], fine, T0)
        for contact, message, body in (
            (stopper, stop_msg, "STOP"),
            (both, both_msg, "unsubscribe"),
            (fine, None, "hi"),
        ):
            session.add(
                Reply(
                    contact_id=contact,
                    campaign_id=cid,
                    message_id=message.id if message else None,
                    phone="+1",
                    body=body,
                    keyword=body.upper() if body != "hi" else None,
                    provider="twilio",
                    received_at=T0 + timedelta(minutes=5),
                )
            )
        # A test send refused with 21610 is no opt-out of the campaign.
        _sent(
            session, campaign, v["A"], fine, T0, status=MessageStatus.FAILED, error_code="21610", phase=Phase.TEST_SEND
        )
    expected = len({at_send, in_report, stopper, both})
    with session_scope(engine, read_only=True) as session:
        s = summary.summary(session, cid, unsubscribed_codes=frozenset({"21610"}))
        assert (s["opt_outs"], s["replies"]) == (expected, 1)
        assert summary.summary(session, cid)["opt_outs"] == len({stopper, both})  # a provider without such codes


# -- hourly trend -------------------------------------------------------------------------------
def test_trend_by_hour_in_a_time_zone(database_url: str) -> None:
    engine = make_engine(database_url)
    # The night New York's clocks go back (2026-11-01): 05:30Z and 06:30Z are both 01:30 local.
    night = datetime(2026, 11, 1, 4, 10, tzinfo=UTC)
    times = [night, night + timedelta(minutes=40), night + timedelta(minutes=80), night + timedelta(minutes=140)]
    with session_scope(engine) as session:
        campaign, v = _campaign(session, "Hourly")
        cid = campaign.id or 0
        people = _contacts(session, len(times))
        messages = [_sent(session, campaign, v["A"], p, t) for p, t in zip(people, times, strict=True)]
        ids = [(m.contact_id or 0, m.id or 0) for m in messages]
    _record(engine, Event(ids[0][0], "purchase", night + timedelta(minutes=15), 2))
    _record(engine, Event(ids[0][0], "purchase", night + timedelta(minutes=20), 3))
    _record(engine, Event(ids[2][0], "purchase", night + timedelta(minutes=150), 4))
    with session_scope(engine, read_only=True) as session:
        utc = breakdowns.trend(session, cid, interval="hour")
        assert utc["interval"] == "hour"
        assert [
            (b["start"], b["sent"], b["conversions"], b["conversion_events"], b["revenue"]) for b in utc["buckets"]
        ] == [
            ("2026-11-01T04:00:00+00:00", 2, 1, 2, 5.0),
            ("2026-11-01T05:00:00+00:00", 1, 0, 0, 0.0),
            ("2026-11-01T06:00:00+00:00", 1, 1, 1, 4.0),
        ]
        local = breakdowns.trend(session, cid, interval="hour", tz="America/New_York")["buckets"]
        assert [(b["start"], b["sent"]) for b in local] == [
            ("2026-11-01T00:00:00-04:00", 2),
            ("2026-11-01T01:00:00-04:00", 1),
            ("2026-11-01T01:00:00-05:00", 1),  # the second 01:00, an hour later: a bucket of its own
        ]
        assert [b["conversion_events"] for b in local] == [2, 0, 1]
        assert breakdowns.trend(session, cid, interval="day", tz="America/New_York")["buckets"][0]["sent"] == 4
        with pytest.raises(BadParameter, match="interval must be one of hour, day, week, month; got 'fortnight'"):
            breakdowns.trend(session, cid, interval="fortnight")


# -- over HTTP: the routes, the export and the dashboard agree; unknown values are 400 ----------
def test_every_route_tells_the_same_numbers_and_refuses_unknown_values(live: LiveService) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    sent_at = now - timedelta(hours=3)
    with session_scope(live.engine) as session:
        campaign, variants = _campaign(session, "Over HTTP", variants=("A", "B"), provider="twilio")
        cid = campaign.id or 0
        people = _contacts(session, 5)
        msgs = {}
        for i, p in enumerate(people[:4]):
            msgs[p] = _sent(session, campaign, variants["A" if i % 2 == 0 else "B"], p, sent_at)
        _sent(session, campaign, variants["A"], people[4], sent_at, status=MessageStatus.FAILED, error_code="21610")
        a_ids = {msgs[people[0]].id or 0, msgs[people[2]].id or 0}
        touches = [Touch(p, sent_at, cid, m.id or 0) for p, m in msgs.items()]
        phones = {p: session.get(Contact, p).phone for p in people}  # type: ignore[union-attr]
    events = [
        Event(people[0], "purchase", now - timedelta(hours=2), 12),
        Event(people[0], "purchase", now - timedelta(hours=1), 8),
        Event(people[1], "purchase", now - timedelta(hours=1), 5),
        Event(people[1], "page_view", now - timedelta(hours=1)),
        Event(people[2], "signup", now - timedelta(hours=1)),
    ]
    for e in events:
        answer = live.post(
            "/api/events",
            {"phone": phones[e.contact], "name": e.name, "revenue": e.revenue, "occurred_at": e.at.isoformat()},
        )
        assert answer.status_code == 201, answer.text
    owners = _oracle(touches, events)
    contacts, n_events, revenue = _expected(owners, cid)
    assert (contacts, n_events, revenue) == (2, 3, 25.0)

    stats = live.stats(cid)
    assert (stats["conversions"], stats["conversion_events"], stats["revenue"]) == (contacts, n_events, revenue)
    assert stats["opt_outs"] == 1  # the carrier's 21610, through the twilio provider's codes
    funnel = live.get(f"/api/campaigns/{cid}/stats/funnel").json()
    assert (funnel["steps"][3]["contacts"], funnel["conversion_events"], funnel["revenue"]) == (
        contacts,
        n_events,
        revenue,
    )
    a = live.get(f"/api/campaigns/{cid}/stats/funnel", params={"variant": "A"}).json()
    assert a["variant"] == "A"
    assert (a["steps"][0]["contacts"], a["steps"][3]["contacts"], a["conversion_events"], a["revenue"]) == (
        2,  # people 0 and 2 (person 4's message was refused: not sent)
        *_expected(owners, cid, a_ids),
    )
    for interval in ("hour", "day", "week", "month"):
        trend = live.get(f"/api/campaigns/{cid}/stats/trend", params={"interval": interval, "tz": "Asia/Kolkata"})
        assert trend.status_code == 200, trend.text
        buckets = trend.json()["buckets"]
        assert sum(b["conversion_events"] for b in buckets) == n_events, interval
        assert round(sum(b["revenue"] for b in buckets), 6) == revenue, interval
        assert sum(b["sent"] for b in buckets) == stats["sent"] == 4, interval
    hourly = live.get(f"/api/campaigns/{cid}/stats/trend", params={"interval": "hour", "tz": "Asia/Kolkata"}).json()
    assert hourly["buckets"] and all(b["start"].endswith(":00:00+05:30") for b in hourly["buckets"])  # local hours

    rows = list(csv.DictReader(io.StringIO(live.get(f"/api/campaigns/{cid}/export.csv").text)))
    assert sum(int(r["conversions"]) for r in rows) == contacts
    assert sum(int(r["conversion_events"]) for r in rows) == n_events
    assert round(sum(float(r["revenue"]) for r in rows), 6) == revenue

    page = live.get(f"/campaigns/{cid}").text
    for stat, value in (("conversions", "2"), ("conversion_events", "3"), ("revenue", "25.00"), ("opt_outs", "1")):
        assert re.search(rf'data-stat="{stat}"[^>]*>{value}<', page), stat
    contact_page = live.get(f"/contacts/{people[1]}").text
    assert "1 of 2 events" in contact_page and "not a conversion of any campaign" in contact_page

    bad = [
        (f"/api/campaigns/{cid}/stats", {"bots": "bogus"}, "bots must be one of exclude, include"),
        (f"/api/campaigns/{cid}/stats/devices", {"bots": "all"}, "bots must be one of exclude, include"),
        (
            f"/api/campaigns/{cid}/stats/trend",
            {"interval": "fortnight"},
            "interval must be one of hour, day, week, month",
        ),
        (f"/api/campaigns/{cid}/stats/trend", {"tz": "Nowhere/City"}, "tz 'Nowhere/City' is not an IANA time zone"),
        (f"/api/campaigns/{cid}/stats/funnel", {"variant": "Z"}, "variant must be one of A, B; got 'Z'"),
        (f"/api/campaigns/{cid}/messages", {"status": "weird"}, "status must be one of queued, sending, sent"),
        (f"/api/campaigns/{cid}/messages", {"phase": "warmup"}, "phase must be one of all, test, remainder"),
        (f"/api/campaigns/{cid}/messages", {"variant": "Z"}, "variant must be one of A, B; got 'Z'"),
        (f"/api/campaigns/{cid}/clicks", {"bots": "maybe"}, "bots must be one of include, exclude, only"),
        (f"/api/campaigns/{cid}/replies", {"keywords": "some"}, "keywords must be one of include, exclude, only"),
        ("/api/campaigns", {"status": "sleeping"}, "status must be one of draft, scheduled, running"),
    ]
    for path, params, message in bad:
        response = live.get(path, params=params)
        assert response.status_code == 400, (path, params, response.text)
        assert message in response.json()["detail"], (path, response.json())
    # Known values (and an empty one: no filter) still answer.
    for path, params in [
        (f"/api/campaigns/{cid}/messages", {"status": "delivered", "phase": "all", "variant": "B"}),
        (f"/api/campaigns/{cid}/messages", {"status": ""}),
        (f"/api/campaigns/{cid}/clicks", {"bots": "only"}),
        (f"/api/campaigns/{cid}/replies", {"keywords": "exclude"}),
        (f"/api/campaigns/{cid}/stats", {"bots": "include"}),
        ("/api/campaigns", {"status": "completed"}),
    ]:
        assert live.get(path, params=params).status_code == 200, (path, params)
    assert len(live.get(f"/api/campaigns/{cid}/messages", params={"variant": "B"}).json()["items"]) == 2


# -- the real workflow stamps the control group ---------------------------------------------------
def test_a_campaign_with_a_control_group_touches_its_held_out_contacts(live: LiveService) -> None:
    phones = [f"+1202555{8100 + i:04d}" for i in range(4)]
    live.post("/api/contacts", [{"phone": p} for p in phones])

    def run(body: dict[str, Any]) -> int:
        cid = live.post("/api/campaigns", body).json()["id"]
        assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202, cid
        wait_for(lambda: live.get(f"/api/campaigns/{cid}").json()["status"] == "completed", what="completed")
        return int(cid)

    first = run({"name": "Everyone", "variants": [{"name": "A", "body": "Hi"}]})
    held = run({"name": "Half held out", "control_percent": 50, "variants": [{"name": "A", "body": "Hello"}]})
    with session_scope(live.engine, read_only=True) as session:
        rows = session.scalars(select(Message).where(col(Message.campaign_id) == held)).all()
        control = [m for m in rows if m.phase == Phase.CONTROL]
        sent = [m for m in rows if m.phase == Phase.ALL]
        assert len(control) == len(sent) == 2
        first_send = min(m.sent_at for m in sent if m.sent_at)
        assert all(m.touched_at == first_send and m.sent_at is None and m.attempted_at is None for m in control)
        held_out_phone = control[0].phone
        control_id = control[0].id
    answer = live.post("/api/events", {"phone": held_out_phone, "name": "purchase", "revenue": 9}).json()
    assert (answer["campaign_id"], answer["message_id"], answer["attribution"]) == (held, control_id, "control")
    sent_phone = sent[0].phone
    assert (
        live.post("/api/events", {"phone": sent_phone, "name": "purchase", "revenue": 4}).json()["campaign_id"] == held
    )
    stats = live.stats(held)
    assert (stats["recipients"], stats["conversions"], stats["conversion_events"], stats["revenue"]) == (2, 1, 1, 4.0)
    assert live.stats(first)["conversions"] == 0  # the held-out contact's purchase is not the earlier campaign's


# -- stored rows brought to the one meaning (migration 0004) ------------------------------------
def test_the_migration_stamps_control_rows_and_unattributes_other_events(empty_database_url: str) -> None:
    from core.migrate import upgrade

    upgrade(empty_database_url, "0003")
    engine = make_engine(empty_database_url)
    with session_scope(engine) as session:
        c, other, signer = _contacts(session, 3)
        campaign, v = _campaign(session, "Before issue 15", control_percent=50, before_0008=True)
        named, nv = _campaign(session, "Named", conversion={"event": "signup", "window_hours": 24}, before_0008=True)
        cid, nid = campaign.id or 0, named.id or 0
        control_id = _held_out(session, campaign, c, queued=T0, before_0006=True).id
        first = _sent(session, campaign, v["A"], other, T0 + timedelta(minutes=3), before_0006=True)
        _sent(session, campaign, v["A"], _contacts(session, 1)[0], T0 + timedelta(minutes=9), before_0006=True)
        signed = _sent(session, named, nv["A"], signer, T0, before_0006=True)
        # What the old attribution stored: any name counted for the last touch.
        for contact, camp, message, name in (
            (other, cid, first.id, "purchase"),
            (other, cid, first.id, "page_view"),
            (signer, nid, signed.id, "signup"),
            (signer, nid, signed.id, "purchase"),
        ):
            session.add(Conversion(contact_id=contact, campaign_id=camp, message_id=message, name=name, clicked=True))
    upgrade(empty_database_url)
    with session_scope(engine, read_only=True) as session:
        row = session.get(Message, control_id)
        # The campaign's first send, stamped by 0004 as attempted_at, moved to touched_at by 0006.
        assert row is not None and row.touched_at == T0 + timedelta(minutes=3) and row.attempted_at is None
        stored = session.scalars(select(Conversion)).all()
        kept = sorted((x.name, x.campaign_id or 0, x.message_id is not None, x.clicked) for x in stored)
        assert kept == [
            ("page_view", 0, False, False),
            ("purchase", 0, False, False),  # the sign-up campaign's purchase
            ("purchase", cid, True, True),
            ("signup", nid, True, True),
        ]
        assert summary.summary(session, cid)["conversion_events"] == 1
    engine.dispose()


# -- review of issue 15: control rows touched batch by batch; the export's `counted` -------------
def test_control_rows_are_touched_beside_each_batch(database_url: str) -> None:
    """Rows are made in contact order whatever their phase, so control rows sit between the others:
    each batch stamps those after the previous batch up to its own last row (the last batch: the
    rest too) with its send time; a test batch of an A/B campaign only its `test_percent` share (by
    a hash of the id), the remainder's batches the others."""
    engine = make_engine(database_url)
    hour = timedelta(hours=1)
    with session_scope(engine) as session:
        people = _contacts(session, 7)
        campaign, v = _campaign(session, "Rate limited", control_percent=40)
        order = ["control", "all", "all", "control", "all", "failed", "control"]
        rows = []
        for person, kind in zip(people, order, strict=True):
            if kind == "control":
                rows.append(_held_out(session, campaign, person, queued=T0))
            else:
                status = MessageStatus.FAILED if kind == "failed" else MessageStatus.DELIVERED
                at = T0 + (hour if len(rows) < 3 else 3 * hour)
                rows.append(
                    _sent(
                        session,
                        campaign,
                        v["A"],
                        person,
                        at,
                        status=status,
                        error_code="21211" if kind == "failed" else None,  # refused at send
                    )
                )
        cid = campaign.id or 0
        ids = [r.id or 0 for r in rows]
    # Batch 1 = rows 1–2 (sent at T0 + 1 h), batch 2 = rows 4–5 (T0 + 3 h; row 5 refused at send).
    assert stamp_control_touch(engine, cid, ids[1], ids[2]) == 1  # row 0
    assert stamp_control_touch(engine, cid, ids[1], ids[2]) == 0
    assert stamp_control_touch(engine, cid, ids[4], ids[5]) == 2  # row 3, and row 6 after the last batch
    with session_scope(engine, read_only=True) as session:
        touched = {
            m.id: (m.touched_at, m.attempted_at)
            for m in session.scalars(select(Message).where(col(Message.campaign_id) == cid))
        }
    assert [touched[ids[i]] for i in (0, 3, 6)] == [(T0 + hour, None), (T0 + 3 * hour, None), (T0 + 3 * hour, None)]
    assert all(touched[ids[i]][0] is None for i in (1, 2, 4, 5))  # only control rows carry a touch

    # An A/B campaign: the test's batch takes the test share of the control rows beside it.
    with session_scope(engine) as session:
        people = _contacts(session, 12)
        ab, av = _campaign(session, "A/B", control_percent=50)
        ab.ab_test = {"test_percent": 50, "wait_seconds": 60, "metric": "ctr", "min_sample": 1, "fallback": "hold"}
        session.add(ab)
        control = [_held_out(session, ab, p, queued=T0) for p in people[:8]]
        test = _sent(session, ab, av["A"], people[8], T0, phase=Phase.TEST)
        _sent(session, ab, av["A"], people[9], T0, phase=Phase.TEST)
        rest = _sent(session, ab, av["A"], people[10], T0 + 2 * hour, phase=Phase.REMAINDER)
        _sent(session, ab, av["A"], people[11], T0 + 2 * hour, phase=Phase.REMAINDER)
        abid, test_id, rest_id = ab.id or 0, test.id or 0, rest.id or 0
        control_ids = [m.id or 0 for m in control]
    share = [i for i in control_ids if (i * KNUTH) % 4294967296 % 1000 < 500]
    assert 0 < len(share) < len(control_ids)  # the share splits even these few consecutive ids
    assert stamp_control_touch(engine, abid, test_id, test_id + 1) == len(share)
    assert stamp_control_touch(engine, abid, rest_id, rest_id + 1) == len(control_ids) - len(share)
    with session_scope(engine, read_only=True) as session:
        for message in session.scalars(select(Message).where(col(Message.id).in_(control_ids))):
            assert message.touched_at == (T0 if message.id in share else T0 + 2 * hour)


def test_the_export_says_which_rows_count(database_url: str) -> None:
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        first, retried, held = _contacts(session, 3)
        campaign, v = _campaign(session, "Export", control_percent=30)
        plain = _sent(session, campaign, v["A"], first, T0)
        failed = _sent(session, campaign, v["A"], retried, T0, status=MessageStatus.FAILED)
        retry = _sent(session, campaign, v["A"], retried, T0 + timedelta(hours=1), phase=Phase.TEST)
        retry.phase = Phase.RETRY  # (a key of its own: the helper makes no retry-round keys)
        session.add(retry)
        session.flush()
        control = _held_out(session, campaign, held, queued=T0)
        test_send = _sent(session, campaign, v["A"], first, T0, phase=Phase.TEST_SEND)
        cid = campaign.id or 0
        want = {plain.id: "1", failed.id: "0", retry.id: "1", control.id: "0", test_send.id: "0"}
    rows = _export(engine, cid)
    assert {int(r["message_id"]): r["counted"] for r in rows} == want


def test_matured_evidence_counts_only_outcomes_whose_window_has_elapsed(database_url: str) -> None:
    """core.stats.evidence.matured_arms, what the A/B decision looks at: a test message counts once
    H has passed since its delivery (else send), with a human click only if it came within H."""
    engine = make_engine(database_url)
    h = timedelta(minutes=30)
    now = T0 + 2 * h
    with session_scope(engine) as session:
        people = _contacts(session, 7)
        campaign, v = _campaign(session, "Matured", variants=("A", "B"))
        campaign.ab_test = {"test_percent": 100, "metric": "ctr"}
        session.add(campaign)
        # A: delivered 5 s after send. Matured: sent at T0 (click within H), at T0 (click after H),
        # at T0 + 10 min (no click); not matured: sent at T0 + 80 min (clicked at once).
        a1 = _sent(session, campaign, v["A"], people[0], T0, phase=Phase.TEST)
        a2 = _sent(session, campaign, v["A"], people[1], T0, phase=Phase.TEST)
        _sent(session, campaign, v["A"], people[2], T0 + timedelta(minutes=10), phase=Phase.TEST)
        a4 = _sent(session, campaign, v["A"], people[3], T0 + timedelta(minutes=80), phase=Phase.TEST)
        _click(session, a1, T0 + timedelta(minutes=29))
        _click(session, a2, T0 + timedelta(minutes=31))
        _click(session, a4, T0 + timedelta(minutes=81))
        # B: a bot click does not count; a message that failed is no delivered unit (a sent one:
        # the provider accepted it); one click within H.
        b1 = _sent(session, campaign, v["B"], people[4], T0, phase=Phase.TEST)
        b2 = _sent(session, campaign, v["B"], people[5], T0, phase=Phase.TEST)
        _sent(
            session, campaign, v["B"], people[6], T0, phase=Phase.TEST, status=MessageStatus.FAILED, error_code="30003"
        )
        _click(session, b1, T0 + timedelta(minutes=1), bot=True)
        _click(session, b2, T0 + timedelta(minutes=2))
        cid = campaign.id or 0
    with session_scope(engine, read_only=True) as session:
        arms = {a.variant: a for a in evidence.matured_arms(session, cid, horizon_seconds=h.total_seconds(), now=now)}
        by_send = {
            a.variant: a
            for a in evidence.matured_arms(
                session, cid, horizon_seconds=h.total_seconds(), now=now, reports_delivery=False
            )
        }
        # Earlier, nothing has matured yet.
        early = evidence.matured_arms(session, cid, horizon_seconds=h.total_seconds(), now=T0 + timedelta(minutes=20))
    assert (arms["A"].basis, arms["A"].unique_clicks) == (3, 1)
    assert (arms["B"].basis, arms["B"].unique_clicks) == (2, 1)
    assert (by_send["A"].basis, by_send["A"].unique_clicks) == (3, 1)
    assert (by_send["B"].basis, by_send["B"].unique_clicks) == (3, 1)  # accepted, then failed: sent
    assert [a.basis for a in early] == [0, 0]
