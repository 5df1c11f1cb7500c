"""Retry failed: a second run resends to contacts whose message failed for a retryable reason."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from tests.live import LiveService, wait_for


def _live(database_url: str, temporal_address: str, tmp_path: Path, codes: list[str]) -> LiveService:
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path,
        plugin_config={
            "plugins": {
                "fake": {"delivery_ratio": 0.5, "fail_codes": codes, "seed": 11, "callback_delay_seconds": [0.01, 0.03]}
            }
        },
    )
    live.start()
    return live


def _run(live: LiveService, n: int) -> int:
    live.post("/api/contacts", [{"phone": f"+1202555{6000 + i:04d}"} for i in range(n)])
    cid = live.post("/api/campaigns", {"name": "R", "variants": [{"name": "A", "body": "Hi"}]}).json()["id"]
    assert live.post(f"/api/campaigns/{cid}/retry-failed").status_code == 409  # a draft has nothing to retry
    live.post(f"/api/campaigns/{cid}/launch")
    wait_for(lambda: live.get(f"/api/campaigns/{cid}").json()["status"] == "completed", what="completed")
    wait_for(
        lambda: (s := live.stats(cid))["delivered"] + s["failed"] + s["undelivered"] == n,
        what="every first attempt settled",
    )
    return int(cid)


def test_retryable_failures_are_sent_again(database_url: str, temporal_address: str, tmp_path: Path) -> None:
    live = _live(database_url, temporal_address, tmp_path, ["30003"])
    try:
        cid = _run(live, 30)
        failed = {m["phone"] for m in live.messages(cid) if m["status"] in ("failed", "undelivered")}
        assert failed
        response = live.post(f"/api/campaigns/{cid}/retry-failed")
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "running"
        wait_for(lambda: live.get(f"/api/campaigns/{cid}").json()["status"] == "completed", what="retry completed")
        retried = live.messages(cid, phase="retry")
        assert {m["phone"] for m in retried} == failed
        sends = Counter(entry["to"] for entry in live.fake.ledger())
        assert {phone for phone, n in sends.items() if n == 2} == failed and max(sends.values()) == 2
    finally:
        live.stop()


def test_permanent_failures_are_not_retried(database_url: str, temporal_address: str, tmp_path: Path) -> None:
    live = _live(database_url, temporal_address, tmp_path, ["30005"])  # unknown handset: retrying cannot help
    try:
        cid = _run(live, 10)
        response = live.post(f"/api/campaigns/{cid}/retry-failed")
        assert response.status_code == 409 and "no failed message worth retrying" in response.json()["detail"]
        assert live.get(f"/api/campaigns/{cid}").json()["status"] == "completed"
    finally:
        live.stop()


def test_pause_resume_and_cancel_reach_a_retry_run(
    scaled_database_url: str, temporal_address: str, tmp_path: Path
) -> None:
    # Once (PostgreSQL when the tests have it): control of a run is the workflow's; the retry's
    # database paths run on both backends in the tests above.
    live = _live(scaled_database_url, temporal_address, tmp_path, ["30003"])
    try:
        n = 60
        live.post("/api/contacts", [{"phone": f"+1202555{7000 + i:04d}"} for i in range(n)])
        body = {"name": "R", "rate_limit_per_second": 10, "variants": [{"name": "A", "body": "Hi"}]}
        cid = live.post("/api/campaigns", body).json()["id"]
        live.post(f"/api/campaigns/{cid}/launch")
        wait_for(lambda: live.get(f"/api/campaigns/{cid}").json()["status"] == "completed", what="completed")
        wait_for(
            lambda: (s := live.stats(cid))["delivered"] + s["failed"] + s["undelivered"] == n,
            what="every first attempt settled",
        )
        first = len(live.fake.ledger())
        failed = n - live.stats(cid)["delivered"]
        assert failed >= 15
        assert live.post(f"/api/campaigns/{cid}/retry-failed").status_code == 202
        wait_for(lambda: len(live.fake.ledger()) > first, what="the retry sending")
        paused = live.post(f"/api/campaigns/{cid}/pause")
        assert paused.status_code == 202 and paused.json()["status"] == "paused"
        time.sleep(1.0)
        held = len(live.fake.ledger())
        time.sleep(1.0)
        assert len(live.fake.ledger()) == held  # nothing more while paused
        assert live.post(f"/api/campaigns/{cid}/resume").json()["status"] == "running"
        wait_for(lambda: len(live.fake.ledger()) > held, what="the retry resumed")
        cancelled = live.post(f"/api/campaigns/{cid}/cancel")
        assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
        wait_for(
            lambda: "queued" not in {m["status"] for m in live.messages(cid, phase="retry")},
            what="the retry's unsent messages cancelled",
        )
        retry = Counter(m["status"] for m in live.messages(cid, phase="retry"))
        assert retry["cancelled"] > 0 and sum(retry.values()) == failed
    finally:
        live.stop()
