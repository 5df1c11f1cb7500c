"""The Temporal server restarted mid-campaign (its state kept in a file): the campaign completes,
and nobody is texted twice."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from tests.live import LiveService, free_port, wait_for
from textpulse.devserver import DevServer

N = 300


def test_a_campaign_completes_across_a_temporal_restart(scaled_database_url: str, tmp_path: Path) -> None:
    port = free_port()

    def server() -> DevServer:
        return DevServer(port=port, headless=True, db_file=tmp_path / "temporal.db", log_file=tmp_path / "temporal.log")

    temporal = server()
    temporal.start()
    live = LiveService(
        database_url=scaled_database_url,
        temporal_address=temporal.address,
        data_dir=tmp_path / "var",
        env={"TEXTPULSE_BATCH_SIZE": "50", "TEXTPULSE_HEARTBEAT_TIMEOUT_SECONDS": "5"},
    )
    live.start()
    try:
        assert live.post("/api/contacts", [{"phone": f"+1202555{i:04d}"} for i in range(N)]).status_code == 200
        body = {"name": "Restart", "rate_limit_per_second": 50, "variants": [{"name": "A", "body": "Hi"}]}
        cid = live.post("/api/campaigns", body).json()["id"]
        assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
        wait_for(lambda: len(live.fake.ledger()) >= 50, timeout=30, what="sending under way")
        temporal.stop()
        sent_while_down = len(live.fake.ledger())
        assert sent_while_down < N
        time.sleep(2)
        temporal = server()
        temporal.start()
        wait_for(
            lambda: live.get(f"/api/campaigns/{cid}").json()["status"] == "completed",
            timeout=120,
            what="the campaign completed after the restart",
        )
        sends = Counter(entry["to"] for entry in live.fake.ledger())
        assert len(sends) == N and max(sends.values()) == 1
        assert live.stats(cid)["sent"] == N
    finally:
        live.stop()
        temporal.stop()
