"""The hooks a Textpulse plugin can implement (pluggy project name `textpulse`).

Built-in plugins (plugins/) implement them exactly like third-party ones. Every hook is
synchronous; objects handed over may have async methods where the caller says so.
`config` is a `core.hooks.registry.PluginContext`: `config.settings` (the process settings) and
`config.plugin_settings(name)` (the plugin's table of plugins.toml, overridden by
`TEXTPULSE_<PLUGIN>_<SETTING>` environment variables).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("textpulse")
hookimpl = pluggy.HookimplMarker("textpulse")


@hookspec
def register_providers(register: Callable[[Any], None], config: Any) -> None:
    """Hand over SMS provider objects (see `core.hooks.contracts.Provider`) with `register(provider)`.

    The provider's `name` is what campaigns name in `"provider"` and what the webhook routes
    `/webhooks/{name}/status` and `/webhooks/{name}/inbound` dispatch on. Two providers with
    the same name are an error.
    """


@hookspec(firstresult=True)
def make_shortener(config: Any) -> Any:
    """Return the shortener that makes tracked links: an object with `new_code() -> str` and
    `tracked_url(code: str, public_url: str) -> str`.

    The first non-None answer wins; the built-in one is `trylast`, so any enabled plugin that
    answers replaces it.
    """


@hookspec
def register_bot_filters(register: Callable[[Any], None], config: Any) -> None:
    """Hand over bot filters: objects with `name` and `judge(click) -> (score, reason | None)`."""


@hookspec
def register_workflows(register: Callable[[Any], None], config: Any) -> None:
    """Hand over Temporal workflow classes to run on the Textpulse worker."""


@hookspec
def register_activities(register: Callable[[Any], None], config: Any) -> None:
    """Hand over Temporal activity callables to run on the Textpulse worker."""


@hookspec
def on_message_status(message: Any, old_status: str, new_status: str) -> None:
    """Called after a message's delivery status moved forward (not for duplicates); `message` is its id."""


@hookspec
def on_click(click: Any) -> None:
    """Called after a click on a tracked link was recorded (bots included, flagged)."""


@hookspec
def on_reply(reply: Any) -> None:
    """Called after an inbound message was stored."""


@hookspec
def on_conversion(conversion: Any) -> None:
    """Called after a conversion event was stored and attributed."""
