"""The automation service: what the /api/workflows routes (and the CLI through them) do.

It starts runs of registered automations (params checked against the automation's type first:
a 422 naming the field, and nothing starts), starts a campaign's `follow_ups` when it launches,
and cancels runs: the run's row moves to `cancelled` first (so its texts stop at once: every
text of a run checks it), then the campaigns it made are cancelled like any campaign, then the
workflow is cancelled.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio.to_thread
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from api.campaign_service import CampaignService
from api.params import MAX_ID
from api.temporal import TemporalConnection
from core.automations import runs
from core.automations.spec import Automation, ParamsInvalid
from core.campaigns.definition import get_campaign
from core.campaigns.lifecycle import Move
from core.db import session_scope
from core.errors import Conflict, NotFound, Unavailable
from core.hooks.registry import PluginRegistry
from core.log import get_logger
from core.models import Campaign, Contact
from core.settings import Settings
from core.statuses import FINAL_CAMPAIGN_STATUSES, RunStatus
from workflows.automation_inputs import AutomationStart
from workflows.relay import PLUGIN_NAME as RELAY

log = get_logger("textpulse.api.automations")


class AutomationNotFound(NotFound):
    """No automation is registered under this name."""


class RunConflict(Conflict):
    """The run is not in a state that allows the request."""


class AutomationService:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        registry: PluginRegistry,
        temporal: TemporalConnection,
        campaigns: CampaignService,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.registry = registry
        self.temporal = temporal
        self.campaigns = campaigns
        campaigns.after_launch = self.start_follow_ups

    def describe(self) -> list[dict[str, Any]]:
        return [a.describe() for a in sorted(self.registry.automations().values(), key=lambda a: a.name)]

    def automation(self, name: str) -> Automation:
        found = self.registry.automations().get(name)
        if found is None:
            known = ", ".join(sorted(self.registry.automations())) or "none"
            raise AutomationNotFound(f"no automation is named {name!r}; registered: {known}")
        return found

    def run(self, run_id: int) -> dict[str, Any]:
        if not 0 < run_id <= MAX_ID:
            raise runs.RunNotFound(f"automation run {run_id} does not exist")
        with session_scope(self.engine, read_only=True) as session:
            return runs.run_dict(session, runs.get_run(session, run_id))

    def _subjects(self, params: dict[str, Any]) -> tuple[int | None, int | None]:
        """The contact and the campaign the run is about: its params `contact_id`, `campaign_id`
        (each must exist: a 422 naming it)."""
        contact_id, campaign_id = params.get("contact_id"), params.get("campaign_id")
        for name, value in (("contact_id", contact_id), ("campaign_id", campaign_id)):
            if isinstance(value, int) and not 0 < value <= MAX_ID:
                raise ParamsInvalid(f"params: {name}: {value} is not an id (1 to {MAX_ID})")
        with session_scope(self.engine, read_only=True) as session:
            if isinstance(contact_id, int) and session.get(Contact, contact_id) is None:
                raise ParamsInvalid(f"params: contact_id: contact {contact_id} does not exist")
            if isinstance(campaign_id, int) and session.get(Campaign, campaign_id) is None:
                raise ParamsInvalid(f"params: campaign_id: campaign {campaign_id} does not exist")
        return (
            contact_id if isinstance(contact_id, int) else None,
            campaign_id if isinstance(campaign_id, int) else None,
        )

    async def start(self, name: str, params: Any, *, workflow_id: str | None = None) -> dict[str, Any]:
        """Start a run of `name` with `params` (checked first); the run as the API shows it."""
        automation = self.automation(name)
        checked = automation.check(params)
        contact_id, campaign_id = await anyio.to_thread.run_sync(self._subjects, checked)
        workflow_id = workflow_id or self.settings.automation_id(name, f"run-{uuid.uuid4().hex[:16]}")
        start = AutomationStart(
            name,
            params=checked,
            contact_id=contact_id,
            campaign_id=campaign_id,
            poll_seconds=float(self.settings.automation_poll_seconds),
        )
        try:
            client = await self.temporal.get()
            handle = await client.start_workflow(
                name,
                start,
                id=workflow_id,
                task_queue=self.settings.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            raise RunConflict(f"a run {workflow_id} exists already") from None
        except (RPCError, RuntimeError, OSError) as exc:
            raise Unavailable(f"the workflow service did not start the run: {exc}") from None
        run_id = await anyio.to_thread.run_sync(
            lambda: runs.record_run(
                self.engine,
                workflow=name,
                workflow_id=workflow_id,
                temporal_run_id=handle.result_run_id or handle.first_execution_run_id or workflow_id,
                params=checked,
                contact_id=contact_id,
                campaign_id=campaign_id,
            )
        )
        relay = self.registry.pm.get_plugin(RELAY)
        if relay is not None:
            relay.run_started(contact_id)  # its contact's clicks and reports are relayed from now on
        log.info("automation run started", automation=name, run_id=run_id, workflow_id=workflow_id)
        return await anyio.to_thread.run_sync(self.run, run_id)

    async def start_follow_ups(self, campaign_id: int) -> None:
        """The campaign's `follow_ups`, each a `follow_up` run `automation-follow_up-<id>-<n>`."""

        def specs() -> list[dict[str, Any]]:
            with session_scope(self.engine, read_only=True) as session:
                return list(get_campaign(session, campaign_id).follow_ups or [])

        for number, spec in enumerate(await anyio.to_thread.run_sync(specs), start=1):
            try:
                await self.start(
                    "follow_up",
                    {**spec, "campaign_id": campaign_id},
                    workflow_id=self.settings.automation_id("follow_up", f"{campaign_id}-{number}"),
                )
            except RunConflict:
                continue  # started already (a launch retried)
            except Exception:  # the campaign is launched: its answer is not turned into an error
                log.exception(
                    "a follow-up of a launched campaign did not start", campaign_id=campaign_id, number=number
                )

    def _running_campaigns(self, run_id: int) -> list[int]:
        with session_scope(self.engine, read_only=True) as session:
            return [
                int(cid or 0)
                for cid in session.scalars(
                    select(col(Campaign.id)).where(
                        col(Campaign.run_id) == run_id, col(Campaign.status).notin_(FINAL_CAMPAIGN_STATUSES)
                    )
                )
            ]

    async def cancel(self, run_id: int) -> dict[str, Any]:
        if not 0 < run_id <= MAX_ID:
            raise runs.RunNotFound(f"automation run {run_id} does not exist")

        def end() -> tuple[str, str]:
            with session_scope(self.engine, read_only=True) as session:
                run = runs.get_run(session, run_id)
                if run.status != RunStatus.RUNNING:
                    raise RunConflict(f"automation run {run_id} has ended ({run.status}); nothing to cancel")
            # First: every text of the run checks this, and a campaign the run makes from now on
            # is cancelled by the activity that makes it.
            if not runs.finish(self.engine, run_id, RunStatus.CANCELLED):
                raise RunConflict(f"automation run {run_id} ended meanwhile; nothing to cancel")
            return run.workflow_id, run.temporal_run_id

        workflow_id, temporal_run_id = await anyio.to_thread.run_sync(end)
        for campaign_id in await anyio.to_thread.run_sync(self._running_campaigns, run_id):
            try:
                await self.campaigns.control(campaign_id, Move.CANCEL)
            except Conflict as exc:  # a draft, or ended meanwhile
                log.info("campaign of a cancelled run not cancelled", campaign_id=campaign_id, why=str(exc))
        try:
            client = await self.temporal.get()
            await client.get_workflow_handle(workflow_id, run_id=temporal_run_id).cancel()
        except (RPCError, RuntimeError, OSError) as exc:
            log.warning("could not cancel the run's workflow", workflow_id=workflow_id, error=str(exc))
        return await anyio.to_thread.run_sync(self.run, run_id)
