"""The built-in `follow_up` automation (API.md "Automations"), a plugin like any other: after a
campaign, text those of its recipients who did (or did not) click, reply or convert.

`after_seconds` after the later of the parent's completion and the run's start, the parent's
recipients that match `audience` at that moment (opted-out contacts left out) get `body` as a
campaign of kind `follow_up` whose `parent_id` is the parent, sent like any campaign. When nobody
matches, the run completes without a campaign. A parent that ends cancelled or failed gets no
follow-up. Progress: `matched`, then the follow-up campaign's `sent`, `delivered`, `clicks`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from msgspec import Meta
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from textpulse import PluginContext
    from textpulse.automation import (
        Automation,
        AutomationStart,
        AutomationWorkflow,
        CampaignKind,
        CampaignStatus,
        hookimpl,
    )

MAX_WAIT_SECONDS = 10 * 365 * 86400.0
Engagement = Literal["clicked", "not_clicked", "replied", "not_replied", "converted", "not_converted"]


@dataclass
class FollowUpParams:
    campaign_id: Annotated[int, Meta(ge=1, le=2**63 - 1)]
    body: Annotated[str, Meta(min_length=1, max_length=5000)]
    after_seconds: Annotated[float, Meta(ge=0, le=MAX_WAIT_SECONDS)] = 86400.0
    audience: Engagement = "not_clicked"
    provider: str | None = None  # None: the parent's
    name: str | None = None  # of the follow-up campaign; None: "campaign <id> · follow-up (<audience>)"


@workflow.defn(name="follow_up")
class FollowUpWorkflow(AutomationWorkflow):
    @workflow.run
    async def run(self, start: AutomationStart) -> dict[str, Any]:
        return await self.execute(start, self.steps)

    async def steps(self) -> None:
        params = self.params(FollowUpParams)
        parent = await self.wait_for_campaign(params.campaign_id)
        if parent.status != CampaignStatus.COMPLETED:
            self.progress = {"skipped": f"campaign {params.campaign_id} ended {parent.status}"}
            return
        begun = max(parent.completed_at_epoch or 0.0, self.started_at_epoch)
        await self.sleep_until(begun + params.after_seconds)
        audience = {"campaign": params.campaign_id, "engagement": params.audience}
        matched = await self.count_audience(audience)
        self.progress = {"matched": matched}
        if matched == 0:
            return
        name = params.name or f"campaign {params.campaign_id} · follow-up ({params.audience})"
        campaign_id = await self.send_campaign(
            name,
            params.body,
            audience,
            kind=CampaignKind.FOLLOW_UP,
            parent_id=params.campaign_id,
            provider=params.provider,
        )
        self.progress["campaign_id"] = campaign_id
        await self.report()
        ended = await self.wait_for_campaign(campaign_id)
        numbers = await self.stats(campaign_id)
        self.progress.update(
            status=ended.status,
            sent=numbers["sent"],
            delivered=numbers["delivered"],
            clicks=numbers["clicks"]["unique"],
        )


FOLLOW_UP = Automation(
    name="follow_up",
    description=(
        "After a campaign completes, text those of its recipients who did (or did not) click, reply or"
        " convert, as a campaign of kind follow_up."
    ),
    workflow=FollowUpWorkflow,
    params=FollowUpParams,
    triggers=("campaign_completed",),
)


@hookimpl
def register_automations(register: Callable[[Automation], None], config: PluginContext) -> None:
    register(FOLLOW_UP)
