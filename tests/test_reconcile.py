"""Delivery reports that never came are looked up at the provider (core/delivery/reconcile.py):
the fake answers from its ledger (any process's sends), Twilio from its Message resource
(tests/twilio_api.py); a provider without `fetch_status` leaves the messages `sent`, counted in
the campaign's `progress.awaiting_report`. Real service, real databases (SQLite and PostgreSQL),
real HTTP; the callbacks are lost on purpose."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col
from temporalio.testing import ActivityEnvironment

from core.db import session_scope
from core.delivery.reconcile import reconcile_statuses
from core.hooks import abilities
from core.hooks.registry import PluginRegistry, load_plugins
from core.models import Contact, StatusEvent
from plugins.fake import FakeProvider
from plugins.twilio import TwilioProvider
from tests.live import LiveService, wait_for
from tests.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, TwilioStandIn
from textpulse import OutgoingMessage, SendResult
from workflows.activities import CampaignActivities
from workflows.inputs import ReconcileInput, ReconcileResult

PHONES = [f"+1202555{n:04d}" for n in range(700, 724)]
FAKE = {"delivery_ratio": 0.5, "seed": 11, "callback_delay_seconds": [0.01, 0.02]}


class Blind:
    """A provider that sends but cannot be asked for a status (no `fetch_status`)."""

    name = "fake"

    def __init__(self, real: Any) -> None:
        self.real = real

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        return list(self.real.send_batch(messages))

    def parse_status(self, request: Any) -> Any:
        return self.real.parse_status(request)

    def parse_inbound(self, request: Any) -> Any:
        return self.real.parse_inbound(request)

    def inbound_response(self, inbound: Any, answer: str | None) -> Any:
        return self.real.inbound_response(inbound, answer)


def _campaign(live: LiveService, provider: str, phones: list[str]) -> int:
    created = live.post("/api/contacts", [{"phone": p, "name": f"P{i}"} for i, p in enumerate(phones)])
    assert created.status_code == 200, created.text
    body = {"name": "Lost reports", "provider": provider, "variants": [{"name": "A", "body": "Hi {{ name }}"}]}
    response = live.post("/api/campaigns", body)
    assert response.status_code == 201, response.text
    cid = int(response.json()["id"])
    assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
    return cid


def _sent_out(live: LiveService, cid: int, expected_handed: int) -> dict[str, Any]:
    """Every message handed over (or refused) and the campaign completed."""

    def done() -> dict[str, Any]:
        s = live.stats(cid)
        return dict(s) if s["queued"] == 0 and s["sent"] == expected_handed and s["status"] == "completed" else {}

    return wait_for(done, timeout=60, what="every message sent and the campaign completed")


def _registry(live: LiveService) -> PluginRegistry:
    """The running service's plugins (its worker sends through them)."""
    assert live.service is not None
    return live.service.registry


def _progress(live: LiveService, cid: int) -> dict[str, Any]:
    response = live.get(f"/api/campaigns/{cid}")
    assert response.status_code == 200, response.text
    return dict(response.json()["progress"])


def _statuses(live: LiveService, cid: int) -> Counter[str]:
    return Counter(m["status"] for m in live.messages(cid))


# -- the fake: its ledger knows every send's planned fate ------------------------------------------
def test_the_fakes_ledger_leaves_out_a_line_still_being_written(tmp_path: Path) -> None:
    """Another process may be appending as a test reads: a last line with no newline is not an
    entry yet (it read as broken JSON, and failed a test now and then)."""
    ledger = tmp_path / "fake_ledger.jsonl"
    sender = FakeProvider({**FAKE, "callbacks": False}, ledger)
    try:
        out = [OutgoingMessage(i, p, "Hi", f"k{i}", "http://127.0.0.1:9/x") for i, p in enumerate(PHONES)]
        sender.send_batch(out)
        whole = sender.ledger()
        with ledger.open("a", encoding="utf-8") as fh:
            fh.write('{"provider_message_id": "fake-half", "to": "+1')
        assert sender.ledger() == whole and len(whole) == len(PHONES)
    finally:
        sender.dispatcher.close()


