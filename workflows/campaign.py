"""The campaign workflow: one per campaign, id `campaign-<id>`.

schedule → audience snapshot → send in batches (several at once) → completed.
Pause takes effect after the batches in flight; cancel stops before the next batch.
No I/O here: everything that touches the world is an activity.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.inputs import (
        CampaignInput,
        CampaignProgress,
        CampaignResult,
        CampaignState,
        CampaignStatusInput,
        SendBatchInput,
        SendBatchResult,
        SnapshotInput,
        SnapshotResult,
    )

SHORT = timedelta(seconds=30)
SEND_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                         maximum_interval=timedelta(seconds=60))


@workflow.defn(name="CampaignWorkflow")
class CampaignWorkflow:
    def __init__(self) -> None:
        self.state = CampaignState()
        self.campaign_id = 0
        self.phase = "starting"
        self.paused = False
        self.cancelled = False

    @workflow.run
    async def run(self, data: CampaignInput) -> CampaignResult:
        if data.state is not None:  # continued as new
            self.state = data.state
        cid = self.campaign_id = data.campaign_id
        if not self.state.snapshot_taken:
            wait = (data.start_at_epoch or 0) - workflow.now().timestamp()
            if wait > 0:
                self.phase = "scheduled"
                await self._set_status(cid, "scheduled", only_from=["draft", "running"])
                try:
                    await workflow.wait_condition(lambda: self.cancelled, timeout=timedelta(seconds=wait))
                except TimeoutError:
                    pass
            if self.cancelled:
                await self._set_status(cid, "cancelled", only_from=["draft", "scheduled", "running"])
                return CampaignResult(cid, "cancelled")
            await self._set_status(cid, "running", only_from=["draft", "scheduled"])
            self.phase = "snapshot"
            snap: SnapshotResult = await workflow.execute_activity(
                "snapshot_audience", SnapshotInput(cid, batch_size=data.batch_size), result_type=SnapshotResult,
                start_to_close_timeout=timedelta(hours=2), heartbeat_timeout=timedelta(minutes=2),
            )
            self.state.batches, self.state.recipients = snap.batches, snap.recipients
            self.state.snapshot_taken = True
        self.phase = "sending"
        while self.state.done < len(self.state.batches):
            await workflow.wait_condition(lambda: not self.paused or self.cancelled)
            if self.cancelled:
                break
            wave = self.state.batches[self.state.done : self.state.done + data.max_concurrent_batches]
            results = await asyncio.gather(*[
                workflow.execute_activity(
                    "send_batch", SendBatchInput(cid, first, last), result_type=SendBatchResult,
                    start_to_close_timeout=timedelta(seconds=data.send_timeout_seconds), retry_policy=SEND_RETRY,
                )
                for first, last in wave
            ])
            for result in results:
                self.state.sent += result.sent
                self.state.failed += result.failed
                self.state.skipped += result.skipped
            self.state.done += len(wave)
            if workflow.info().is_continue_as_new_suggested() and self.state.done < len(self.state.batches):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(dataclasses.replace(data, state=self.state))
        final = "cancelled" if self.cancelled else "completed"
        await self._set_status(cid, final, only_from=["running", "paused", "scheduled"])
        self.phase = final
        return CampaignResult(cid, final, self.state.recipients, self.state.sent, self.state.failed,
                              self.state.skipped)

    async def _set_status(self, cid: int, status: str, *, only_from: list[str]) -> None:
        await workflow.execute_activity(
            "set_campaign_status", CampaignStatusInput(cid, status, only_from), start_to_close_timeout=SHORT,
        )

    @workflow.signal
    def pause(self) -> None:
        self.paused = True

    @workflow.signal
    def resume(self) -> None:
        self.paused = False

    @workflow.signal
    def cancel(self) -> None:
        self.cancelled = True

    @workflow.query
    def progress(self) -> CampaignProgress:
        return CampaignProgress(
            campaign_id=self.campaign_id, state=self.phase, batches_total=len(self.state.batches), batches_done=self.state.done,
            sent=self.state.sent, failed=self.state.failed, skipped=self.state.skipped, paused=self.paused,
            cancelled=self.cancelled,
        )
