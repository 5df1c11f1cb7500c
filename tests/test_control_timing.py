"""Pause and cancel take effect within a second, whatever the batch size or rate limit.

API.md "Definitions": no message is handed to the provider later than 1 s after the 202; the
messages a cancel kept from going end `cancelled`, a paused campaign's stay `queued` until the
resume. The proof is the fake provider's ledger: the time it accepted every message.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.live import LiveService, wait_for

GRACE = timedelta(seconds=1)


@pytest.fixture
def big_batches(database_url: str, temporal_address: str, tmp_path: Path):
    """500-message batches, four in flight: a pause finds up to 2,000 messages in running activities."""
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path,
        env={"TEXTPULSE_BATCH_SIZE": "500", "TEXTPULSE_MAX_CONCURRENT_BATCHES": "4"},
    )
    live.start()
    yield live
    live.stop()


def _campaign(live: LiveService, n: int, **extra: Any) -> int:
    contacts = [{"phone": f"+1202555{i:04d}"} for i in range(n)]
    assert live.post("/api/contacts", contacts).status_code == 200
    response = live.post("/api/campaigns", {"name": "Big", "variants": [{"name": "A", "body": "Hi"}], **extra})
    assert response.status_code == 201, response.text
    cid = int(response.json()["id"])
    assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
    return cid


def _control(live: LiveService, cid: int, action: str) -> datetime:
    """POST the action; the time its 202 arrived."""
    response = live.post(f"/api/campaigns/{cid}/{action}")
    answered = datetime.now(UTC)
    assert response.status_code == 202, response.text
    return answered


def _accepted(live: LiveService) -> list[datetime]:
    return [datetime.fromisoformat(entry["accepted_at"]) for entry in live.fake.ledger()]


def _statuses(live: LiveService, cid: int) -> Counter[str]:
    return Counter(m["status"] for m in live.messages(cid))


def _nothing_after(live: LiveService, answered: datetime) -> None:
    late = [at for at in _accepted(live) if at > answered + GRACE]
    assert not late, f"{len(late)} messages handed to the provider more than 1 s after the 202 (last {max(late)})"


def _settled(live: LiveService, cid: int, status: str) -> None:
    wait_for(lambda: live.get(f"/api/campaigns/{cid}").json()["status"] == status, timeout=60, what=status)


def test_cancel_without_a_rate_limit_stops_within_a_second(big_batches: LiveService) -> None:
    live, n = big_batches, 4000
    cid = _campaign(live, n)
    wait_for(lambda: len(live.fake.ledger()) >= 200, timeout=60, what="sending under way")
    answered = _control(live, cid, "cancel")
    assert live.get(f"/api/campaigns/{cid}").json()["status"] == "cancelled"
    time.sleep(1.5)
    _nothing_after(live, answered)
    sent = len(live.fake.ledger())
    assert sent < n, "the campaign was sent in full before the cancel: make it bigger"
    statuses = wait_for(
        lambda: (s := _statuses(live, cid))["queued"] + s["sending"] == 0 and s, what="every message settled"
    )
    assert statuses["cancelled"] == n - sent
    assert sum(count for status, count in statuses.items() if status != "cancelled") == sent
    assert max(Counter(entry["to"] for entry in live.fake.ledger()).values()) == 1


def test_pause_without_a_rate_limit_holds_the_rest_queued_and_resume_sends_it(big_batches: LiveService) -> None:
    live, n = big_batches, 4000
    cid = _campaign(live, n)
    wait_for(lambda: len(live.fake.ledger()) >= 200, timeout=60, what="sending under way")
    answered = _control(live, cid, "pause")
    time.sleep(1.5)
    _nothing_after(live, answered)
    sent = len(live.fake.ledger())
    assert sent < n
    statuses = _statuses(live, cid)
    assert statuses["queued"] == n - sent and statuses["cancelled"] == 0
    assert live.get(f"/api/campaigns/{cid}").json()["status"] == "paused"
    _control(live, cid, "resume")
    _settled(live, cid, "completed")
    ledger = live.fake.ledger()
    assert len(ledger) == n and len({entry["to"] for entry in ledger}) == n


@pytest.mark.parametrize("action", ["pause", "cancel"])
def test_control_under_a_rate_limit_takes_effect_within_a_second(live: LiveService, action: str) -> None:
    cid = _campaign(live, 200, rate_limit_per_second=20)
    wait_for(lambda: len(live.fake.ledger()) >= 10, timeout=30, what="sending under way")
    answered = _control(live, cid, action)
    time.sleep(2.0)  # at 20 msg/s, 40 more would have gone by now
    _nothing_after(live, answered)
    sent = len(live.fake.ledger())
    assert sent < 60
    if action == "cancel":
        statuses = wait_for(
            lambda: (s := _statuses(live, cid))["queued"] + s["sending"] == 0 and s, what="every message settled"
        )
        assert statuses["cancelled"] == 200 - sent
        return
    assert _statuses(live, cid)["queued"] == 200 - sent
    _control(live, cid, "resume")
    wait_for(lambda: len(live.fake.ledger()) > sent, timeout=10, what="sending resumed")
    assert live.post(f"/api/campaigns/{cid}/cancel").status_code == 202  # no need to wait 10 s more
