"""Behaviour filters (plugins/bot_behaviour.py): bursts and every link of a message, judged by the
click writer over a window of earlier clicks (which it re-judges), a person's click after a
preview kept human, and re-scoring a campaign from the CLI and the API (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col

from core.db import make_engine, session_scope
from core.hooks.contracts import JudgedClick, JudgesTogether
from core.hooks.registry import PluginRegistry, load_plugins
from core.models import Campaign, Click, Contact, Link, Message, ShortCode, Variant
from core.settings import Settings
from core.stats.summary import summary
from core.tracking import together
from core.tracking.bots import judge_together
from core.tracking.click_writer import ClickWriter
from core.tracking.clicks import ClickRecord
from core.tracking.codes import CodeTarget, resolve_codes
from core.tracking.together import ROUND_READS, Judge, Rounds, from_verdict, from_wire, to_wire, verdict_of
from plugins.bot_behaviour import AllLinksFilter, BurstFilter, _in_order, network_of

ROOT = Path(__file__).resolve().parent.parent
SEQUENCES = ROOT / "tests" / "data" / "bots" / "sequences.jsonl"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 Version/17.2 Mobile/15E148 "
    "Safari/604.1"
)
AGENTS = {
    "iphone": IPHONE,
    "android": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36",
    "chrome-desktop": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/121.0 Safari/537.36",
    "whatsapp": "WhatsApp/2.23.20.0 A",
    "preview": "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120 Mobile Safari/537.36 "
    "facebookexternalhit/1.1",
}
_phones = count(7000)


def seed_links(
    database_url: str, recipients: int, links: int = 1, *, sent_ago: timedelta = timedelta(hours=1)
) -> tuple[int, list[list[str]]]:
    """A campaign sent (and delivered) `sent_ago` to `recipients` contacts, `links` tracked links
    per message: its id and the codes, per message."""
    engine = make_engine(database_url)
    sent = datetime.now(UTC) - sent_ago
    codes: list[list[str]] = []
    with session_scope(engine) as session:
        campaign = Campaign(name="behaviour", status="completed", tracking={"shorten_links": True})
        session.add(campaign)
        session.flush()
        variant = Variant(campaign_id=campaign.id or 0, name="A", body="Go")
        session.add(variant)
        session.flush()
        made = []
        for position in range(links):
            link = Link(
                campaign_id=campaign.id or 0,
                variant_id=variant.id or 0,
                position=position,
                destination=f"https://shop.example/{position}",
            )
            session.add(link)
            made.append(link)
        session.flush()
        for _ in range(recipients):
            contact = Contact(phone=f"+1202555{next(_phones):04d}")
            session.add(contact)
            session.flush()
            message = Message(
                campaign_id=campaign.id or 0,
                contact_id=contact.id or 0,
                variant_id=variant.id,
                phone=contact.phone,
                body="Go",
                status="delivered",
                sent_at=sent,
                delivered_at=sent,
                provider="fake",
                idempotency_key=f"behaviour-{contact.id}",
            )
            session.add(message)
            session.flush()
            mine = []
            for link in made:
                code = f"Bh{message.id:06d}{link.position:02d}"
                session.add(ShortCode(code=code, message_id=message.id or 0, link_id=link.id or 0, destination="x"))
                mine.append(code)
            codes.append(mine)
        campaign_id = campaign.id or 0
    engine.dispose()
    return campaign_id, codes


def registry_for(database_url: str, tmp_path: Path, config: dict[str, Any] | None = None) -> PluginRegistry:
    settings = Settings.from_env({"TEXTPULSE_DATABASE_URL": database_url, "TEXTPULSE_DATA_DIR": str(tmp_path)})
    return load_plugins(settings, config=config or {})


def rows(database_url: str, campaign_id: int) -> list[tuple[str, bool, list[str]]]:
    engine = make_engine(database_url)
    with session_scope(engine, read_only=True) as session:
        found = [
            (c.code, c.is_bot, list(c.bot_reasons))
            for c in session.scalars(select(Click).where(col(Click.campaign_id) == campaign_id).order_by(col(Click.id)))
        ]
    engine.dispose()
    return found


def human_clicks(database_url: str, campaign_id: int) -> tuple[int, int, int]:
    """(human clicks, unique human clickers, bot clicks) as the stats count them."""
    engine = make_engine(database_url)
    with session_scope(engine, read_only=True) as session:
        clicks = summary(session, campaign_id)["clicks"]
    engine.dispose()
    return clicks["total"], clicks["unique"], clicks["bots_total"]


def write(database_url: str, registry: PluginRegistry, batches: list[list[ClickRecord]], **options: Any) -> ClickWriter:
    """Each batch through a click writer, one after the other (the writer's own rounds in between)."""
    engine = make_engine(database_url)
    writer = ClickWriter(engine, filters=registry.bot_filters, together=registry.together_filters, **options)

    async def run() -> None:
        writer.start()
        for batch in batches:
            before = writer.written
            for record in batch:
                await writer.put(record)
            while writer.written < before + len(batch):
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # a round for the last batch, when none came after it
        await writer.close()

    asyncio.run(run())
    engine.dispose()
    return writer


def records(
    database_url: str, codes: list[str], ips: list[str], agents: list[str], at: list[datetime]
) -> list[ClickRecord]:
    engine = make_engine(database_url)
    targets = resolve_codes(engine, codes)
    engine.dispose()
    return [
        ClickRecord(targets[code], when, ip, agent, None)
        for code, ip, agent, when in zip(codes, ips, agents, at, strict=True)
    ]


def test_the_behaviour_filters_are_built_in_and_configurable(tmp_path: Path) -> None:
    registry = registry_for(f"sqlite:///{tmp_path}/unused.db", tmp_path)
    assert [f.name for f in registry.together_filters] == ["burst", "all_links"]
    assert "burst" not in [f.name for f in registry.bot_filters]  # they judge together only
    off = registry_for(
        f"sqlite:///{tmp_path}/unused.db",
        tmp_path,
        {"plugins": {"bot_behaviour": {"burst_recipients": 0, "all_links_seconds": 0}}},
    )
    assert off.together_filters == []
    with pytest.raises(ValueError, match="burst_recipients"):
        registry_for(f"sqlite:///{tmp_path}/x.db", tmp_path, {"plugins": {"bot_behaviour": {"burst_recipients": 1}}})


def test_networks() -> None:
    assert network_of("203.0.113.77") == "203.0.113.0/24"
    assert network_of("2001:db8:aa:1::1") == "2001:db8:aa:1::/64"
    assert network_of("::ffff:203.0.113.9") == "203.0.113.0/24"
    assert network_of("127.0.0.1") is None and network_of("10.1.2.3") is None and network_of("fd00::1") is None
    assert network_of("10.1.2.3", False) == "10.1.2.0/24"
    assert network_of("testclient") is None and network_of(None) is None


def test_a_burst_of_phone_browser_clicks_becomes_bots_and_the_earlier_ones_are_re_judged(
    database_url: str, tmp_path: Path
) -> None:
    """Five recipients' links within a second from one /24, with an ordinary iPhone's user agent:
    the first two are stored as people's; when the other three show the burst, all five are bots',
    and the human counts drop back to nothing. The texts went out seconds ago: a scanner in their
    path fetches as they pass."""
    campaign_id, codes = seed_links(database_url, 5, sent_ago=timedelta(seconds=3))
    now = datetime.now(UTC)
    clicks = records(
        database_url,
        [c[0] for c in codes],
        [f"203.0.113.{10 + n}" for n in range(5)],
        [IPHONE] * 5,
        [now + timedelta(seconds=0.2 * n) for n in range(5)],
    )
    registry = registry_for(database_url, tmp_path)
    engine = make_engine(database_url)
    writer = ClickWriter(engine, filters=registry.bot_filters, together=registry.together_filters)
    counted: list[tuple[int, int, int]] = []

    async def run() -> None:
        writer.start()
        for record in clicks[:2]:
            await writer.put(record)
        while writer.written < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.4)  # the first two judged together too: no burst yet
        counted.append(human_clicks(database_url, campaign_id))
        for record in clicks[2:]:
            await writer.put(record)
        while writer.written < 5:
            await asyncio.sleep(0.01)
        deadline = time.monotonic() + 30  # the judge process judges the five together, and says so
        while writer.rejudged < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        counted.append(human_clicks(database_url, campaign_id))
        await writer.close()

    asyncio.run(run())
    engine.dispose()
    assert counted == [(2, 2, 0), (0, 0, 5)]
    assert [(bot, reasons) for _, bot, reasons in rows(database_url, campaign_id)] == [(True, ["burst"])] * 5
    assert writer.rejudged == 5  # every row rewritten: each was stored with the per-click verdict


