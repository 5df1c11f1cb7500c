"""The built-in behaviour filters: verdicts that need more than one click.

A carrier's or a gateway's link scanner often fetches with an ordinary phone browser's user
agent, so no filter that sees one click at a time can tell it from a person. What gives it away
is how it clicks:
- `burst`: the links of several different recipients clicked within a second from one address
  or one network (an IPv4 /24, an IPv6 /64), with one user agent, each within seconds of its
  text's delivery: a machine working through the texts it relays as they pass. A person clicks
  their own link only.
- `all_links`: two or more of the links of one message clicked within a few seconds from one
  network: a scanner follows every link of a text; a person reads, picks one, and has to come
  back from the page they opened before tapping another.

Both judge each batch of clicks together with the clicks of the last few seconds
(`textpulse.JudgesTogether`): the click writer re-judges those too, so the first clicks of a
burst become bots' once the burst shows (docs/bots.md, "Behaviour and re-scoring").

A person who clicks after a preview stays a person: a click that another filter already flagged
(a link previewer, a HEAD probe) does not count towards `all_links`, and the first click on a
message that looks human and follows such a flagged click by at least PERSON_SECONDS with
another user agent (the person's browser after the app's previewer) is never counted in a burst
or in `all_links`. A scanner's own second fetch follows its first within milliseconds with the
same user agent, and is not spared.

Settings, `[plugins.bot_behaviour]` in plugins.toml or `TEXTPULSE_BOT_BEHAVIOUR_<SETTING>`:
- `enabled` (true): false turns both off.
- `burst_recipients` (5): how many different recipients make a burst; 0 turns it off.
- `burst_same_agent` (true): they must share one user agent (a scanner's one client; people
  behind one carrier NAT at a blast's click rates have many). false: any agents.
- `burst_fresh_seconds` (10): each click must come within this of its own text's delivery (else
  send): a scanner in the texts' path fetches as they pass, people over minutes. 0: any time.
- `burst_seconds` (1): the span they fall within.
- `all_links_seconds` (3): the span within which two links of one message make `all_links`; 0
  turns it off.
- `skip_local` (true): loopback and private addresses (127/8, 10/8, 172.16/12, 192.168/16,
  fc00::/7, link-local) are never a burst: clicks seen from such an address have come through a
  proxy Textpulse was not told to trust (`TEXTPULSE_TRUSTED_PROXIES`), and every person behind
  it would look like one burst.
"""

from __future__ import annotations

import ipaddress
import operator
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import compress, islice
from typing import Any

from textpulse import JudgedClick, PluginContext, hookimpl

# How far back each filter looks (`window`): the all_links span, with room for a preview that
# came a few seconds before the person's click.
WINDOW_SECONDS = 5.0
# A person reads the text (or the preview) before tapping: a human-looking click sooner than
# this after a flagged one on the same message is the same machine's second fetch.
PERSON_SECONDS = 1.0
# A scanner in the path of the texts fetches as they pass: before the receipt, or seconds after.
FRESH_SECONDS = 10.0
BEHAVIOUR_REASONS = frozenset({"burst", "all_links"})
SCORE = 0.9  # behaviour is strong evidence, a shade less certain than a crawler's own name

_LOCAL = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16", "fc00::/7", "fe80::/10")
)


