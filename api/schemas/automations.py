"""Automations and their runs as the API shows them (API.md "Automations")."""

from typing import Any, TypedDict

from api.schemas.fields import OptionalTimestamp, RunStatusName, Timestamp


class AutomationInfo(TypedDict):
    """A registered automation: its params as a JSON Schema and the events that start it."""

    name: str
    description: str
    params: dict[str, Any]
    triggers: list[str]


class AutomationList(TypedDict):
    """Every registered automation, built-in and plugin."""

    items: list[AutomationInfo]


class AutomationRun(TypedDict):
    """One run of an automation: its status, params, the campaigns it sent through, its progress."""

    id: int
    workflow: str
    status: RunStatusName
    params: dict[str, Any]
    started_at: Timestamp
    completed_at: OptionalTimestamp
    campaign_ids: list[int]
    progress: dict[str, Any]
    trigger: str | None  # what started it (contact_created, click, …); null: the API or the CLI
    contact_id: int | None  # the contact it is about
    campaign_id: int | None  # the campaign it is about (a follow-up's parent)
    workflow_id: str  # its Temporal workflow id
    error: str | None


class AutomationRunPage(TypedDict):
    """A page of runs by id; `next` is the cursor of the following page, null on the last."""

    items: list[AutomationRun]
    next: str | None
