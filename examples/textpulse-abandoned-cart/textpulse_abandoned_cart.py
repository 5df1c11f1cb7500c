"""Abandoned cart: an example Textpulse automation plugin in one file (docs/workflows.md, "Tutorial").

The shop posts `POST /api/events {"phone": ..., "name": "cart_abandoned"}`. With plugins.toml
`[automations.abandoned_cart] enabled = true`, that event starts one run for the contact (workflow
id `automation-abandoned_cart-<contact id>`: another cart event while it runs is a signal to it,
not a second run). The run
1. waits `wait_seconds` from the cart event for the contact's `purchase_event`; a purchase ends it
   (progress `{"purchased_before_text": true}`);
2. else texts `body` once, in the step campaign `abandoned_cart: reminder`, unless the contact's
   own record shows the purchase after all (a signal the run missed), an opt-out, or the cap;
3. then waits up to `report_after_seconds` for the purchase and reports `texted`, `purchased` and
   the reminder campaign's `recipients`, `conversions` and `conversion_rate`.

Deterministic like every workflow: no I/O, no clock but `workflow.now()`. It imports from
`textpulse` only, passed through the workflow sandbox.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():  # the sandbox re-imports this module for every run
    from textpulse import PluginContext
    from textpulse.automation import Automation, AutomationStart, AutomationWorkflow, hookimpl


@dataclass
class AbandonedCartParams:
    wait_seconds: float = 3600.0  # from the cart event to the reminder
    body: str = "{{ name or 'Hi' }}, your cart is waiting: https://shop.example/cart"
    purchase_event: str = "purchase"  # the conversion event that means "bought"
    report_after_seconds: float = 86400.0  # after the reminder: how long a purchase is its conversion
    contact_id: int | None = None  # a run started by hand (API, CLI): the contact it is about


@workflow.defn(name="abandoned_cart")
class AbandonedCartWorkflow(AutomationWorkflow):
    @workflow.run
    async def run(self, start: AutomationStart) -> dict[str, Any]:
        return await self.execute(start, self.steps)

    async def steps(self) -> None:
        params = self.params(AbandonedCartParams)
        # When the cart was abandoned (a run started by hand: when it started).
        since = self.start.event.at_epoch if self.start.event is not None else self.started_at_epoch
        if await self.bought(params, since, since + params.wait_seconds - workflow.now().timestamp()):
            self.progress = {"purchased_before_text": True}
            return
        reminder = await self.text_contact(
            "reminder",
            params.body,
            stop_on=[f"conversion:{params.purchase_event}"],
            since_epoch=since,
            # What the step campaign counts as its conversion: the purchase, within the report window.
            conversion={"event": params.purchase_event, "window_hours": params.report_after_seconds / 3600},
        )
        if reminder.status != "sent" or reminder.campaign_id is None:
            # Skipped (the record shows a purchase, an opt-out, the frequency cap) or failed.
            self.progress = {
                "purchased_before_text": reminder.reason == f"stopped:conversion:{params.purchase_event}",
                "texted": False,
                "reason": reminder.reason,
            }
            return
        self.progress = {"texted": True}
        await self.report()
        purchased = await self.bought(params, since, params.report_after_seconds)
        numbers = await self.stats(reminder.campaign_id)  # the step's campaign: every run's reminders
        recipients, conversions = numbers["recipients"], numbers["conversions"]
        self.progress.update(
            purchased=purchased,
            recipients=recipients,
            conversions=conversions,
            conversion_rate=conversions / recipients if recipients else 0.0,
        )

    async def bought(self, params: AbandonedCartParams, since: float, timeout_seconds: float) -> bool:
        """Did the contact buy since `since`, or do they within `timeout_seconds` from now?"""
        event = await self.wait_for(
            "conversion", name=params.purchase_event, since_epoch=since, timeout_seconds=timeout_seconds
        )
        return event is not None


ABANDONED_CART = Automation(
    name="abandoned_cart",
    description="Text a contact who left a cart unless they buy first; report whether the reminder converted.",
    workflow=AbandonedCartWorkflow,
    params=AbandonedCartParams,
    triggers=("conversion",),
    events=("cart_abandoned",),  # the conversion events that start it
)


@hookimpl
def register_automations(register: Callable[[Automation], None], config: PluginContext) -> None:
    register(ABANDONED_CART)