@lru_cache(maxsize=65536)
def network_of(ip: str | None, skip_local: bool = True) -> str | None:
    """The /24 (IPv4) or /64 (IPv6) an address is in; None for no address, an unparseable one,
    or (`skip_local`) a loopback or private one."""
    try:
        address = ipaddress.ip_address((ip or "").strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback or (skip_local and any(address in n for n in _LOCAL)):
        return None
    prefix = 24 if address.version == 4 else 64  # a mobile IPv6 /64 is one handset's, a /48 thousands
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def recipient_of(click: JudgedClick) -> Hashable:
    """Whose link it is: the contact, or for a test send to no contact, the message."""
    target = click.target
    return target.contact_id if target.contact_id is not None else ("message", target.message_id)


def flagged_by_others(click: JudgedClick) -> bool:
    """Did a filter other than these two call it a machine's?"""
    reasons = click.reasons
    return bool(reasons) and not BEHAVIOUR_REASONS.issuperset(reasons)


def people_after_previews(clicks: Sequence[JudgedClick]) -> set[int]:
    """Indexes (into `clicks`, oldest first) of the first human-looking click on a message after
    a flagged one, at least PERSON_SECONDS later and with another user agent: the person's click
    after their app's preview (or a probe), never counted in a burst or in all_links."""
    spared: set[int] = set()
    if not any(click.reasons for click in clicks):  # most rounds: no click flagged, nobody to spare
        return spared
    last_flag: dict[int, tuple[datetime, str | None]] = {}
    gap = timedelta(seconds=PERSON_SECONDS)
    for index, click in enumerate(clicks):
        message = click.target.message_id
        if flagged_by_others(click):
            last_flag[message] = (click.clicked_at, click.user_agent)
            continue
        flag = last_flag.pop(message, None)  # the first human-looking one after it, only
        if flag is not None and click.clicked_at - flag[0] >= gap and click.user_agent != flag[1]:
            spared.add(index)
    return spared


def _in_order(clicks: Sequence[JudgedClick], recent: Sequence[JudgedClick]) -> tuple[list[JudgedClick], list[int]]:
    """Every click, oldest first, and for each its place in `[*recent, *clicks]`. Each part comes
    oldest first, and the batch after the window, most often: then no sort is needed."""
    every = [*recent, *clicks]
    times = [click.clicked_at for click in every]
    if all(map(operator.le, times, islice(times, 1, None))):  # in C
        return every, list(range(len(every)))
    order = sorted(range(len(every)), key=times.__getitem__)
    return [every[i] for i in order], order


def _verdicts(size: int, marked: set[int], order: list[int], reason: str) -> list[tuple[float, str | None]]:
    verdicts: list[tuple[float, str | None]] = [(0.0, None)] * size
    for place in marked:
        verdicts[order[place]] = (SCORE, reason)
    return verdicts


def fresh(click: JudgedClick, within: timedelta) -> bool:
    """Did the click come within `within` of its text reaching the phone (the receipt; the send
    when no receipt came before the click)? Unknown times are not fresh."""
    delivered = click.delivered_at
    reached = delivered if delivered is not None and delivered <= click.clicked_at else None
    reached = reached or click.sent_at or getattr(click.target, "sent_at", None)
    return reached is not None and click.clicked_at - reached <= within


class BurstFilter:
    """Several recipients' links within `seconds` from one network, with one user agent
    (`same_agent`), each click within `fresh_seconds` of its own text's delivery (else send): a
    scanner works through the texts as they pass, with one client; people behind one carrier NAT
    at a blast's click rates have many agents and click over minutes."""

    name = "burst"
    window = WINDOW_SECONDS

    def __init__(
        self,
        recipients: int = 5,
        seconds: float = 1.0,
        *,
        skip_local: bool = True,
        same_agent: bool = True,
        fresh_seconds: float = FRESH_SECONDS,
    ) -> None:
        if recipients < 2:
            raise ValueError(f"bot_behaviour: burst_recipients must be at least 2 (or 0: off), got {recipients}")
        if not 0 < seconds <= WINDOW_SECONDS:
            raise ValueError(f"bot_behaviour: burst_seconds must be in (0, {WINDOW_SECONDS:g}], got {seconds:g}")
        if fresh_seconds < 0:
            raise ValueError(f"bot_behaviour: burst_fresh_seconds must be 0 (any time) or more, got {fresh_seconds:g}")
        self.recipients = recipients
        self.span = timedelta(seconds=seconds)
        self.skip_local = skip_local
        self.same_agent = same_agent
        self.fresh = timedelta(seconds=fresh_seconds) if fresh_seconds > 0 else None

    def key(self, click: JudgedClick) -> tuple[str, str | None] | None:
        """The group a click counts in (its network, and its agent with `same_agent`); None: none."""
        network = network_of(click.ip, self.skip_local)
        if network is None or (self.fresh is not None and not fresh(click, self.fresh)):
            return None
        return (network, click.user_agent if self.same_agent else None)

    def judge_together(
        self, clicks: Sequence[JudgedClick], recent: Sequence[JudgedClick]
    ) -> list[tuple[float, str | None]]:
        """Only the groups of `clicks` can gain a burst (the window's other groups were judged when
        their clicks were new): the rest of the window is passed over but for the clicks on the
        same messages, which say who is a person after a preview. A round costs the batch."""
        keys = {key for key in map(self.key, clicks) if key is not None}
        if not keys:  # no click of the batch can be in a burst (local, not fresh): none is
            return [(0.0, None)] * (len(recent) + len(clicks))
        grouped = {place for place, click in enumerate(recent) if self.key(click) in keys}
        messages = {click.target.message_id for click in clicks} | {recent[p].target.message_id for p in grouped}
        places = [
            place for place, click in enumerate(recent) if click.target.message_id in messages or place in grouped
        ]
        found = self.judge_all([recent[place] for place in places], clicks, keys)
        verdicts: list[tuple[float, str | None]] = [(0.0, None)] * len(recent)
        for place, verdict in zip(places, found, strict=False):
            verdicts[place] = verdict
        return verdicts + found[len(places) :]

    def judge_all(
        self,
        recent: Sequence[JudgedClick],
        clicks: Sequence[JudgedClick],
        keys: set[tuple[str, str | None]] | None = None,
    ) -> list[tuple[float, str | None]]:
        """The verdicts of `[*recent, *clicks]`, every click looked at (in the groups of `keys` only,
        when given)."""
        ordered, order = _in_order(clicks, recent)
        spared = people_after_previews(ordered)
        groups: dict[tuple[str, str | None], list[int]] = defaultdict(list)
        for place, click in enumerate(ordered):
            key = self.key(click)
            if key is None or place in spared or (keys is not None and key not in keys):
                continue
            groups[key].append(place)
        marked: set[int] = set()
        for places in groups.values():
            if len(places) < self.recipients:
                continue
            # A sliding span over the group's clicks: how many of each recipient are in it.
            inside: dict[Hashable, int] = defaultdict(int)
            first = done = 0  # done: the group's clicks up to here are marked already
            for last, place in enumerate(places):
                at = ordered[place].clicked_at
                inside[recipient_of(ordered[place])] += 1
                while at - ordered[places[first]].clicked_at > self.span:
                    gone = recipient_of(ordered[places[first]])
                    inside[gone] -= 1
                    if not inside[gone]:
                        del inside[gone]
                    first += 1
                if len(inside) >= self.recipients:
                    marked.update(places[max(first, done) : last + 1])
                    done = last + 1
        return _verdicts(len(ordered), marked, order, "burst")


class AllLinksFilter:
    """Two or more links of one message within `seconds` from one network, by clicks that no
    other filter flagged (a preview fetching every link is not the person following them)."""

    name = "all_links"
    window = WINDOW_SECONDS

    def __init__(self, seconds: float = 3.0, *, skip_local: bool = True) -> None:
        if not 0 < seconds <= WINDOW_SECONDS:
            raise ValueError(f"bot_behaviour: all_links_seconds must be in (0, {WINDOW_SECONDS:g}], got {seconds:g}")
        self.span = timedelta(seconds=seconds)
        self.skip_local = skip_local

    def judge_together(
        self, clicks: Sequence[JudgedClick], recent: Sequence[JudgedClick]
    ) -> list[tuple[float, str | None]]:
        """Only the messages of `clicks` can gain a verdict (two clicks of the window alone were
        judged when the later of them was new), and every rule here is per message: the window's
        other clicks are passed over, so a round costs the batch, not the window."""
        messages = {click.target.message_id for click in clicks}
        # `recent` is the whole window, 100,000 clicks at 20,000 a second: tested in C.
        ids = [click.target.message_id for click in recent]
        places = list(compress(range(len(ids)), map(messages.__contains__, ids)))
        found = self.judge_all([recent[place] for place in places], clicks)
        verdicts: list[tuple[float, str | None]] = [(0.0, None)] * len(recent)
        for place, verdict in zip(places, found, strict=False):
            verdicts[place] = verdict
        return verdicts + found[len(places) :]

    def judge_all(self, recent: Sequence[JudgedClick], clicks: Sequence[JudgedClick]) -> list[tuple[float, str | None]]:
        """The verdicts of `[*recent, *clicks]`, every click of them looked at."""
        ordered, order = _in_order(clicks, recent)
        per_message = Counter(click.target.message_id for click in ordered)
        if max(per_message.values(), default=0) < 2:  # most rounds: one click a message
            return [(0.0, None)] * len(ordered)
        spared = people_after_previews(ordered)
        groups: dict[tuple[int, str | None], list[int]] = defaultdict(list)
        for place, click in enumerate(ordered):
            if per_message[click.target.message_id] < 2 or place in spared or flagged_by_others(click):
                continue
            # By network; an address that has none (private, unparseable) stands for itself.
            network = network_of(click.ip, False) or click.ip
            groups[(click.target.message_id, network)].append(place)
        marked: set[int] = set()
        for places in groups.values():
            if len(places) < 2:
                continue
            first = done = 0
            links: dict[int, int] = defaultdict(int)  # clicks per link in the span
            for last, place in enumerate(places):
                at = ordered[place].clicked_at
                links[ordered[place].target.link_id] += 1
                while at - ordered[places[first]].clicked_at > self.span:
                    gone = ordered[places[first]].target.link_id
                    links[gone] -= 1
                    if not links[gone]:
                        del links[gone]
                    first += 1
                if len(links) >= 2:
                    marked.update(places[max(first, done) : last + 1])
                    done = last + 1
        return _verdicts(len(ordered), marked, order, "all_links")


def _number(settings: dict[str, Any], key: str, default: float) -> float:
    try:
        return float(settings.get(key, default))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bot_behaviour: {key} must be a number, got {settings.get(key)!r}") from exc


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)


@hookimpl
def register_bot_filters(register: Callable[[Any], None], config: PluginContext) -> None:
    settings = config.plugin_settings("bot_behaviour")
    # On by default: no person opens two links of a text within seconds, and a burst asks for one
    # agent and fresh clicks, which people behind one carrier NAT at a blast's rates do not make
    # (docs/bots.md, "Behaviour and re-scoring", measures both).
    if not _as_bool(settings.get("enabled", True)):
        return
    skip_local = _as_bool(settings.get("skip_local", True))
    recipients = int(_number(settings, "burst_recipients", 5))
    if recipients > 0:
        register(
            BurstFilter(
                recipients,
                _number(settings, "burst_seconds", 1.0),
                skip_local=skip_local,
                same_agent=_as_bool(settings.get("burst_same_agent", True)),
                fresh_seconds=_number(settings, "burst_fresh_seconds", FRESH_SECONDS),
            )
        )
    all_links = _number(settings, "all_links_seconds", 3.0)
    if all_links > 0:
        register(AllLinksFilter(all_links, skip_local=skip_local))
