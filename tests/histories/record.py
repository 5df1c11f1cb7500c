"""Record histories of today's campaign workflow for tests/test_campaign_replay.py.

    .venv/bin/python tests/histories/record.py tests/histories/

Before changing workflows/campaign.py, record the histories of the workflow as it is (this
script, on the commit before the change), so that the replay test proves runs started on the old
code go on after the deploy. Activities are mocked under their registered names; each case steers
the workflow down one path (plain waves, A/B decided four ways, scheduled, cancelled while
scheduled, paused/resumed/cancelled mid-send, a quiet-hours wait, a retry run).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from textpulse.devserver import DevServer
from workflows.campaign import CampaignWorkflow
from workflows.inputs import (
    CampaignInput,
    CampaignStatusInput,
    DecisionResult,
    EvaluateInput,
    ListBatchesInput,
    PrepareInput,
    RetryInput,
    SendBatchInput,
    SendBatchResult,
    SnapshotInput,
    SnapshotResult,
    WinnerInput,
)

OUT = Path(sys.argv[1])
evaluations: dict[int, int] = {}
sends: dict[int, int] = {}
# campaign id -> scenario
AB = {2, 7, 8, 10}
QUIET = {5}
SLOW = {6}


@activity.defn(name="set_campaign_status")
async def set_campaign_status(data: CampaignStatusInput) -> bool:
    return True


@activity.defn(name="snapshot_audience")
async def snapshot_audience(data: SnapshotInput) -> SnapshotResult:
    if data.campaign_id in AB:
        return SnapshotResult(recipients=4, phase="test", batches=[[1, 2], [3, 4]])
    return SnapshotResult(recipients=6, phase="all", batches=[[1, 2], [3, 4], [5, 6]])


@activity.defn(name="send_batch")
async def send_batch(data: SendBatchInput) -> SendBatchResult:
    n = sends[data.campaign_id] = sends.get(data.campaign_id, 0) + 1
    if data.campaign_id in SLOW:
        await asyncio.sleep(1.0)
    if data.campaign_id in QUIET and n == 1:
        return SendBatchResult(sent=1, deferred=1, resume_at_epoch=time.time() + 1.5)
    return SendBatchResult(sent=2)


@activity.defn(name="list_batches")
async def list_batches(data: ListBatchesInput) -> list[list[int]]:
    return [[2, 2]]


@activity.defn(name="evaluate_test")
async def evaluate_test(data: EvaluateInput) -> DecisionResult:
    n = evaluations[data.campaign_id] = evaluations.get(data.campaign_id, 0) + 1
    if data.campaign_id == 10:
        return DecisionResult(decided=True, hold=True, method="hold", reason="no clear winner")
    if data.campaign_id == 8 and data.at_deadline:
        return DecisionResult(decided=True, variant="A", method="fallback", reason="by policy")
    if data.campaign_id == 2 and n >= 2:
        return DecisionResult(decided=True, variant="B", method="statistics", reason="B is best")
    return DecisionResult(decided=False)


@activity.defn(name="record_winner")
async def record_winner(data: WinnerInput) -> None:
    return None


@activity.defn(name="prepare_remainder")
async def prepare_remainder(data: PrepareInput) -> SnapshotResult:
    if data.hold:
        return SnapshotResult(recipients=0, phase="remainder")
    return SnapshotResult(recipients=3, phase="remainder", batches=[[10, 11], [12, 12]])


@activity.defn(name="sweep_callbacks")
async def sweep_callbacks(campaign_id: int) -> int:
    return 0


@activity.defn(name="snapshot_retry")
async def snapshot_retry(data: RetryInput) -> SnapshotResult:
    return SnapshotResult(recipients=2, phase="retry", batches=[[20, 21]])


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def main() -> None:
    server = DevServer(port=free_port(), headless=True, log_file=Path(tempfile.gettempdir()) / "record-histories.log")
    server.start()
    try:
        client = await Client.connect(server.address)
        queue = "histories"
        async with Worker(
            client,
            task_queue=queue,
            workflows=[CampaignWorkflow],
            activities=[
                set_campaign_status,
                snapshot_audience,
                send_batch,
                list_batches,
                evaluate_test,
                record_winner,
                prepare_remainder,
                sweep_callbacks,
                snapshot_retry,
            ],
        ):
            now = time.time()
            runs = {
                "all": CampaignInput(1, batch_size=2, max_concurrent_batches=2),
                "ab_statistics": CampaignInput(2, batch_size=2, ab_wait_seconds=30, ab_poll_seconds=0.5),
                "scheduled": CampaignInput(3, batch_size=2, start_at_epoch=now + 1.5),
                "retry": CampaignInput(4, batch_size=2, retry_round=1),
                "quiet_hours": CampaignInput(5, batch_size=2),
                "pause_cancel": CampaignInput(6, batch_size=2, rate_limit_per_second=100.0),
                "ab_chosen": CampaignInput(7, batch_size=2, ab_wait_seconds=60, ab_poll_seconds=30),
                "ab_decide_now": CampaignInput(8, batch_size=2, ab_wait_seconds=60, ab_poll_seconds=30),
                "cancel_scheduled": CampaignInput(9, batch_size=2, start_at_epoch=now + 3600),
                "ab_hold": CampaignInput(10, batch_size=2, ab_wait_seconds=30, ab_poll_seconds=0.5),
            }
            handles = {
                name: await client.start_workflow(CampaignWorkflow.run, data, id=f"campaign-{name}", task_queue=queue)
                for name, data in runs.items()
            }
            await asyncio.sleep(1.5)
            await handles["pause_cancel"].signal(CampaignWorkflow.pause)
            await handles["cancel_scheduled"].signal(CampaignWorkflow.cancel)
            await handles["ab_chosen"].signal(CampaignWorkflow.choose_winner, "B")
            await handles["ab_decide_now"].signal(CampaignWorkflow.choose_winner, "")
            await asyncio.sleep(1.0)
            await handles["pause_cancel"].signal(CampaignWorkflow.resume)
            await asyncio.sleep(0.5)
            await handles["pause_cancel"].signal(CampaignWorkflow.cancel)
            OUT.mkdir(parents=True, exist_ok=True)
            for name, handle in handles.items():
                result = await asyncio.wait_for(handle.result(), 60)
                print(name, result)
                history = await handle.fetch_history()
                (OUT / f"campaign_{name}.json").write_text(history.to_json())
    finally:
        server.stop()


asyncio.run(main())
