"""The built-in bot filters: user agent, timing, networks and prefetch headers.

Carrier security systems, antivirus apps and chat apps fetch links in a text to scan them or to
draw a preview; those requests must not count as people clicking. Each filter judges a click
and, when it thinks a machine made it, names why; a click with a reason is kept, flagged
(`is_bot`, `bot_reasons`) and left out of the human counts (raw counts still have it).
docs/bots.md says what each one catches, why each default is what it is, and how well they do on
a labelled corpus (tests/data/bots/).

Settings, `[plugins.botfilters]` in plugins.toml or `TEXTPULSE_BOTFILTERS_<SETTING>`:
- `min_seconds` (2): a click sooner than this after its text reached the phone (its delivery
  receipt, or its send when the receipt has not come) is too fast for a person: `too_fast`.
  0 turns the filter off.
- `user_agents` (true): no user agent (`no_user_agent`); one of the link previewers and scanners
  of plugins/data/preview_agents.toml (`bot_user_agent:<name>`, e.g. `bot_user_agent:whatsapp`);
  or one the maintained crawler list of `crawlerdetect` names, that says bot, crawler, spider,
  that signs itself as machines do (a contact URL or e-mail address, "(compatible; Name/1.0)"),
  or that is no browser's at all (not "Mozilla/…", as every browser's is: `bot_user_agent`).
- `agents_file` (plugins/data/preview_agents.toml): the named previewers and scanners; a path to
  use your own copy.
- `extra_user_agents` (none): more patterns (regular expressions, case-insensitive) to flag
  (`bot_user_agent`).
- `networks_file` (plugins/data/bot_networks.txt): CIDRs, one a line, whose clicks are machines'
  (`bot_network`): crawlers' and security vendors' published ranges. A path to use your own
  (a copy kept up to date); empty for none.
- `networks` (none): more CIDRs, on top of the file's.
- `cloud_networks_file` (plugins/data/cloud_networks.txt): the compute ranges of AWS, Google
  Cloud, Azure, DigitalOcean and Oracle Cloud (`cloud_network`, score 0.8): scanners, sandboxes
  and headless browsers run there, people reading a text do not. `python -m plugins.cloud_networks`
  writes a fresh copy from the providers' files; empty for none.
- `prefetch` (true): a request that says it is a prefetch or a preview (`Purpose: prefetch`,
  `Sec-Purpose: prefetch`, `X-Moz: prefetch`, `X-Purpose: preview`): `prefetch`.

A plugin adds its own filters through the `register_bot_filters` hook: objects with a `name` and
`judge(click) -> (score, reason or None)`, where `click` is a `textpulse.ClickToJudge`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import tomllib
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from crawlerdetect import crawlerdetect

from textpulse import BotFilter, ClickToJudge, PluginContext, hookimpl

DATA_DIR = Path(__file__).resolve().parent / "data"
PREVIEW_AGENTS_FILE = DATA_DIR / "preview_agents.toml"
NETWORKS_FILE = DATA_DIR / "bot_networks.txt"
CLOUD_NETWORKS_FILE = DATA_DIR / "cloud_networks.txt"
AGENT_KINDS = ("preview", "scanner", "crawler", "library")
# A click from a data centre is a machine's but for the odd person on a VPN hosted there.
CLOUD_SCORE = 0.8

# What crawlerdetect may not know yet: an agent that calls itself a bot, crawler or spider.
# Every browser's user agent, in-app ones too, starts "Mozilla/5.0" (old Opera and Opera Mini:
# "Opera/9.80"; UC Browser's lite builds: "UCWEB"): anything else is an app or a library.
BROWSER_PREFIX = re.compile(r"\s*(?:Mozilla/|Opera/|UCWEB)", re.IGNORECASE)
# Feature phones' browsers (common where people read texts on them) name the phone first and
# their Java ME profile after: "Nokia6300/2.0 (07.21) Profile/MIDP-2.0 Configuration/CLDC-1.1".
FEATURE_PHONE = re.compile(r"\bProfile/MIDP-|\bConfiguration/CLDC-", re.IGNORECASE)
# A lone "bot" word only (not the phone model "CUBOT X30").
GENERIC_AGENTS = r"(?:^|[^a-z])bot\b|bot/\d|crawler|spider|scanner|link.?check|preview|fetcher"
# How machines sign their requests, and browsers never do: a contact address in the agent (the
# crawler convention "+http://…/bot.html", a bare URL, "www.…", "mailto:" or an e-mail address),
# "(compatible; Name/1.0 …)" that is not old Internet Explorer's or Konqueror's, or a bare
# "Mozilla/5.0" with no platform at all.
SIGNED_AGENTS = (
    r"\+?https?://|\bwww\.[a-z0-9-]+\.[a-z]{2,}|mailto:|[\w.+-]+@[\w-]+\.[a-z]{2,}"
    r"|\(compatible; (?!MSIE |Konqueror/|U;)|^\s*Mozilla/\d+\.\d+\s*$"
)


@dataclass(frozen=True, slots=True)
class KnownAgent:
    name: str
    kind: str
    pattern: re.Pattern[str]
    source: str
    checked: date | None = None  # when the entry was last compared with its source


def load_agents(path: Path = PREVIEW_AGENTS_FILE) -> tuple[KnownAgent, ...]:
    """The entries of a preview_agents.toml: each with a name, a kind, a pattern and a source."""
    try:
        entries = tomllib.loads(path.read_text(encoding="utf-8")).get("agent", [])
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"botfilters: cannot read {path}: {exc}") from exc
    agents = []
    for number, entry in enumerate(entries, 1):
        missing = [key for key in ("name", "kind", "pattern", "source") if not entry.get(key)]
        if missing:
            raise ValueError(f"botfilters: {path} entry {number} has no {', '.join(missing)}")
        if entry["kind"] not in AGENT_KINDS:
            raise ValueError(f"botfilters: {path} entry {entry['name']!r}: kind must be one of {AGENT_KINDS}")
        try:
            pattern = re.compile(entry["pattern"], re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"botfilters: {path} entry {entry['name']!r} has a bad pattern: {exc}") from exc
        agents.append(KnownAgent(entry["name"], entry["kind"], pattern, entry["source"], _checked(path, entry)))
    return tuple(agents)


def _checked(path: Path, entry: dict[str, Any]) -> date | None:
    """An entry's `checked` date (TOML date or "YYYY-MM-DD"); None when it has none."""
    value = entry.get("checked")
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(
            f"botfilters: {path} entry {entry['name']!r}: checked must be a date YYYY-MM-DD, got {value!r}"
        ) from None


