"""The built-in `welcome_series` automation (API.md "Automations"): a drip to each new contact.

One run per new contact (`automation-welcome_series-<contact id>`; a second start is a no-op).
Each step waits `after_seconds` from the previous step (the first from the contact's creation),
then texts `body` unless the contact opted out or did one of `stop_on` since it was created
(a reply, a human click, a conversion); a `stop_on` ends the series there. `audience`
(`{"attributes": {...}}`) limits it to contacts whose attributes match when the run begins.
Each step's texts, across every contact, are one campaign (`welcome_series: step N`).
Progress: `sent`, `skipped`, and `stopped` (what stopped it) when it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.contacts.filters import attributes_match
    from workflows.automation import AutomationWorkflow
    from workflows.automation_inputs import AutomationStart

StopOn = Literal["reply", "conversion", "click"]


@dataclass
class WelcomeStep:
    after_seconds: float
    body: str


@dataclass
class AttributesAudience:
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class WelcomeSeriesParams:
    steps: list[WelcomeStep]
    stop_on: list[StopOn] = field(default_factory=lambda: ["reply"])
    audience: AttributesAudience | None = None
    provider: str = "fake"


@workflow.defn(name="welcome_series")
class WelcomeSeriesWorkflow(AutomationWorkflow):
    @workflow.run
    async def run(self, start: AutomationStart) -> dict[str, Any]:
        return await self.execute(start, self.steps)

    async def steps(self) -> None:
        params = self.params(WelcomeSeriesParams)
        contact = await self.contact()
        self.progress = {"sent": 0, "skipped": 0}
        if not contact.exists or contact.opted_out:
            self.progress["stopped"] = "no_contact" if not contact.exists else "opted_out"
            return
        if params.audience is not None and not attributes_match(contact.attributes, params.audience.attributes):
            self.progress["stopped"] = "not_in_audience"
            return
        since = contact.created_at_epoch
        due = since
        for number, step in enumerate(params.steps, start=1):
            due += step.after_seconds
            wait = due - workflow.now().timestamp()
            stop = await self.wait_for(params.stop_on, timeout_seconds=wait, since_epoch=since)
            if stop is not None:
                self.progress["stopped"] = stop.kind
                return
            result = await self.text_contact(
                f"step {number}", step.body, provider=params.provider, stop_on=params.stop_on, since_epoch=since
            )
            if result.status == "skipped":
                self.progress["skipped"] += 1
                if result.reason in ("opted_out", "cancelled") or (result.reason or "").startswith("stopped:"):
                    self.progress["stopped"] = (result.reason or "").removeprefix("stopped:")
                    return
            else:
                self.progress["sent"] += 1
