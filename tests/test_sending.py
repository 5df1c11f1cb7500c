"""Snapshot and send, run directly against a real database (no workflow): retry safety."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlmodel import Session

from core.campaigns.audience import plan, snapshot, split_by_weight
from core.campaigns.definition import apply_move, create_campaign
from core.campaigns.lifecycle import Move
from core.campaigns.schemas import CampaignCreate
from core.contacts.importing import upsert_contacts
from core.db import make_engine, session_scope
from core.delivery import sending
from core.delivery.sending import send_batch
from core.hooks.contracts import OutgoingMessage
from core.hooks.registry import load_plugins
from core.models import Message, ShortCode
from core.settings import Settings
from core.stats.summary import summary


@pytest.fixture
def world(database_url: str, tmp_path: Path):
    settings = Settings.from_env({"TEXTPULSE_DATABASE_URL": database_url, "TEXTPULSE_DATA_DIR": str(tmp_path)})
    engine = make_engine(database_url)
    # Callbacks go nowhere here (no server): a long delay keeps them from being posted at all.
    registry = load_plugins(settings, config={"plugins": {"fake": {"callback_delay_seconds": [600, 600]}}})
    upsert_contacts(engine, [{"phone": f"+1202555{2000 + i}", "name": f"P{i}"} for i in range(10)])
    yield engine, registry
    registry.close()
    engine.dispose()


def _campaign(engine, body: str = "Hi {{ name }} https://shop.example/a and https://shop.example/b") -> int:
    data = CampaignCreate.model_validate(
        {"name": "T", "variants": [{"name": "A", "body": body, "weight": 1}, {"name": "B", "body": body, "weight": 3}]}
    )
    return int(create_campaign(engine, data, providers={"fake"})["id"])


def test_split_by_weight_gives_exact_counts() -> None:
    assert split_by_weight(10, [1, 1]) == [5, 5]
    assert split_by_weight(10, [1, 1, 1]) == [4, 3, 3]
    assert split_by_weight(7, [50, 30, 20]) == [4, 2, 1]
    assert sum(split_by_weight(1001, [0.3, 0.3, 0.4])) == 1001
    assert split_by_weight(5, [0, 1]) == [0, 5]


def test_snapshot_is_idempotent_and_each_batch_renders_and_tracks_every_link_as_it_sends(world) -> None:
    engine, registry = world
    cid = _campaign(engine)
    assert apply_move(engine, cid, Move.LAUNCH)
    first = snapshot(engine, registry, cid, batch_size=4)
    again = snapshot(engine, registry, cid, batch_size=4)
    assert (first.recipients, first.phase) == (10, "all")
    assert first.batches == again.batches and len(first.batches) == 3
    with session_scope(engine) as session:  # the rows are made without their text
        assert set(session.scalars(select(Message.body))) == {""}
        assert session.scalars(select(ShortCode)).all() == []
    for first_id, last_id in first.batches:
        assert send_batch(engine, registry, cid, first_id, last_id).sent == last_id - first_id + 1
        assert send_batch(engine, registry, cid, first_id, last_id).sent == 0  # again: nothing new
    with session_scope(engine) as session:
        messages = session.scalars(select(Message)).all()
        codes = session.scalars(select(ShortCode)).all()
    assert len(messages) == 10 and len(codes) == 20 and len({c.code for c in codes}) == 20
    sent = {entry["message_id"]: entry["body"] for entry in registry.providers["fake"].ledger()}
    assert sent == {m.id: m.body for m in messages}  # what went out is what is stored
    variants = Counter(m.variant_id for m in messages)
    assert sorted(variants.values()) == [2, 8]  # 2.5 : 7.5, the tied remainder goes to the heavier
    for message in messages:
        mine = [c for c in codes if c.message_id == message.id]
        assert sorted(c.destination for c in mine) == ["https://shop.example/a", "https://shop.example/b"]
        for code in mine:
            assert f"/r/{code.code}" in message.body


class _V:
    def __init__(self, i: int, name: str, w: float, control: bool = False) -> None:
        self.id, self.name, self.weight, self.is_control = i, name, w, control


class _C:
    def __init__(self, **kw: object) -> None:
        self.id, self.control_percent, self.variant_by_attribute, self.ab_test = 5, 0, None, None
        self.__dict__.update(kw)


def test_the_plan_is_deterministic_and_exact() -> None:
    variants = [_V(1, "A", 1), _V(2, "B", 1)]
    contacts = [(i, {}) for i in range(100)]
    a = plan(_C(), variants, contacts)
    assert a == plan(_C(), variants, list(reversed(contacts)))
    assert Counter(p.variant_id for p in a.values()) == {1: 50, 2: 50}


def test_the_plan_holds_out_a_control_group_and_freezes_the_remainder() -> None:
    variants = [_V(1, "A", 45), _V(2, "B", 45), _V(3, "Hold", 10, control=True)]
    placed = plan(_C(control_percent=10, ab_test={"test_percent": 20}), variants, [(i, {}) for i in range(1000)])
    phases = Counter(p.phase for p in placed.values())
    # 100 held out by control_percent; of the other 900, a 20 % test cohort of 180 in which the control
    # variant holds out its 10 % share (18); the other 720 wait for the winner.
    assert phases == {"control": 118, "test": 162, "remainder": 720}
    assert Counter(p.variant_id for p in placed.values() if p.phase == "test") == {1: 81, 2: 81}


def test_the_plan_follows_an_attribute_naming_the_variant() -> None:
    variants = [_V(1, "en", 1), _V(2, "de", 1)]
    contacts = [(1, {"lang": "DE"}), (2, {"lang": "en"}), (3, {"lang": "fr"}), (4, {})]
    placed = plan(_C(variant_by_attribute="lang"), variants, contacts)
    assert (placed[1].variant_id, placed[2].variant_id) == (2, 1)
    assert {placed[3].variant_id, placed[4].variant_id} == {1, 2}  # the rest split by weight


def test_a_lost_answer_is_looked_up_not_sent_twice(world) -> None:
    engine, registry = world
    cid = _campaign(engine, "Hello")
    assert apply_move(engine, cid, Move.LAUNCH)  # a send activity runs for a running campaign
    snap = snapshot(engine, registry, cid, batch_size=100)
    fake = registry.providers["fake"]
    with session_scope(engine) as session:
        messages = session.scalars(select(Message).order_by(Message.id)).all()
        # The worker died after the provider accepted the first 4 but before we recorded it.
        fake.send_batch(
            [OutgoingMessage(m.id, m.phone, m.body, m.idempotency_key, "http://127.0.0.1:9/x") for m in messages[:4]]
        )
        session.execute(
            update(Message).where(Message.id.in_([m.id for m in messages[:4]])).values(status="sending", attempts=1)
        )
    first_id, last_id = snap.batches[0]
    outcome = send_batch(engine, registry, cid, first_id, last_id)
    assert (outcome.sent, outcome.failed) == (10, 0)
    assert Counter(e["to"] for e in fake.ledger()) == Counter(m.phone for m in messages)
    with session_scope(engine) as session:
        assert set(session.scalars(select(Message.status))) == {"sent"}
        assert all(session.scalars(select(Message.provider_message_id)))
    # Run again (a retried activity): nothing is sent twice.
    assert send_batch(engine, registry, cid, first_id, last_id).sent == 0
    assert len(fake.ledger()) == 10


def test_the_status_activity_takes_moves_and_still_the_inputs_of_runs_started_before_them(world) -> None:
    """New runs send a move of the transition table; an activity task scheduled by a run of the code
    before the table names the status and its sources (`status`, `only_from`), and must still work."""
    from core.campaigns.definition import get_campaign
    from workflows.activities import CampaignActivities
    from workflows.inputs import CampaignStatusInput

    engine, registry = world
    activities = CampaignActivities(engine, registry)
    cid = _campaign(engine)

    def status() -> str:
        with session_scope(engine, read_only=True) as session:
            return get_campaign(session, cid).status

    assert activities.set_campaign_status(CampaignStatusInput(cid, "waiting", move="wait")) is False  # from draft
    assert status() == "draft"
    assert activities.set_campaign_status(CampaignStatusInput(cid, "running", ["draft", "scheduled"])) is True
    assert status() == "running"
    assert activities.set_campaign_status(CampaignStatusInput(cid, "running", ["waiting"])) is False
    assert activities.set_campaign_status(CampaignStatusInput(cid, "waiting", move="wait")) is True
    assert status() == "waiting"
    assert activities.set_campaign_status(CampaignStatusInput(cid, "cancelled", move="end_cancelled")) is True
    assert status() == "cancelled"


def test_a_batch_stops_before_its_next_provider_call_once_the_campaign_is_paused(world) -> None:
    engine, registry = world
    upsert_contacts(engine, [{"phone": f"+1202555{3000 + i}"} for i in range(30)])  # 40: several calls
    cid = _campaign(engine, "Hello")
    snap = snapshot(engine, registry, cid, batch_size=100)
    first_id, last_id = snap.batches[0]
    fake = registry.providers["fake"]
    # A draft (never launched) or paused campaign: nothing goes to the provider, all stays queued.
    outcome = send_batch(engine, registry, cid, first_id, last_id)
    assert (outcome.sent, outcome.stopped) == (0, "draft") and fake.ledger() == []
    assert apply_move(engine, cid, Move.LAUNCH) and apply_move(engine, cid, Move.PAUSE)
    outcome = send_batch(engine, registry, cid, first_id, last_id)
    assert (outcome.sent, outcome.stopped) == (0, "paused") and fake.ledger() == []
    with session_scope(engine) as session:
        assert set(session.scalars(select(Message.status))) == {"queued"}
        assert set(session.scalars(select(Message.attempts))) == {0}  # never handed over
    # Paused between two provider calls: the first call's messages went, the rest wait. (Calls
    # start at one message here: no earlier batch of this process taught the pacer a larger size.)
    assert apply_move(engine, cid, Move.RESUME)
    sending._Pacer._learned.clear()
    calls = 0

    def pause_after_first_call() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first is after the rows are read, the second after the first call
            assert apply_move(engine, cid, Move.PAUSE)

    outcome = send_batch(engine, registry, cid, first_id, last_id, heartbeat=pause_after_first_call)
    assert outcome.stopped == "paused" and 0 < outcome.sent < 40 and len(fake.ledger()) == outcome.sent
    assert apply_move(engine, cid, Move.RESUME)
    rest = send_batch(engine, registry, cid, first_id, last_id)
    assert rest.stopped is None and outcome.sent + rest.sent == 40
    assert Counter(e["to"] for e in fake.ledger()).most_common(1)[0][1] == 1


def test_a_batch_starts_its_provider_calls_at_the_size_the_last_batch_reached(world) -> None:
    engine, registry = world
    upsert_contacts(engine, [{"phone": f"+1202555{4000 + i}"} for i in range(290)])  # 300 in all
    cid = _campaign(engine, "Hello")
    assert apply_move(engine, cid, Move.LAUNCH)
    snap = snapshot(engine, registry, cid, batch_size=150)
    fake = registry.providers["fake"]
    sizes: list[int] = []
    send = fake.send_batch
    fake.send_batch = lambda messages: sizes.append(len(messages)) or send(messages)
    sending._Pacer._learned.clear()
    first, second = snap.batches
    assert send_batch(engine, registry, cid, *first).sent == 150
    ramp = list(sizes)
    assert ramp[:3] == [1, 2, 4]  # a provider not seen yet: one message first, then doubling
    sizes.clear()
    assert send_batch(engine, registry, cid, *second).sent == 150
    # On from where it got to: the size doubled after each call (the last, a remainder, too), at
    # most MAX_CHUNK, at most what the batch holds.
    assert sizes[0] == min(ramp[-2] * 4, sending._Pacer.MAX_CHUNK, 150) and len(sizes) < len(ramp)


def test_a_text_that_no_longer_renders_fails_at_send_time_and_the_rest_of_its_batch_goes(world) -> None:
    engine, registry = world
    upsert_contacts(engine, [{"phone": f"+1202555{2000 + i}", "attributes": {"city": "Leeds"}} for i in range(10)])
    cid = _campaign(engine, "{{ attributes.city }} sale, contact {{ contact.id }}: https://shop.example/a")
    # A contact without the city, made after the campaign's templates were checked.
    upsert_contacts(engine, [{"phone": "+12025559999", "name": "Late"}])
    assert apply_move(engine, cid, Move.LAUNCH)
    snap = snapshot(engine, registry, cid, batch_size=100)
    outcome = send_batch(engine, registry, cid, *snap.batches[0])
    assert (outcome.sent, outcome.failed) == (10, 1)
    with session_scope(engine) as session:
        rows = session.execute(select(Message.contact_id, Message.status, Message.error_code, Message.body)).all()
        codes = session.scalars(select(ShortCode.message_id)).all()
    failed = [row for row in rows if row.status == "failed"]
    assert len(failed) == 1 and failed[0].error_code == "template_error"
    for row in rows:
        if row.status == "sent":  # `contact.id` is the contact's, as the preview shows it
            assert row.body.startswith(f"Leeds sale, contact {row.contact_id}: ")
    assert len(codes) == 10  # a code for each text sent, none for the one that failed
    stats = summary(Session(engine), cid)
    assert (stats["sent"], stats["failed"]) == (10, 1)