class UserAgentFilter:
    """Our named previewers and scanners first (`bot_user_agent:<name>`), then crawlerdetect's
    list, the generic words and `extra` (`bot_user_agent`). Verdicts are cached by user agent:
    a campaign's clicks come from a few hundred distinct agents."""

    name = "user_agent"

    def __init__(self, extra: Iterable[str] = (), agents: tuple[KnownAgent, ...] | None = None) -> None:
        self.agents = load_agents() if agents is None else agents
        # One search finds whether any named entry matches; only a hit walks the list for its name.
        self.named = re.compile("|".join(f"(?:{a.pattern.pattern})" for a in self.agents) or r"(?!)", re.IGNORECASE)
        try:
            patterns = (GENERIC_AGENTS, SIGNED_AGENTS, *extra)
            self.generic = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"botfilters: extra_user_agents has a bad pattern: {exc}") from exc
        self.crawlers = crawlerdetect.get_compiled_crawler_regex()
        self.exclusions = crawlerdetect.get_compiled_exclusions_regex()
        self._judge = lru_cache(maxsize=16384)(self._judge_agent)

    def _judge_agent(self, agent: str | None) -> tuple[float, str | None]:
        if not agent or not agent.strip():
            return 1.0, "no_user_agent"
        if self.named.search(agent):
            for known in self.agents:
                if known.pattern.search(agent):
                    return 1.0, f"bot_user_agent:{known.name}"
        if self.generic.search(agent):
            return 1.0, "bot_user_agent"
        # crawlerdetect's way: take out what browsers say too (Safari/, Mobile…), then search.
        stripped = self.exclusions.sub("", agent).strip()
        if stripped and self.crawlers.search(stripped):
            return 1.0, "bot_user_agent"
        if not BROWSER_PREFIX.match(agent) and not FEATURE_PHONE.search(agent):
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


