"""A campaign's kept tallies (migration 0013's triggers) equal a full recount, whatever the writes.

Two campaigns of a few hundred messages each (with test sends and held-out controls, which never
count) go through a randomised mix of the real write paths: claims and provider answers
(core/delivery/sending.py), status callbacks shuffled, duplicated and out of order (`sent` after
`delivered`), some before their provider id is known (applied when the send records it), retry
rows of failed contacts (superseding their earlier messages), clicks of people and bots on every
attempt and on test sends, re-scoring that flips verdicts both ways, replies (keywords, STOP and
its synonyms, plain text) and conversions through their real paths, conversions of held-out
controls, of test sends and of no message, replies and conversions edited, moved and deleted, and
a cancel. After each step the tally of each campaign is its recount, and `summary()` shows it.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import timedelta

import pytest
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Engine

from core.campaigns.idempotency import idempotency_key
from core.db import make_engine, session_scope
from core.delivery.replies import OPT_OUT_KEYWORDS, ReplyTexts, handle_inbound
from core.delivery.sending import BatchOutcome, _mark_sending, cancel_pending, record_results
from core.delivery.status import Callback, ingest_callbacks
from core.hooks.contracts import ClickToJudge, InboundMessage, SendResult, StatusUpdate
from core.migrate import downgrade, upgrade
from core.models import Campaign, Click, Contact, Conversion, Link, Message, Reply, Variant, utcnow
from core.stats.breakdowns import (
    click_timing,
    counted_click_timing,
    counted_devices,
    counted_funnel,
    counted_links,
    counted_trend,
    devices,
    funnel,
    links,
    trend,
)
from core.stats.conversions import record_conversion
from core.stats.evidence import (
    arms,
    arms_overall_and_itt,
    counted_arms,
    counted_intention_to_treat,
    counted_overall,
    intention_to_treat,
    overall,
)
from core.stats.summary import counted_errors, errors, summary
from core.stats.tallies import TIMING_BUCKETS, Tally, recount, repair, tally
from core.statuses import CampaignStatus, MessageStatus, Phase
from core.tracking.click_store import store_clicks, update_verdicts
from core.tracking.clicks import ClickRecord
from core.tracking.codes import CodeTarget
from core.tracking.rescore import rescore_campaign

CONTACTS = 150  # per campaign
# The trend by every interval, in zones a whole, a half and three quarters of an hour off UTC (one
# with summer time).
TRENDS = [("hour", "UTC"), ("day", "America/New_York"), ("week", "Asia/Kathmandu"), ("month", "Australia/Adelaide")]
AGENTS = [  # an iPhone, an Android phone, a desktop, an agent that names no system
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
    "Mozilla/5.0",
]


@dataclass
class World:
    engine: Engine
    rng: random.Random
    campaigns: list[int] = field(default_factory=list)
    links: dict[int, int] = field(default_factory=dict)  # campaign → its link
    second_links: dict[int, int] = field(default_factory=dict)  # campaign → its second link
    rounds: int = 0
    clicks: list[ClickRecord] = field(default_factory=list)


def _build(engine: Engine, rng: random.Random, campaigns: int = 2) -> World:
    world = World(engine, rng)
    with session_scope(engine) as session:
        session.execute(insert(Contact), [{"phone": f"+1202555{i:04d}", "attributes": {}} for i in range(CONTACTS * 2)])
        contacts = list(session.scalars(select(Contact.id).order_by(Contact.id)))
        for number in range(campaigns):
            campaign = Campaign(name=f"tally {number}", provider="fake", status=CampaignStatus.RUNNING)
            session.add(campaign)
            session.flush()
            cid = campaign.id or 0
            variant = Variant(campaign_id=cid, name="A", body="Hi https://shop.example")
            other = Variant(campaign_id=cid, name="B", body="Hello https://shop.example")
            session.add_all([variant, other])
            session.flush()
            link = Link(campaign_id=cid, variant_id=variant.id or 0, position=0, destination="https://shop.example")
            session.add(link)
            session.flush()
            second = Link(campaign_id=cid, variant_id=variant.id or 0, position=1, destination="https://shop.example/b")
            session.add(second)
            session.flush()
            world.campaigns.append(cid)
            world.links[cid] = link.id or 0
            world.second_links[cid] = second.id or 0
            rows = []
            audience = rng.sample(contacts, CONTACTS)
            for i, contact_id in enumerate(audience):
                phase = [Phase.ALL, Phase.TEST, Phase.REMAINDER, Phase.CONTROL][i % 4 if i < 40 else 0]
                rows.append(_row(cid, (variant if i % 3 else other).id or 0, contact_id, phase))
            for i in range(12):  # test sends: to contacts, and to phones that are no contact
                rows.append(_row(cid, variant.id or 0, audience[i] if i % 2 else None, Phase.TEST_SEND, key=f"ts{i}"))
            session.execute(insert(Message), rows)
            campaign.recipients = CONTACTS - 10
    return world


def _row(
    cid: int, variant_id: int, contact_id: int | None, phase: str, *, key: str = "", round_: int | None = None
) -> dict:
    return {
        "campaign_id": cid,
        "contact_id": contact_id,
        "variant_id": variant_id,
        "phase": phase,
        "phone": f"+1{(contact_id or 0):010d}",
        "body": "Hi",
        "provider": "fake",
        "idempotency_key": f"{cid}-{key}" if key else idempotency_key(cid, phase, contact_id or 0, retry_round=round_),
    }


def _messages(world: World, *where: object) -> list[Message]:
    with session_scope(world.engine, read_only=True) as session:
        return list(
            session.scalars(
                select(Message).where(Message.campaign_id.in_(world.campaigns), *where).order_by(Message.id)  # type: ignore[attr-defined]
            )
        )


def _check(world: World, step: str) -> None:
    with session_scope(world.engine, read_only=True) as session:
        for cid in world.campaigns:
            kept, counted = tally(session, cid), recount(session, cid)
            assert kept == counted, f"{step}: campaign {cid}"
            numbers = summary(session, cid)
            assert (numbers["sent"], numbers["attempts"], numbers["clicks"]["unique"]) == (
                counted.sent,
                counted.attempts,
                counted.human_unique,
            )
            assert (numbers["replies"], numbers["opt_outs"], numbers["conversions"]) == (
                counted.replies,
                counted.stoppers,
                counted.converters,
            )
            assert numbers["revenue"] == pytest.approx(counted.revenue_micros / 1e6, abs=1e-9)
            kept_funnel, rows_funnel = funnel(session, cid), counted_funnel(session, cid)
            assert kept_funnel["revenue"] == pytest.approx(rows_funnel.pop("revenue"), abs=1e-6)
            kept_funnel.pop("revenue")
            assert errors(session, cid) == counted_errors(session, cid), f"{step}: the errors of campaign {cid}"
            assert kept_funnel == rows_funnel, f"{step}: the funnel of campaign {cid}"
            assert links(session, cid) == counted_links(session, cid), f"{step}: the links of campaign {cid}"
            for bots in (False, True):
                assert devices(session, cid, include_bots=bots) == counted_devices(session, cid, include_bots=bots), (
                    f"{step}: the devices of campaign {cid}"
                )
            for phase in (None, "test", "remainder"):
                kept_arms, rows_arms = arms(session, cid, phase=phase), counted_arms(session, cid, phase=phase)
                kept_arms.append(overall(session, cid, phase=phase))
                rows_arms.append(counted_overall(session, cid, phase=phase))
                for kept, rows in zip(kept_arms, rows_arms, strict=True):
                    assert replace(kept, revenue=0.0, revenue_sq=0.0) == replace(rows, revenue=0.0, revenue_sq=0.0), (
                        f"{step}: arm {rows.variant} of campaign {cid} in phase {phase}"
                    )
                    assert (kept.revenue, kept.revenue_sq) == pytest.approx((rows.revenue, rows.revenue_sq), rel=1e-9)
                kept_itt = intention_to_treat(session, cid, phase=phase)
                rows_itt = counted_intention_to_treat(session, cid, phase=phase)
                assert list(kept_itt) == list(rows_itt), f"{step}: the intention-to-treat arms of {cid}"
                assert arms_overall_and_itt(session, cid, phase=phase)[2] == kept_itt  # /stats/variants' read
                for name, rows in rows_itt.items():
                    kept = kept_itt[name]
                    assert replace(kept, revenue=0.0, revenue_sq=0.0) == replace(rows, revenue=0.0, revenue_sq=0.0), (
                        f"{step}: intention to treat, arm {name} of campaign {cid} in phase {phase}"
                    )
                    assert (kept.revenue, kept.revenue_sq) == pytest.approx((rows.revenue, rows.revenue_sq), rel=1e-9)
            for name in ("A", "B"):
                kept_funnel, rows_funnel = funnel(session, cid, variant=name), counted_funnel(session, cid, name)
                assert kept_funnel.pop("revenue") == pytest.approx(rows_funnel.pop("revenue"), abs=1e-6)
                assert kept_funnel == rows_funnel, f"{step}: the funnel of variant {name} of campaign {cid}"
            for interval, zone in TRENDS:
                assert trend(session, cid, interval=interval, tz=zone) == counted_trend(
                    session, cid, interval=interval, tz=zone
                ), f"{step}: the trend of campaign {cid} by {interval} in {zone}"
            for delivery in (True, False):
                assert click_timing(session, cid, reports_delivery=delivery) == counted_click_timing(
                    session, cid, reports_delivery=delivery
                ), f"{step}: the click timing of campaign {cid}"


def _respond(world: World) -> None:
    """Replies and conversions through their real paths, rows no count may take (a held-out
    control's conversion, a test send's, one with no message), and some edited, moved, deleted."""
    rng = world.rng
    sent = [m for m in _messages(world, Message.sent_at.is_not(None)) if m.contact_id is not None]  # type: ignore[union-attr]
    with session_scope(world.engine, read_only=True) as session:
        phones = {row[0]: row[1] for row in session.execute(select(Contact.id, Contact.phone))}
    for message in rng.sample(sent, min(60, len(sent))):
        body = rng.choice(["Thanks!", "STOP", "stop", "HELP", "what is this?", "UNSUBSCRIBE", "START", "Quit"])
        handle_inbound(
            world.engine, "fake", InboundMessage(phones[message.contact_id], "+15550000", body), ReplyTexts()
        )
    for message in rng.sample(sent, min(40, len(sent))):
        revenue = rng.choice([0, 9.99, 19.95, 0.1, 1234.5678])
        record_conversion(world.engine, {"contact_id": message.contact_id, "name": "purchase", "revenue": revenue})
    controls = _messages(world, Message.phase == Phase.CONTROL)
    test_sends = [m for m in _messages(world, Message.phase == Phase.TEST_SEND) if m.contact_id is not None]
    with session_scope(world.engine) as session:
        for message in (controls[0], test_sends[0], sent[0]):
            session.add(
                Conversion(
                    contact_id=message.contact_id or 0,
                    campaign_id=message.campaign_id,
                    message_id=None if message is sent[0] else message.id,
                    name="purchase",
                    revenue=5.5,
                )
            )
    _check(world, "replies and conversions")
    with session_scope(world.engine) as session:
        replies = list(session.scalars(select(Reply).where(Reply.campaign_id.is_not(None)).order_by(Reply.id)))  # type: ignore[union-attr]
        conversions = list(
            session.scalars(select(Conversion).where(Conversion.message_id.is_not(None)).order_by(Conversion.id))  # type: ignore[union-attr]
        )
        other = {world.campaigns[0]: world.campaigns[1], world.campaigns[1]: world.campaigns[0]}
        replies[0].keyword = "STOP" if replies[0].keyword is None else None
        replies[1].campaign_id = other[replies[1].campaign_id or 0]
        session.delete(replies[2])
        conversions[0].revenue += 1.25
        conversions[1].campaign_id = other[conversions[1].campaign_id or 0]
        session.delete(conversions[2])


def _touches_and_windows(world: World) -> None:
    """What the intention-to-treat numbers depend on, moved: held-out rows touched (before and
    after their contacts' events), events inside, before and after each window and of another
    name, an event's time and contact moved, a campaign's conversion event and window changed and
    changed back, an unsent message's snapshot time moved."""
    rng = world.rng
    now = utcnow()
    controls = _messages(world, Message.phase == Phase.CONTROL)
    treated = [m for m in _messages(world, Message.phase.in_([Phase.ALL, Phase.TEST, Phase.REMAINDER]))]  # type: ignore[attr-defined]
    with session_scope(world.engine) as session:
        for i, message in enumerate(controls):
            offset = [timedelta(hours=-2), timedelta(hours=1), timedelta(days=-4)][i % 3]
            session.add(
                Conversion(contact_id=message.contact_id or 0, name="purchase", revenue=3.0, occurred_at=now + offset)
            )
        for message in rng.sample(treated, 30):
            offset = rng.choice([timedelta(hours=-1), timedelta(hours=2), timedelta(hours=80), timedelta(seconds=0)])
            name = rng.choice(["purchase", "purchase", "signup"])
            session.add(
                Conversion(
                    contact_id=message.contact_id or 0,
                    name=name,
                    revenue=rng.choice([0, 2.5]),
                    occurred_at=now + offset,
                )
            )
    _check(world, "events around the windows")
    with session_scope(world.engine) as session:
        for i, message in enumerate(controls):  # their batches went out: stamped, some before their event
            if i % 2 == 0:
                touched = now + [timedelta(hours=-3), timedelta(hours=2), timedelta(0)][i % 3]
                session.execute(update(Message).where(Message.id == message.id).values(touched_at=touched))  # type: ignore[arg-type]
        unsent = [m for m in treated if m.sent_at is None and m.attempted_at is None][:3]
        for message in unsent:
            session.execute(
                update(Message).where(Message.id == message.id).values(queued_at=now - timedelta(hours=90))  # type: ignore[arg-type]
            )
    _check(world, "held-out rows touched")
    with session_scope(world.engine) as session:
        conversions = list(session.scalars(select(Conversion).order_by(Conversion.id)))
        conversions[-1].occurred_at = conversions[-1].occurred_at - timedelta(hours=5)
        conversions[-2].contact_id = controls[1].contact_id or 0
        conversions[-3].name = "purchase" if conversions[-3].name != "purchase" else "signup"
        session.delete(conversions[-4])
    _check(world, "events moved")
    converted = [
        m for m in treated if m.contact_id in {c.contact_id for c in conversions[:-4]} and m.phase == Phase.ALL
    ]
    with session_scope(world.engine) as session:  # a later message of a contact who converted since
        message = converted[0]
        session.execute(
            insert(Message),
            [_row(message.campaign_id, message.variant_id or 0, message.contact_id, Phase.RETRY, round_=9)],
        )
        session.execute(update(Message).where(Message.id == controls[-1].id).values(phase=Phase.ALL))  # type: ignore[arg-type]
    _check(world, "a retry row, a held-out row moved out")
    with session_scope(world.engine) as session:  # a contact new to a campaign, with an event ahead
        cid = world.campaigns[1]
        taken = set(session.scalars(select(Message.contact_id).where(Message.campaign_id == cid)))
        newcomer = next(i for i in session.scalars(select(Contact.id).order_by(Contact.id)) if i not in taken)
        variant_id = session.scalar(select(Variant.id).where(Variant.campaign_id == cid, Variant.name == "A"))
        session.add(Conversion(contact_id=newcomer, name="purchase", revenue=7.0, occurred_at=now + timedelta(hours=1)))
        session.flush()
        session.execute(insert(Message), [_row(cid, variant_id or 0, newcomer, Phase.ALL)])
    _check(world, "a newcomer's message")
    with session_scope(world.engine) as session:
        session.execute(update(Message).where(Message.id == controls[-1].id).values(phase=Phase.CONTROL))  # type: ignore[arg-type]
    _check(world, "the held-out row moved back")
    with session_scope(world.engine) as session:
        campaign = session.get(Campaign, world.campaigns[1])
        assert campaign is not None
        campaign.conversion = {"event": "signup", "window_hours": 1.5}
    _check(world, "another conversion event and window")
    with session_scope(world.engine) as session:
        campaign = session.get(Campaign, world.campaigns[1])
        assert campaign is not None
        campaign.conversion = None
    _check(world, "the default conversion event again")


def _send(world: World, phase_filter: tuple[str, ...]) -> list[Message]:
    """Claim most queued messages of these phases and answer most claims: accepted, refused or
    transient; a few claims stay unanswered (`sending`). Returns those accepted."""
    rng = world.rng
    queued = [m for m in _messages(world, Message.status == MessageStatus.QUEUED) if m.phase in phase_filter]  # type: ignore[arg-type]
    rng.shuffle(queued)
    accepted = []
    for cid in world.campaigns:
        mine = [m for m in queued if m.campaign_id == cid]
        for start in range(0, len(mine), 37):
            part = mine[start : start + 37]
            claim = _mark_sending(world.engine, part, cid)
            results = []
            for message in part:
                if message.id not in claim.sending or rng.random() < 0.05:
                    continue  # left `sending`: the outcome is unknown
                draw = rng.random()
                if draw < 0.75:
                    results.append(SendResult(message.id or 0, True, f"p{message.id}"))
                    accepted.append(message)
                elif draw < 0.9:
                    results.append(SendResult(message.id or 0, False, None, "30006", "Landline"))
                else:
                    results.append(SendResult(message.id or 0, False, None, "503", "busy", transient=True))
            rng.shuffle(results)
            record_results(world.engine, "fake", results, BatchOutcome())
    return accepted


def _callbacks(world: World, messages: list[Message], *, early: list[Message] = ()) -> None:  # type: ignore[assignment]
    """Shuffled, duplicated, out-of-order callbacks in batches; `early` ones for ids not recorded yet."""
    rng = world.rng
    updates = []
    for message in [*messages, *early]:
        final = rng.choice(["delivered", "delivered", "delivered", "undelivered", "failed", "sent"])
        updates.append(StatusUpdate(f"p{message.id}", "sent"))
        updates.append(StatusUpdate(f"p{message.id}", final, "30003" if final in ("failed", "undelivered") else None))
        if rng.random() < 0.3:
            updates.append(StatusUpdate(f"p{message.id}", rng.choice(["sent", final, "delivered"])))
    rng.shuffle(updates)
    for start in range(0, len(updates), 50):
        batch = updates[start : start + 50]
        callbacks = [Callback("fake", batch[i : i + 3], {"body": "x"}) for i in range(0, len(batch), 3)]
        ingest_callbacks(world.engine, callbacks)


def _retry(world: World) -> None:
    """A retry row for most contacts whose latest counted message failed (what snapshot_retry adds)."""
    world.rounds += 1
    latest: dict[tuple[int, int], Message] = {}
    for message in _messages(world, Message.phase.notin_([Phase.TEST_SEND, Phase.CONTROL])):  # type: ignore[attr-defined]
        if message.contact_id is not None:
            latest[(message.campaign_id, message.contact_id)] = message
    failed = [m for m in latest.values() if m.status in (MessageStatus.FAILED, MessageStatus.UNDELIVERED)]
    chosen = [m for m in failed if world.rng.random() < 0.8]
    with session_scope(world.engine) as session:
        for message in chosen:
            session.add(
                Message(
                    **_row(
                        message.campaign_id,
                        message.variant_id or 0,
                        message.contact_id,
                        Phase.RETRY,
                        round_=world.rounds,
                    )
                )
            )


def _click(world: World, count: int) -> None:
    """Clicks on any sent message (earlier attempts and test sends too), people's and bots', some
    repeated (the same click twice), stored in batches as the click writer does."""
    rng = world.rng
    sent = _messages(world, Message.sent_at.is_not(None))  # type: ignore[union-attr]
    records = []
    for _ in range(count):
        message = rng.choice(sent)
        link = world.links[message.campaign_id] if rng.random() < 0.7 else world.second_links[message.campaign_id]
        target = CodeTarget(
            f"c{message.id}", "https://shop.example", message.id or 0, link, message.contact_id, message.campaign_id
        )
        bot = rng.random() < 0.3
        # Before the send, and after it in every click-timing bucket, some on a bucket's bound exactly.
        start = (message.delivered_at or message.sent_at) if rng.random() < 0.2 else utcnow()
        later = rng.choice([-7200, -3600, -600, -60, 0, 30, 60, 200, 300, 1000, 5000, 30000, 86400, 90000])
        jitter = (
            timedelta(0)
            if rng.random() < 0.3
            else timedelta(seconds=rng.randint(0, 59), microseconds=rng.randint(0, 999999))
        )
        record = ClickRecord(
            target,
            (start or utcnow()) + timedelta(seconds=later) + jitter,
            f"10.0.{rng.randint(0, 3)}.{rng.randint(0, 20)}",
            rng.choice(AGENTS),
            None,
            reasons=("known_bot",) if bot else (),
        )
        records.append(record)
        if rng.random() < 0.1:
            records.append(record)
    for start in range(0, len(records), 64):
        store_clicks(world.engine, records[start : start + 64], judged=True)
    world.clicks.extend(records)


class _Network:
    """A bot filter that calls the clicks of some networks a machine's."""

    name = "network"

    def __init__(self, networks: set[str]) -> None:
        self.networks = networks

    def judge(self, click: ClickToJudge) -> tuple[float, str | None]:
        bot = (click.ip or "").rsplit(".", 1)[0] in self.networks
        return (1.0, "network") if bot else (0.0, None)


def _rescore(world: World) -> None:
    networks = {f"10.0.{i}" for i in range(4) if world.rng.random() < 0.5}
    for cid in world.campaigns:
        rescore_campaign(world.engine, cid, [_Network(networks)])
    # And the click writer's way: verdicts rewritten over stored clicks, found by (message, code, time).
    flipped = world.rng.sample(world.clicks, min(40, len(world.clicks)))
    for record in flipped:
        record.reasons = () if record.reasons else ("burst",)
    update_verdicts(world.engine, flipped)


def _mix(world: World) -> None:
    _check(world, "built")
    accepted = _send(world, (Phase.ALL, Phase.TEST, Phase.TEST_SEND))
    _check(world, "sent")
    early = [m for m in _messages(world, Message.status == MessageStatus.QUEUED) if m.phase == Phase.ALL][:10]
    _callbacks(world, accepted, early=early)  # `early`: stored unapplied, applied when their ids are recorded
    _check(world, "callbacks")
    accepted += _send(world, (Phase.ALL, Phase.REMAINDER))
    _callbacks(world, world.rng.sample(accepted, len(accepted) // 2))  # duplicates of whole callbacks
    _check(world, "second send and repeated callbacks")
    _click(world, 300)
    _check(world, "clicks")
    _respond(world)
    _check(world, "replies and conversions edited")
    _touches_and_windows(world)
    for _ in range(2):
        _retry(world)
        _check(world, f"retry round {world.rounds}")
        retried = _send(world, (Phase.RETRY,))
        _callbacks(world, retried)
        _click(world, 100)
        _check(world, f"retry round {world.rounds} sent")
    _rescore(world)
    _check(world, "rescored")
    _rescore(world)
    _click(world, 50)
    _check(world, "rescored again")
    with session_scope(world.engine) as session:  # a reset of a message (say, by hand): moves out and in
        session.execute(
            update(Message).where(Message.id == accepted[0].id).values(status=MessageStatus.QUEUED, sent_at=None)
        )  # type: ignore[arg-type]
        session.execute(update(Click).where(Click.message_id == accepted[1].id).values(is_bot=True))  # type: ignore[arg-type]
        # Over the frequency cap (listed among the errors), and a failure's text long and then changed.
        session.execute(
            update(Message)
            .where(Message.id == accepted[2].id)  # type: ignore[arg-type]
            .values(status=MessageStatus.CANCELLED, error_code="frequency_cap", error_text="over the cap")
        )
        session.execute(
            update(Message)
            .where(Message.id == accepted[3].id)  # type: ignore[arg-type]
            .values(status=MessageStatus.FAILED, error_code="30007", error_text="Filtered " * 100)
        )
    _check(world, "rows rewritten")
    with session_scope(world.engine) as session:
        session.execute(update(Message).where(Message.id == accepted[3].id).values(error_text="Carrier filter"))  # type: ignore[arg-type]
    _check(world, "an error's text changed")
    for cid in world.campaigns:
        cancel_pending(world.engine, cid)
    _check(world, "cancelled")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tallies_equal_a_recount_after_a_random_mix_of_writes(database_url: str, seed: int) -> None:
    engine = make_engine(database_url)
    try:
        world = _build(engine, random.Random(seed))
        _mix(world)
        with session_scope(engine, read_only=True) as session:
            last = recount(session, world.campaigns[0])
        assert last.attempts > last.sent > last.delivered > 0 and last.bots_total > 0 and last.human_unique > 0
        assert last.recipients == CONTACTS - 10  # each contact once (the controls never count)
        assert last.replies > 0 and last.stoppers > 0 and last.converters > 0 and last.revenue_micros > 0
        assert last.converters > last.direct_converters > 0 and last.unclicked_events > 0
        with session_scope(engine, read_only=True) as session:
            listed = {row["code"] for row in errors(session, world.campaigns[0])["errors"]}
        assert "30006" in listed
    finally:
        engine.dispose()


def test_the_migration_backfills_the_tallies_and_repair_rewrites_them(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        world = _build(engine, random.Random(7))
        _mix(world)
        with session_scope(engine, read_only=True) as session:
            before = {cid: recount(session, cid) for cid in world.campaigns}
    finally:
        engine.dispose()
    downgrade(database_url, "0012")
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with session_scope(engine, read_only=True) as session:
            assert {cid: tally(session, cid) for cid in world.campaigns} == before
        cid = world.campaigns[0]
        with engine.begin() as conn:  # a tally gone wrong is put right
            conn.exec_driver_sql(f"UPDATE campaign_tally SET sent = 0, clickers_human = 0 WHERE campaign_id = {cid}")
            conn.exec_driver_sql(f"DELETE FROM campaign_clicker WHERE campaign_id = {cid}")
            conn.exec_driver_sql(f"DELETE FROM campaign_error WHERE campaign_id = {cid}")
            conn.exec_driver_sql(
                f"UPDATE campaign_click_key SET human_clicks = 0, any_contacts = 0 WHERE campaign_id = {cid}"
            )
            conn.exec_driver_sql(f"DELETE FROM campaign_click_timing WHERE campaign_id = {cid}")
            conn.exec_driver_sql(f"UPDATE campaign_slot SET clicks = 0 WHERE campaign_id = {cid}")
            conn.exec_driver_sql(f"DELETE FROM campaign_slot_first WHERE campaign_id = {cid}")
            conn.exec_driver_sql(f"UPDATE campaign_variant_tally SET clickers = 0, sent = 1 WHERE campaign_id = {cid}")
            conn.exec_driver_sql(f"DELETE FROM campaign_variant_event_contact WHERE campaign_id = {cid}")
            conn.exec_driver_sql(
                f"UPDATE campaign_itt_tally SET converters = 0, recipients = 1 WHERE campaign_id = {cid}"
            )
        with session_scope(engine) as session:
            kept, fresh = repair(session, cid)
        assert kept != fresh and fresh == before[cid]
        with session_scope(engine, read_only=True) as session:
            assert tally(session, cid) == before[cid]
        world.engine = engine
        _click(world, 40)  # and it stays right as writes go on
        _check(world, "after repair")
    finally:
        engine.dispose()


def test_a_campaign_without_messages_reads_zeros(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with session_scope(engine) as session:
            campaign = Campaign(name="empty", provider="fake")
            session.add(campaign)
            session.flush()
            assert tally(session, campaign.id or 0) == Tally() == recount(session, campaign.id or 0)
    finally:
        engine.dispose()


def test_concurrent_writers_of_one_campaign_keep_the_tallies_exact(database_url: str) -> None:
    """Callbacks and clicks of the same campaigns written from several threads at once (on
    PostgreSQL, concurrent transactions adding to the same tally rows)."""
    engine = make_engine(database_url)
    try:
        world = _build(engine, random.Random(11))
        accepted = _send(world, (Phase.ALL, Phase.TEST, Phase.REMAINDER))
        updates = [StatusUpdate(f"p{m.id}", s) for m in accepted for s in ("sent", "delivered", "failed", "sent")]
        world.rng.shuffle(updates)
        batches = [updates[i : i + 40] for i in range(0, len(updates), 40)]
        _click(world, 10)  # the clicks' targets need sent messages
        sent = _messages(world, Message.sent_at.is_not(None))  # type: ignore[union-attr]

        def clicks(seed: int) -> None:
            rng = random.Random(seed)
            records = []
            for _ in range(60):
                m = rng.choice(sent)
                target = CodeTarget(f"c{m.id}", "x", m.id or 0, world.links[m.campaign_id], m.contact_id, m.campaign_id)
                reasons = ("x",) if seed % 2 else ()
                records.append(ClickRecord(target, utcnow(), "10.0.0.1", "ua", None, reasons=reasons))
            store_clicks(engine, records, judged=True)

        with ThreadPoolExecutor(max_workers=6) as pool:
            jobs = [pool.submit(ingest_callbacks, engine, [Callback("fake", batch, {})]) for batch in batches]
            jobs += [pool.submit(clicks, seed) for seed in range(20)]
            for job in jobs:
                job.result()
        _check(world, "concurrent writers")
    finally:
        engine.dispose()


def test_a_status_batch_and_a_click_batch_over_two_campaigns_do_not_deadlock(
    postgres_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A status batch moves its messages in one UPDATE, whose statement triggers then take the tally
    rows in whatever order they group them; a click batch's COPY takes them in campaign id order.
    With B's message older than A's (A an older campaign launched later) the two could each hold
    one tally row and want the other's, were the status batch not to take both first, in campaign
    id order, before it moves anything: paused there, it makes the click batch wait (on a tally
    row), and both then finish."""
    database_url = postgres_database_url
    import threading

    from sqlalchemy import text

    import core.delivery.status as status_module

    engine = make_engine(database_url)
    try:
        world = _build(engine, random.Random(5))
        a, b = sorted(world.campaigns)
        with session_scope(engine) as session:
            variant_a = session.scalar(select(Variant.id).where(Variant.campaign_id == a))
            contact = Contact(phone="+12025559999", attributes={})
            session.add(contact)
            session.flush()
            # A's latest message, made after all of B's (A launched later).
            session.add(Message(**_row(a, variant_a or 0, contact.id, Phase.ALL, key="late")))
            session.flush()
            m_b = session.scalar(
                select(Message.id).where(Message.campaign_id == b, Message.phase == Phase.ALL).order_by(Message.id)
            )
            m_a = session.scalar(select(func.max(Message.id)).where(Message.campaign_id == a))
            assert m_b is not None and m_a is not None and m_b < m_a
            for mid in (m_a, m_b):
                session.execute(
                    update(Message)
                    .where(Message.id == mid)  # type: ignore[arg-type]
                    .values(status=MessageStatus.SENT, provider_message_id=f"p{mid}", sent_at=utcnow())
                )
        targets = {
            cid: CodeTarget(f"c{mid}", "x", mid, world.links[cid], None, cid) for cid, mid in ((a, m_a), (b, m_b))
        }

        first_done, go_on = threading.Event(), threading.Event()
        original = status_module._move_all

        def move_all(conn: object, final: dict, now: object) -> None:
            first_done.set()  # the rows are taken, none moved yet
            assert go_on.wait(20)
            original(conn, final, now)  # type: ignore[arg-type]

        monkeypatch.setattr(status_module, "_move_all", move_all)
        errors: list[BaseException] = []

        def run(job: object) -> None:
            try:
                job()  # type: ignore[operator]
            except BaseException as exc:
                errors.append(exc)

        status_batch = threading.Thread(
            target=run,
            args=(
                lambda: ingest_callbacks(
                    engine,
                    [Callback("fake", [StatusUpdate(f"p{m_b}", "delivered"), StatusUpdate(f"p{m_a}", "failed")], {})],
                ),
            ),
        )
        status_batch.start()
        assert first_done.wait(20)
        records = [ClickRecord(targets[cid], utcnow(), "10.0.0.1", "ua", None) for cid in (a, b)]
        click_batch = threading.Thread(target=run, args=(lambda: store_clicks(engine, records, judged=True),))
        click_batch.start()
        with engine.connect() as watcher:  # until the click batch waits on a lock
            for _ in range(400):
                waiting = watcher.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock'"
                    )
                ).scalar()
                watcher.rollback()
                if waiting:
                    break
                threading.Event().wait(0.025)
            else:
                pytest.fail("the click batch never waited")
        go_on.set()
        status_batch.join(30)
        click_batch.join(30)
        assert not errors, errors
        _check(world, "status and click batches crosswise")
        with session_scope(engine, read_only=True) as session:
            assert tally(session, a).raw_total == tally(session, b).raw_total == 1
            assert tally(session, a).failed == 1 and tally(session, b).delivered == 1
    finally:
        engine.dispose()


def _check_flags(world: World) -> None:
    """`message.superseded` is "a later retry row of the same contact in the campaign"."""
    messages = _messages(world)
    retries = [m for m in messages if m.phase == Phase.RETRY and m.contact_id is not None]
    for m in messages:
        later = any(r.campaign_id == m.campaign_id and r.contact_id == m.contact_id and r.id > m.id for r in retries)
        assert m.superseded == (later and m.contact_id is not None), m


def _retried_world(database_url: str, seed: int) -> World:
    world = _build(make_engine(database_url), random.Random(seed))
    accepted = _send(world, (Phase.ALL, Phase.TEST, Phase.REMAINDER))
    _callbacks(world, accepted)
    _retry(world)
    _check(world, "retried")
    _check_flags(world)
    return world


def test_deleting_or_moving_a_retry_row_sets_the_flags_again(database_url: str) -> None:
    world = _retried_world(database_url, 21)
    try:
        retries = _messages(world, Message.phase == Phase.RETRY)
        assert len(retries) >= 4
        first, second, third, fourth = retries[:4]
        other = next(c for c in world.campaigns if c != fourth.campaign_id)
        steps = [
            ("a retry row deleted", lambda s: s.execute(delete(Message).where(Message.id == first.id))),
            ("a retry row made a first send", lambda s: s.execute(
                update(Message).where(Message.id == second.id).values(phase=Phase.ALL)
            )),
            ("a retry row given to another contact", lambda s: s.execute(
                update(Message).where(Message.id == third.id).values(contact_id=fourth.contact_id)
            )),
            ("a retry row moved to the other campaign", lambda s: s.execute(
                update(Message).where(Message.id == fourth.id).values(campaign_id=other)
            )),
            ("a message's contact taken away", lambda s: s.execute(
                update(Message).where(Message.id == third.id).values(contact_id=None)
            )),
        ]  # fmt: skip
        for step, write in steps:
            with session_scope(world.engine) as session:
                write(session)
            _check(world, step)
            _check_flags(world)
    finally:
        world.engine.dispose()


def test_repair_sets_a_stale_flag_right_so_later_writes_stay_exact(database_url: str) -> None:
    world = _retried_world(database_url, 22)
    try:
        retry = _messages(world, Message.phase == Phase.RETRY)[0]
        earlier = _messages(world, Message.contact_id == retry.contact_id, Message.campaign_id == retry.campaign_id)[0]
        assert earlier.superseded and earlier.id != retry.id
        with world.engine.begin() as conn:  # a flag gone wrong (and the tally with it)
            conn.execute(update(Message).where(Message.id == earlier.id).values(superseded=False))  # type: ignore[arg-type]
        with session_scope(world.engine, read_only=True) as session:
            assert tally(session, retry.campaign_id) != recount(session, retry.campaign_id)
        with session_scope(world.engine) as session:
            repair(session, retry.campaign_id)
        _check(world, "repaired")
        _check_flags(world)
        with session_scope(world.engine) as session:  # the next write of that message keeps it exact
            session.execute(
                update(Message).where(Message.id == earlier.id).values(status=MessageStatus.QUEUED, sent_at=None)  # type: ignore[arg-type]
            )
        _check(world, "the repaired message written again")
    finally:
        world.engine.dispose()


def test_a_missing_tally_row_is_made_by_the_next_write_not_skipped(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        world = _build(engine, random.Random(23))
        cid = world.campaigns[0]
        with engine.begin() as conn:  # gone, by hand
            conn.exec_driver_sql(f"DELETE FROM campaign_tally WHERE campaign_id = {cid}")
        message = _messages(world, Message.campaign_id == cid, Message.phase == Phase.ALL)[0]
        with session_scope(engine) as session:
            session.execute(
                update(Message).where(Message.id == message.id).values(status=MessageStatus.SENT, sent_at=utcnow())  # type: ignore[arg-type]
            )
        with session_scope(engine, read_only=True) as session:
            assert (tally(session, cid).sent, tally(session, cid).delivered) == (1, 0)  # the change, not dropped
        with session_scope(engine) as session:
            repair(session, cid)
        _check(world, "repaired")
    finally:
        engine.dispose()


def test_the_backfill_waits_for_writers_on_postgresql(postgres_database_url: str) -> None:
    """0013 locks campaign, message and click before its recount: a write in flight is in the
    recount (it committed first) or in the triggers (it waited), never in neither."""
    database_url = postgres_database_url
    import threading

    from sqlalchemy import text

    engine = make_engine(database_url)
    try:
        world = _build(engine, random.Random(24))
        accepted = _send(world, (Phase.ALL,))
        _click(world, 20)
    finally:
        engine.dispose()
    downgrade(database_url, "0012")
    engine = make_engine(database_url)
    try:
        writer = engine.connect()
        writer.execute(text("LOCK TABLE click IN ROW EXCLUSIVE MODE"))  # what a click insert holds
        errors: list[BaseException] = []

        def migrate() -> None:
            try:
                upgrade(database_url)
            except BaseException as exc:
                errors.append(exc)

        migration = threading.Thread(target=migrate)
        migration.start()
        with engine.connect() as watcher:
            for _ in range(400):
                waiting = watcher.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE campaign, message, click%'"
                    )
                ).scalar()
                watcher.rollback()
                if waiting:
                    break
                threading.Event().wait(0.025)
            else:
                writer.rollback()
                migration.join(60)
                pytest.fail("the backfill did not wait for the click writer")
        assert migration.is_alive()
        writer.rollback()
        writer.close()
        migration.join(60)
        assert not errors, errors
        world.engine = engine
        _check(world, "migrated while a writer waited")
        assert accepted
    finally:
        engine.dispose()


def test_the_tallys_opt_out_words_are_the_repliers_own() -> None:
    """Migration 0014 freezes the opt-out keywords its triggers count: a keyword added to
    core/delivery/replies.py needs a migration that says so, or `opt_outs` would miss it."""
    import importlib

    migration = importlib.import_module("core.migrations.versions.0014_reply_conversion_tally")
    frozen = {word.strip(" '") for word in migration.STOP_WORDS.strip("()").split(",")}
    assert frozen == set(OPT_OUT_KEYWORDS)


def test_the_kept_click_timing_has_the_reports_buckets() -> None:
    """Migration 0016 freezes the click-timing bounds its triggers bucket by: a bound changed in
    core/stats/tallies.py needs a migration that says so (and rebuckets), or the two would differ."""
    import importlib

    migration = importlib.import_module("core.migrations.versions.0016_click_breakdown_tally")
    assert [*migration.TIMING_UPPER_SECONDS, None] == [upper for _, upper in TIMING_BUCKETS]
