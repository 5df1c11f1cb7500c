"""Schedule, pause, resume and cancel a campaign through the API, on the real workflow."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import Client

from tests.live import LiveService, wait_for
from workflows.campaign import CampaignWorkflow


@pytest.fixture
def slow_live(database_url: str, temporal_address: str, tmp_path: Path):
    """Small batches one at a time, so a campaign takes long enough to be paused mid-send."""
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path,
        env={"TEXTPULSE_BATCH_SIZE": "2", "TEXTPULSE_MAX_CONCURRENT_BATCHES": "1"},
    )
    live.start()
    yield live
    live.stop()


def _contacts(live: LiveService, n: int) -> None:
    assert live.post("/api/contacts", [{"phone": f"+1202555{1000 + i:04d}"} for i in range(n)]).status_code == 200


def _status(live: LiveService, cid: int) -> str:
    return str(live.get(f"/api/campaigns/{cid}").json()["status"])


def test_scheduled_campaign_waits_then_sends(live: LiveService) -> None:
    _contacts(live, 3)
    at = datetime.now(UTC) + timedelta(seconds=3)
    cid = live.post(
        "/api/campaigns", {"name": "Later", "schedule_at": at.isoformat(), "variants": [{"name": "A", "body": "Hi"}]}
    ).json()["id"]
    assert live.post(f"/api/campaigns/{cid}/launch").json()["status"] == "scheduled"
    assert live.stats(cid)["sent"] == 0
    wait_for(lambda: _status(live, cid) == "completed", what="completed")
    sent_at = [datetime.fromisoformat(m["sent_at"].replace("Z", "+00:00")) for m in live.messages(cid)]
    assert len(sent_at) == 3 and min(sent_at) >= at


def test_cancelling_a_scheduled_campaign_sends_nothing(live: LiveService) -> None:
    _contacts(live, 3)
    at = datetime.now(UTC) + timedelta(hours=1)
    cid = live.post(
        "/api/campaigns", {"name": "Never", "schedule_at": at.isoformat(), "variants": [{"name": "A", "body": "Hi"}]}
    ).json()["id"]
    live.post(f"/api/campaigns/{cid}/launch")
    cancelled = live.post(f"/api/campaigns/{cid}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    again = live.post(f"/api/campaigns/{cid}/cancel")
    assert again.status_code == 409 and "it is cancelled" in again.json()["detail"]
    assert live.post(f"/api/campaigns/{cid}/resume").status_code == 409
    time.sleep(1)
    assert live.messages(cid) == [] and live.fake.ledger() == []


def test_pause_stops_after_the_batch_in_flight_and_resume_finishes(slow_live: LiveService) -> None:
    live = slow_live
    _contacts(live, 120)
    cid = live.post("/api/campaigns", {"name": "Big", "variants": [{"name": "A", "body": "Hi"}]}).json()["id"]
    live.post(f"/api/campaigns/{cid}/launch")
    wait_for(lambda: live.stats(cid)["sent"] >= 2, what="first batch sent")
    paused = live.post(f"/api/campaigns/{cid}/pause")
    assert paused.status_code == 202 and paused.json()["status"] == "paused"
    time.sleep(1.5)  # let the batch in flight finish
    sent_when_paused = live.stats(cid)["sent"]
    time.sleep(1.0)
    assert live.stats(cid)["sent"] == sent_when_paused < 120
    assert live.post(f"/api/campaigns/{cid}/resume").json()["status"] == "running"
    wait_for(lambda: _status(live, cid) == "completed", timeout=60, what="completed after resume")
    assert live.stats(cid)["sent"] == 120
    assert Counter(e["to"] for e in live.fake.ledger()).most_common(1)[0][1] == 1


def test_cancel_mid_send_stops_sending_and_cancels_the_rest(slow_live: LiveService) -> None:
    live = slow_live
    _contacts(live, 120)
    cid = live.post("/api/campaigns", {"name": "Stop", "variants": [{"name": "A", "body": "Hi"}]}).json()["id"]
    live.post(f"/api/campaigns/{cid}/launch")
    wait_for(lambda: live.stats(cid)["sent"] >= 2, what="first batch sent")
    assert live.post(f"/api/campaigns/{cid}/cancel").status_code == 202
    wait_for(lambda: all(m["status"] != "queued" for m in live.messages(cid)), what="no message left queued")
    statuses = Counter(m["status"] for m in live.messages(cid))
    assert statuses["cancelled"] > 0
    assert len(live.fake.ledger()) == 120 - statuses["cancelled"]
    assert _status(live, cid) == "cancelled"


def test_cancel_while_paused_ends_the_workflow(slow_live: LiveService, temporal_address: str) -> None:
    live = slow_live
    _contacts(live, 60)
    cid = live.post("/api/campaigns", {"name": "Stop", "variants": [{"name": "A", "body": "Hi"}]}).json()["id"]
    live.post(f"/api/campaigns/{cid}/launch")
    wait_for(lambda: live.stats(cid)["sent"] >= 2, what="first batch sent")
    assert live.post(f"/api/campaigns/{cid}/pause").status_code == 202
    time.sleep(0.5)  # the batch in flight stops: nothing runs while paused
    assert live.post(f"/api/campaigns/{cid}/cancel").json()["status"] == "cancelled"

    async def stage() -> str:
        client = await Client.connect(temporal_address)
        handle = client.get_workflow_handle(live.settings.workflow_id(cid))
        return (await handle.query(CampaignWorkflow.progress)).state

    wait_for(lambda: asyncio.run(stage()) == "cancelled", what="the workflow finished its cancel")
    statuses = Counter(m["status"] for m in live.messages(cid))
    assert statuses["queued"] == 0 and statuses["cancelled"] == 60 - len(live.fake.ledger())
