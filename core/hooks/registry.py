"""Plugin manager: built-ins, the `textpulse` entry-point group, and plugins.toml.

plugins.toml:

    [plugins]
    enabled = ["my_package.my_plugin"]   # entry-point names or module paths
    disabled = ["twilio"]                # built-ins (or entry points) to leave out

    [plugins.fake]
    delivery_ratio = 0.95

A setting may come from the environment as TEXTPULSE_<PLUGIN>_<SETTING>, which wins.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from core.automations.spec import Automation
from core.errors import Invalid
from core.hooks import abilities, hookspecs
from core.hooks.contracts import BotFilter, JudgesTogether, Provider, Shortener, is_wellformed_code
from core.settings import Settings

# Built-in plugins register exactly like third-party ones; the key is the name to disable.
BUILTIN_PLUGINS: dict[str, str] = {
    "fake": "plugins.fake",
    "twilio": "plugins.twilio",
    "shortener": "plugins.shortener",
    "botfilters": "plugins.botfilters",
    "bot_behaviour": "plugins.bot_behaviour",
    "follow_up": "plugins.follow_up",
    "welcome_series": "plugins.welcome_series",
}


class PluginError(RuntimeError):
    """A plugin could not be loaded or registered something twice."""


def _env_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


@dataclass
class PluginContext:
    """What every `register_*` and `make_*` hook gets as `config`."""

    settings: Settings
    file_config: dict[str, Any] = field(default_factory=dict)  # plugins.toml as read
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def plugin_settings(self, name: str) -> dict[str, Any]:
        """The table `[plugins.<name>]`, with TEXTPULSE_<NAME>_<SETTING> from the environment on top."""
        table = dict(self.file_config.get("plugins", {}).get(name, {}) or {})
        prefix = f"TEXTPULSE_{name.upper()}_"
        for key, raw in self.environ.items():
            if key.startswith(prefix) and len(key) > len(prefix):
                table[key[len(prefix) :].lower()] = _env_value(raw)
        return table


def read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise PluginError(f"{path}: {exc}") from exc


class WellformedCodes:
    """A shortener written before `is_code` existed: its codes are judged by the rule every
    shortener's codes follow (base62, 7 to 32 characters), the rest is its own."""

    def __init__(self, shortener: Any) -> None:
        self.shortener = shortener

    def new_code(self) -> str:
        return str(self.shortener.new_code())

    def tracked_url(self, code: str, public_url: str) -> str:
        return str(self.shortener.tracked_url(code, public_url))

    def is_code(self, code: str) -> bool:
        return is_wellformed_code(code)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.shortener, name)


