"""What an automation sends, at the database (core/automations/sends.py): a campaign of the run
made once whatever retries, finished when an earlier attempt stopped half-way, never made or sent
for a cancelled run; one text to one contact, once, retried (not lost) when the provider fails for
now, and not sent when the contact's record says no — checked again before a text that waited.
On each database backend, with the fake provider (its ledger is what it was handed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col

from core.automations import runs, sends
from core.campaigns.definition import create_campaign
from core.campaigns.schemas import CampaignCreate
from core.contacts.importing import upsert_contacts
from core.db import make_engine, session_scope
from core.hooks.contracts import OutgoingMessage, SendResult
from core.hooks.registry import PluginRegistry, load_plugins
from core.models import Campaign, Contact, Message, Reply, utcnow
from core.settings import Settings
from core.statuses import CampaignKind, CampaignStatus, MessageStatus, RunStatus

PHONES = ["+12025559001", "+12025559002"]


class Flaky:
    """A provider that answers `transient` to its first `failures` calls, then accepts."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.accepted: list[str] = []

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        if self.failures > 0:
            self.failures -= 1
            return [SendResult(m.message_id, False, error_code="503", transient=True) for m in messages]
        self.accepted += [m.to for m in messages]
        return [SendResult(m.message_id, True, provider_message_id=f"f-{m.message_id}") for m in messages]


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[tuple[Engine, PluginRegistry]]:
    settings = Settings.from_env({"TEXTPULSE_DATABASE_URL": database_url, "TEXTPULSE_DATA_DIR": str(tmp_path)})
    engine = make_engine(database_url)
    registry = load_plugins(settings, config={"plugins": {"fake": {"callback_delay_seconds": [600, 600]}}})
    upsert_contacts(engine, [{"phone": phone} for phone in PHONES])
    yield engine, registry
    registry.close()
    engine.dispose()


def _contacts(engine: Engine) -> list[int]:
    with session_scope(engine, read_only=True) as session:
        return [int(i or 0) for i in session.scalars(select(col(Contact.id)).order_by(col(Contact.id)))]


def _run(engine: Engine, name: str = "test") -> int:
    return runs.record_run(
        engine,
        workflow=name,
        workflow_id=f"wf-{name}-{utcnow().timestamp()}",
        temporal_run_id=f"r-{utcnow().timestamp()}",
        params={},
    )


def _campaigns(engine: Engine, run_id: int) -> list[Campaign]:
    with session_scope(engine, read_only=True) as session:
        return list(session.scalars(select(Campaign).where(col(Campaign.run_id) == run_id)))


def _send(engine: Engine, registry: PluginRegistry, run_id: int, **extra: Any) -> tuple[int, bool] | None:
    return sends.create_send(
        engine,
        registry,
        run_id=run_id,
        name="follow-up",
        body="Hi",
        audience={"all": True},
        kind=CampaignKind.FOLLOW_UP,
        parent_id=None,
        provider="fake",
        **extra,
    )


def test_a_retried_campaign_send_finds_the_campaign_it_made(world: tuple[Engine, PluginRegistry]) -> None:
    engine, registry = world
    run_id = _run(engine)
    first = _send(engine, registry, run_id)
    again = _send(engine, registry, run_id)
    assert first is not None and again is not None
    assert first[1] is True and again == (first[0], False)
    (made,) = _campaigns(engine, run_id)
    assert made.status == CampaignStatus.RUNNING and made.kind == CampaignKind.FOLLOW_UP and made.launched_at


def test_a_campaign_left_a_draft_by_an_attempt_that_died_is_launched_by_the_next(
    world: tuple[Engine, PluginRegistry],
) -> None:
    engine, registry = world
    run_id = _run(engine)
    data = CampaignCreate.model_validate({"name": "follow-up", "variants": [{"name": "A", "body": "Hi"}]})
    draft = create_campaign(engine, data, providers={"fake"}, kind=CampaignKind.FOLLOW_UP, run_id=run_id)
    assert _send(engine, registry, run_id) == (draft["id"], False)
    assert [c.status for c in _campaigns(engine, run_id)] == [CampaignStatus.RUNNING]


def test_a_cancelled_run_makes_no_campaign(world: tuple[Engine, PluginRegistry]) -> None:
    engine, registry = world
    run_id = _run(engine)
    assert runs.finish(engine, run_id, RunStatus.CANCELLED)
    assert _send(engine, registry, run_id) is None
    assert _campaigns(engine, run_id) == []


