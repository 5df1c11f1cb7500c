"""A worker killed mid-send: another worker finishes the campaign, nobody gets a text twice, and
no message is left without its final status."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from tests.live import LiveService, wait_for, worker_process

N = 300


def test_killed_worker_resumes_without_double_sends(
    scaled_database_url: str, temporal_address: str, tmp_path: Path
) -> None:
    """Two workers (the scaled-out shape, on PostgreSQL when the tests have it, as
    test_worker_kills.py; a retried batch's lookup that keeps a message from going twice is tested
    on both backends in test_sending.py): one SIGKILLed mid-campaign, the other
    carries on at once and takes over the dead one's batch after the heartbeat timeout; the
    callbacks the dead worker's fake still held are looked up after the settle window."""
    live = LiveService(
        database_url=scaled_database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path / "var",
        run_worker=False,
        env={
            "TEXTPULSE_BATCH_SIZE": "5",
            "TEXTPULSE_MAX_CONCURRENT_BATCHES": "2",
            "TEXTPULSE_HEARTBEAT_TIMEOUT_SECONDS": "5",
            "TEXTPULSE_STATUS_SETTLE_SECONDS": "1",
        },
    )
    live.start()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        live.post("/api/contacts", [{"phone": f"+1202555{3000 + i:04d}"} for i in range(N)])
        body = {"name": "Crash", "rate_limit_per_second": 60, "variants": [{"name": "A", "body": "Hi"}]}
        cid = live.post("/api/campaigns", body).json()["id"]
        workers = [
            worker_process(
                live,
                tmp_path / "worker1.log",
                TEXTPULSE_FAKE_CALLBACK_DELAY_SECONDS="[0.01, 0.05]",
                TEXTPULSE_FAKE_DELIVERY_RATIO="1.0",
            ),
            worker_process(
                live,
                tmp_path / "worker2.log",
                TEXTPULSE_FAKE_CALLBACK_DELAY_SECONDS="[0.01, 0.05]",
                TEXTPULSE_FAKE_DELIVERY_RATIO="1.0",
            ),
        ]
        assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
        wait_for(lambda: live.stats(cid)["sent"] >= 40, timeout=60, what="some batches sent")
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(10)
        killed_at = time.monotonic()
        sent_at_kill = len(live.fake.ledger())
        assert sent_at_kill < N, "the campaign finished before the worker was killed: make it bigger"
        wait_for(lambda: len(live.fake.ledger()) > sent_at_kill + 5, timeout=30, what="the other worker went on")
        assert time.monotonic() - killed_at < 30
        wait_for(
            lambda: live.get(f"/api/campaigns/{cid}").json()["status"] == "completed",
            timeout=90,
            what="the other worker finished the campaign",
        )
        sends = Counter(entry["to"] for entry in live.fake.ledger())
        assert len(sends) == N
        assert max(sends.values()) == 1, [phone for phone, n in sends.items() if n > 1]
        # Callbacks the killed worker's fake still held died with it; after the settle window the
        # workflow asks the fake (its ledger) and nothing is left `sent`.
        stats = wait_for(
            lambda: (s := live.stats(cid))["delivered"] == N and s, timeout=60, what="every message delivered"
        )
        assert stats["sent"] == N and stats["queued"] == 0 and stats["failed"] == 0
        assert live.get(f"/api/campaigns/{cid}").json()["progress"]["awaiting_report"] == 0
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(15)
        live.stop()
