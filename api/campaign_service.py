"""The campaign service: what the campaign routes do, apart from HTTP.

It owns launch, pause/resume/cancel, retry-failed and the A/B winner: each makes its move of the
transition table (core/campaigns/lifecycle.py) in the database, atomically, then starts or
signals the campaign's workflow. Built once per app and handed to the controller with
Litestar's `Provide`. Database work runs in worker threads; Temporal calls on the event loop.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import anyio.to_thread
from sqlalchemy.engine import Engine
from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.rows import message_dict
from api.temporal import TemporalConnection
from core.campaigns import retry
from core.campaigns.definition import (
    CampaignConflict,
    CampaignInvalid,
    apply_move,
    campaign_dict,
    create_campaign,
    get_campaign,
)
from core.campaigns.launch_checks import check_launch
from core.campaigns.lifecycle import Move, transition
from core.campaigns.preview import preview_campaign
from core.campaigns.schemas import CampaignCreate
from core.campaigns.testsend import send_test_messages
from core.db import session_scope
from core.delivery.sending import cancel_pending
from core.errors import Unavailable
from core.hooks.registry import PluginRegistry
from core.log import get_logger
from core.models import utcnow
from core.settings import Settings
from core.statuses import CampaignStatus
from workflows.campaign import CampaignWorkflow
from workflows.inputs import CampaignInput
from workflows.launch import campaign_input

log = get_logger("textpulse.api.campaigns")


# The workflow's signal for each control move: sent when its update gets no answer in time.
SIGNALS = {
    Move.PAUSE: CampaignWorkflow.pause,
    Move.RESUME: CampaignWorkflow.resume,
    Move.CANCEL: CampaignWorkflow.cancel,
}


class CampaignService:
    def __init__(
        self, engine: Engine, settings: Settings, registry: PluginRegistry, temporal: TemporalConnection
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.registry = registry
        self.temporal = temporal
        # Told of each launched campaign (the automation service starts its `follow_ups`).
        self.after_launch: Callable[[int], Awaitable[None]] | None = None

    # Reads and drafts (synchronous: the routes run them in a worker thread).

    def body(self, campaign_id: int) -> dict[str, Any]:
        """The campaign as the API shows it; CampaignNotFound when there is none."""
        with session_scope(self.engine, read_only=True) as session:
            return campaign_dict(session, get_campaign(session, campaign_id))

    def status(self, campaign_id: int) -> str:
        with session_scope(self.engine, read_only=True) as session:
            return get_campaign(session, campaign_id).status

    def create(self, data: CampaignCreate) -> dict[str, Any]:
        return create_campaign(self.engine, data, providers=set(self.registry.providers))

    def preview(self, campaign_id: int, *, contact_ids: list[int] | None, limit: int) -> dict[str, Any]:
        return preview_campaign(self.engine, self.registry, campaign_id, contact_ids=contact_ids, limit=limit)

    def test_send(self, campaign_id: int, phones: list[str], *, allow_opted_out: bool = False) -> dict[str, Any]:
        """Every variant sent for real to `phones`, as phase `test_send`; no contact is created or
        changed, and an opted-out contact's phone is a 422 unless `allow_opted_out`."""
        sent = send_test_messages(self.engine, self.registry, campaign_id, phones, allow_opted_out=allow_opted_out)
        return {"messages": [message_dict(message, variant) for message, variant in sent]}

    def workflow_input(self, campaign_id: int) -> tuple[CampaignInput, bool]:
        """The workflow's input from the campaign's settings; and whether it waits for a schedule."""
        return campaign_input(self.engine, self.settings, campaign_id)

    # Moves that start or signal the workflow.

    async def _move(self, campaign_id: int, move: Move, **fields: Any) -> bool:
        return await anyio.to_thread.run_sync(lambda: apply_move(self.engine, campaign_id, move, **fields))

    async def launch(self, campaign_id: int) -> dict[str, Any]:
        """Start workflow `campaign-<id>`; a campaign launches once (Conflict after that). The
        launch checks come first (core/campaigns/launch_checks.py): a provider not configured, an
        empty audience or a `schedule_at` in the past is CampaignInvalid, and nothing moves."""
        await anyio.to_thread.run_sync(check_launch, self.engine, self.registry, campaign_id)
        workflow_input, scheduled = await anyio.to_thread.run_sync(self.workflow_input, campaign_id)
        move = Move.LAUNCH_SCHEDULED if scheduled else Move.LAUNCH
        if not await self._move(campaign_id, move, launched_at=utcnow()):
            status = await anyio.to_thread.run_sync(self.status, campaign_id)
            raise CampaignConflict(f"campaign {campaign_id} was launched already (status {status})")
        try:
            client = await self._client()
            await client.start_workflow(
                CampaignWorkflow.run,
                workflow_input,
                id=self.settings.workflow_id(campaign_id),
                task_queue=self.settings.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            raise CampaignConflict(f"campaign {campaign_id} was launched already") from None
        except Exception as exc:
            await self._move(campaign_id, Move.UNDO_LAUNCH, launched_at=None)
            log.exception("launch failed", campaign_id=campaign_id)
            if isinstance(exc, RPCError):
                raise Unavailable(f"the workflow service did not start the campaign: {exc.message}") from None
            raise
        if self.after_launch is not None:
            await self.after_launch(campaign_id)
        return await anyio.to_thread.run_sync(self.body, campaign_id)

    async def _client(self) -> Client:
        try:
            return await self.temporal.get()
        except (RPCError, RuntimeError, OSError) as exc:
            raise Unavailable(f"the workflow service cannot be reached: {exc}") from None

    async def _running_handle(self, campaign_id: int) -> WorkflowHandle[Any, Any] | None:
        """The campaign's workflow run still running: its latest retry run, else the launch's."""
        client = await self._client()
        base = self.settings.workflow_id(campaign_id)
        next_round = await anyio.to_thread.run_sync(retry.retry_round, self.engine, campaign_id)
        # A retry run's rows may not exist yet when it is asked for: try the round after the last too.
        candidates = [f"{base}-retry-{n}" for n in (next_round, next_round - 1) if n >= 1] + [base]
        for workflow_id in candidates:
            handle = client.get_workflow_handle(workflow_id)
            try:
                description = await handle.describe()
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    continue
                raise Unavailable(f"the workflow service cannot be reached: {exc.message}") from None
            if description.status == WorkflowExecutionStatus.RUNNING:
                return handle
        return None

    async def _update(
        self, handle: WorkflowHandle[Any, Any], call: Callable[[WorkflowHandle[Any, Any], timedelta], Awaitable[Any]]
    ) -> bool:
        """Run a workflow update; its refusal (the validator's or the handler's words) is a
        Conflict. False: the run did not answer within `control_timeout_seconds`, or ended."""
        try:
            await call(handle, timedelta(seconds=self.settings.control_timeout_seconds))
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause)
            raise CampaignConflict(message) from None
        except RPCTimeoutOrCancelledError:
            log.warning("the campaign's workflow did not answer in time", workflow_id=handle.id)
            return False
        except RPCError as exc:  # ended meanwhile, or the service is gone
            log.info("no answer to the update", workflow_id=handle.id, error=str(exc))
            return False
        return True

    async def control(self, campaign_id: int, move: Move) -> dict[str, Any]:
        """Pause, resume or cancel, as an update of the running workflow, which refuses a move
        its status does not allow. With no run to ask (a draft), the move is made in the database.
        With a run that does not answer within `control_timeout_seconds` (no worker up), the move
        is made in the database (every send activity checks it before each provider call) and the
        run is signalled, which it takes on as soon as a worker runs it again."""
        handle = await self._running_handle(campaign_id)
        issued = time.time()
        if handle is not None and await self._update(
            handle,
            lambda h, timeout: h.execute_update(
                CampaignWorkflow.control, args=[move, issued, timeout.total_seconds()], rpc_timeout=timeout
            ),
        ):
            return await anyio.to_thread.run_sync(self.body, campaign_id)
        if not await self._move(campaign_id, move):
            status = await anyio.to_thread.run_sync(self.status, campaign_id)
            raise CampaignConflict(transition(move).refusal(campaign_id, status))
        if move == Move.CANCEL:
            await anyio.to_thread.run_sync(cancel_pending, self.engine, campaign_id)
        if handle is not None:
            try:  # a signal is stored by the service even while no worker runs the workflow
                await handle.signal(SIGNALS[move])
            except RPCError as exc:
                log.warning("could not signal the workflow", workflow_id=handle.id, error=str(exc))
        return await anyio.to_thread.run_sync(self.body, campaign_id)

    async def retry_failed(self, campaign_id: int) -> dict[str, Any]:
        """A retry run of the workflow for the contacts whose latest message failed for a reason
        another attempt may fix; Conflict while the campaign is not completed or when none is."""
        engine, registry = self.engine, self.registry

        def begin() -> int:
            with session_scope(engine, read_only=True) as session:
                status = get_campaign(session, campaign_id).status
                if status != CampaignStatus.COMPLETED:
                    raise CampaignConflict(
                        f"cannot retry campaign {campaign_id}: it is {status}; retry-failed works once it is completed"
                    )
                if not retry.retryable(session, registry, campaign_id):
                    raise CampaignConflict(f"campaign {campaign_id} has no failed message worth retrying")
            if not apply_move(engine, campaign_id, Move.RETRY, completed_at=None):
                raise CampaignConflict(f"campaign {campaign_id} changed meanwhile; try again")
            return retry.retry_round(engine, campaign_id)

        round_ = await anyio.to_thread.run_sync(begin)
        workflow_input, _ = await anyio.to_thread.run_sync(self.workflow_input, campaign_id)
        try:
            client = await self._client()
            await client.start_workflow(
                CampaignWorkflow.run,
                dataclasses.replace(workflow_input, retry_round=round_, start_at_epoch=None),
                id=f"{self.settings.workflow_id(campaign_id)}-retry-{round_}",
                task_queue=self.settings.task_queue,
            )
        except Exception as exc:
            await self._move(campaign_id, Move.UNDO_RETRY)
            if isinstance(exc, RPCError):
                raise Unavailable(f"the workflow service did not start the retry: {exc.message}") from None
            raise
        return await anyio.to_thread.run_sync(self.body, campaign_id)

    async def choose_winner(self, campaign_id: int, variant: str | None) -> dict[str, Any]:
        """End a waiting A/B test, or a held campaign's hold, with `variant`, or by the
        campaign's policy when None; Conflict when no test is waiting or held."""
        body = await anyio.to_thread.run_sync(self.body, campaign_id)
        names = [v["name"] for v in body["variants"] if not v["is_control"]]
        if variant and variant not in names:
            raise CampaignInvalid(f"variant {variant!r} is not one of {', '.join(names)}")
        refusal = f"campaign {campaign_id} has no A/B test waiting for a winner (status {body['status']})"
        if body["status"] not in (CampaignStatus.WAITING, CampaignStatus.HELD):
            raise CampaignConflict(refusal)
        handle = await self._running_handle(campaign_id)
        if handle is None:
            raise CampaignConflict(refusal)
        picked = await self._update(
            handle,
            lambda h, timeout: h.execute_update(CampaignWorkflow.pick_winner, variant or "", rpc_timeout=timeout),
        )
        if not picked:
            raise Unavailable(f"campaign {campaign_id}'s workflow did not answer in time; try again")
        return await anyio.to_thread.run_sync(self.body, campaign_id)
