"""The burst rule at a blast's click rates (docs/bots.md, "Behaviour and re-scoring"): people
behind a few carrier /24s clicking at random must not make bursts, and a scanner working through
the texts within that traffic must. Random traffic, seeded: every click a different person, user
agents as skewed as the real world's (the most common phone agent in PyPI fake-useragent's
real-world data has 41 % of the phones: here a Zipf draw whose top agent has 37 %), and
a person's delay from delivery drawn with a median of 30 s (faster than most measures of SMS
clicks: the harder case for the rule)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from core.tracking.bots import judge_together
from core.tracking.clicks import ClickRecord
from core.tracking.codes import CodeTarget
from plugins.bot_behaviour import BurstFilter

START = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
AGENTS = [f"Mozilla/5.0 (iPhone; CPU iPhone OS 18_{n} like Mac OS X) Mobile/15E148 Safari/604.1" for n in range(40)]
SHARES = [1 / (rank + 1) ** 1.35 for rank in range(len(AGENTS))]  # the top agent: 37 %


def blast(rate: float, networks: int, seconds: float, seed: int) -> list[ClickRecord]:
    """People clicking at `rate` a second over `networks` /24s, each on their own text."""
    rng = random.Random(seed)
    clicks, at, n = [], 0.0, 0
    while at < seconds:
        at += rng.expovariate(rate)
        delay = max(2.0, rng.lognormvariate(math.log(30), 1.2))  # since delivery; under 2 s is too_fast
        when = START + timedelta(seconds=at)
        target = CodeTarget(f"p{n}", "x", n, 1, n, 1, when - timedelta(seconds=delay + 2))
        record = ClickRecord(target, when, f"100.64.{rng.randrange(networks)}.{rng.randrange(1, 255)}",
                             rng.choices(AGENTS, SHARES)[0], None)  # fmt: skip
        record.delivered_at = when - timedelta(seconds=delay)
        clicks.append(record)
        n += 1
    return clicks


def scanner(at: float, network: int, first_recipient: int) -> list[ClickRecord]:
    """A gateway scanner: five recipients' texts fetched within 0.8 s, one agent, as they pass."""
    clicks = []
    for k in range(5):
        when = START + timedelta(seconds=at + 0.2 * k)
        target = CodeTarget(f"s{k}", "x", first_recipient + k, 1, first_recipient + k, 1, when - timedelta(seconds=1.5))
        clicks.append(ClickRecord(target, when, f"100.64.{network}.{200 + k}", AGENTS[3], None))
    return clicks


def judge(rule: BurstFilter, clicks: list[ClickRecord]) -> None:
    """In batches of 200 with the 5 s before each, as the click writer does."""
    clicks.sort(key=lambda c: c.clicked_at)
    for first in range(0, len(clicks), 200):
        cutoff = clicks[first].clicked_at - timedelta(seconds=rule.window)
        recent = [c for c in clicks[max(0, first - 5000) : first] if c.clicked_at >= cutoff]
        judge_together([rule], clicks[first : first + 200], recent)


@pytest.mark.parametrize("rate,networks", [(200, 50), (200, 200), (20, 50)])
def test_people_at_a_blasts_rates_make_no_burst_and_a_scanner_among_them_does(rate: int, networks: int) -> None:
    people = blast(rate, networks, 30.0, seed=rate + networks)
    scanned = scanner(15.0, 7, 10**6)
    clicks = people + scanned
    judge(BurstFilter(), clicks)
    flagged = sum(bool(c.reasons) for c in people)
    assert flagged <= len(people) * 0.001, f"{flagged} of {len(people)} people called a burst"
    assert all(c.reasons == ("burst",) for c in scanned)


def test_the_rule_without_one_agent_and_fresh_clicks_flags_those_people() -> None:
    """What the two conditions buy: the recipients-per-network count alone (as it was) calls most
    of the people of a 200 clicks/s blast over 50 /24s a burst."""
    people = blast(200, 50, 30.0, seed=250)
    judge(BurstFilter(same_agent=False, fresh_seconds=0), people)
    assert sum(bool(c.reasons) for c in people) > len(people) * 0.5


def test_a_burst_long_after_the_texts_went_out_or_with_many_agents_is_people() -> None:
    """Five recipients within a second from one /24 an hour after the send (a re-scan, or people
    reading a forwarded screenshot), or each with another agent: no burst; with
    `burst_fresh_seconds = 0` and `burst_same_agent = false`, both are."""
    late = scanner(0.0, 9, 500)
    for click in late:
        target = click.target
        click.target = target._replace(sent_at=target.sent_at - timedelta(hours=1))
    mixed = scanner(10.0, 11, 600)
    for k, click in enumerate(mixed):
        click.user_agent = AGENTS[k]
    judge(BurstFilter(), late + mixed)
    assert not any(c.reasons for c in late + mixed)
    for click in late + mixed:
        click.reasons = ()
    judge(BurstFilter(same_agent=False, fresh_seconds=0), late + mixed)
    assert all(c.reasons == ("burst",) for c in late + mixed)
