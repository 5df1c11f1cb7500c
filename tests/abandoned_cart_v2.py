"""Version 2 of the example automation, as docs/workflows.md "Versioning" changes it: a second
reminder to a contact who still has not bought after the report wait, behind
`workflow.patched("second-reminder")` so that runs started on version 1 replay. Written as a
subclass here (the doc edits the example in place); tests/test_example_automation.py replays
version 1's histories on it. Import it only once the example package is installed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from textpulse_abandoned_cart import AbandonedCartParams, AbandonedCartWorkflow

    from textpulse.automation import AutomationStart


@dataclass
class AbandonedCartParamsV2(AbandonedCartParams):
    second_body: str = "Last call: your cart is waiting at https://shop.example/cart"


@workflow.defn(name="abandoned_cart")
class AbandonedCartWorkflowV2(AbandonedCartWorkflow):
    @workflow.run
    async def run(self, start: AutomationStart) -> dict[str, Any]:
        return await self.execute(start, self.steps)

    async def steps(self) -> None:
        params = self.params(AbandonedCartParamsV2)
        since = self.start.event.at_epoch if self.start.event is not None else self.started_at_epoch
        if await self.bought(params, since, since + params.wait_seconds - workflow.now().timestamp()):
            self.progress = {"purchased_before_text": True}
            return
        reminder = await self.text_contact(
            "reminder",
            params.body,
            stop_on=[f"conversion:{params.purchase_event}"],
            since_epoch=since,
            conversion={"event": params.purchase_event, "window_hours": params.report_after_seconds / 3600},
        )
        if reminder.status != "sent" or reminder.campaign_id is None:
            self.progress = {
                "purchased_before_text": reminder.reason == f"stopped:conversion:{params.purchase_event}",
                "texted": False,
                "reason": reminder.reason,
            }
            return
        self.progress = {"texted": True}
        await self.report()
        purchased = await self.bought(params, since, params.report_after_seconds)
        # -- version 2: a second reminder (runs begun on version 1 go on without it) -----------
        if not purchased and workflow.patched("second-reminder"):
            second = await self.text_contact(
                "second reminder",
                params.second_body,
                stop_on=[f"conversion:{params.purchase_event}"],
                since_epoch=since,
            )
            self.progress["second_reminder"] = second.status == "sent"
            purchased = await self.bought(params, since, params.report_after_seconds)
        # -------------------------------------------------------------------------------------
        numbers = await self.stats(reminder.campaign_id)  # the step's campaign: every run's reminders
        recipients, conversions = numbers["recipients"], numbers["conversions"]
        self.progress.update(
            purchased=purchased,
            recipients=recipients,
            conversions=conversions,
            conversion_rate=conversions / recipients if recipients else 0.0,
        )
