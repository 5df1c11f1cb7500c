"""The frequency cap (API.md "Frequency cap"): at most N messages handed to the provider per contact
in any window, across campaigns; a message over it ends `cancelled` with `frequency_cap`, never sent.

Run through send_batch with the fake provider (whose ledger is what the provider saw) on each
database backend; the stats routes through the app.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlmodel import col
from temporalio.testing import ActivityEnvironment

from api.app import create_app
from core.campaigns.audience import snapshot
from core.campaigns.definition import apply_move, create_campaign
from core.campaigns.lifecycle import Move
from core.campaigns.schemas import CampaignCreate
from core.campaigns.testsend import send_test_messages
from core.contacts.importing import upsert_contacts
from core.db import make_engine, session_scope
from core.delivery import sending
from core.delivery.sending import send_batch
from core.hooks.registry import PluginRegistry, load_plugins
from core.models import Contact, Message, utcnow
from core.settings import Settings, SettingsError
from core.statuses import MessageStatus, Phase
from workflows.activities import CampaignActivities
from workflows.inputs import SendBatchInput

PHONES = [f"+1202555{4000 + i}" for i in range(3)]
CAP = (2, 3600.0)


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[tuple[Engine, PluginRegistry]]:
    settings = Settings.from_env(
        {
            "TEXTPULSE_DATABASE_URL": database_url,
            "TEXTPULSE_DATA_DIR": str(tmp_path),
            "TEXTPULSE_FREQUENCY_CAP": "2/3600",
        }
    )
    engine = make_engine(database_url)
    # Callbacks go nowhere here (no server): a long delay keeps them from being posted at all.
    registry = load_plugins(settings, config={"plugins": {"fake": {"callback_delay_seconds": [600, 600]}}})
    upsert_contacts(engine, [{"phone": phone} for phone in PHONES])
    yield engine, registry
    registry.close()
    engine.dispose()


def _contact_ids(engine: Engine) -> dict[str, int]:
    with session_scope(engine, read_only=True) as session:
        return {c.phone: c.id or 0 for c in session.scalars(select(Contact))}


def _launched(engine: Engine, registry: PluginRegistry, phones: list[str], body: str = "Hello") -> tuple[int, int, int]:
    """A running campaign to these phones, its messages made: (campaign id, first id, last id)."""
    ids = _contact_ids(engine)
    data = CampaignCreate.model_validate(
        {"name": body, "audience": {"contact_ids": [ids[p] for p in phones]}, "variants": [{"name": "A", "body": body}]}
    )
    cid = int(create_campaign(engine, data, providers={"fake"})["id"])
    assert apply_move(engine, cid, Move.LAUNCH)
    first, last = snapshot(engine, registry, cid, batch_size=100).batches[0]
    return cid, first, last


def _sent_campaign(engine: Engine, registry: PluginRegistry, phones: list[str], body: str = "Hello") -> int:
    cid, first, last = _launched(engine, registry, phones, body)
    assert send_batch(engine, registry, cid, first, last, frequency_cap=CAP).sent == len(phones)
    return cid


def _messages(engine: Engine, cid: int) -> dict[str, Message]:
    with session_scope(engine, read_only=True) as session:
        return {m.phone: m for m in session.scalars(select(Message).where(col(Message.campaign_id) == cid))}


def _ledger(registry: PluginRegistry) -> Counter[str]:
    return Counter(entry["to"] for entry in registry.providers["fake"].ledger())  # type: ignore[attr-defined]


def test_a_contact_at_the_cap_gets_no_third_message_in_another_campaign(world) -> None:
    engine, registry = world
    _sent_campaign(engine, registry, PHONES[:1], "First")
    _sent_campaign(engine, registry, PHONES[:1], "Second")
    cid, first, last = _launched(engine, registry, PHONES, "Third")
    outcome = send_batch(engine, registry, cid, first, last, frequency_cap=CAP)
    assert (outcome.sent, outcome.capped, outcome.skipped) == (2, 1, 1)
    third = _messages(engine, cid)
    capped = third[PHONES[0]]
    assert (capped.status, capped.error_code) == (MessageStatus.CANCELLED, "frequency_cap")
    assert capped.error_text == "frequency cap: 2 messages in 3600 s reached"
    assert (capped.attempts, capped.attempted_at, capped.sent_at, capped.provider_message_id) == (0, None, None, None)
    assert {third[p].status for p in PHONES[1:]} == {MessageStatus.SENT}
    # The provider never saw the third message: two for the capped contact, one for each other.
    assert _ledger(registry) == Counter({PHONES[0]: 2, PHONES[1]: 1, PHONES[2]: 1})
    # Sending the batch again (a retried activity) neither sends nor un-cancels it.
    assert send_batch(engine, registry, cid, first, last, frequency_cap=CAP).sent == 0
    assert _messages(engine, cid)[PHONES[0]].status == MessageStatus.CANCELLED


def test_without_a_cap_the_third_message_goes(world) -> None:
    engine, registry = world
    _sent_campaign(engine, registry, PHONES[:1], "First")
    _sent_campaign(engine, registry, PHONES[:1], "Second")
    cid, first, last = _launched(engine, registry, PHONES[:1], "Third")
    assert send_batch(engine, registry, cid, first, last).sent == 1
    assert _ledger(registry)[PHONES[0]] == 3


def test_a_message_handed_over_before_the_window_does_not_count(world) -> None:
    engine, registry = world
    old = _sent_campaign(engine, registry, PHONES[:1], "Long ago")
    _sent_campaign(engine, registry, PHONES[:1], "Recent")
    with session_scope(engine) as session:
        session.execute(
            update(Message).where(col(Message.campaign_id) == old).values(attempted_at=utcnow() - timedelta(hours=2))
        )
    cid, first, last = _launched(engine, registry, PHONES[:1], "Now")
    assert send_batch(engine, registry, cid, first, last, frequency_cap=CAP).sent == 1
    assert _ledger(registry)[PHONES[0]] == 3


def test_only_messages_handed_to_the_provider_count(world) -> None:
    engine, registry = world
    # Two messages that never reached the provider: one cancelled, one queued again after a
    # transient error (it has an attempted_at, but the provider said "not now").
    for status in (MessageStatus.CANCELLED, MessageStatus.QUEUED):
        cid, first, last = _launched(engine, registry, PHONES[:1], f"Never {status}")
        with session_scope(engine) as session:
            session.execute(
                update(Message).where(col(Message.campaign_id) == cid).values(status=status, attempted_at=utcnow())
            )
    cid, first, last = _launched(engine, registry, PHONES[:1], "Counted")
    assert send_batch(engine, registry, cid, first, last, frequency_cap=CAP).sent == 1
    # A message refused by the provider at send was handed over: it counts.
    refused = _sent_campaign(engine, registry, PHONES[1:2], "Refused")
    with session_scope(engine) as session:
        session.execute(update(Message).where(col(Message.campaign_id) == refused).values(status=MessageStatus.FAILED))
    _sent_campaign(engine, registry, PHONES[1:2], "Second")
    cid, first, last = _launched(engine, registry, PHONES[:2], "Third")
    outcome = send_batch(engine, registry, cid, first, last, frequency_cap=CAP)
    assert (outcome.sent, outcome.capped) == (1, 1)
    assert _messages(engine, cid)[PHONES[1]].error_code == "frequency_cap"


def test_test_sends_do_not_count_and_are_not_capped(world) -> None:
    engine, registry = world
    tested, _, _ = _launched(engine, registry, PHONES[:1], "Tested")
    for _ in range(3):
        send_test_messages(engine, registry, tested, [PHONES[0]])
    _sent_campaign(engine, registry, PHONES[:1], "First")
    _sent_campaign(engine, registry, PHONES[:1], "Second")  # three test sends did not count
    # At the cap now, the contact still gets a test send.
    ((test_message, _),) = send_test_messages(engine, registry, tested, [PHONES[0]])
    assert (test_message.phase, test_message.status) == (Phase.TEST_SEND, MessageStatus.SENT)
    assert _ledger(registry)[PHONES[0]] == 6
    # send_batch never caps the test_send phase either.
    with session_scope(engine) as session:
        session.execute(
            update(Message).where(col(Message.id) == test_message.id).values(status="queued", provider_message_id=None)
        )
    test_id = test_message.id or 0
    assert send_batch(engine, registry, tested, test_id, test_id, phase=Phase.TEST_SEND, frequency_cap=CAP).sent == 1


def _second_row(engine: Engine, cid: int, phone: str) -> None:
    """Another message of the campaign to the same contact, in the same phase (a contact twice)."""
    with session_scope(engine) as session:
        row = session.scalars(select(Message).where(col(Message.campaign_id) == cid, col(Message.phone) == phone)).one()
        copy = Message(**row.model_dump(exclude={"id", "idempotency_key"}), idempotency_key=f"{row.idempotency_key}-2")
        session.add(copy)


def test_a_contact_twice_in_one_provider_call_counts_its_earlier_message(world, monkeypatch) -> None:
    engine, registry = world
    _sent_campaign(engine, registry, PHONES[:1], "First")
    cid, first, _ = _launched(engine, registry, PHONES, "Twice")
    _second_row(engine, cid, PHONES[0])
    with session_scope(engine, read_only=True) as session:
        rows = list(session.scalars(select(Message).where(col(Message.campaign_id) == cid).order_by(col(Message.id))))
    assert len(rows) == 4 and [r.phone for r in rows].count(PHONES[0]) == 2
    # One call for the whole batch: the count in the database misses the call's own first message.
    monkeypatch.setattr(sending._Pacer, "chunk", lambda self: 100)
    outcome = send_batch(engine, registry, cid, first, rows[-1].id or 0, frequency_cap=CAP)
    assert (outcome.sent, outcome.capped) == (3, 1)
    with session_scope(engine, read_only=True) as session:
        twice = list(
            session.scalars(
                select(Message)
                .where(col(Message.campaign_id) == cid, col(Message.phone) == PHONES[0])
                .order_by(col(Message.id))
            )
        )
    assert [(m.status, m.error_code) for m in twice] == [
        (MessageStatus.SENT, None),
        (MessageStatus.CANCELLED, "frequency_cap"),
    ]
    assert _ledger(registry)[PHONES[0]] == 2


def test_the_claim_marks_some_and_cancels_the_rest_in_one_go(world) -> None:
    engine, registry = world
    cid, _, _ = _launched(engine, registry, PHONES[:1], "Claim")
    _second_row(engine, cid, PHONES[0])
    with session_scope(engine, read_only=True) as session:
        rows = list(session.scalars(select(Message).where(col(Message.campaign_id) == cid).order_by(col(Message.id))))
    claim = sending._mark_sending(engine, rows, cid, (1, 60))
    assert (claim.sending, claim.capped) == ({rows[0].id}, {rows[1].id})


def test_the_worker_passes_the_settings_cap_to_the_send_activity(world) -> None:
    engine, registry = world
    assert registry.context.settings.frequency_cap == CAP
    _sent_campaign(engine, registry, PHONES[:1], "First")
    _sent_campaign(engine, registry, PHONES[:1], "Second")
    cid, first, last = _launched(engine, registry, PHONES[:2], "Third")
    activities = CampaignActivities(engine, registry)
    result = ActivityEnvironment().run(activities.send_batch, SendBatchInput(cid, first, last))
    assert (result.sent, result.skipped) == (1, 1)
    assert _messages(engine, cid)[PHONES[0]].error_code == "frequency_cap"


def test_the_stats_count_it_in_recipients_not_sent_and_list_it_with_the_failures(world, tmp_path: Path) -> None:
    engine, registry = world
    _sent_campaign(engine, registry, PHONES[:1], "First")
    _sent_campaign(engine, registry, PHONES[:1], "Second")
    cid, first, last = _launched(engine, registry, PHONES, "Third")
    send_batch(engine, registry, cid, first, last, frequency_cap=CAP)
    with session_scope(engine) as session:  # one of the sent ones failed later, by the carrier's report
        session.execute(
            update(Message)
            .where(col(Message.campaign_id) == cid, col(Message.phone) == PHONES[1])
            .values(status=MessageStatus.FAILED, error_code="30003", error_text="Unreachable", failed_at=utcnow())
        )
    app = create_app(registry.context.settings, engine=engine, registry=registry)
    with TestClient(app=app) as client:
        stats = client.get(f"/api/campaigns/{cid}/stats").json()
        errors = client.get(f"/api/campaigns/{cid}/stats/errors").json()["errors"]
    # Three recipients; two sent (one of them failed after), the capped one is not.
    assert (stats["recipients"], stats["sent"], stats["failed"], stats["queued"]) == (3, 2, 1, 0)
    assert stats["attempts"] == 2  # the capped message was never handed over
    by_code: dict[str, Any] = {e["code"]: e for e in errors}
    assert set(by_code) == {"frequency_cap", "30003"}
    assert by_code["frequency_cap"]["count"] == 1 and by_code["frequency_cap"]["share"] == 0.5
    assert by_code["frequency_cap"]["text"] == "frequency cap: 2 messages in 3600 s reached"


@pytest.mark.parametrize(
    "raw,cap",
    [(None, None), ("", None), ("3/86400", (3, 86400.0)), (" 2/1.5 ", (2, 1.5)), ("1/60", (1, 60.0))],
)
def test_the_cap_setting_reads_count_slash_seconds(raw: str | None, cap: tuple[int, float] | None) -> None:
    env = {} if raw is None else {"TEXTPULSE_FREQUENCY_CAP": raw}
    assert Settings.from_env(env).frequency_cap == cap


@pytest.mark.parametrize(
    "raw", ["3", "3/", "/60", "0/60", "-1/60", "1.5/60", "x/60", "3/0", "3/-5", "3/soon", "3/nan", "3/inf", "3/60/2"]
)
def test_a_bad_cap_setting_names_the_variable(raw: str) -> None:
    with pytest.raises(
        SettingsError, match=re.escape("TEXTPULSE_FREQUENCY_CAP must be N/SECONDS") + ".*" + re.escape(repr(raw))
    ):
        Settings.from_env({"TEXTPULSE_FREQUENCY_CAP": raw})
