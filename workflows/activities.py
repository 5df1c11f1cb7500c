"""Activities of the campaign workflow: methods of a class built by the worker with the
database engine and the plugin registry (that is where plugins enter the worker).

The workflow calls them by reference (`workflow.execute_activity_method`) and so imports this
module, passed through its sandbox: nothing here may do I/O at import. Their registered names
are what running workflows ask for: never rename one. Every log line of an activity carries the
campaign (and the batch) through the worker's interceptor (workflows/worker.py).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.campaigns import audience, definition, retry
from core.campaigns.lifecycle import transition
from core.db import session_scope
from core.delivery import reconcile, sending
from core.delivery.status import sweep_campaign
from core.hooks.contracts import CampaignStatusChanged
from core.hooks.registry import PluginRegistry
from core.log import get_logger
from core.stats import winner
from core.statuses import CampaignStatus, Phase
from workflows.inputs import (
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

log = get_logger("textpulse.activities")


class Heartbeat:
    """`activity.heartbeat`, called through at most once every `every` seconds. The SDK sends one to
    the server at most every 0.8 × the heartbeat timeout anyway, but each call wakes the worker's
    event loop from the activity's thread: a send batch calls it after every provider call and
    every rendered chunk. One second keeps a dead worker's work found within the timeout (5 s in
    the tests, 20 s by default). Make one per activity run (it keeps the time of the last)."""

    def __init__(self, every: float = 1.0) -> None:
        self.every = every
        self.last = float("-inf")

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            activity.heartbeat()


class CampaignActivities:
    def __init__(self, engine: Engine, registry: PluginRegistry) -> None:
        self.engine = engine
        self.registry = registry

    def _reports_delivery(self, campaign_id: int) -> bool:
        with session_scope(self.engine, read_only=True) as session:
            provider_name = definition.get_campaign(session, campaign_id).provider
        return self.registry.reports_delivery(provider_name)

    @activity.defn(name="set_campaign_status")
    def set_campaign_status(self, data: CampaignStatusInput) -> bool:
        extra: dict[str, Any] = {"error": data.error} if data.error else {}
        if data.move is not None:
            status: str = transition(data.move).target
            moved = definition.apply_move(self.engine, data.campaign_id, data.move, **extra)
        else:  # asked for by a run started before the transition table
            status = data.status
            only_from = tuple(data.only_from) if data.only_from is not None else None
            moved = definition.set_status(self.engine, data.campaign_id, status, only_from=only_from, **extra)
        if not moved and data.move is not None and activity.in_activity() and activity.info().attempt > 1:
            # A retry of an attempt that made the move and then failed (cancel_pending below, say):
            # the move is made, not refused.
            with session_scope(self.engine, read_only=True) as session:
                moved = definition.get_campaign(session, data.campaign_id).status == status
        log.info("campaign status", move=data.move, status=status, moved=moved)
        if status == CampaignStatus.CANCELLED:
            sending.cancel_pending(self.engine, data.campaign_id)
        if moved and self.registry.listens("on_campaign_status"):
            self._announce(data.campaign_id, status)
        return moved

    def _announce(self, campaign_id: int, status: str) -> None:
        """Tell `on_campaign_status` listeners (the automation relay among them); never fails the move."""
        try:
            with session_scope(self.engine, read_only=True) as session:
                campaign = definition.get_campaign(session, campaign_id)
                event = CampaignStatusChanged(
                    campaign_id, campaign.kind, status, parent_id=campaign.parent_id, run_id=campaign.run_id
                )
            self.registry.pm.hook.on_campaign_status(event=event)
        except Exception:
            log.exception("on_campaign_status listener failed", campaign_id=campaign_id)

    @activity.defn(name="snapshot_audience")
    def snapshot_audience(self, data: SnapshotInput) -> SnapshotResult:
        snap = audience.snapshot(
            self.engine, self.registry, data.campaign_id, batch_size=data.batch_size, heartbeat=Heartbeat()
        )
        log.info("audience snapshot", recipients=snap.recipients, phase=snap.phase, batches=len(snap.batches))
        return SnapshotResult(
            recipients=snap.recipients, phase=snap.phase, batches=[[first, last] for first, last in snap.batches]
        )

    @activity.defn(name="send_batch")
    def send_batch(self, data: SendBatchInput) -> SendBatchResult:
        outcome = sending.send_batch(
            self.engine,
            self.registry,
            data.campaign_id,
            data.first_message_id,
            data.last_message_id,
            phase=data.phase,
            heartbeat=Heartbeat(),
            # The worker's settings, which its plugin registry carries (textpulse/up.py builds both).
            frequency_cap=self.registry.context.settings.frequency_cap,
        )
        log.info(
            "batch sent",
            sent=outcome.sent,
            failed=outcome.failed,
            skipped=outcome.skipped,
            capped=outcome.capped,
            deferred=outcome.deferred,
            transient=outcome.transient,
            stopped=outcome.stopped,
        )
        if outcome.sent or outcome.failed:  # handed over: the held-out contacts beside it are touched now too
            audience.stamp_control_touch(self.engine, data.campaign_id, data.first_message_id, data.last_message_id)
        if outcome.transient:
            # Accepted ones are recorded; the retry skips them and tries the rest again.
            raise ApplicationError(
                f"{outcome.transient} messages hit a transient provider error: {outcome.transient_error}",
                type="TransientProviderError",
            )
        return SendBatchResult(
            sent=outcome.sent,
            failed=outcome.failed,
            skipped=outcome.skipped,
            deferred=outcome.deferred,
            resume_at_epoch=outcome.resume_at.timestamp() if outcome.resume_at else None,
            stopped=outcome.stopped,
        )

    @activity.defn(name="list_batches")
    def list_batches(self, data: ListBatchesInput) -> list[list[int]]:
        """The stage's messages still queued (after a quiet-hours wait), in batches."""
        return [
            [first, last]
            for first, last in audience.batches_of(self.engine, data.campaign_id, data.phase, data.batch_size)
        ]

    @activity.defn(name="evaluate_test")
    def evaluate_test(self, data: EvaluateInput) -> DecisionResult:
        d = winner.evaluate(
            self.engine,
            data.campaign_id,
            reports_delivery=self._reports_delivery(data.campaign_id),
            at_deadline=data.at_deadline,
        )
        log.info("A/B test evaluated", decided=d.decided, variant=d.variant, hold=d.hold, method=d.method)
        return DecisionResult(
            decided=d.decided, variant=d.variant, hold=d.hold, method=d.method, reason=d.reason, evidence=d.evidence
        )

    @activity.defn(name="record_winner")
    def record_winner(self, data: WinnerInput) -> None:
        d = data.decision
        with session_scope(self.engine) as session:
            campaign = definition.get_campaign(session, data.campaign_id)
            metric = (campaign.ab_test or {}).get("metric", "ctr")
            campaign.winner = {
                "variant": d.variant,
                "metric": metric,
                "method": d.method,
                "reason": d.reason,
                "hold": bool(d.hold),  # the dashboard says the remainder is held (not sent by weight)
            }
            if d.evidence is not None:  # /stats/variants shows what was decided on
                campaign.winner["evidence"] = d.evidence
            session.add(campaign)

    @activity.defn(name="prepare_remainder")
    def prepare_remainder(self, data: PrepareInput) -> SnapshotResult:
        if data.hold:
            audience.hold_phase(self.engine, data.campaign_id, Phase.REMAINDER, f"held: {data.reason}")
            log.info("remainder held", reason=data.reason)
            return SnapshotResult(recipients=0, phase=Phase.REMAINDER)
        try:
            prepared = audience.prepare_phase(
                self.engine,
                self.registry,
                data.campaign_id,
                Phase.REMAINDER,
                variant=data.variant,
                batch_size=data.batch_size,
                heartbeat=Heartbeat(),
            )
        except ValueError as exc:  # a fallback naming a variant that does not exist: no retry helps
            raise ApplicationError(str(exc), type="UnknownVariant", non_retryable=True) from exc
        log.info("remainder prepared", variant=data.variant, recipients=prepared.recipients)
        return SnapshotResult(
            recipients=prepared.recipients,
            phase=Phase.REMAINDER,
            batches=[[first, last] for first, last in prepared.batches],
        )

    @activity.defn(name="sweep_callbacks")
    def sweep_callbacks(self, campaign_id: int) -> int:
        """Callbacks of the campaign still pending when sending ends get applied."""
        applied = sweep_campaign(self.engine, campaign_id)
        log.info("callbacks swept", applied=applied)
        return applied

    @activity.defn(name="snapshot_retry")
    def snapshot_retry(self, data: RetryInput) -> SnapshotResult:
        prepared = retry.snapshot_retry(
            self.engine,
            self.registry,
            data.campaign_id,
            data.round,
            batch_size=data.batch_size,
            heartbeat=Heartbeat(),
        )
        log.info("retry snapshot", round=data.round, recipients=prepared.recipients)
        return SnapshotResult(
            recipients=prepared.recipients,
            phase=Phase.RETRY,
            batches=[[first, last] for first, last in prepared.batches],
        )

    def all(self) -> list[Any]:
        return [
            self.set_campaign_status,
            self.snapshot_audience,
            self.send_batch,
            self.evaluate_test,
            self.record_winner,
            self.prepare_remainder,
            self.snapshot_retry,
            self.list_batches,
            self.sweep_callbacks,
            self.reconcile_statuses,
        ]

    @activity.defn(name="reconcile_statuses")
    def reconcile_statuses(self, data: ReconcileInput) -> ReconcileResult:
        """Messages still without a delivery report after the settle window are looked up at the
        provider (its `fetch_status`) and moved like a callback would; safe to run again."""
        outcome = reconcile.reconcile_statuses(
            self.engine,
            self.registry,
            data.campaign_id,
            settle_seconds=data.settle_seconds,
            heartbeat=Heartbeat(),
        )
        return ReconcileResult(asked=outcome.asked, updated=outcome.updated, awaiting=outcome.awaiting)
