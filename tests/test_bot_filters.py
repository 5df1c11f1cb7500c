"""Bot filters: what each built-in filter calls a machine, and that a verdict reaches the click
row and the human counts (on SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select

from api.app import create_app
from core.db import make_engine, session_scope
from core.hooks.registry import load_plugins
from core.models import Click, Message
from core.settings import Settings
from core.stats.summary import summary
from core.tracking.bots import judge_clicks
from core.tracking.clicks import ClickRecord
from core.tracking.codes import CodeTarget, resolve_codes
from plugins.botfilters import (
    NETWORKS_FILE,
    NetworkFilter,
    PrefetchFilter,
    TimingFilter,
    UserAgentFilter,
    read_networks,
)
from tests.test_code_cache import seed, wait_for

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 Version/17.2 Mobile/15E148 "
    "Safari/604.1"
)
INSTAGRAM = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148 Instagram 312.0.0.22.114 (iPhone14,5; iOS 17_2; en_US)"
)
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TARGET = CodeTarget("Abcdefgh", "https://shop.example/", 1, 1, 1, 1)


def click(
    agent: str | None = IPHONE, *, at: datetime = NOW, ip: str | None = "198.51.100.7", **times: Any
) -> ClickRecord:
    return ClickRecord(TARGET, at, ip, agent, None, **times)


@pytest.mark.parametrize(
    "agent,reason",
    [
        (IPHONE, None),
        (INSTAGRAM, None),  # an in-app browser is a person
        ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36", None),
        ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", "bot_user_agent:facebook"),
        ("facebookexternalhit/1.1 Facebot Twitterbot/1.0", "bot_user_agent:imessage"),
        ("WhatsApp/2.23.20.0 A", "bot_user_agent:whatsapp"),  # the preview WhatsApp draws
        ("WhatsApp/2", "bot_user_agent:signal"),  # Signal's previews borrow WhatsApp's name
        (
            "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/138.0.0.0 Mobile "
            "Safari/537.36 GoogleMessages/20.1",
            "bot_user_agent:google_messages",
        ),
        ("Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36", None),
        ("Java-http-client/21.0.2", "bot_user_agent"),  # no browser's: not "Mozilla/..."
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "bot_user_agent"),
        ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "bot_user_agent:slack"),
        ("curl/8.5.0", "bot_user_agent"),
        ("python-httpx/0.28.1", "bot_user_agent"),
        ("", "no_user_agent"),
        (None, "no_user_agent"),
    ],
)
def test_user_agents(agent: str | None, reason: str | None) -> None:
    assert UserAgentFilter().judge(click(agent)) == ((1.0, reason) if reason else (0.0, None))


def test_extra_user_agent_patterns_and_a_bad_one() -> None:
    assert UserAgentFilter(["acme-linkcheck"]).judge(click("Mozilla/5.0 ACME-LinkCheck/2")) == (1.0, "bot_user_agent")
    with pytest.raises(ValueError, match="extra_user_agents"):
        UserAgentFilter(["(unclosed"])


@pytest.mark.parametrize(
    "sent,delivered,reason",
    [
        (-5.0, -0.4, "too_fast"),  # 0.4 s after delivery: a scanner
        (-5.0, -10.0 + 5.0, None),  # delivered 5 s before the click
        (-0.5, None, "too_fast"),  # no receipt yet, 0.5 s after the send
        (-0.5, 3.0, "too_fast"),  # the receipt came after the click: the send counts
        (-3600.0, None, None),
        (None, None, None),  # times unknown: no verdict
    ],
)
def test_timing(sent: float | None, delivered: float | None, reason: str | None) -> None:
    def at(offset: float | None) -> datetime | None:
        return None if offset is None else NOW + timedelta(seconds=offset)

    verdict = TimingFilter(2).judge(click(sent_at=at(sent), delivered_at=at(delivered)))
    assert verdict == ((1.0, reason) if reason else (0.0, None))


def test_networks() -> None:
    networks = NetworkFilter(["203.0.113.0/24", "2001:db8::/32"])
    assert networks.judge(click(ip="203.0.113.99")) == (1.0, "bot_network")
    assert networks.judge(click(ip="2001:db8::1")) == (1.0, "bot_network")
    assert networks.judge(click(ip="198.51.100.7")) == (0.0, None)
    assert networks.judge(click(ip=None)) == (0.0, None)
    with pytest.raises(ValueError, match="networks"):
        NetworkFilter(["10.0.0.0/33"])


def test_the_shipped_networks_file_and_ipv4_mapped_addresses() -> None:
    networks = NetworkFilter(read_networks(NETWORKS_FILE))
    assert networks.judge(click(ip="40.107.235.9")) == (1.0, "bot_network")  # Microsoft EOP (Safe Links)
    assert networks.judge(click(ip="::ffff:66.249.66.1")) == (1.0, "bot_network")  # Googlebot, as IPv6
    assert networks.judge(click(ip="2a01:111:f403:c90a::1")) == (1.0, "bot_network")
    assert networks.judge(click(ip="104.28.52.17")) == (0.0, None)  # iCloud Private Relay: people


def test_networks_file_setting(tmp_path: Path) -> None:
    own = tmp_path / "networks.txt"
    own.write_text("# ours\n192.0.2.0/24  # a scanner\n\n", encoding="utf-8")
    settings = Settings.from_env({"TEXTPULSE_DATA_DIR": str(tmp_path)})
    config = {"plugins": {"botfilters": {"networks_file": str(own), "networks": ["2001:db8::/32"]}}}
    registry = load_plugins(settings, config=config)
    [networks] = [f for f in registry.bot_filters if f.name == "ip_range"]
    registry.close()
    assert networks.judge(click(ip="192.0.2.9")) == (1.0, "bot_network")
    assert networks.judge(click(ip="2001:db8::1")) == (1.0, "bot_network")
    assert networks.judge(click(ip="40.107.235.9")) == (0.0, None)  # the shipped file is replaced
    with pytest.raises(ValueError, match="networks_file"):
        load_plugins(settings, config={"plugins": {"botfilters": {"networks_file": str(tmp_path / "none.txt")}}})


@pytest.mark.parametrize(
    "purpose,reason",
    [("prefetch", "prefetch"), ("prefetch;prerender", "prefetch"), ("preview", "prefetch"), (None, None), ("", None)],
)
def test_prefetch_headers(purpose: str | None, reason: str | None) -> None:
    assert PrefetchFilter().judge(click(purpose=purpose)) == ((1.0, reason) if reason else (0.0, None))


def test_the_redirect_records_the_purpose_header(tmp_path: Path) -> None:
    import asyncio

    from api.redirect import RedirectApp

    class Cache:
        def lookup(self, code: str) -> Any:
            return (b"https://shop.example/", TARGET)

    class Writer:
        records: list[ClickRecord] = []

        def offer(self, record: ClickRecord) -> bool:
            self.records.append(record)
            return True

    async def send(message: Any) -> None:
        return None

    writer = Writer()
    app = RedirectApp(Cache(), writer, (), lambda code: True)  # type: ignore[arg-type]
    for headers in ([(b"sec-purpose", b"prefetch")], [(b"x-moz", b"prefetch")], [(b"accept", b"*/*")]):
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/Abcdefgh",
            "headers": headers,
            "client": ("198.51.100.7", 1),
        }
        asyncio.run(app(scope, None, send))
    assert [r.purpose for r in writer.records] == ["prefetch", "prefetch", None]


def test_a_failing_filter_is_skipped_and_the_others_judge(tmp_path: Path) -> None:
    class Broken:
        name = "broken"

        def judge(self, click: ClickRecord) -> tuple[float, str | None]:
            raise RuntimeError("boom")

    records = [click("curl/8"), click(IPHONE, probe=True), click(IPHONE)]
    judge_clicks(make_engine(f"sqlite:///{tmp_path}/unused.db"), records, [Broken(), UserAgentFilter()])
    assert [(r.reasons, r.bot_score) for r in records] == [
        (("bot_user_agent",), 1.0),
        (("head_request",), 1.0),
        ((), 0.0),
    ]


def test_verdicts_reach_the_click_rows_and_the_human_counts(database_url: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    fresh, old, by_curl, scanned = seed(database_url, [now, now - timedelta(hours=1), now - timedelta(hours=1), now])
    settings = Settings.from_env({"TEXTPULSE_DATABASE_URL": database_url, "TEXTPULSE_DATA_DIR": str(tmp_path)})
    config = {"plugins": {"botfilters": {"min_seconds": 30, "extra_user_agents": ["acme-scan"]}}}
    registry = load_plugins(settings, config=config)
    assert [f.name for f in registry.bot_filters] == ["user_agent", "timing", "ip_range", "cloud_network", "prefetch"]
    with TestClient(app=create_app(settings, registry=registry)) as client:
        for code, agent in ((fresh, IPHONE), (old, IPHONE), (by_curl, "curl/8.5.0"), (scanned, "ACME-Scan/1.0")):
            assert client.get(f"/r/{code}", headers={"user-agent": agent}, follow_redirects=False).status_code == 302
    registry.close()
    engine = make_engine(database_url)

    def rows() -> dict[str, tuple[bool, list[str]]]:
        with session_scope(engine, read_only=True) as session:
            return {c.code: (c.is_bot, c.bot_reasons) for c in session.scalars(select(Click))}

    wait_for(lambda: len(rows()) == 4, what="four click rows")
    assert rows() == {
        fresh: (True, ["too_fast"]),  # clicked within 30 s of its send
        old: (False, []),
        by_curl: (True, ["bot_user_agent"]),
        scanned: (True, ["bot_user_agent", "too_fast"]),
    }
    with session_scope(engine, read_only=True) as session:
        [campaign_id] = set(session.scalars(select(Message.campaign_id)))
        clicks = summary(session, campaign_id)["clicks"]
    assert (clicks["total"], clicks["unique"], clicks["bots_total"], clicks["raw_total"]) == (1, 1, 3, 4)


def test_a_batch_reads_the_delivery_times_of_its_messages(database_url: str) -> None:
    """Clicks soon after their send get their message's delivery time, read for the whole batch
    at once (on SQLite, an IN list padded to a power of two: 5 messages, 8 marks)."""
    now = datetime.now(UTC).replace(microsecond=0)
    codes = seed(database_url, [now - timedelta(seconds=30)] * 5)
    engine = make_engine(database_url)
    delivered = {code: now - timedelta(seconds=20 - n) for n, code in enumerate(codes)}
    with session_scope(engine) as session:
        for code, at in delivered.items():
            message = session.scalars(select(Message).where(Message.body.endswith(code))).one()
            message.delivered_at = at
    targets = resolve_codes(engine, codes)
    records = [ClickRecord(targets[code], now, "198.51.100.7", IPHONE, None) for code in codes * 2]
    records.append(ClickRecord(targets[codes[0]], now - timedelta(seconds=18.5), "198.51.100.7", IPHONE, None))
    judge_clicks(engine, records, [TimingFilter(2)])
    assert [r.delivered_at for r in records] == [delivered[code] for code in codes * 2] + [delivered[codes[0]]]
    assert [r.reasons for r in records] == [()] * 10 + [("too_fast",)]  # 1.5 s after its delivery


@pytest.mark.parametrize(
    "agent",
    [
        "Nokia6300/2.0 (07.21) Profile/MIDP-2.0 Configuration/CLDC-1.1",  # a feature phone's browser
        "SAMSUNG-GT-E1200/1.0 Profile/MIDP-2.0 Configuration/CLDC-1.1 UP.Browser/6.2.3.3.c.1.101 (GUI) MMP/2.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
        "Safari/537.36 Avast/120.0.23744.200",  # Avast Secure Browser: a person's browser
    ],
)
def test_people_on_feature_phones_and_secure_browsers_are_people(agent: str, tmp_path: Path) -> None:
    settings = Settings.from_env({"TEXTPULSE_DATA_DIR": str(tmp_path)})
    registry = load_plugins(settings, config={})
    try:
        agents = next(f for f in registry.bot_filters if f.name == "user_agent")
        assert agents.judge(SimpleNamespace(user_agent=agent)) == (0.0, None)
    finally:
        registry.close()
