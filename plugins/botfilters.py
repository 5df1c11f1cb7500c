"""The built-in bot filters: user agent, timing and IP ranges.

Carrier security systems, antivirus apps and chat apps fetch links in a text to scan them or to
draw a preview; those requests must not count as people clicking. Each filter judges a click
and, when it thinks a machine made it, names why; a click with a reason is kept, flagged
(`is_bot`, `bot_reasons`) and left out of the human counts (raw counts still have it).

Settings, `[plugins.botfilters]` in plugins.toml or `TEXTPULSE_BOTFILTERS_<SETTING>`:
- `min_seconds` (2): a click sooner than this after its text reached the phone (its delivery
  receipt, or its send when the receipt has not come) is too fast for a person: `too_fast`.
  0 turns the filter off.
- `user_agents` (true): no user agent (`no_user_agent`), or one that names a crawler, a link
  previewer, a security scanner or an HTTP library rather than a browser (`bot_user_agent`).
- `extra_user_agents` (none): more patterns (regular expressions, case-insensitive) to flag.
- `networks` (none): CIDRs whose clicks are machines' (`bot_network`), e.g. a scanner's range.

A plugin adds its own filters through the `register_bot_filters` hook: objects with a `name` and
`judge(click) -> (score, reason or None)`, where `click` is a `textpulse.ClickToJudge`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from datetime import timedelta
from functools import lru_cache
from typing import Any

from textpulse import BotFilter, ClickToJudge, PluginContext, hookimpl

# Crawlers, link previewers, scanners and HTTP libraries announce themselves; browsers do not
# (Mozilla/5.0 … Safari/…). In-app browsers (Instagram, Facebook's FBAN/FBAV) are people.
KNOWN_AGENTS = (
    r"bot\b|bot/|bot;|crawl|spider|slurp|scanner|preview|fetcher|monitor|headless|phantomjs|lighthouse"
    r"|facebookexternalhit|facebookcatalog|meta-externalagent|whatsapp/|telegrambot|skypeuripreview|slack"
    r"|discord|linkedinbot|twitterbot|pinterest|embedly|iframely|outlook|microsoft office|ms-office"
    r"|barracuda|proofpoint|mimecast|symantec|trendmicro|kaspersky|bitdefender|mcafee|sophos|zscaler"
    r"|^curl/|^wget/|python-|^python/|httpx|aiohttp|requests/|^go-http-client|^java/|okhttp|apache-httpclient"
    r"|libwww|^node-fetch|^axios|^undici|^ruby|^php|^perl|^dart:io"
)


class UserAgentFilter:
    name = "user_agent"

    def __init__(self, extra: list[str] | tuple[str, ...] = ()) -> None:
        patterns = [KNOWN_AGENTS, *extra]
        try:
            self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"botfilters: extra_user_agents has a bad pattern: {exc}") from exc
        self._judge = lru_cache(maxsize=4096)(self._judge_agent)

    def _judge_agent(self, agent: str | None) -> tuple[float, str | None]:
        if not agent or not agent.strip():
            return 1.0, "no_user_agent"
        if self.pattern.search(agent):
            return 1.0, "bot_user_agent"
        return 0.0, None

    def judge(self, click: ClickToJudge) -> tuple[float, str | None]:
        return self._judge(click.user_agent)


class TimingFilter:
    name = "timing"
    needs_message_times = True  # store_clicks fills in when the message was sent and delivered

    def __init__(self, min_seconds: float) -> None:
        self.min_delay = timedelta(seconds=min_seconds)

    def judge(self, click: ClickToJudge) -> tuple[float, str | None]:
        reached = click.delivered_at if click.delivered_at and click.delivered_at <= click.clicked_at else click.sent_at
        if reached is None or click.clicked_at - reached >= self.min_delay:
            return 0.0, None
        return 1.0, "too_fast"


class NetworkFilter:
    name = "ip_range"

    def __init__(self, networks: list[str] | tuple[str, ...]) -> None:
        try:
            self.networks = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks if n.strip())
        except ValueError as exc:
            raise ValueError(f"botfilters: networks: {exc}") from exc
        self._judge = lru_cache(maxsize=4096)(self._judge_ip)

    def _judge_ip(self, ip: str | None) -> tuple[float, str | None]:
        try:
            address = ipaddress.ip_address(ip or "")
        except ValueError:
            return 0.0, None
        if any(address in network for network in self.networks):
            return 1.0, "bot_network"
        return 0.0, None

    def judge(self, click: ClickToJudge) -> tuple[float, str | None]:
        return self._judge(click.ip)


def _as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):  # from the environment: comma-separated
        return [part for part in value.split(",") if part.strip()]
    return [str(part) for part in value]


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)


@hookimpl
def register_bot_filters(register: Callable[[BotFilter], None], config: PluginContext) -> None:
    settings = config.plugin_settings("botfilters")
    if _as_bool(settings.get("user_agents", True)):
        register(UserAgentFilter(_as_list(settings.get("extra_user_agents"))))
    try:
        min_seconds = float(settings.get("min_seconds", 2))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"botfilters: min_seconds must be a number, got {settings.get('min_seconds')!r}") from exc
    if min_seconds > 0:
        register(TimingFilter(min_seconds))
    networks = _as_list(settings.get("networks"))
    if networks:
        register(NetworkFilter(networks))