def test_four_recipients_or_a_local_address_are_no_burst(database_url: str, tmp_path: Path) -> None:
    campaign_id, codes = seed_links(database_url, 9, sent_ago=timedelta(seconds=3))
    now = datetime.now(UTC)
    clicks = records(
        database_url,
        [c[0] for c in codes],
        ["203.0.113.10"] * 4 + ["10.0.0.2"] * 5,  # four people behind one NAT; an untrusted proxy
        [IPHONE] * 9,
        [now + timedelta(seconds=0.1 * n) for n in range(9)],
    )
    write(database_url, registry_for(database_url, tmp_path), [clicks])
    assert [bot for _, bot, _ in rows(database_url, campaign_id)] == [False] * 9


def test_every_link_of_a_message_within_seconds_is_a_scanner(database_url: str, tmp_path: Path) -> None:
    campaign_id, codes = seed_links(database_url, 2, links=3)
    now = datetime.now(UTC)
    scanner = records(database_url, codes[0], ["192.0.2.50"] * 3, [AGENTS["chrome-desktop"]] * 3,
                      [now, now + timedelta(seconds=0.5), now + timedelta(seconds=1)])  # fmt: skip
    person = records(database_url, [codes[1][0], codes[1][2]], ["198.51.100.9"] * 2, [IPHONE] * 2,
                     [now, now + timedelta(seconds=12)])  # fmt: skip
    write(database_url, registry_for(database_url, tmp_path), [scanner[:1] + person[:1], scanner[1:], person[1:]])
    verdicts = {code: (bot, reasons) for code, bot, reasons in rows(database_url, campaign_id)}
    assert [verdicts[code] for code in codes[0]] == [(True, ["all_links"])] * 3
    assert verdicts[codes[1][0]] == verdicts[codes[1][2]] == (False, [])
    assert human_clicks(database_url, campaign_id) == (2, 1, 3)


