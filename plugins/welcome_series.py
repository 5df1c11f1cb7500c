"""The built-in `welcome_series` automation (API.md "Automations"), a plugin like any other: a
drip to each new contact.

One run per new contact (`automation-welcome_series-<contact id>`; a second start is a no-op).
Each step waits `after_seconds` from the previous step (the first from the contact's creation),
then texts `body` unless the contact opted out or did one of `stop_on` since it was created
(a reply, a human click, a conversion); a `stop_on` ends the series there. `audience`
(`{"attributes": {...}}`) limits it to contacts whose attributes match when the run begins.
Each step's texts, across every contact, are one campaign (`welcome_series: step N`).
Progress: `sent`, `skipped`, `failed` (refused by the provider), and `stopped` (what stopped it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from msgspec import Meta
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from textpulse import PluginContext
    from textpulse.automation import Automation, AutomationStart, AutomationWorkflow, attributes_match, hookimpl

StopOn = Literal["reply", "conversion", "click"]
MAX_WAIT_SECONDS = 10 * 365 * 86400.0
# Audience values compare as text (core/contacts/filters.py), as campaigns' do; runs started before
# compared them with Python's == (where `1` matched `true`), and replay with that.
ATTRIBUTES_AS_TEXT = "welcome-series-attributes-as-text"


def in_audience(attributes: dict[str, Any], wanted: dict[str, Any]) -> bool:
    if workflow.patched(ATTRIBUTES_AS_TEXT):
        return attributes_match(attributes, wanted)
    return all(
        attributes.get(key) in value if isinstance(value, list) else attributes.get(key) == value
        for key, value in wanted.items()
    )


@dataclass
class WelcomeStep:
    after_seconds: Annotated[float, Meta(ge=0, le=MAX_WAIT_SECONDS)]
    body: Annotated[str, Meta(min_length=1, max_length=5000)]


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
        if params.audience is not None and not in_audience(contact.attributes, params.audience.attributes):
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
                if result.reason in ("opted_out", "cancelled", "no_contact") or (result.reason or "").startswith(
                    "stopped:"
                ):
                    self.progress["stopped"] = (result.reason or "").removeprefix("stopped:")
                    return
            elif result.status == "sent":
                self.progress["sent"] += 1
            else:  # the provider refused it for good (e.g. an invalid number): counted, and the series goes on
                self.progress["failed"] = self.progress.get("failed", 0) + 1
            # The next step waits from this one: after an outage or a quiet-hours wait, the steps
            # keep their spacing rather than going out back to back.
            due = max(due, workflow.now().timestamp())


WELCOME_SERIES = Automation(
    name="welcome_series",
    description="A drip to each new contact, step by step, that stops on a reply, a click or a purchase.",
    workflow=WelcomeSeriesWorkflow,
    params=WelcomeSeriesParams,
    triggers=("contact_created",),
)


@hookimpl
def register_automations(register: Callable[[Automation], None], config: PluginContext) -> None:
    register(WELCOME_SERIES)
