"""The built-in automations, registered exactly as a plugin's would be: `follow_up` and
`welcome_series` (API.md "Automations"; docs/workflows.md)."""

from __future__ import annotations

from collections.abc import Callable

from core.automations.spec import Automation
from core.hooks.hookspecs import hookimpl
from core.hooks.registry import PluginContext
from workflows.follow_up import FollowUpParams, FollowUpWorkflow
from workflows.welcome_series import WelcomeSeriesParams, WelcomeSeriesWorkflow

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
WELCOME_SERIES = Automation(
    name="welcome_series",
    description="A drip to each new contact, step by step, that stops on a reply, a click or a purchase.",
    workflow=WelcomeSeriesWorkflow,
    params=WelcomeSeriesParams,
    triggers=("contact_created",),
)


@hookimpl
def register_automations(register: Callable[[Automation], None], config: PluginContext) -> None:
    register(FOLLOW_UP)
    register(WELCOME_SERIES)