def test_a_person_clicking_after_a_preview_is_one_human_unique_click(database_url: str, tmp_path: Path) -> None:
    """A chat app previews both links of each text (its user agent flags it), then the people tap
    one each from the same carrier /24, within a second of one another: the previews are bots',
    every person's click is theirs."""
    campaign_id, codes = seed_links(database_url, 5, links=2, sent_ago=timedelta(seconds=3))
    now = datetime.now(UTC)
    previews = records(
        database_url,
        [code for mine in codes for code in mine],
        [f"198.51.100.{80 + n // 2}" for n in range(10)],
        [AGENTS["whatsapp"]] * 10,
        [now + timedelta(seconds=0.05 * n) for n in range(10)],
    )
    people = records(
        database_url,
        [mine[0] for mine in codes],
        [f"198.51.100.{80 + n}" for n in range(5)],
        [IPHONE] * 5,
        [now + timedelta(seconds=3 + 0.2 * n) for n in range(5)],
    )
    write(database_url, registry_for(database_url, tmp_path), [previews, people])
    found = rows(database_url, campaign_id)
    assert all(bot and any(r.startswith("bot_user_agent") for r in reasons) for _, bot, reasons in found[:10])
    assert [(bot, reasons) for _, bot, reasons in found[10:]] == [(False, [])] * 5
    assert human_clicks(database_url, campaign_id) == (5, 5, 10)


def _sequence_clicks(sequence: dict[str, Any], now: datetime) -> list[ClickRecord]:
    clicks = []
    for n, c in enumerate(sequence["clicks"]):
        target = CodeTarget(f"Seq{n:05d}", "https://shop.example/", c["message"], c["link"], c["recipient"], 1, now)
        record = ClickRecord(target, now + timedelta(seconds=c["t"]), c["ip"], AGENTS[c["ua"]], None)
        record.reasons = tuple(c.get("reasons", ()))  # what the per-click filters said
        record.bot_score = 1.0 if record.reasons else 0.0
        clicks.append(record)
    return clicks


