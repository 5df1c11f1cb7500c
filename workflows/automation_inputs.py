"""Inputs and outputs of automation workflows and their activities: one dataclass each, so
fields can be added without breaking running workflows. Standard library only: the workflow
sandbox imports this module. No `from __future__ import annotations`: Temporal's converter reads
these annotations at run time, inside the sandbox too, where a string annotation would have to be
resolved in a module the sandbox may not have imported."""

from dataclasses import dataclass, field
from typing import Any

# The signal by which a contact's events (and a campaign's completion) reach a running automation.
EVENT_SIGNAL = "contact_event"


@dataclass
class ContactEvent:
    """Something a contact did, or a campaign's completion, as a running automation is told."""

    kind: str  # click | reply | delivery | conversion | campaign_completed | contact_created
    contact_id: int | None = None
    at_epoch: float = 0.0  # when it happened (seconds since the epoch)
    campaign_id: int | None = None
    message_id: int | None = None
    # conversion: the event's name; delivery: the message's new status; campaign_completed: the
    # campaign's final status; reply: the keyword (STOP, HELP, …) when the whole text is one.
    name: str | None = None
    revenue: float = 0.0
    body: str | None = None  # a reply's text


@dataclass
class AutomationStart:
    """How a run begins: its automation, params (checked by the starter), and its subject."""

    automation: str
    params: dict[str, Any] = field(default_factory=dict)
    contact_id: int | None = None  # the contact the run is about (a triggered run: the event's)
    campaign_id: int | None = None  # the campaign the run is about (follow_up: the parent)
    trigger: str | None = None  # what started it; None: the API or the CLI
    event: ContactEvent | None = None  # the event that started it
    # How often a wait for a campaign's end looks at it, should its completion signal be lost.
    poll_seconds: float = 60.0


@dataclass
class RegisterRunInput:
    workflow: str
    workflow_id: str
    temporal_run_id: str
    params: dict[str, Any]
    contact_id: int | None = None
    campaign_id: int | None = None
    trigger: str | None = None
    started_at_epoch: float | None = None


@dataclass
class FinishRunInput:
    run_id: int
    status: str  # completed | cancelled | failed
    progress: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class ProgressInput:
    run_id: int
    progress: dict[str, Any] = field(default_factory=dict)


@dataclass
class CampaignStateResult:
    campaign_id: int
    status: str
    kind: str = "campaign"
    completed_at_epoch: float | None = None


@dataclass
class CountAudienceInput:
    audience: dict[str, Any]  # a campaign audience (API.md "Campaign body")


@dataclass
class CampaignSendInput:
    """A campaign of the automation: created (once per run and name), launched, sent as a child
    workflow `campaign-<id>` through the same path as any campaign."""

    run_id: int
    name: str  # unique within the run: a retried activity finds the campaign it made
    body: str
    audience: dict[str, Any]
    kind: str = "automation"  # follow_up | automation
    parent_id: int | None = None
    provider: str | None = None  # None: the parent's, else `fake`
    tracking: dict[str, Any] | None = None
    conversion: dict[str, Any] | None = None
    quiet_hours: dict[str, Any] | None = None
    rate_limit_per_second: float | None = None


@dataclass
class CampaignSendResult:
    campaign_id: int
    workflow_id: str
    # The campaign workflow's input (workflows.inputs.CampaignInput) as a dict, from the settings.
    campaign_input: dict[str, Any] = field(default_factory=dict)
    created: bool = True


@dataclass
class TextContactInput:
    """One text to one contact, in the automation's step campaign (`<automation>: <step>`, kind
    `automation`, made once per automation, step and body) so a step's numbers add up across runs."""

    run_id: int
    automation: str
    step: str
    contact_id: int
    body: str
    provider: str = "fake"
    # Not sent when the contact did one of these since `since_epoch` (click, reply, conversion,
    # or `conversion:<name>`), or opted out.
    stop_on: list[str] = field(default_factory=list)
    since_epoch: float | None = None
    tracking: dict[str, Any] | None = None
    conversion: dict[str, Any] | None = None
    quiet_hours: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None  # stored with the run in the same transaction


@dataclass
class TextContactResult:
    status: str  # sent | failed | skipped | deferred
    reason: str | None = None  # skipped: opted_out | stopped:<kind> | cancelled | no_contact
    campaign_id: int | None = None
    message_id: int | None = None
    resume_at_epoch: float | None = None  # deferred by quiet hours until then


@dataclass
class ContactInfoResult:
    contact_id: int
    exists: bool
    created_at_epoch: float = 0.0
    opted_out: bool = False
    attributes: dict[str, Any] = field(default_factory=dict)
