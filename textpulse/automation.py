"""What automation engineers write automations with (docs/workflows.md "Automations").

    from textpulse import hookimpl
    from textpulse.automation import Automation, AutomationStart, AutomationWorkflow

A plugin hands its automations over with the `register_automations` hook. Unlike the
`textpulse` package itself, this module imports temporalio (an automation is a workflow).
"""

from __future__ import annotations

from core.automations.spec import EVENT_KINDS, TRIGGERS, Automation, ParamsInvalid
from core.contacts.filters import attributes_match
from core.hooks.hookspecs import hookimpl
from core.statuses import CampaignKind, CampaignStatus, RunStatus
from workflows.automation import AutomationWorkflow
from workflows.automation_inputs import (
    AutomationStart,
    CampaignStateResult,
    ContactEvent,
    ContactInfoResult,
    TextContactResult,
)

__all__ = [
    "hookimpl",
    "Automation",
    "AutomationWorkflow",
    "AutomationStart",
    "ContactEvent",
    "TextContactResult",
    "CampaignStateResult",
    "ContactInfoResult",
    "TRIGGERS",
    "EVENT_KINDS",
    "ParamsInvalid",
    "CampaignKind",
    "CampaignStatus",
    "RunStatus",
    "attributes_match",
]
