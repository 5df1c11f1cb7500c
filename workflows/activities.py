"""Activities of the campaign workflow: methods of a class built by the worker with the
database engine and the plugin registry (that is where plugins enter the worker)."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core import campaigns, sending
from core.plugins import PluginRegistry
from workflows.inputs import (
    CampaignStatusInput,
    SendBatchInput,
    SendBatchResult,
    SnapshotInput,
    SnapshotResult,
)


class CampaignActivities:
    def __init__(self, engine: Engine, registry: PluginRegistry) -> None:
        self.engine = engine
        self.registry = registry

    @activity.defn(name="set_campaign_status")
    def set_campaign_status(self, data: CampaignStatusInput) -> bool:
        extra = {"error": data.error} if data.error else {}
        if data.status == "running":
            extra["launched_at"] = campaigns.utcnow()
        only_from = tuple(data.only_from) if data.only_from is not None else None
        moved = campaigns.set_status(self.engine, data.campaign_id, data.status, only_from=only_from, **extra)
        if data.status == "cancelled":
            sending.cancel_pending(self.engine, data.campaign_id)
        return moved

    @activity.defn(name="snapshot_audience")
    def snapshot_audience(self, data: SnapshotInput) -> SnapshotResult:
        snap = sending.snapshot_audience(self.engine, self.registry, data.campaign_id, phase=data.phase,
                                         batch_size=data.batch_size, heartbeat=activity.heartbeat)
        return SnapshotResult(recipients=snap.recipients, created=snap.created,
                              batches=[[first, last] for first, last in snap.batches])

    @activity.defn(name="send_batch")
    def send_batch(self, data: SendBatchInput) -> SendBatchResult:
        outcome = sending.send_batch(self.engine, self.registry, data.campaign_id, data.first_message_id,
                                     data.last_message_id, phase=data.phase)
        if outcome.transient:
            # Accepted ones are recorded; the retry skips them and tries the rest again.
            raise ApplicationError(f"{outcome.transient} messages hit a transient provider error: "
                                   f"{outcome.transient_error}", type="TransientProviderError")
        return SendBatchResult(sent=outcome.sent, failed=outcome.failed, skipped=outcome.skipped)

    def all(self) -> list[object]:
        return [self.set_campaign_status, self.snapshot_audience, self.send_batch]
