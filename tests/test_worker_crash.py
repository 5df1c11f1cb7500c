"""A worker killed mid-send: another worker finishes the campaign and nobody gets a text twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.live import LiveService, wait_for

N = 300


def _worker(live: LiveService, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TEXTPULSE_DATA_DIR": str(live.settings.data_dir),
        "TEXTPULSE_DATABASE_URL": live.settings.database_url,
        "TEXTPULSE_TEMPORAL_ADDRESS": live.settings.temporal_target,
        "TEXTPULSE_TASK_QUEUE": live.settings.task_queue,
        "TEXTPULSE_PUBLIC_URL": live.url,
        "TEXTPULSE_CONFIG": str(live.settings.data_dir / "none.toml"),
        "TEXTPULSE_FAKE_CALLBACK_DELAY_SECONDS": "[0.01, 0.05]",
        "TEXTPULSE_FAKE_DELIVERY_RATIO": "1.0",
        "TEXTPULSE_LOG_FORMAT": "json",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "textpulse.cli", "worker"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


def test_killed_worker_resumes_without_double_sends(database_url: str, temporal_address: str, tmp_path: Path) -> None:
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path / "var",
        run_worker=False,
        env={
            "TEXTPULSE_BATCH_SIZE": "5",
            "TEXTPULSE_MAX_CONCURRENT_BATCHES": "2",
            "TEXTPULSE_SEND_TIMEOUT_SECONDS": "3",
        },
    )
    live.start()
    first = second = None
    try:
        live.post("/api/contacts", [{"phone": f"+1202555{3000 + i:04d}"} for i in range(N)])
        cid = live.post("/api/campaigns", {"name": "Crash", "variants": [{"name": "A", "body": "Hi"}]}).json()["id"]
        first = _worker(live, tmp_path / "worker1.log")
        assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
        wait_for(lambda: live.stats(cid)["sent"] >= 40, timeout=60, what="some batches sent by the first worker")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        sent_by_first = live.stats(cid)["sent"]
        assert sent_by_first < N, "the campaign finished before the worker was killed: make it bigger"
        second = _worker(live, tmp_path / "worker2.log")
        wait_for(
            lambda: live.get(f"/api/campaigns/{cid}").json()["status"] == "completed",
            timeout=90,
            what="the second worker finished the campaign",
        )
        ledger_file = live.settings.data_dir / "fake_ledger.jsonl"
        sends = Counter(json.loads(line)["to"] for line in ledger_file.read_text().splitlines())
        assert len(sends) == N
        assert max(sends.values()) == 1, [phone for phone, n in sends.items() if n > 1]
        # Every message was accepted once; callbacks the killed worker's fake provider still held are
        # gone with it (a real gateway keeps them), so not all of the first worker's sends get delivered.
        stats = live.stats(cid)
        assert stats["sent"] == N and stats["queued"] == 0 and stats["failed"] == 0
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(15)
        live.stop()
