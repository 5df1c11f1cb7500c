"""The campaign workflow: one per campaign, id `campaign-<id>`.

schedule → audience snapshot → send (phase `all`, or the A/B test cohort) → [A/B: wait for
callbacks, ended early when a variant is clearly best, then pick the winner by statistics or
the fallback policy → send the remainder] → completed.
A second kind of run (`retry_round` set) resends the failed messages of a finished campaign.
Pause takes effect after the batches in flight; cancel stops before the next batch.
No I/O here: everything that touches the world is an activity; every wait is a parameter.
Status moves are those of core.campaigns.lifecycle. Started by reference from outside:
`client.start_workflow(CampaignWorkflow.run, CampaignInput(...), id=..., task_queue=...)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

# Passed through: the sandbox would otherwise import them (and sqlalchemy, jinja2, … behind the
# activities) afresh for every run. None of them does I/O at import.
with workflow.unsafe.imports_passed_through():
    from core.campaigns.lifecycle import Move, transition
    from core.statuses import AUDIENCE_PHASES, CampaignStatus, Phase
    from workflows.activities import CampaignActivities
    from workflows.inputs import (
        CampaignInput,
        CampaignProgress,
        CampaignResult,
        CampaignState,
        CampaignStatusInput,
        DecisionResult,
        EvaluateInput,
        ListBatchesInput,
        PrepareInput,
        RetryInput,
        SendBatchInput,
        SnapshotInput,
        WinnerInput,
    )

SHORT = timedelta(seconds=30)
LONG = timedelta(hours=2)
HEARTBEAT = timedelta(minutes=2)
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(seconds=60)
)


@workflow.defn(name="CampaignWorkflow")
class CampaignWorkflow:
    def __init__(self) -> None:
        self.state = CampaignState()
        self.campaign_id = 0
        self.paused = False
        self.cancelled = False
        self.forced_winner: str | None = None  # "" = decide now by the policy

    @workflow.run
    async def run(self, data: CampaignInput) -> CampaignResult:
        if data.state is not None:  # continued as new
            self.state = data.state
        cid = self.campaign_id = data.campaign_id
        workflow.logger.info("campaign %s: run at stage %s", cid, self.state.stage)
        if self.state.stage == "starting" and data.retry_round is not None:
            retry = await workflow.execute_activity_method(
                CampaignActivities.snapshot_retry,
                RetryInput(cid, data.retry_round, data.batch_size),
                start_to_close_timeout=LONG,
                heartbeat_timeout=HEARTBEAT,
            )
            self.state.recipients = retry.recipients
            self._start_stage(Phase.RETRY, retry.batches)
        if self.state.stage == "starting":
            if not await self._wait_for_schedule(data):
                return await self._finish(Move.END_CANCELLED)
            await self._move(Move.START)
            self.state.stage = "snapshot"
            snap = await workflow.execute_activity_method(
                CampaignActivities.snapshot_audience,
                SnapshotInput(cid, batch_size=data.batch_size),
                start_to_close_timeout=LONG,
                heartbeat_timeout=HEARTBEAT,
            )
            self.state.recipients = snap.recipients
            self._start_stage(snap.phase, snap.batches)
        if self.state.stage in AUDIENCE_PHASES:
            await self._send_stage(data)
            if self.cancelled:
                return await self._finish(Move.END_CANCELLED)
            if self.state.stage == Phase.TEST:
                self.state.stage = "waiting"
        if self.state.stage == "waiting":
            decision = await self._wait_for_winner(data)
            if self.cancelled:
                return await self._finish(Move.END_CANCELLED)
            await self._move(Move.DECIDE)
            remainder = await workflow.execute_activity_method(
                CampaignActivities.prepare_remainder,
                PrepareInput(
                    cid,
                    variant=decision.variant,
                    hold=decision.hold,
                    reason=decision.reason,
                    batch_size=data.batch_size,
                ),
                start_to_close_timeout=LONG,
                heartbeat_timeout=HEARTBEAT,
            )
            self._start_stage(Phase.REMAINDER, remainder.batches)
            await self._send_stage(data)
            if self.cancelled:
                return await self._finish(Move.END_CANCELLED)
        return await self._finish(Move.COMPLETE)

    def _start_stage(self, stage: str, batches: list[list[int]]) -> None:
        self.state.stage, self.state.batches, self.state.done = stage, batches, 0
        workflow.logger.info("campaign %s: sending %s, %d batches", self.campaign_id, stage, len(batches))

    async def _wait_for_schedule(self, data: CampaignInput) -> bool:
        wait = (data.start_at_epoch or 0) - workflow.now().timestamp()
        if wait > 0:
            await self._move(Move.SCHEDULE)
            workflow.logger.info("campaign %s: scheduled, starts in %.0f s", data.campaign_id, wait)
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self.cancelled, timeout=timedelta(seconds=wait))
        return not self.cancelled

    async def _send_stage(self, data: CampaignInput) -> None:
        """Send the stage's batches; then, while messages wait out their recipients' quiet hours,
        sleep until the first may go and send what is still queued."""
        while True:
            await self._send_batches(data)
            if self.cancelled or self.state.resume_at_epoch is None:
                return
            wait = self.state.resume_at_epoch - workflow.now().timestamp()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(lambda: self.cancelled, timeout=timedelta(seconds=wait))
            if self.cancelled:
                return
            batches = await workflow.execute_activity_method(
                CampaignActivities.list_batches,
                ListBatchesInput(self.campaign_id, self.state.stage, data.batch_size),
                start_to_close_timeout=SHORT,
            )
            self._start_stage(self.state.stage, batches)

    async def _send_batches(self, data: CampaignInput) -> None:
        """The stage's batches, several at once (one at a time under a rate limit)."""
        rate = data.rate_limit_per_second
        in_flight = 1 if rate else data.max_concurrent_batches
        # A paced batch takes batch_size / rate seconds: the timeout grows with it.
        timeout = timedelta(seconds=data.send_timeout_seconds + (data.batch_size / rate if rate else 0))
        self.state.resume_at_epoch = None
        while self.state.done < len(self.state.batches):
            await workflow.wait_condition(lambda: not self.paused or self.cancelled)
            if self.cancelled:
                return
            wave = self.state.batches[self.state.done : self.state.done + in_flight]
            results = await asyncio.gather(
                *[
                    workflow.execute_activity_method(
                        CampaignActivities.send_batch,
                        SendBatchInput(self.campaign_id, first, last, phase=self.state.stage),
                        retry_policy=SEND_RETRY,
                        start_to_close_timeout=timeout,
                        heartbeat_timeout=timedelta(seconds=data.send_timeout_seconds),
                    )
                    for first, last in wave
                ]
            )
            for result in results:
                self.state.sent += result.sent
                self.state.failed += result.failed
                self.state.skipped += result.skipped
                if result.resume_at_epoch is not None:
                    self.state.resume_at_epoch = min(
                        self.state.resume_at_epoch or result.resume_at_epoch, result.resume_at_epoch
                    )
            self.state.done += len(wave)
            if workflow.info().is_continue_as_new_suggested() and self.state.done < len(self.state.batches):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.logger.info("campaign %s: continued as new", self.campaign_id)
                workflow.continue_as_new(dataclasses.replace(data, state=self.state))

    async def _wait_for_winner(self, data: CampaignInput) -> DecisionResult:
        """Wait for callbacks after the last test message; end early when the test is decisive."""
        cid = data.campaign_id
        await self._move(Move.WAIT)
        if self.state.wait_until_epoch is None:
            self.state.wait_until_epoch = workflow.now().timestamp() + data.ab_wait_seconds
        while True:
            if self.cancelled:
                return DecisionResult(decided=True, hold=True)
            forced = self.forced_winner
            at_deadline = forced == "" or workflow.now().timestamp() >= self.state.wait_until_epoch
            if forced:
                decision = DecisionResult(True, variant=forced, method="manual", reason=f"{forced} chosen by hand")
            else:
                decision = await workflow.execute_activity_method(
                    CampaignActivities.evaluate_test,
                    EvaluateInput(cid, at_deadline=at_deadline),
                    start_to_close_timeout=SHORT,
                )
            if decision.decided:
                await workflow.execute_activity_method(
                    CampaignActivities.record_winner, WinnerInput(cid, decision), start_to_close_timeout=SHORT
                )
                workflow.logger.info(
                    "campaign %s: winner %s by %s (%s)",
                    cid,
                    "held" if decision.hold else decision.variant or "all variants",
                    decision.method,
                    decision.reason,
                )
                return decision
            left = self.state.wait_until_epoch - workflow.now().timestamp()
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self.forced_winner is not None or self.cancelled,
                    timeout=timedelta(seconds=max(0.001, min(data.ab_poll_seconds, left))),
                )

    async def _finish(self, move: Move) -> CampaignResult:
        if self.state.sent:
            await workflow.execute_activity_method(
                CampaignActivities.sweep_callbacks, self.campaign_id, start_to_close_timeout=LONG
            )
        final = await self._move(move)
        self.state.stage = final
        workflow.logger.info(
            "campaign %s: %s, %d sent, %d failed, %d skipped",
            self.campaign_id,
            final,
            self.state.sent,
            self.state.failed,
            self.state.skipped,
        )
        return CampaignResult(
            self.campaign_id, final, self.state.recipients, self.state.sent, self.state.failed, self.state.skipped
        )

    async def _move(self, move: Move) -> CampaignStatus:
        """Make a move of the transition table; its status and sources go along for workers that
        predate `move` (they read only those)."""
        step = transition(move)
        await workflow.execute_activity_method(
            CampaignActivities.set_campaign_status,
            CampaignStatusInput(self.campaign_id, step.target, list(step.sources) or None, move=move),
            start_to_close_timeout=SHORT,
        )
        return step.target

    @workflow.signal
    def pause(self) -> None:
        workflow.logger.info("campaign %s: paused", self.campaign_id)
        self.paused = True

    @workflow.signal
    def resume(self) -> None:
        workflow.logger.info("campaign %s: resumed", self.campaign_id)
        self.paused = False

    @workflow.signal
    def cancel(self) -> None:
        workflow.logger.info("campaign %s: cancel asked for", self.campaign_id)
        self.cancelled = True

    @workflow.signal
    def choose_winner(self, variant: str) -> None:
        """A variant's name, or "" to decide now by the campaign's policy."""
        workflow.logger.info("campaign %s: winner chosen by hand: %r", self.campaign_id, variant)
        self.forced_winner = variant

    @workflow.query
    def progress(self) -> CampaignProgress:
        return CampaignProgress(
            campaign_id=self.campaign_id,
            state=self.state.stage,
            batches_total=len(self.state.batches),
            batches_done=self.state.done,
            sent=self.state.sent,
            failed=self.state.failed,
            skipped=self.state.skipped,
            paused=self.paused,
            cancelled=self.cancelled,
        )
