"""Re-score jobs for the API: `POST /api/campaigns/{id}/rescore` starts the campaign's re-score
workflow (workflows/rescore.py) and answers 202 at once; `GET` on the same path says how it is
doing. The job's state lives in Temporal (the workflow `campaign-<id>-rescore`, at most one
running per campaign), its progress in its activity's last heartbeat: no table of jobs."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

import anyio.to_thread
from sqlalchemy.engine import Engine
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.temporal import TemporalConnection
from core.campaigns.definition import get_campaign, iso
from core.db import session_scope
from core.errors import Conflict, NotFound, Unavailable
from core.log import get_logger
from core.settings import Settings
from workflows.rescore import RescoreInput, RescoreWorkflow

log = get_logger("textpulse.rescore")

JobStatus = Literal["running", "completed", "failed", "cancelled", "terminated", "timed_out"]
STATUS_WORDS: dict[WorkflowExecutionStatus, JobStatus] = {
    WorkflowExecutionStatus.RUNNING: "running",
    WorkflowExecutionStatus.COMPLETED: "completed",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
}


class RescoreCounts(TypedDict):
    clicks: int
    changed: int
    bots: int
    humans: int


class RescoreProgressRow(TypedDict):
    clicks: int
    changed: int


class RescoreJob(TypedDict):
    """A re-score job as the API shows it."""

    campaign_id: int
    status: JobStatus
    started_at: str | None
    completed_at: str | None
    attempt: int  # of the activity: above 1 after a worker died or the database failed mid-way
    progress: RescoreProgressRow  # the current attempt's, from its last heartbeat (the result's once done)
    result: RescoreCounts | None  # once completed
    error: str | None  # once failed


def workflow_id(settings: Settings, campaign_id: int) -> str:
    return f"{settings.workflow_id(campaign_id)}-rescore"


def _check_campaign(engine: Engine, campaign_id: int) -> None:
    with session_scope(engine, read_only=True) as session:
        get_campaign(session, campaign_id)  # CampaignNotFound: 404


async def _client(temporal: TemporalConnection) -> Client:
    try:
        return await temporal.get()
    except (RPCError, RuntimeError, OSError) as exc:
        raise Unavailable(f"the workflow service cannot be reached: {exc}") from None


async def start_rescore(
    engine: Engine, settings: Settings, temporal: TemporalConnection, campaign_id: int
) -> RescoreJob:
    """Start the campaign's re-score; Conflict while one runs (its GET follows it)."""
    await anyio.to_thread.run_sync(_check_campaign, engine, campaign_id)
    client = await _client(temporal)
    try:
        await client.start_workflow(
            RescoreWorkflow.run,
            RescoreInput(campaign_id),
            id=workflow_id(settings, campaign_id),
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        raise Conflict(
            f"a re-score of campaign {campaign_id} is running already:"
            f" GET /api/campaigns/{campaign_id}/rescore follows it"
        ) from None
    except (RPCError, RuntimeError, OSError) as exc:
        raise Unavailable(f"the workflow service did not start the re-score: {exc}") from None
    log.info("re-score started", campaign_id=campaign_id)
    return await rescore_state(engine, settings, temporal, campaign_id)


async def rescore_state(
    engine: Engine, settings: Settings, temporal: TemporalConnection, campaign_id: int
) -> RescoreJob:
    """The campaign's latest re-score job; NotFound when none was started (or Temporal no longer
    keeps it: closed workflows are kept for the namespace's retention period)."""
    await anyio.to_thread.run_sync(_check_campaign, engine, campaign_id)
    client = await _client(temporal)
    handle = client.get_workflow_handle(workflow_id(settings, campaign_id))
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NotFound(f"no re-score of campaign {campaign_id} was started (POST to start one)") from None
        raise Unavailable(f"the workflow service did not answer: {exc.message}") from None
    status = STATUS_WORDS.get(description.status or WorkflowExecutionStatus.RUNNING, "running")
    progress, attempt = await _progress(client, description.raw_description.pending_activities)
    result: RescoreCounts | None = None
    error: str | None = None
    if status == "completed":
        outcome = await handle.result()
        result = RescoreCounts(
            clicks=int(outcome["clicks"]),
            changed=int(outcome["changed"]),
            bots=int(outcome["bots"]),
            humans=int(outcome["humans"]),
        )
        progress = RescoreProgressRow(clicks=result["clicks"], changed=result["changed"])
    elif status == "failed":
        try:
            await handle.result()
        except WorkflowFailureError as exc:
            cause = exc.cause
            error = str(getattr(cause, "cause", None) or cause or exc)
    return RescoreJob(
        campaign_id=campaign_id,
        status=status,
        started_at=iso(description.start_time),
        completed_at=iso(description.close_time),
        attempt=attempt,
        progress=progress,
        result=result,
        error=error,
    )


async def _progress(client: Client, pending: Any) -> tuple[RescoreProgressRow, int]:
    """The running activity's last heartbeat ({clicks, changed}) and its attempt."""
    progress = RescoreProgressRow(clicks=0, changed=0)
    if not pending:
        return progress, 1
    activity = pending[0]
    attempt = int(activity.attempt or 1)
    if activity.HasField("heartbeat_details") and activity.heartbeat_details.payloads:
        details = await client.data_converter.decode(activity.heartbeat_details.payloads)
        last = details[-1] if details else None
        if isinstance(last, dict):
            progress = RescoreProgressRow(clicks=int(last.get("clicks", 0)), changed=int(last.get("changed", 0)))
    return progress, attempt
