"""The hooks a Textpulse plugin can implement (pluggy project name `textpulse`).

Built-in plugins (plugins/) implement them exactly like third-party ones; docs/plugins.md
documents each. Every hook is synchronous; objects handed over may have async methods where the
caller says so. `config` is a `PluginContext`: `config.settings` (the process settings) and
`config.plugin_settings(name)` (the plugin's table of plugins.toml, overridden by
`TEXTPULSE_<PLUGIN>_<SETTING>` environment variables).

Groups: the register_* hooks hand objects over once per process through `register`; the on_*
hooks are told about what was stored, each with one frozen dataclass `event`, after the commit
(nothing a listener does undoes what was stored).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from core.automations.spec import Automation
    from core.hooks.contracts import (
        BotFilter,
        CampaignStatusChanged,
        ClickRecorded,
        ContactCreated,
        ConversionRecorded,
        MessageStatusChanged,
        Provider,
        ReplyReceived,
        Shortener,
    )
    from core.hooks.registry import PluginContext

hookspec = pluggy.HookspecMarker("textpulse")
hookimpl = pluggy.HookimplMarker("textpulse")


# -- what a plugin hands over ----------------------------------------------------------------
@hookspec
def register_providers(register: Callable[[Provider], None], config: PluginContext) -> None:
    """Hand over SMS provider objects (`textpulse.Provider`, plus any optional abilities) with
    `register(provider)`.

    The provider's `name` is what campaigns name in `"provider"` and what the webhook routes
    `/webhooks/{name}/status` and `/webhooks/{name}/inbound` dispatch on. Two providers with
    the same name are an error.
    """


@hookspec(firstresult=True)
def make_shortener(config: PluginContext) -> Shortener | None:
    """Return the shortener (`textpulse.Shortener`: `new_code()`, `tracked_url(code, public_url)`,
    `is_code(code)`) that makes tracked links, or None to leave it to another plugin.

    The first non-None answer wins; the built-in one is `trylast`, so any enabled plugin that
    answers replaces it.
    """


@hookspec
def register_bot_filters(register: Callable[[BotFilter], None], config: PluginContext) -> None:
    """Hand over bot filters: `textpulse.BotFilter` (`name` and `judge(click) -> (score, reason | None)`,
    one click at a time) and/or `textpulse.JudgesTogether` (`judge_together(clicks, recent)`: verdicts
    that need several clicks, such as bursts, reached by the click writer a moment later)."""


@hookspec
def register_workflows(register: Callable[[type], None], config: PluginContext) -> None:
    """Hand over Temporal workflow classes (decorated with `@workflow.defn`) to run on the Textpulse worker."""


@hookspec
def register_activities(register: Callable[[Callable[..., Any]], None], config: PluginContext) -> None:
    """Hand over Temporal activity callables (decorated with `@activity.defn`) to run on the Textpulse worker."""


@hookspec
def register_automations(register: Callable[[Automation], None], config: PluginContext) -> None:
    """Hand over automations (`textpulse.automation.Automation`: a name, a description, a params
    dataclass, triggers and the workflow class) that the API, the CLI and events start.

    The workflow class is run on the worker (no need to register it with `register_workflows`
    too); the name is its Temporal workflow type, what `POST /api/workflows/{name}/runs` names.
    Two automations with one name are an error. docs/workflows.md is the guide.
    """


# -- what a plugin is told -------------------------------------------------------------------
@hookspec
def on_message_status(event: MessageStatusChanged) -> None:
    """Called after a message's delivery status moved forward (never for a duplicate callback or a step back)."""


@hookspec
def on_click(event: ClickRecorded) -> None:
    """Called after a click on a tracked link was stored (bots' clicks included, flagged `is_bot`)."""


@hookspec
def on_reply(event: ReplyReceived) -> None:
    """Called after an inbound message was stored (keywords such as STOP included, with `keyword` set)."""


@hookspec
def on_conversion(event: ConversionRecorded) -> None:
    """Called after a conversion event was stored and attributed to a campaign (or to none)."""


@hookspec
def on_contact_created(event: ContactCreated) -> None:
    """Called after a contact was created by an upsert or an import (not for one that was updated)."""


@hookspec
def on_campaign_status(event: CampaignStatusChanged) -> None:
    """Called on the worker after a campaign's workflow moved it (running, waiting, held, paused, completed, …)."""