SEQUENCE_CASES = [json.loads(line) for line in SEQUENCES.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("sequence", SEQUENCE_CASES, ids=lambda s: s["id"])
@pytest.mark.parametrize("batch", [1, 3, 100], ids=lambda b: f"batches-of-{b}")
def test_the_together_filters_judge_the_labelled_sequences(sequence: dict[str, Any], batch: int) -> None:
    """Each sequence of tests/data/bots/sequences.jsonl (a source note each), fed in batches of
    `batch` clicks with the window of earlier ones, as the click writer does."""
    assert sequence["source"].strip()
    clicks = _sequence_clicks(sequence, datetime(2026, 11, 23, 12, 0, tzinfo=UTC))
    filters: list[JudgesTogether] = [BurstFilter(), AllLinksFilter()]
    for start in range(0, len(clicks), batch):
        judge_together(filters, clicks[start : start + batch], clicks[:start])
    assert [bool(c.reasons) for c in clicks] == [c["bot"] for c in sequence["clicks"]], [c.reasons for c in clicks]


def test_the_behaviour_filters_are_on_by_default(tmp_path: Path) -> None:
    """The defaults (docs/bots.md): `burst` (one agent, fresh clicks) and `all_links` on;
    `enabled = false` turns both off."""
    settings = Settings.from_env({"TEXTPULSE_DATA_DIR": str(tmp_path)})
    registry = load_plugins(settings, config={})
    assert [f.name for f in registry.together_filters] == ["burst", "all_links"]
    burst = registry.together_filters[0]
    assert isinstance(burst, BurstFilter)
    assert (burst.recipients, burst.same_agent, burst.fresh) == (5, True, timedelta(seconds=10))
    registry.close()
    off = load_plugins(settings, config={"plugins": {"bot_behaviour": {"enabled": False}}})
    assert off.together_filters == []
    off.close()


class EveryClickAllLinks(AllLinksFilter):
    """all_links as it was: every click of the window looked at, each round."""

    def judge_together(
        self, clicks: Sequence[JudgedClick], recent: Sequence[JudgedClick]
    ) -> list[tuple[float, str | None]]:
        return self.judge_all(recent, clicks)


class EveryClickBurst(BurstFilter):
    """burst as it was: every click of the window looked at, each round."""

    def judge_together(
        self, clicks: Sequence[JudgedClick], recent: Sequence[JudgedClick]
    ) -> list[tuple[float, str | None]]:
        return self.judge_all(recent, clicks)


@pytest.mark.parametrize(
    "fast,full",
    [(AllLinksFilter(), EveryClickAllLinks()), (BurstFilter(3), EveryClickBurst(3))],
    ids=["all_links", "burst"],
)
@pytest.mark.parametrize("seed", range(5))
def test_a_round_judges_only_what_its_batch_can_change_and_misses_nothing(
    seed: int, fast: JudgesTogether, full: JudgesTogether
) -> None:
    """A round passes over the window's clicks that its batch cannot change (other messages for
    all_links, other networks and agents for burst), so it costs the batch, not the window: on
    random traffic (two links a message, shared networks, a few agents) fed in batches, every
    click ends with the verdict of judging every click of the window each round. (Without
    previews: with one, judging every click loses a person's exemption once the preview leaves
    the window, which passing over spares.)"""
    rng = random.Random(seed)
    start = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    agents = [AGENTS["iphone"], AGENTS["android"], AGENTS["chrome-desktop"]]
    made = []
    for n in range(400):
        message = rng.randrange(60)
        agent = rng.choice(agents)
        ip = f"198.51.{rng.randrange(3)}.{rng.randrange(4)}"
        made.append((message, rng.randrange(2), start + timedelta(seconds=n * 0.05), ip, agent))

    def run(rule: JudgesTogether) -> list[tuple[str, ...]]:
        clicks = [
            ClickRecord(CodeTarget(f"c{m}", "x", m, link, m, 1, at - timedelta(seconds=3)), at, ip, agent, None)
            for m, link, at, ip, agent in made
        ]
        for first in range(0, len(clicks), 25):
            judge_together([rule], clicks[first : first + 25], clicks[:first])
        return [click.reasons for click in clicks]

    judged = run(fast)
    assert judged == run(full)
    assert any(fast.name in reasons for reasons in judged)  # the traffic has some to find


def test_under_a_heavy_load_a_round_waits_until_it_judges_a_share_of_the_window() -> None:
    """A round reads the whole window: with 400 clicks judged in it, 50 new ones wait (50 x
    ROUND_READS < 400) until no click came for `together_every` or a window's span passed; 100 do
    not wait."""
    clock = [1000.0]
    rounds = Rounds([BurstFilter()], together_every=0.25, clock=lambda: clock[0])
    now = datetime.now(UTC)

    def made(first: int, count: int) -> list[ClickRecord]:
        return [
            ClickRecord(CodeTarget(f"c{n}", "x", n, 1, n, 1, now), now, f"198.51.100.{n % 200}", IPHONE, None)
            for n in range(first, first + count)
        ]

    rounds.add(made(0, 400))
    assert rounds.due_at() == 0.0  # the first round: at once
    rounds.run()
    assert rounds.due_at() is None  # nothing waits
    clock[0] += 1
    rounds.add(made(400, 50))
    assert ROUND_READS * 50 < 400 <= ROUND_READS * 100
    assert rounds.due_at() == clock[0] + 0.25  # a quiet moment, unless more come
    clock[0] += 0.1
    rounds.add(made(450, 10))
    assert rounds.due_at() == clock[0] + 0.25
    rounds.add(made(460, 40))  # 100 wait now: a round pays
    assert rounds.due_at() is not None and rounds.due_at() <= clock[0]
    rounds.run()
    for step in range(60):  # a steady stream of small batches: a round once a window's span passed
        clock[0] += 0.1
        rounds.add(made(500 + step, 1))
        if rounds.due_at() is not None and rounds.due_at() <= clock[0]:
            break
    assert 4.9 <= step * 0.1 <= 5.1


def test_a_burst_after_a_busy_window_is_judged_when_the_load_eases(database_url: str, tmp_path: Path) -> None:
    """300 people's clicks, then a burst of five in a batch too small for a round to pay at once:
    the burst is still found, by the round that runs when no batch follows."""
    campaign_id, codes = seed_links(database_url, 305, sent_ago=timedelta(seconds=3))
    now = datetime.now(UTC)
    people = records(
        database_url,
        [c[0] for c in codes[:300]],
        [f"198.{18 + n // 250}.{n % 250}.7" for n in range(300)],  # a network each
        [AGENTS["android"]] * 300,
        [now + timedelta(milliseconds=n) for n in range(300)],
    )
    burst = records(
        database_url,
        [c[0] for c in codes[300:]],
        [f"203.0.113.{10 + n}" for n in range(5)],
        [IPHONE] * 5,
        [now + timedelta(seconds=0.4, milliseconds=100 * n) for n in range(5)],
    )
    writer = write(database_url, registry_for(database_url, tmp_path), [people, burst], together_every=0.0)
    verdicts = rows(database_url, campaign_id)
    assert [reasons for _, _, reasons in verdicts[300:]] == [["burst"]] * 5
    assert not any(bot for _, bot, _ in verdicts[:300])
    assert writer.written == 305


def test_the_clicks_come_in_time_order_sorted_or_not() -> None:
    """`_in_order` gives every click oldest first whether the window and the batch came in time
    order already (the usual case: no sort) or not, and each click's place maps back to its input."""
    now = datetime.now(UTC)
    made = [
        ClickRecord(
            CodeTarget(f"c{n}", "x", n, 1, n, 1, now), now + timedelta(milliseconds=n), "198.51.100.1", IPHONE, None
        )
        for n in range(20_000)
    ]
    ordered, order = _in_order(made[15_000:], made[:15_000])
    assert ordered == made and order == list(range(20_000))
    shuffled = made[:]
    random.Random(5).shuffle(shuffled)
    ordered, order = _in_order(shuffled[9_000:], shuffled[:9_000])
    assert ordered == made
    assert [shuffled[place] for place in order] == made


def _burst_clicks(first: int, ip_prefix: str = "203.0.113") -> list[ClickRecord]:
    """Five recipients' links within a second from one /24 with one agent, seconds after the send."""
    now = datetime.now(UTC)
    return [
        ClickRecord(
            CodeTarget(f"j{first + n}", "x", first + n, 1, first + n, 1, now - timedelta(seconds=2)),
            now + timedelta(milliseconds=100 * n),
            f"{ip_prefix}.{10 + n}",
            IPHONE,
            None,
        )
        for n in range(5)
    ]


def test_a_click_crosses_to_the_judge_and_back_whole() -> None:
    click = _burst_clicks(1)[0]
    click.reasons, click.bot_score, click.purpose = ("known_bot",), 0.7, "prefetch"
    click.sent_at = click.delivered_at = click.clicked_at - timedelta(seconds=1)
    back = from_wire(to_wire(click))
    assert back == ClickRecord(click.target._replace(destination=""), *dataclasses.astuple(click)[1:])
    verdict = from_verdict(verdict_of(click))
    assert (verdict.target.code, verdict.target.message_id, verdict.target.campaign_id, verdict.clicked_at) == (
        click.target.code,
        click.target.message_id,
        click.target.campaign_id,
        click.clicked_at,
    )
    assert (verdict.reasons, verdict.bot_score) == (("known_bot",), 0.7)


def test_the_judge_process_finds_a_burst_is_replaced_when_it_dies_and_judges_what_waits_on_close() -> None:
    found: list[ClickRecord] = []

    def keep(verdicts: list[tuple[Any, ...]]) -> None:
        found.extend(from_verdict(v) for v in verdicts)

    judge = Judge([BurstFilter()], keep, together_every=0.05)
    judge.start()
    try:

        def until(count: int) -> None:
            deadline = time.monotonic() + 30
            while len(found) < count and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(found) == count

        judge.send(_burst_clicks(1))
        until(5)
        assert {c.target.code for c in found} == {f"j{n}" for n in range(1, 6)}
        assert all(c.reasons == ("burst",) for c in found)
        judge._process.kill()  # a judge killed (OOM, say): the next batch starts another
        judge._process.join(10)
        judge.send(_burst_clicks(100, "198.51.100"))
        assert judge.restarts == 1
        until(10)
    finally:
        judge.close()
    # What waits when the writer closes is judged before the judge stops.
    found.clear()
    judge = Judge([BurstFilter()], keep, together_every=60)
    judge.start()
    judge.send(_burst_clicks(200)[:1])
    time.sleep(0.5)  # the first round (at once) judged the one click
    judge.send(_burst_clicks(200)[1:])  # the next round is a minute away
    judge.close()
    assert len(found) == 5


def test_the_judges_reader_goes_on_after_a_listener_fails_and_a_failing_round_is_not_run_again_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A listener that raises loses that message's verdicts (logged), not the later ones; a round
    that raises still counts as run (no round over the same clicks in a tight loop)."""
    found: list[tuple[Any, ...]] = []
    failures = [1]

    def keep(verdicts: list[tuple[Any, ...]]) -> None:
        if failures:
            failures.pop()
            raise RuntimeError("a listener's bug")
        found.extend(verdicts)

    judge = Judge([BurstFilter()], keep, together_every=0.05)
    judge.start()
    try:
        judge.send(_burst_clicks(300))
        time.sleep(1.0)  # the first burst's verdicts went to the failing listener
        judge.send(_burst_clicks(400, "198.51.100"))
        deadline = time.monotonic() + 30
        while len(found) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert {v[0] for v in found} == {f"j{n}" for n in range(400, 405)}
        assert judge.restarts == 0
    finally:
        judge.close()

    def broken(*args: Any) -> list[ClickRecord]:
        raise RuntimeError("a round's bug")

    rounds = Rounds([BurstFilter()], clock=lambda: 0.0)
    rounds.add(_burst_clicks(500))
    monkeypatch.setattr(together, "judge_together", broken)
    with pytest.raises(RuntimeError):
        rounds.run()
    assert rounds.unjudged == 0 and rounds.due_at() is None