def test_the_fake_answers_from_its_ledger_once_the_planned_time_has_passed(tmp_path: Path) -> None:
    ledger = tmp_path / "fake_ledger.jsonl"
    sender = FakeProvider({**FAKE, "callback_delay_seconds": [0.5, 0.5]}, ledger)
    sender.dispatcher.close()  # its callbacks are lost, as with a worker SIGKILLed
    other = FakeProvider({}, ledger)  # another process: it knows the sends only from the ledger
    try:
        out = [
            OutgoingMessage(i, p, "Hi", f"k{i}", "http://127.0.0.1:9/webhooks/fake/status")
            for i, p in enumerate(PHONES)
        ]
        ids = [r.provider_message_id or "" for r in sender.send_batch(out)]
        planned = {e["provider_message_id"]: e["planned"] for e in sender.ledger()}
        assert set(planned) == set(ids)
        # The ledger keeps what the tests read, and the fate decided at send time.
        entry = sender.ledger()[0]
        assert {"to", "idempotency_key", "provider_message_id", "accepted_at", "planned"} <= set(entry)
        assert abilities.can_fetch_status(other)
        assert other.fetch_status(ids + ["fake-unknown"]) == []  # nothing is due yet
        time.sleep(0.7)
        assert {u.status for u in other.fetch_status(ids)} == {"sent"}  # the first callback's time passed
        time.sleep(0.5)
        updates = {u.provider_message_id: u for u in other.fetch_status(ids + ["fake-unknown"])}
        assert set(updates) == set(ids)  # an id it never accepted is left out
        for pid, update in updates.items():
            plan = planned[pid]
            assert (update.status, update.error_code, update.error_text) == (
                plan["status"],
                plan["error_code"],
                plan["error_text"],
            )
            assert update.occurred_at == datetime.fromtimestamp(plan["final_due"], UTC)
        assert {u.status for u in updates.values()} > {"delivered"}  # some fail (delivery_ratio 0.5)
        # Appended later, by anyone: read on the next look.
        more = sender.send_batch([OutgoingMessage(99, PHONES[0], "Again", "k99", "http://127.0.0.1:9/x")])
        time.sleep(1.1)
        assert [u.provider_message_id for u in other.fetch_status([more[0].provider_message_id or ""])] == [
            more[0].provider_message_id
        ]
    finally:
        sender.close()
        other.close()


@pytest.fixture
def lost_callbacks(database_url: str, temporal_address: str, tmp_path: Path) -> Iterator[LiveService]:
    """The service with a fake provider whose callback thread is closed: no report ever comes."""
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path / "var",
        plugin_config={"plugins": {"fake": FAKE}},
    )
    live.start()
    live.fake.dispatcher.close()
    yield live
    live.stop()


