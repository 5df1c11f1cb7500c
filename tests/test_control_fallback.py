"""Control while no worker runs the campaign's workflow: the update gets no answer within
TEXTPULSE_CONTROL_TIMEOUT_SECONDS, so the API makes the move in the database and signals the
workflow, which takes it on once a worker runs it; the late update is refused, never applied twice."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client
from temporalio.service import RPCError

from tests.live import LiveService, wait_for, worker_process


def _paused(address: str, workflow_id: str) -> bool:
    async def ask() -> bool:
        client = await Client.connect(address)
        try:
            progress = await client.get_workflow_handle(workflow_id).query("progress", rpc_timeout=timedelta(seconds=5))
        except RPCError:  # no worker has taken the query yet
            return False
        return bool(progress["paused"] if isinstance(progress, dict) else progress.paused)

    return asyncio.run(ask())


def test_pause_and_cancel_with_no_worker_up(database_url: str, temporal_address: str, tmp_path: Path) -> None:
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path / "var",
        run_worker=False,
        env={"TEXTPULSE_CONTROL_TIMEOUT_SECONDS": "1"},
    )
    live.start()
    worker = None
    try:
        live.post("/api/contacts", [{"phone": f"+1202555{8000 + i:04d}"} for i in range(20)])
        create = "/api/campaigns"
        paused_id = live.post(create, {"name": "P", "variants": [{"name": "A", "body": "Hi"}]}).json()["id"]
        cancelled_id = live.post(create, {"name": "C", "variants": [{"name": "A", "body": "Yo"}]}).json()["id"]
        for cid in (paused_id, cancelled_id):
            assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
        began = time.monotonic()
        paused = live.post(f"/api/campaigns/{paused_id}/pause")
        assert paused.status_code == 202 and paused.json()["status"] == "paused"
        assert time.monotonic() - began < 10  # the control timeout, not the RPC's own minute
        cancelled = live.post(f"/api/campaigns/{cancelled_id}/cancel")
        assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
        # A refused move is still a 409 from the database's status, worker or not.
        assert live.post(f"/api/campaigns/{cancelled_id}/pause").status_code == 409

        worker = worker_process(live, tmp_path / "worker.log", TEXTPULSE_FAKE_CALLBACK_DELAY_SECONDS="[0.01, 0.05]")
        # The worker runs both workflows: the paused one takes its signal and waits (its query says
        # so once a worker has run it: on a loaded machine that can take longer than a fixed sleep).
        wait_for(
            lambda: _paused(temporal_address, live.settings.workflow_id(paused_id)),
            timeout=60,
            what="the paused campaign's workflow took its signal",
        )
        assert live.fake.ledger() == []
        assert live.get(f"/api/campaigns/{paused_id}").json()["status"] == "paused"
        assert live.get(f"/api/campaigns/{cancelled_id}").json()["status"] == "cancelled"
        # With the worker up, resume is an update again; the campaign is sent once.
        resumed = live.post(f"/api/campaigns/{paused_id}/resume")
        assert resumed.status_code == 202 and resumed.json()["status"] == "running"
        wait_for(
            lambda: live.get(f"/api/campaigns/{paused_id}").json()["status"] == "completed",
            timeout=60,
            what="the resumed campaign completed",
        )
        ledger = live.fake.ledger()
        assert len(ledger) == 20 and {entry["body"] for entry in ledger} == {"Hi"}
        assert live.messages(cancelled_id) == []  # cancelled before its audience was snapshot
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            worker.wait(15)
        live.stop()