def read_networks(path: Path, setting: str = "networks_file") -> list[str]:
    """The CIDRs of a networks file: one a line, `#` starts a comment."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"botfilters: {setting}: cannot read {path}: {exc}") from exc
    return [cidr for line in lines if (cidr := line.split("#", 1)[0].strip())]


def _span(text: str) -> tuple[int, int, int]:
    """A CIDR as (IP version, first address, last address), host bits ignored. socket's parsers,
    not ipaddress objects: the data-centre file has 13,000 blocks, read at every start."""
    address, slash, prefix = text.partition("/")
    version, family, bits = (6, socket.AF_INET6, 128) if ":" in address else (4, socket.AF_INET, 32)
    try:
        value = int.from_bytes(socket.inet_pton(family, address), "big")
        length = int(prefix) if slash else bits
    except (OSError, ValueError):
        raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 network") from None
    if not 0 <= length <= bits:
        raise ValueError(f"{text!r}: the prefix length must be 0 to {bits}")
    host = (1 << (bits - length)) - 1
    return version, value & ~host, (value & ~host) | host


@lru_cache(maxsize=8)
def merged_ranges(networks: tuple[str, ...]) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """The networks as merged ranges per IP version: (starts, ends), sorted. Cached: every
    registry of a process (tests make many) shares one copy per list."""
    ranges: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for text in networks:
        version, start, end = _span(text)
        ranges[version].append((start, end))
    starts: dict[int, list[int]] = {}
    ends: dict[int, list[int]] = {}
    for version, spans in ranges.items():
        merged: list[list[int]] = []
        for start, end in sorted(spans):
            if merged and start <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        starts[version] = [start for start, _ in merged]
        ends[version] = [end for _, end in merged]
    return starts, ends


class NetworkFilter:
    """Is the click's address in one of the networks? Merged ranges per IP version, looked up by
    bisection: a few microseconds whatever the length of the list, and cached by address. The
    reason (and the filter's name) says which list: `bot_network` (crawlers' and security
    vendors'), `cloud_network` (data centres' compute ranges)."""

    name = "ip_range"

    def __init__(
        self, networks: Iterable[str], *, reason: str = "bot_network", name: str = "ip_range", score: float = 1.0
    ) -> None:
        self.name = name
        self.reason = reason
        self.score = score
        try:
            self.starts, self.ends = merged_ranges(tuple(text.strip() for text in networks if text.strip()))
        except ValueError as exc:
            raise ValueError(f"botfilters: {self.reason} networks: {exc}") from exc
        self.size = sum(len(starts) for starts in self.starts.values())
        self._judge = lru_cache(maxsize=16384)(self._judge_ip)

    def _judge_ip(self, ip: str | None) -> tuple[float, str | None]:
        try:
            address = ipaddress.ip_address(ip or "")
        except ValueError:
            return 0.0, None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        value = int(address)
        index = bisect_right(self.starts[address.version], value) - 1
        if index >= 0 and value <= self.ends[address.version][index]:
            return self.score, self.reason
        return 0.0, None

    def judge(self, click: ClickToJudge) -> tuple[float, str | None]:
        return self._judge(click.ip)


# What the prefetch headers say when a browser or an app fetches ahead of a person (Chrome:
# `Sec-Purpose: prefetch` or `prefetch;prerender`; Safari and older Chrome: `Purpose: prefetch`;
# Firefox: `X-Moz: prefetch`; some previewers: `X-Purpose: preview`).
_PREFETCH = re.compile(r"prefetch|prerender|preview", re.IGNORECASE)


class PrefetchFilter:
    name = "prefetch"

    def judge(self, click: ClickToJudge) -> tuple[float, str | None]:
        purpose = click.purpose
        if purpose and _PREFETCH.search(purpose):
            return 1.0, "prefetch"
        return 0.0, None


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
        agents_file = settings.get("agents_file") or PREVIEW_AGENTS_FILE
        register(UserAgentFilter(_as_list(settings.get("extra_user_agents")), load_agents(Path(agents_file))))
    try:
        min_seconds = float(settings.get("min_seconds", 2))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"botfilters: min_seconds must be a number, got {settings.get('min_seconds')!r}") from exc
    if min_seconds > 0:
        register(TimingFilter(min_seconds))
    networks_file = settings.get("networks_file", NETWORKS_FILE)
    networks = read_networks(Path(networks_file)) if networks_file not in (None, "") else []
    networks += _as_list(settings.get("networks"))
    if networks:
        register(NetworkFilter(networks))
    cloud_file = settings.get("cloud_networks_file", CLOUD_NETWORKS_FILE)
    if cloud_file not in (None, ""):
        cloud = read_networks(Path(cloud_file), "cloud_networks_file")
        register(NetworkFilter(cloud, reason="cloud_network", name="cloud_network", score=CLOUD_SCORE))
    if _as_bool(settings.get("prefetch", True)):
        register(PrefetchFilter())