def test_reports_lost_with_the_fake_are_reconciled_as_planned(lost_callbacks: LiveService) -> None:
    live = lost_callbacks
    cid = _campaign(live, "fake", PHONES)
    _sent_out(live, cid, len(PHONES))
    time.sleep(0.1)  # past every planned callback time (at most 0.04 s after the send)
    assert _statuses(live, cid) == {"sent": len(PHONES)}
    assert _progress(live, cid)["awaiting_report"] == len(PHONES)

    # A provider that cannot be asked: nothing changes, and the campaign says how many await a report.
    real: PluginRegistry = _registry(live)
    blind = dataclasses.replace(real, providers={**real.providers, "fake": Blind(real.providers["fake"])})
    assert not abilities.can_fetch_status(blind.providers["fake"])
    outcome = reconcile_statuses(live.engine, blind, cid, settle_seconds=0)
    assert (outcome.asked, outcome.updated, outcome.awaiting) == (0, 0, len(PHONES))
    assert _statuses(live, cid) == {"sent": len(PHONES)}
    assert _progress(live, cid)["awaiting_report"] == len(PHONES)

    # Not settled yet (sent less than an hour ago): not asked.
    fresh = load_plugins(live.settings, config=live.plugin_config)  # another process reading the ledger
    try:
        outcome = reconcile_statuses(live.engine, fresh, cid, settle_seconds=3600)
        assert (outcome.asked, outcome.updated, outcome.awaiting) == (0, 0, len(PHONES))

        beats: list[float] = []
        outcome = reconcile_statuses(
            live.engine, fresh, cid, settle_seconds=0, heartbeat=lambda: beats.append(time.monotonic()), ask_chunk=5
        )
        assert (outcome.asked, outcome.updated, outcome.awaiting) == (len(PHONES), len(PHONES), 0)
        assert len(beats) >= len(PHONES) // 5
    finally:
        fresh.close()

    ledger = [json.loads(line) for line in (live.settings.data_dir / "fake_ledger.jsonl").read_text().splitlines()]
    planned = {e["provider_message_id"]: e["planned"] for e in ledger}
    messages = live.messages(cid)
    for m in messages:
        plan = planned[m["provider_message_id"]]
        assert (m["status"], m["error_code"], m["error_text"]) == (
            plan["status"],
            plan["error_code"],
            plan["error_text"],
        )
        if m["status"] == "delivered":
            delivered_at = datetime.fromisoformat(m["delivered_at"].replace("Z", "+00:00"))
            assert abs(delivered_at.timestamp() - plan["final_due"]) < 0.01  # the time it happened, not now
        else:
            assert m["failed_at"] is not None
    assert {m["status"] for m in messages} >= {"delivered"} and len({m["status"] for m in messages}) > 1
    stats = live.stats(cid)
    assert stats["delivered"] + stats["failed"] + stats["undelivered"] == len(PHONES)
    assert _progress(live, cid)["awaiting_report"] == 0
    # Stored like a callback, for the audit trail.
    with session_scope(live.engine, read_only=True) as session:
        events = list(session.scalars(select(StatusEvent).where(col(StatusEvent.provider) == "fake")))
    assert len(events) == len(PHONES) and all(
        e.applied and e.changed and e.raw == {"source": "fetch_status"} for e in events
    )

    # A second look has nothing left to ask: the workflow's activity, run as Temporal runs it.
    activities = CampaignActivities(live.engine, _registry(live))
    again = ActivityEnvironment().run(activities.reconcile_statuses, ReconcileInput(cid, 0))
    assert again == ReconcileResult(asked=0, updated=0, awaiting=0)


# -- Twilio: the Message resource -------------------------------------------------------------------
DELIVERED, UNDELIVERED, UNSUBSCRIBED, INVALID = PHONES[:3], PHONES[3], PHONES[4], PHONES[5]
TWILIO_PHONES = [*DELIVERED, UNDELIVERED, UNSUBSCRIBED, INVALID]


def _twilio(api_base: str, **extra: Any) -> dict[str, Any]:
    return {
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "from_number": FROM_NUMBER,
        "api_base": api_base,
        **extra,
    }