@dataclass
class PluginRegistry:
    """What the plugins handed over, built once per process."""

    pm: pluggy.PluginManager
    context: PluginContext
    providers: dict[str, Provider]
    shortener: Shortener
    bot_filters: list[BotFilter]  # those that judge each click alone (`judge`)
    together_filters: list[JudgesTogether] = field(default_factory=list)  # those that judge clicks together
    _automations: dict[str, Automation] | None = None

    def provider(self, name: str) -> Provider:
        try:
            return self.providers[name]
        except KeyError:
            raise KeyError(f"unknown provider {name!r}; known: {', '.join(sorted(self.providers))}") from None

    def reports_delivery(self, provider_name: str) -> bool:
        """CTR is over delivered messages when the campaign's provider reports delivery, else over
        sent; a provider no longer enabled is assumed to report it."""
        return abilities.reports_delivery(self.providers.get(provider_name))

    def permanent_error_codes(self, provider_name: str) -> frozenset[str]:
        """The provider's error codes that another attempt cannot fix (none for an unknown provider)."""
        return abilities.permanent_error_codes(self.providers.get(provider_name))

    def unsubscribed_error_codes(self, provider_name: str) -> frozenset[str]:
        """The provider's error codes meaning "the recipient unsubscribed" (none for an unknown one)."""
        return abilities.unsubscribed_error_codes(self.providers.get(provider_name))

    def listens(self, hook_name: str) -> bool:
        """Does any plugin implement the hook `on_*`? (Its payloads are built only then.)"""
        return bool(getattr(self.pm.hook, hook_name).get_hookimpls())

    def workflows(self) -> list[type]:
        """Every workflow class a plugin registers, its automations' included (each once)."""
        found: list[type] = []
        self.pm.hook.register_workflows(register=found.append, config=self.context)
        for automation in self.automations().values():
            if automation.workflow not in found:
                found.append(automation.workflow)
        return found

    def automations(self) -> dict[str, Automation]:
        """The registered automations by name, each with the params plugins.toml gives its
        triggered runs (`[automations.<name>]`, when `enabled = true`), checked once here."""
        if self._automations is None:
            found: dict[str, Automation] = {}
            tables = self.context.file_config.get("automations", {}) or {}

            def register(automation: Automation) -> None:
                if automation.name in found:
                    raise PluginError(f"two plugins register an automation named {automation.name!r}")
                table = dict(tables.get(automation.name, {}) or {})
                trigger_params = None
                if table.pop("enabled", False) is True:
                    # A run started by a campaign's completion is given that campaign's id.
                    given = automation.campaign_param() and "campaign_id" not in table
                    try:
                        trigger_params = automation.check({**table, "campaign_id": 1} if given else table)
                    except Invalid as exc:
                        raise PluginError(f"plugins.toml [automations.{automation.name}]: {exc}") from None
                    if given:
                        trigger_params.pop("campaign_id", None)
                found[automation.name] = dataclasses.replace(automation, trigger_params=trigger_params)

            self.pm.hook.register_automations(register=register, config=self.context)
            unknown = sorted(set(tables) - set(found))
            if unknown:
                raise PluginError(
                    f"plugins.toml has [automations.{unknown[0]}], but no plugin registers an automation of"
                    f" that name; registered: {', '.join(sorted(found)) or 'none'}"
                )
            self._automations = found
        return self._automations

    def activities(self) -> list[Callable[..., Any]]:
        found: list[Callable[..., Any]] = []
        self.pm.hook.register_activities(register=found.append, config=self.context)
        return found

    def close(self) -> None:
        for provider in self.providers.values():
            abilities.close(provider)


def get_plugin_manager(config: dict[str, Any]) -> pluggy.PluginManager:
    section = config.get("plugins", {}) or {}
    disabled = set(section.get("disabled", []) or [])
    enabled = list(section.get("enabled", []) or [])
    pm = pluggy.PluginManager("textpulse")
    pm.add_hookspecs(hookspecs)
    for name, module_path in BUILTIN_PLUGINS.items():
        if name not in disabled:
            pm.register(importlib.import_module(module_path), name=name)
    for name in disabled:
        pm.set_blocked(name)
    pm.load_setuptools_entrypoints("textpulse")
    for target in enabled:
        if pm.has_plugin(target) or target in BUILTIN_PLUGINS:
            continue
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise PluginError(f"plugins.toml enables {target!r}, which cannot be imported: {exc}") from exc
        pm.register(module, name=target)
    return pm


def load_plugins(settings: Settings, *, config: dict[str, Any] | None = None) -> PluginRegistry:
    file_config = read_config(settings.config_path) if config is None else config
    context = PluginContext(settings=settings, file_config=file_config)
    pm = get_plugin_manager(file_config)
    providers: dict[str, Provider] = {}

    def register_provider(provider: Provider) -> None:
        if provider.name in providers:
            raise PluginError(f"two plugins register a provider named {provider.name!r}")
        providers[provider.name] = provider

    pm.hook.register_providers(register=register_provider, config=context)
    shortener = pm.hook.make_shortener(config=context)
    if shortener is None:
        raise PluginError("no shortener plugin is enabled")
    if not isinstance(shortener, Shortener):
        shortener = WellformedCodes(shortener)
    bot_filters: list[BotFilter] = []
    together_filters: list[JudgesTogether] = []

    def register_bot_filter(bot_filter: Any) -> None:
        # Refused here, once, rather than failing every batch of clicks in the writer.
        each, together = abilities.judges_each(bot_filter), abilities.judges_together(bot_filter)
        if not isinstance(getattr(bot_filter, "name", None), str) or not (each or together):
            raise PluginError(
                "a bot filter needs a `name` (str) and a `judge(click)` method, or `judge_together(clicks, recent)`"
                f" and a `window`: {bot_filter!r}"
            )
        if each:
            bot_filters.append(bot_filter)
        if together:
            together_filters.append(bot_filter)

    pm.hook.register_bot_filters(register=register_bot_filter, config=context)
    return PluginRegistry(
        pm=pm,
        context=context,
        providers=providers,
        shortener=shortener,
        bot_filters=bot_filters,
        together_filters=together_filters,
    )