def test_a_cancel_that_comes_while_the_campaign_is_made_cancels_it(
    world: tuple[Engine, PluginRegistry], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, registry = world
    run_id = _run(engine)
    answers = iter([True, False])  # running when it looks first, cancelled when it looks again
    monkeypatch.setattr(runs, "is_running", lambda session, rid: next(answers))
    assert _send(engine, registry, run_id) is None
    (made,) = _campaigns(engine, run_id)
    assert made.status == CampaignStatus.CANCELLED


def _text(engine: Engine, registry: PluginRegistry, run_id: int, contact_id: int, **extra: Any) -> sends.TextOutcome:
    return sends.text_contact(
        engine, registry, run_id=run_id, automation="drip", step="step 1", contact_id=contact_id, body="Hello", **extra
    )


def test_one_text_per_run_whatever_retries_and_the_steps_campaign_shared(world: tuple[Engine, PluginRegistry]) -> None:
    engine, registry = world
    one, two = _contacts(engine)
    run_a, run_b = _run(engine, "a"), _run(engine, "b")
    first = _text(engine, registry, run_a, one)
    assert first.status == "sent"
    assert _text(engine, registry, run_a, one).message_id == first.message_id  # a retry: the same text
    other = _text(engine, registry, run_b, two)
    assert other.status == "sent" and other.campaign_id == first.campaign_id  # one campaign per step
    ledger = [e["to"] for e in registry.providers["fake"].ledger()]  # type: ignore[attr-defined]
    assert sorted(ledger) == sorted(PHONES)
    with session_scope(engine, read_only=True) as session:
        campaign = session.get(Campaign, first.campaign_id)
        assert campaign is not None and campaign.name == "drip: step 1" and campaign.kind == CampaignKind.AUTOMATION
        assert runs.get_run(session, run_a).campaign_ids == [first.campaign_id]


def test_a_transient_failure_keeps_the_text_queued_for_the_retry(world: tuple[Engine, PluginRegistry]) -> None:
    engine, registry = world
    flaky = Flaky(failures=1)
    registry.providers["flaky"] = flaky  # type: ignore[assignment]
    (one, _) = _contacts(engine)
    run_id = _run(engine)
    with pytest.raises(sends.TextPending):
        _text(engine, registry, run_id, one, provider="flaky")
    with session_scope(engine, read_only=True) as session:
        (message,) = session.scalars(select(Message)).all()
        assert message.status == MessageStatus.QUEUED
    assert _text(engine, registry, run_id, one, provider="flaky").status == "sent"
    assert flaky.accepted == [PHONES[0]]


def test_the_record_decides_before_a_text_and_again_before_a_text_that_waited(
    world: tuple[Engine, PluginRegistry],
) -> None:
    engine, registry = world
    one, two = _contacts(engine)
    run_id = _run(engine)
    since = utcnow().timestamp() - 60
    # Quiet all day long for everybody: the text waits, queued.
    quiet = {"start": "00:00", "end": "23:59"}
    waiting = _text(engine, registry, run_id, one, stop_on=["reply"], since_epoch=since, quiet_hours=quiet)
    assert waiting.status == "deferred" and waiting.resume_at is not None
    with session_scope(engine) as session:  # the contact replies meanwhile
        session.add(Reply(contact_id=one, phone=PHONES[0], body="no thanks", provider="fake"))
    again = _text(engine, registry, run_id, one, stop_on=["reply"], since_epoch=since, quiet_hours=quiet)
    assert (again.status, again.reason) == ("skipped", "stopped:reply")
    with session_scope(engine, read_only=True) as session:
        message = session.get(Message, waiting.message_id)
        assert message is not None and message.status == MessageStatus.CANCELLED
    with session_scope(engine) as session:
        stored = session.get(Contact, two)
        assert stored is not None
        stored.opted_out_at = utcnow()
        session.add(stored)
    assert _text(engine, registry, run_id, two).reason == "opted_out"
    assert runs.finish(engine, run_id, RunStatus.CANCELLED)
    assert (
        _text(engine, registry, _run(engine, "c"), one, stop_on=["reply"], since_epoch=since).reason == "stopped:reply"
    )
    assert not registry.providers["fake"].ledger()  # type: ignore[attr-defined]


def test_the_frequency_cap_holds_for_automation_texts(world: tuple[Engine, PluginRegistry]) -> None:
    engine, registry = world
    (one, _) = _contacts(engine)
    outcomes = [
        sends.text_contact(
            engine,
            registry,
            run_id=_run(engine, f"r{n}"),
            automation="drip",
            step=f"step {n}",
            contact_id=one,
            body=f"Text {n}",
            frequency_cap=(2, 3600.0),
        )
        for n in range(3)
    ]
    assert [o.status for o in outcomes] == ["sent", "sent", "skipped"]
    assert outcomes[2].reason == "frequency_cap"
    assert len(registry.providers["fake"].ledger()) == 2  # type: ignore[attr-defined]