def test_reports_lost_with_twilio_are_fetched_from_the_message_resource(
    database_url: str, temporal_address: str, tmp_path: Path
) -> None:
    with TwilioStandIn(
        invalid=[INVALID],
        undelivered=[UNDELIVERED],
        unsubscribed_later=[UNSUBSCRIBED],
        callbacks=False,  # the reports are lost: only the resource tells
        fetch_failures=[429, 503],  # the first two lookups are told to come back
    ) as standin:
        live = LiveService(
            database_url=database_url,
            temporal_address=temporal_address,
            data_dir=tmp_path / "var",
            plugin_config={"plugins": {"twilio": _twilio(standin.url, fetch_concurrency=1)}},
        )
        live.start()
        try:
            cid = _campaign(live, "twilio", TWILIO_PHONES)
            _sent_out(live, cid, len(TWILIO_PHONES) - 1)
            assert _statuses(live, cid) == {"sent": 5, "failed": 1}
            assert _progress(live, cid)["awaiting_report"] == 5

            outcome = reconcile_statuses(live.engine, _registry(live), cid, settle_seconds=0)
            assert (outcome.asked, outcome.updated, outcome.awaiting) == (5, 5, 0)
            # 429 and 503 were tried again in place: five messages, seven GETs.
            assert len(standin.fetches) == 7 and set(standin.fetches) == {m["sid"] for m in standin.messages}

            by_phone = {m["phone"]: m for m in live.messages(cid)}
            assert [by_phone[p]["status"] for p in DELIVERED] == ["delivered"] * 3
            assert (by_phone[UNDELIVERED]["status"], by_phone[UNDELIVERED]["error_code"]) == ("undelivered", "30003")
            assert by_phone[UNDELIVERED]["error_text"] == "Unreachable destination handset"
            assert (by_phone[UNSUBSCRIBED]["status"], by_phone[UNSUBSCRIBED]["error_code"]) == ("failed", "21610")
            assert (by_phone[INVALID]["status"], by_phone[INVALID]["error_code"]) == ("failed", "21211")
            # delivered_at is Twilio's date_updated, not the time we asked.
            resource_time = {m["to"]: m["_date_final"] for m in standin.messages}
            delivered_at = datetime.fromisoformat(by_phone[DELIVERED[0]]["delivered_at"].replace("Z", "+00:00"))
            assert delivered_at == datetime.strptime(resource_time[DELIVERED[0]], "%a, %d %b %Y %H:%M:%S %z")
            # 21610 reported on the message means the recipient unsubscribed: opted out here too.
            with session_scope(live.engine, read_only=True) as session:
                opted = [c.phone for c in session.scalars(select(Contact)) if c.opted_out_at is not None]
            assert opted == [UNSUBSCRIBED]
            assert _progress(live, cid)["awaiting_report"] == 0

            again = reconcile_statuses(live.engine, _registry(live), cid, settle_seconds=0)
            assert (again.asked, again.updated, again.awaiting) == (0, 0, 0) and len(standin.fetches) == 7
        finally:
            live.stop()


def test_twilio_fetch_status_leaves_out_unknown_sids_and_stops_while_twilio_is_down() -> None:
    with TwilioStandIn(callbacks=False) as standin:
        provider = TwilioProvider(_twilio(standin.url, retries=1, fetch_concurrency=1))
        try:
            sids = [
                r.provider_message_id or ""
                for r in provider.send_batch(
                    [
                        OutgoingMessage(i, p, "Hi", f"k{i}", "https://sms.example.com/x")
                        for i, p in enumerate(PHONES[:3])
                    ]
                )
            ]
            found = provider.fetch_status(["SM" + "0" * 32, *sids])
            assert [u.provider_message_id for u in found] == sids and {u.status for u in found} == {"delivered"}
            assert all(u.occurred_at is not None and u.occurred_at.tzinfo is not None for u in found)

            # Down for good: one sid tried twice (retries=1), the rest left for the next look.
            standin.fetches.clear()
            standin.fetch_failures = [503] * 10
            assert provider.fetch_status(sids) == []
            assert standin.fetches == [sids[0], sids[0]]

            # Wrong credentials: refused once, nothing else asked.
            standin.fetch_failures = []
            standin.fetches.clear()
            wrong = TwilioProvider(_twilio(standin.url, auth_token="0" * 32, fetch_concurrency=1))
            try:
                assert wrong.fetch_status(sids) == [] and standin.fetches == [sids[0]]
            finally:
                wrong.close()
            assert TwilioProvider({}).fetch_status(sids) == []  # unconfigured: nothing to ask with
        finally:
            provider.close()
