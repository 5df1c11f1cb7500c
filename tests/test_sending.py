"""Snapshot and send, run directly against a real database (no workflow): retry safety."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select, update

from core.campaigns import create_campaign
from core.contacts import upsert_contacts
from core.db import make_engine, session_scope
from core.models import Message, ShortCode
from core.plugins import load_plugins
from core.providers import OutgoingMessage
from core.schemas import CampaignCreate
from core.sending import assign_variants, send_batch, snapshot_audience, split_by_weight
from core.settings import Settings


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
    data = CampaignCreate.model_validate({"name": "T", "variants": [{"name": "A", "body": body, "weight": 1},
                                                                     {"name": "B", "body": body, "weight": 3}]})
    return int(create_campaign(engine, data, providers={"fake"})["id"])


def test_split_by_weight_gives_exact_counts() -> None:
    assert split_by_weight(10, [1, 1]) == [5, 5]
    assert split_by_weight(10, [1, 1, 1]) == [4, 3, 3]
    assert split_by_weight(7, [50, 30, 20]) == [4, 2, 1]
    assert sum(split_by_weight(1001, [0.3, 0.3, 0.4])) == 1001
    assert split_by_weight(5, [0, 1]) == [0, 5]


def test_snapshot_is_idempotent_and_tracks_every_link(world) -> None:
    engine, registry = world
    cid = _campaign(engine)
    first = snapshot_audience(engine, registry, cid, batch_size=4)
    again = snapshot_audience(engine, registry, cid, batch_size=4)
    assert (first.recipients, first.created, again.created) == (10, 10, 0)
    assert first.batches == again.batches and len(first.batches) == 3
    with session_scope(engine) as session:
        messages = session.scalars(select(Message)).all()
        codes = session.scalars(select(ShortCode)).all()
    assert len(messages) == 10 and len(codes) == 20 and len({c.code for c in codes}) == 20
    variants = Counter(m.variant_id for m in messages)
    assert sorted(variants.values()) == [2, 8]  # 2.5 : 7.5, the tied remainder goes to the heavier
    for message in messages:
        mine = [c for c in codes if c.message_id == message.id]
        assert sorted(c.destination for c in mine) == ["https://shop.example/a", "https://shop.example/b"]
        for code in mine:
            assert f"/r/{code.code}" in message.body


def test_variant_assignment_is_deterministic() -> None:
    class V:
        def __init__(self, i: int, w: float) -> None:
            self.id, self.weight, self.is_control = i, w, False

    variants = [V(1, 1), V(2, 1)]
    a = assign_variants(list(range(100)), variants, seed=5)
    b = assign_variants(list(reversed(range(100))), variants, seed=5)
    assert {k: v.id for k, v in a.items()} == {k: v.id for k, v in b.items()}


def test_a_lost_answer_is_looked_up_not_sent_twice(world) -> None:
    engine, registry = world
    cid = _campaign(engine, "Hello")
    snap = snapshot_audience(engine, registry, cid, batch_size=100)
    fake = registry.providers["fake"]
    with session_scope(engine) as session:
        messages = session.scalars(select(Message).order_by(Message.id)).all()
        # The worker died after the provider accepted the first 4 but before we recorded it.
        fake.send_batch([OutgoingMessage(m.id, m.phone, m.body, m.idempotency_key, "http://127.0.0.1:9/x")
                         for m in messages[:4]])
        session.execute(update(Message).where(Message.id.in_([m.id for m in messages[:4]]))
                        .values(status="sending", attempts=1))
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
