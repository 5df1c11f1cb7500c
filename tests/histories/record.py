"""Record histories of today's campaign workflow for tests/test_campaign_replay.py.

    .venv/bin/python tests/histories/record.py tests/histories/<version>/

Before changing workflows/campaign.py, record the histories of the workflow as it is (this
script, on the commit before the change), so that the replay test proves runs started on the old
code go on after the deploy. Activities are mocked under their registered names; each case steers
the workflow down one path: a plain send (with the status lookup after the settle window), A/B
decided by statistics, by hand, by "decide now", held then picked, held then cancelled; a control
group; scheduled; cancelled while scheduled; paused and resumed mid-send; cancelled mid-batch; a
quiet-hours wait; a retry run. Control goes by the workflow's updates, as the API does it.
(tests/histories/*.json at the top were recorded by this script's version of commit dabbcf7,
which signalled, from the workflow before issue 11.)
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
    ReconcileInput,
    ReconcileResult,
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
AB = {2, 7, 8, 10, 11}
HOLD = {10, 11}
QUIET = {5}
SLOW = {6, 12}
CONTROL_GROUP = {13}
statuses: dict[int, str] = {}  # the "database": a campaign's status, as the moves left it


@activity.defn(name="set_campaign_status")
async def set_campaign_status(data: CampaignStatusInput) -> bool:
    statuses[data.campaign_id] = data.status
    return True


@activity.defn(name="snapshot_audience")
async def snapshot_audience(data: SnapshotInput) -> SnapshotResult:
    if data.campaign_id in AB:
        return SnapshotResult(recipients=4, phase="test", batches=[[1, 2], [3, 4]])
    if data.campaign_id in CONTROL_GROUP:  # rows 7-8 held out: the workflow sees only the rest
        return SnapshotResult(recipients=6, phase="all", batches=[[1, 2], [3, 4], [5, 6]])
    return SnapshotResult(recipients=6, phase="all", batches=[[1, 2], [3, 4], [5, 6]])


@activity.defn(name="send_batch")
async def send_batch(data: SendBatchInput) -> SendBatchResult:
    n = sends[data.campaign_id] = sends.get(data.campaign_id, 0) + 1
    if data.campaign_id in SLOW:  # a batch that notices a pause or cancel between provider calls
        for _ in range(10):
            await asyncio.sleep(0.1)
            if statuses.get(data.campaign_id) in ("paused", "cancelled"):
                return SendBatchResult(sent=1, stopped=statuses[data.campaign_id])
    if data.campaign_id in QUIET and n == 1:
        return SendBatchResult(sent=1, deferred=1, resume_at_epoch=time.time() + 1.5)
    return SendBatchResult(sent=2)


@activity.defn(name="list_batches")
async def list_batches(data: ListBatchesInput) -> list[list[int]]:
    return [[2, 2]]


@activity.defn(name="evaluate_test")
async def evaluate_test(data: EvaluateInput) -> DecisionResult:
    n = evaluations[data.campaign_id] = evaluations.get(data.campaign_id, 0) + 1
    if data.campaign_id in HOLD:
        if not data.at_deadline:
            return DecisionResult(decided=False)
        return DecisionResult(decided=True, hold=True, method="fallback", reason="no variant decisive: held")
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


@activity.defn(name="reconcile_statuses")
async def reconcile_statuses(data: ReconcileInput) -> ReconcileResult:
    return ReconcileResult(asked=2, updated=2)


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
                reconcile_statuses,
            ],
        ):
            now = time.time()
            runs = {
                "all": CampaignInput(1, batch_size=2, max_concurrent_batches=2, status_settle_seconds=0.5),
                "ab_statistics": CampaignInput(2, batch_size=2, ab_wait_seconds=30, ab_poll_seconds=0.5),
                "scheduled": CampaignInput(3, batch_size=2, start_at_epoch=now + 1.5),
                "retry": CampaignInput(4, batch_size=2, retry_round=1),
                "quiet_hours": CampaignInput(5, batch_size=2),
                "pause_resume": CampaignInput(6, batch_size=2, rate_limit_per_second=100.0),
                "ab_chosen": CampaignInput(7, batch_size=2, ab_wait_seconds=60, ab_poll_seconds=30),
                "ab_decide_now": CampaignInput(8, batch_size=2, ab_wait_seconds=60, ab_poll_seconds=30),
                "cancel_scheduled": CampaignInput(9, batch_size=2, start_at_epoch=now + 3600),
                "ab_held_picked": CampaignInput(10, batch_size=2, ab_wait_seconds=0.5, ab_poll_seconds=0.2),
                "ab_held_cancelled": CampaignInput(11, batch_size=2, ab_wait_seconds=0.5, ab_poll_seconds=0.2),
                "cancel_mid_batch": CampaignInput(12, batch_size=2, max_concurrent_batches=2),
                "control_group": CampaignInput(13, batch_size=2),
            }
            for data in runs.values():
                statuses[data.campaign_id] = "scheduled" if data.start_at_epoch else "running"
            handles = {
                name: await client.start_workflow(CampaignWorkflow.run, data, id=f"campaign-{name}", task_queue=queue)
                for name, data in runs.items()
            }
            await asyncio.sleep(1.5)
            await handles["pause_resume"].execute_update(CampaignWorkflow.control, "pause")
            await handles["cancel_mid_batch"].execute_update(CampaignWorkflow.control, "cancel")
            await handles["cancel_scheduled"].execute_update(CampaignWorkflow.control, "cancel")
            await handles["ab_chosen"].execute_update(CampaignWorkflow.pick_winner, "B")
            await handles["ab_decide_now"].execute_update(CampaignWorkflow.pick_winner, "")
            await asyncio.sleep(1.0)
            await handles["pause_resume"].execute_update(CampaignWorkflow.control, "resume")
            await handles["ab_held_picked"].execute_update(CampaignWorkflow.pick_winner, "A")
            await handles["ab_held_cancelled"].execute_update(CampaignWorkflow.control, "cancel")
            OUT.mkdir(parents=True, exist_ok=True)
            for name, handle in handles.items():
                result = await asyncio.wait_for(handle.result(), 60)
                print(name, result)
                history = await handle.fetch_history()
                (OUT / f"campaign_{name}.json").write_text(history.to_json())
    finally:
        server.stop()


asyncio.run(main())
