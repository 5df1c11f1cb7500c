"""The campaign workflow: one per campaign, id `campaign-<id>`.

schedule → audience snapshot → send (phase `all`, or the A/B test cohort) → [A/B: wait for
callbacks, ended early when a variant is clearly best, then pick the winner by statistics or
the fallback policy → send the remainder] → completed.
A second kind of run (`retry_round` set, id `campaign-<id>-retry-<n>`) resends the failed
messages of a finished campaign. Under `fallback: hold` an undecided test leaves the campaign
`held` until a variant is picked (then the remainder is sent) or it is cancelled.

Control is by workflow updates (`control`, `pick_winner`) whose validators refuse, with the words
of a 409, a move the transition table (core.campaigns.lifecycle) does not allow from the status
the workflow last set; the handler makes the move in the database, which is what the send
activity checks before each provider call, so a pause or cancel takes effect within a second.
Batches go in a sliding window: a slow or dead batch holds back no other; a dead worker's batch
is retried elsewhere after the heartbeat timeout. After sending, messages still without a final
status after a settle window are looked up at the provider.

No I/O here: everything that touches the world is an activity; every wait is a parameter.
Started by reference from outside:
`client.start_workflow(CampaignWorkflow.run, CampaignInput(...), id=..., task_queue=...)`.
Runs started on older code replay through the `workflow.patched` branches (tests/histories/).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

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
        ReconcileInput,
        RetryInput,
        SendBatchInput,
        SendBatchResult,
        SnapshotInput,
        WinnerInput,
    )

SHORT = timedelta(seconds=30)
LONG = timedelta(hours=2)
HEARTBEAT = timedelta(minutes=2)
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(seconds=60)
)
# Moves the `control` update makes; the others are the workflow's own.
CONTROL_MOVES = (Move.PAUSE, Move.RESUME, Move.CANCEL)
PICKABLE = (CampaignStatus.WAITING, CampaignStatus.HELD)
PAUSABLE_STAGES = ("starting", "snapshot", *AUDIENCE_PHASES)  # scheduled, or sending a stage

# `workflow.patched` ids: a run whose history predates a change replays the branch it took then.
SEND_WINDOW = "send-window"  # sliding window of batches, each stopped early by a pause or cancel
HOLD_KEEPS_REMAINDER = "hold-keeps-remainder"  # `held` waits for a pick (it cancelled the remainder)
RECONCILE = "reconcile-statuses"  # look up statuses that never came, after the settle window
RECONCILE_PASSES = 3  # after settle, 2 × settle and 4 × settle more, while reports are missing


@workflow.defn(name="CampaignWorkflow")
class CampaignWorkflow:
    @workflow.init
    def __init__(self, data: CampaignInput) -> None:
        self.state = data.state or CampaignState()
        self.campaign_id = data.campaign_id
        if self.state.status is None:  # as the API left it when it started this run
            scheduled = data.start_at_epoch is not None and data.retry_round is None
            self.state.status = CampaignStatus.SCHEDULED if scheduled else CampaignStatus.RUNNING
        self.paused = self.state.status == CampaignStatus.PAUSED
        self.cancelled = False
        self.forced_winner: str | None = None  # "" = decide now by the policy
        self.forced_reason = ""
        self.forced_decision: DecisionResult | None = None  # a held campaign's `{}` decided by the statistics
        self._controls = 0  # control moves so far: a batch's stop outcome is stale if this moved
        self._finishing = False  # the final move is under way: no more control
        self._failure: BaseException | None = None  # of a batch in the window

    @workflow.run
    async def run(self, data: CampaignInput) -> CampaignResult:
        cid = self.campaign_id
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
                return await self._finish(data, Move.END_CANCELLED)
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
                return await self._finish(data, Move.END_CANCELLED)
            if self.state.stage == Phase.TEST:
                self.state.stage = "waiting"
        if self.state.stage == "waiting":
            decision = await self._wait_for_winner(data)
            if self.cancelled:
                return await self._finish(data, Move.END_CANCELLED)
            if decision.hold and workflow.patched(HOLD_KEEPS_REMAINDER):
                self.state.stage = "held"
            else:
                await self._send_remainder(data, decision)
        if self.state.stage == "held":
            decision = await self._hold()
            if self.cancelled:
                return await self._finish(data, Move.END_CANCELLED)
            await self._send_remainder(data, decision)
        if self.cancelled:
            return await self._finish(data, Move.END_CANCELLED)
        return await self._finish(data, Move.COMPLETE)

    def _start_stage(self, stage: str, batches: list[list[int]]) -> None:
        self.state.stage, self.state.batches, self.state.done, self.state.todo = stage, batches, 0, None
        workflow.logger.info("campaign %s: sending %s, %d batches", self.campaign_id, stage, len(batches))

    async def _wait_for_schedule(self, data: CampaignInput) -> bool:
        wait = (data.start_at_epoch or 0) - workflow.now().timestamp()
        if wait > 0:
            await self._move(Move.SCHEDULE)
            workflow.logger.info("campaign %s: scheduled, starts in %.0f s", data.campaign_id, wait)
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self.cancelled, timeout=timedelta(seconds=wait))
        return not self.cancelled

    async def _send_remainder(self, data: CampaignInput, decision: DecisionResult) -> None:
        await self._move(Move.DECIDE)
        remainder = await workflow.execute_activity_method(
            CampaignActivities.prepare_remainder,
            PrepareInput(
                self.campaign_id,
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

    async def _send_stage(self, data: CampaignInput) -> None:
        """Send the stage's batches; then, while messages wait out their recipients' quiet hours,
        sleep until the first may go and send what is still queued."""
        while True:
            if workflow.patched(SEND_WINDOW):
                await self._send_window(data)
            else:
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

    async def _send_window(self, data: CampaignInput) -> None:
        """The stage's batches in a sliding window: up to `max_concurrent_batches` in flight (one
        under a rate limit), the next one starting as soon as any ends, so one slow or dead batch
        never holds back the others. A batch stopped by a pause or cancel stays to do."""
        rate = data.rate_limit_per_second
        limit = 1 if rate else max(1, data.max_concurrent_batches)
        # A paced batch takes batch_size / rate seconds: the overall timeout grows with it; the
        # heartbeat timeout (a dead worker) does not.
        timeout = timedelta(seconds=data.send_timeout_seconds + (data.batch_size / rate if rate else 0))
        heartbeat = timedelta(seconds=data.heartbeat_timeout_seconds)
        self.state.resume_at_epoch = None
        if self.state.todo is None:
            self.state.todo = [list(batch) for batch in self.state.batches[self.state.done :]]
        todo = self.state.todo
        running: list[int] = []  # first message ids of the batches in flight

        async def send(batch: list[int]) -> None:
            controls = self._controls
            try:
                result = await workflow.execute_activity_method(
                    CampaignActivities.send_batch,
                    SendBatchInput(self.campaign_id, batch[0], batch[1], phase=self.state.stage),
                    retry_policy=SEND_RETRY,
                    start_to_close_timeout=timeout,
                    heartbeat_timeout=heartbeat,
                )
            except BaseException as exc:  # raised in the loop below, which awaits no task
                self._failure = exc
                return
            finally:
                running.remove(batch[0])
            self._count(result)
            if result.stopped is None:
                todo.remove(batch)
                self.state.done += 1
            elif controls == self._controls:  # stopped by a move made outside this workflow
                self._obey(result.stopped)

        def startable() -> list[int] | None:
            if self.paused or self.cancelled or len(running) >= limit or self._rollover_due():
                return None
            return next((batch for batch in todo if batch[0] not in running), None)

        while True:
            if self._failure is not None:
                raise self._failure
            if not running and (self.cancelled or not todo):
                return
            if not running and todo and self._rollover_due():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.logger.info("campaign %s: continued as new", self.campaign_id)
                workflow.continue_as_new(dataclasses.replace(data, state=self.state))
            batch = startable()
            if batch is not None:
                running.append(batch[0])
                asyncio.create_task(send(batch))  # noqa: RUF006 - `running` tracks it
                continue
            in_flight, cancelled = len(running), self.cancelled

            def changed(in_flight: int = in_flight, cancelled: bool = cancelled) -> bool:
                """A batch ended or failed, a cancel came, or another batch may start."""
                if len(running) != in_flight or self._failure is not None or self.cancelled != cancelled:
                    return True
                return startable() is not None

            await workflow.wait_condition(changed)

    def _rollover_due(self) -> bool:
        return workflow.info().is_continue_as_new_suggested()

    def _count(self, result: SendBatchResult) -> None:
        self.state.sent += result.sent
        self.state.failed += result.failed
        self.state.skipped += result.skipped
        if result.resume_at_epoch is not None:
            first = self.state.resume_at_epoch
            self.state.resume_at_epoch = min(first or result.resume_at_epoch, result.resume_at_epoch)

    def _obey(self, status: str) -> None:
        """A batch found the campaign paused or cancelled in the database (a move the API made
        while this workflow could not be reached): follow it."""
        workflow.logger.info("campaign %s: found %s by a batch", self.campaign_id, status)
        if status == CampaignStatus.PAUSED:
            self.paused, self.state.status = True, CampaignStatus.PAUSED
        elif status != CampaignStatus.RUNNING:  # running again already: the batch just goes again
            self.cancelled, self.state.status = True, status

    async def _send_batches(self, data: CampaignInput) -> None:
        """Replay only (runs started before SEND_WINDOW): the batches in waves."""
        rate = data.rate_limit_per_second
        in_flight = 1 if rate else data.max_concurrent_batches
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
                self._count(result)
            stopped = next((result.stopped for result in results if result.stopped), None)
            if stopped is not None:  # today's activity stopped a batch of this older run: send it again
                self._obey(stopped)
                continue
            self.state.done += len(wave)
            if self._rollover_due() and self.state.done < len(self.state.batches):
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
                reason = self.forced_reason or f"{forced} chosen by hand"
                decision = DecisionResult(True, variant=forced, method="manual", reason=reason)
            else:
                decision = await workflow.execute_activity_method(
                    CampaignActivities.evaluate_test,
                    EvaluateInput(cid, at_deadline=at_deadline),
                    start_to_close_timeout=SHORT,
                )
            if decision.decided:
                await self._record(decision)
                return decision
            left = self.state.wait_until_epoch - workflow.now().timestamp()
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self.forced_winner is not None or self.cancelled,
                    timeout=timedelta(seconds=max(0.001, min(data.ab_poll_seconds, left))),
                )

    async def _hold(self) -> DecisionResult:
        """`held`: the remainder stays queued until a variant is picked (or the campaign is cancelled)."""
        if self.state.status != CampaignStatus.HELD:
            await self._move(Move.HOLD)
        workflow.logger.info("campaign %s: held until a winner is picked", self.campaign_id)
        await workflow.wait_condition(lambda: bool(self.forced_winner) or self.cancelled)
        if self.cancelled:
            return DecisionResult(decided=True, hold=True)
        variant = self.forced_winner or ""
        # POST /winner {} found a variant decisive by now: the statistics' decision (with its
        # evidence); a variant named by hand: a manual one.
        decision = self.forced_decision or DecisionResult(
            True, variant=variant, method="manual", reason=f"{variant} picked after the hold"
        )
        await self._record(decision)
        return decision

    async def _record(self, decision: DecisionResult) -> None:
        await workflow.execute_activity_method(
            CampaignActivities.record_winner, WinnerInput(self.campaign_id, decision), start_to_close_timeout=SHORT
        )
        workflow.logger.info(
            "campaign %s: winner %s by %s (%s)",
            self.campaign_id,
            "held" if decision.hold else decision.variant or "all variants",
            decision.method,
            decision.reason,
        )

    async def _finish(self, data: CampaignInput, move: Move) -> CampaignResult:
        self._finishing = True
        if self.state.sent:
            await workflow.execute_activity_method(
                CampaignActivities.sweep_callbacks, self.campaign_id, start_to_close_timeout=LONG
            )
        await workflow.wait_condition(workflow.all_handlers_finished)
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
        settle = data.status_settle_seconds
        if settle is not None and self.state.sent and workflow.patched(RECONCILE):
            # Delivery reports lost on the way (a gateway's, or a dead worker's fake callbacks):
            # once every message had time to get one, ask the provider about the rest.
            # Looked up again, twice as late each time, while some still await a report.
            for attempt in range(RECONCILE_PASSES):
                await workflow.sleep(timedelta(seconds=settle * 2**attempt))
                looked_up = await workflow.execute_activity_method(
                    CampaignActivities.reconcile_statuses,
                    ReconcileInput(self.campaign_id, settle),
                    start_to_close_timeout=LONG,
                    heartbeat_timeout=timedelta(seconds=data.heartbeat_timeout_seconds),
                    retry_policy=SEND_RETRY,
                )
                if not looked_up.awaiting:
                    break
        return CampaignResult(
            self.campaign_id, final, self.state.recipients, self.state.sent, self.state.failed, self.state.skipped
        )

    async def _move(self, move: Move) -> CampaignStatus:
        """Make a move of the transition table; its status and sources go along for workers that
        predate `move` (they read only those)."""
        step = transition(move)
        moved = await workflow.execute_activity_method(
            CampaignActivities.set_campaign_status,
            CampaignStatusInput(self.campaign_id, step.target, list(step.sources) or None, move=move),
            start_to_close_timeout=SHORT,
        )
        if moved:
            self.state.status = step.target
        return step.target

    # -- control ------------------------------------------------------------------------------

    @workflow.update(name="control")
    async def control(self, move: str, issued_at: float | None = None, stale_after: float | None = None) -> str:
        """Pause, resume or cancel: the move is made in the database (where the send activity
        looks before each provider call), then this run follows it. Answers the new status.
        `issued_at`/`stale_after`: when the API asked, and how long it waits for the answer (it
        makes the move itself after that: an update arriving later is refused, not applied twice)."""
        step = transition(move)
        self._controls += 1
        moved = await workflow.execute_activity_method(
            CampaignActivities.set_campaign_status,
            CampaignStatusInput(self.campaign_id, step.target, list(step.sources), move=move),
            start_to_close_timeout=SHORT,
        )
        if not moved and issued_at is not None:  # (histories recorded before `issued_at` never refused)
            raise ApplicationError(
                f"cannot {move} campaign {self.campaign_id}: its status changed meanwhile; look again",
                type="StatusChanged",
            )
        self.state.status = step.target
        if move == Move.PAUSE:
            self.paused = True
        elif move == Move.RESUME:
            self.paused = False
        else:
            self.cancelled = True
        workflow.logger.info("campaign %s: %s", self.campaign_id, step.target)
        return step.target

    @control.validator
    def _may_control(self, move: str, issued_at: float | None = None, stale_after: float | None = None) -> None:
        if move not in CONTROL_MOVES:
            raise ValueError(f"{move!r} is not one of {', '.join(CONTROL_MOVES)}")
        if issued_at is not None and stale_after is not None and workflow.now().timestamp() - issued_at > stale_after:
            raise ValueError(f"this {move} of campaign {self.campaign_id} came too late; the API made it alone")
        step, status = transition(move), self.state.status or ""
        if not step.allows(status) or (move == Move.CANCEL and self.cancelled):
            raise ValueError(step.refusal(self.campaign_id, status))
        if self._finishing:
            raise ValueError(f"cannot {move} campaign {self.campaign_id}: it is ending")
        if move == Move.PAUSE and self.state.stage not in PAUSABLE_STAGES:
            raise ValueError(
                f"cannot pause campaign {self.campaign_id}: it is not sending now ({self.state.stage}); "
                "pause works while it is scheduled or sending"
            )

    @workflow.update(name="pick_winner")
    async def pick_winner(self, variant: str) -> str:
        """A variant's name, or "" to decide now by the campaign's policy. On a held campaign ""
        asks the statistics again: a variant decisive by now is sent, else name one."""
        if not variant and self.state.status == CampaignStatus.HELD:
            decision = await workflow.execute_activity_method(
                CampaignActivities.evaluate_test,
                EvaluateInput(self.campaign_id, at_deadline=False),
                start_to_close_timeout=SHORT,
            )
            if not (decision.decided and decision.variant):
                raise ApplicationError(
                    f"campaign {self.campaign_id} is held: still no variant is decisive; name the variant to send",
                    type="NotDecisive",
                )
            variant, self.forced_reason, self.forced_decision = decision.variant, decision.reason, decision
        self.forced_winner = variant
        return variant

    @pick_winner.validator
    def _may_pick(self, variant: str) -> None:
        status = self.state.status or ""
        if status not in PICKABLE or self.forced_winner:
            raise ValueError(f"campaign {self.campaign_id} has no A/B test waiting for a winner (status {status})")

    # Signals of the API before the updates (runs it may still signal during a deploy).

    @workflow.signal
    def pause(self) -> None:
        workflow.logger.info("campaign %s: paused", self.campaign_id)
        self._controls += 1
        self.paused, self.state.status = True, CampaignStatus.PAUSED

    @workflow.signal
    def resume(self) -> None:
        workflow.logger.info("campaign %s: resumed", self.campaign_id)
        self._controls += 1
        self.paused, self.state.status = False, CampaignStatus.RUNNING

    @workflow.signal
    def cancel(self) -> None:
        workflow.logger.info("campaign %s: cancel asked for", self.campaign_id)
        self._controls += 1
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
