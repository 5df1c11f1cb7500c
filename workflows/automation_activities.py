"""Activities of automation workflows (the building blocks' side that touches the world): methods
of a class built by the worker with the database engine and the plugin registry.

Automation workflows call them through `textpulse.automation.AutomationWorkflow`'s methods, by
reference, and so import this module, passed through the sandbox: nothing here does I/O at
import. Their registered names are what running workflows ask for: never rename one.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.automations import runs, sends
from core.campaigns.definition import CampaignInvalid, get_campaign
from core.db import session_scope
from core.hooks.registry import PluginRegistry
from core.log import get_logger
from core.settings import Settings
from core.stats import summary
from workflows.activities import Heartbeat
from workflows.automation_inputs import (
    CampaignSendInput,
    CampaignSendResult,
    CampaignStateResult,
    ContactInfoResult,
    CountAudienceInput,
    FinishRunInput,
    ProgressInput,
    RegisterRunInput,
    TextContactInput,
    TextContactResult,
)
from workflows.launch import campaign_input

log = get_logger("textpulse.automations")


def _refused(exc: Exception) -> ApplicationError:
    """What no retry can fix (a campaign the automation asks for is not valid): the run fails, saying why."""
    return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True)


class AutomationActivities:
    def __init__(self, engine: Engine, registry: PluginRegistry) -> None:
        self.engine = engine
        self.registry = registry

    @property
    def settings(self) -> Settings:
        return self.registry.context.settings

    @activity.defn(name="automation_register_run")
    def register_run(self, data: RegisterRunInput) -> int:
        started = datetime.fromtimestamp(data.started_at_epoch, UTC) if data.started_at_epoch else None
        return runs.record_run(
            self.engine,
            workflow=data.workflow,
            workflow_id=data.workflow_id,
            temporal_run_id=data.temporal_run_id,
            params=data.params,
            contact_id=data.contact_id,
            campaign_id=data.campaign_id,
            trigger=data.trigger,
            started_at=started,
        )

    @activity.defn(name="automation_finish_run")
    def finish_run(self, data: FinishRunInput) -> bool:
        ended = runs.finish(self.engine, data.run_id, data.status, progress=data.progress, error=data.error)
        log.info("automation run ended", run_id=data.run_id, status=data.status, moved=ended)
        return ended

    @activity.defn(name="automation_progress")
    def progress(self, data: ProgressInput) -> None:
        with session_scope(self.engine) as session:
            runs.set_progress(session, data.run_id, data.progress)

    @activity.defn(name="automation_campaign_state")
    def campaign_state(self, campaign_id: int) -> CampaignStateResult:
        try:
            state = sends.campaign_state(self.engine, campaign_id)
        except CampaignInvalid as exc:
            raise _refused(exc) from None
        return CampaignStateResult(
            campaign_id, status=state["status"], kind=state["kind"], completed_at_epoch=state["completed_at"]
        )

    @activity.defn(name="automation_count_audience")
    def count_audience(self, data: CountAudienceInput) -> int:
        return sends.count_audience(self.engine, data.audience)

    @activity.defn(name="automation_contact_info")
    def contact_info(self, contact_id: int) -> ContactInfoResult:
        info = sends.contact_info(self.engine, contact_id)
        if info is None:
            return ContactInfoResult(contact_id, exists=False)
        return ContactInfoResult(
            contact_id,
            exists=True,
            created_at_epoch=info["created_at"],
            opted_out=info["opted_out"],
            attributes=info["attributes"],
        )

    @activity.defn(name="automation_create_campaign")
    def create_campaign(self, data: CampaignSendInput) -> CampaignSendResult:
        try:
            made = sends.create_send(
                self.engine,
                self.registry,
                run_id=data.run_id,
                name=data.name,
                body=data.body,
                audience=data.audience,
                kind=data.kind,
                parent_id=data.parent_id,
                provider=data.provider,
                tracking=data.tracking,
                conversion=data.conversion,
                quiet_hours=data.quiet_hours,
                rate_limit_per_second=data.rate_limit_per_second,
            )
        except CampaignInvalid as exc:
            raise _refused(exc) from None
        if made is None:  # the run was cancelled: nothing more is sent for it
            return CampaignSendResult(campaign_id=0, workflow_id="", created=False)
        campaign_id, created = made
        start, _ = campaign_input(self.engine, self.settings, campaign_id)
        log.info("automation campaign", run_id=data.run_id, campaign_id=campaign_id, created=created)
        return CampaignSendResult(
            campaign_id=campaign_id,
            workflow_id=self.settings.workflow_id(campaign_id),
            campaign_input=dataclasses.asdict(start),
            created=created,
        )

    @activity.defn(name="automation_text_contact")
    def text_contact(self, data: TextContactInput) -> TextContactResult:
        try:
            outcome = sends.text_contact(
                self.engine,
                self.registry,
                run_id=data.run_id,
                automation=data.automation,
                step=data.step,
                contact_id=data.contact_id,
                body=data.body,
                provider=data.provider,
                stop_on=data.stop_on,
                since_epoch=data.since_epoch,
                tracking=data.tracking,
                conversion=data.conversion,
                quiet_hours=data.quiet_hours,
                progress=data.progress,
                frequency_cap=self.settings.frequency_cap,
                heartbeat=Heartbeat(),
            )
        except (CampaignInvalid, ValueError) as exc:
            raise _refused(exc) from None
        except sends.TextPending as exc:  # tried again, with the activity's backoff
            raise ApplicationError(str(exc), type="TextPending") from None
        return TextContactResult(
            status=outcome.status,
            reason=outcome.reason,
            campaign_id=outcome.campaign_id,
            message_id=outcome.message_id,
            resume_at_epoch=outcome.resume_at.timestamp() if outcome.resume_at else None,
        )

    @activity.defn(name="automation_campaign_stats")
    def campaign_stats(self, campaign_id: int) -> dict[str, Any]:
        with session_scope(self.engine, read_only=True) as session:
            provider = get_campaign(session, campaign_id).provider
            numbers = summary.summary(
                session,
                campaign_id,
                reports_delivery=self.registry.reports_delivery(provider),
                unsubscribed_codes=self.registry.unsubscribed_error_codes(provider),
            )
        numbers.pop("updated_at", None)
        return dict(numbers)

    def all(self) -> list[Any]:
        return [
            self.register_run,
            self.finish_run,
            self.progress,
            self.campaign_state,
            self.count_audience,
            self.contact_info,
            self.create_campaign,
            self.text_contact,
            self.campaign_stats,
        ]
