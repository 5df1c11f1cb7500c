"""The redirect's code cache and click writer: codes of messages just sent are in memory before
their first click, older ones are read at the click, the cache is bounded, and click rows are
stored as the ORM would store them. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select
from sqlalchemy.dialects import sqlite

from api.app import create_app
from core.db import make_engine, session_scope
from core.hooks.registry import load_plugins
from core.models import Campaign, Click, Contact, Link, Message, ShortCode, Variant
from core.settings import Settings
from core.tracking.click_store import _click_insert, store_clicks
from core.tracking.click_writer import ClickWriter
from core.tracking.clicks import ClickRecord
from core.tracking.codes import resolve_codes
from core.tracking.sqlite import sqlite_timestamp
from plugins.shortener import BuiltinShortener
from tests.live import wait_for

DESTINATION = "https://shop.example/cache"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
_phones = itertools.count(1000)


def seed(database_url: str, sent_at: list[datetime | None], codes: list[str] | None = None) -> list[str]:
    """One message per entry of `sent_at` (None: not sent yet), one tracked code each (`codes`,
    or the built-in shortener's)."""
    engine = make_engine(database_url)
    shortener = BuiltinShortener()
    codes = codes or [shortener.new_code() for _ in sent_at]
    with session_scope(engine) as session:
        campaign = Campaign(name="cache", status="sending", tracking={"shorten_links": True})
        session.add(campaign)
        session.flush()
        variant = Variant(campaign_id=campaign.id, name="A", body=f"Go {DESTINATION}")
        session.add(variant)
        session.flush()
        link = Link(campaign_id=campaign.id or 0, variant_id=variant.id or 0, position=0, destination=DESTINATION)
        session.add(link)
        for code, when in zip(codes, sent_at, strict=True):
            contact = Contact(phone=f"+1202555{next(_phones):04d}")
            session.add(contact)
            session.flush()
            message = Message(
                campaign_id=campaign.id or 0,
                contact_id=contact.id or 0,
                variant_id=variant.id,
                phone=contact.phone,
                body=f"Go http://127.0.0.1/r/{code}",
                status="queued" if when is None else "sent",
                sent_at=when,
                provider="fake",
                idempotency_key=f"cache-{contact.id}",
            )
            session.add(message)
            session.flush()
            session.add(ShortCode(code=code, message_id=message.id or 0, link_id=link.id or 0, destination=DESTINATION))
    engine.dispose()
    return codes


@contextmanager
def serving(database_url: str, tmp_path: Path, **env: str) -> Iterator[TestClient[Any]]:
    settings = Settings.from_env({"TEXTPULSE_DATABASE_URL": database_url, "TEXTPULSE_DATA_DIR": str(tmp_path), **env})
    registry = load_plugins(settings, config={})
    with TestClient(app=create_app(settings, registry=registry)) as client:
        yield client
    registry.close()


def metric(client: TestClient[Any], name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", client.get("/metrics").text, re.M)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def test_codes_sent_recently_are_in_memory_before_their_first_click(database_url: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    recent = seed(database_url, [now - timedelta(minutes=5), now - timedelta(hours=47)])
    old, unsent = seed(database_url, [now - timedelta(hours=49), None])
    with serving(database_url, tmp_path, TEXTPULSE_REDIRECT_REFRESH_SECONDS="0") as client:
        wait_for(lambda: metric(client, "textpulse_redirect_preload_done") == 1, what="the preload")
        assert metric(client, "textpulse_redirect_codes_preloaded_total") == 2
        assert metric(client, "textpulse_redirect_cache_codes") == 2
        for code in recent:
            assert client.get(f"/r/{code}", follow_redirects=False).status_code == 302
        assert metric(client, "textpulse_redirect_cache_misses_total") == 0
        # Sent before the preload window (or not sent at all): read at the click, still a redirect.
        for code in (old, unsent):
            response = client.get(f"/r/{code}", follow_redirects=False)
            assert (response.status_code, response.headers["location"]) == (302, DESTINATION)
        assert metric(client, "textpulse_redirect_cache_misses_total") == 2
        assert metric(client, "textpulse_redirect_cache_codes") == 4
    with session_scope(make_engine(database_url), read_only=True) as session:
        assert sorted(session.scalars(select(Click.code))) == sorted([*recent, old, unsent])


def test_codes_sent_after_the_start_are_fetched_before_their_click(database_url: str, tmp_path: Path) -> None:
    with serving(database_url, tmp_path, TEXTPULSE_REDIRECT_REFRESH_SECONDS="0.2") as client:
        wait_for(lambda: metric(client, "textpulse_redirect_preload_done") == 1, what="the preload")
        assert metric(client, "textpulse_redirect_cache_codes") == 0
        codes = seed(database_url, [datetime.now(UTC)] * 3)
        wait_for(lambda: metric(client, "textpulse_redirect_cache_codes") == 3, what="the new codes fetched")
        for code in codes:
            assert client.get(f"/r/{code}", follow_redirects=False).status_code == 302
        assert metric(client, "textpulse_redirect_cache_misses_total") == 0
        # Fetched again in the overlap of the next looks, but counted and kept once.
        time.sleep(0.5)
        assert metric(client, "textpulse_redirect_codes_preloaded_total") == 3


def test_the_cache_is_bounded_and_keeps_the_newest(database_url: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    codes = seed(database_url, [now - timedelta(minutes=m) for m in (50, 40, 30, 20, 10)])
    env = {"TEXTPULSE_REDIRECT_CACHE_SIZE": "3", "TEXTPULSE_REDIRECT_REFRESH_SECONDS": "0"}
    with serving(database_url, tmp_path, **env) as client:
        wait_for(lambda: metric(client, "textpulse_redirect_preload_done") == 1, what="the preload")
        assert metric(client, "textpulse_redirect_cache_codes") == 3
        for code in codes[2:]:  # the three sent last
            assert client.get(f"/r/{code}", follow_redirects=False).status_code == 302
        assert metric(client, "textpulse_redirect_cache_misses_total") == 0
        assert client.get(f"/r/{codes[0]}", follow_redirects=False).status_code == 302  # read, then kept
        assert metric(client, "textpulse_redirect_cache_misses_total") == 1
        assert metric(client, "textpulse_redirect_cache_codes") == 3


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 23, 16, 5, 7, 123456, tzinfo=UTC),
        datetime(2026, 11, 23, 16, 5, 7, tzinfo=UTC),  # no microseconds: still written out
        datetime(2026, 11, 23, 18, 5, 7, 5, tzinfo=UTC).astimezone(),  # another offset: stored in UTC
    ],
)
def test_the_fast_sqlite_timestamp_is_what_sqlalchemy_stores(moment: datetime) -> None:
    dialect = sqlite.dialect()
    process = Click.__table__.columns["clicked_at"].type.dialect_impl(dialect).bind_processor(dialect)
    assert sqlite_timestamp(moment) == process(moment)
    assert _click_insert(dialect).clicked_at is sqlite_timestamp


def test_stored_clicks_read_back_as_written(database_url: str) -> None:
    [code] = seed(database_url, [datetime.now(UTC)])
    engine = make_engine(database_url)
    target = resolve_codes(engine, [code])[code]
    at = datetime(2026, 11, 23, 9, 30, 0, 250, tzinfo=UTC)
    records = [
        ClickRecord(target, at, "203.0.113.9", IPHONE, "https://chat.example/"),
        ClickRecord(target, at + timedelta(seconds=1), None, None, None, probe=True),
        ClickRecord(target, at + timedelta(seconds=2), "::1", "curl/8", None, reasons=("known_bot",)),
    ]
    assert store_clicks(engine, records) == 3
    with session_scope(engine, read_only=True) as session:
        rows = [
            (c.code, c.message_id, c.contact_id, c.campaign_id, c.clicked_at, c.ip, c.referer, c.os, c.device)
            + (c.is_bot, c.bot_score, c.bot_reasons)
            for c in session.scalars(select(Click).order_by(Click.id))
        ]
    ids = (code, target.message_id, target.contact_id, target.campaign_id)
    assert rows == [
        (*ids, at, "203.0.113.9", "https://chat.example/", "iOS", "mobile", False, 0.0, []),
        (*ids, at + timedelta(seconds=1), None, None, None, "other", True, 1.0, ["head_request"]),
        (*ids, at + timedelta(seconds=2), "::1", None, None, "other", True, 1.0, ["known_bot"]),
    ]


def test_a_full_click_queue_holds_redirects_back_and_loses_nothing(database_url: str) -> None:
    [code] = seed(database_url, [datetime.now(UTC)])
    engine = make_engine(database_url)
    target = resolve_codes(engine, [code])[code]
    depths: list[int] = []

    async def run() -> int:
        writer = ClickWriter(engine, interval=0.001, batch=4, capacity=10)
        writer.start()

        async def click(n: int) -> None:
            await writer.put(ClickRecord(target, datetime.now(UTC), f"10.0.0.{n % 250}", IPHONE, None))
            depths.append(writer.depth)

        await asyncio.gather(*(click(n) for n in range(200)))
        await writer.close()
        return writer.written

    assert asyncio.run(run()) == 200
    assert max(depths) <= 10
    with session_scope(engine, read_only=True) as session:
        assert len(session.scalars(select(Click.id)).all()) == 200


def test_the_sqlite_click_writer_keeps_its_connection_out_of_the_pool(database_url: str) -> None:
    """The writer's own SQLite connection skips foreign key checks (core/tracking/click_writer.py says why);
    no connection the pool hands out may come without them."""
    if not database_url.startswith("sqlite"):
        assert not ClickWriter(make_engine(database_url)).inline  # PostgreSQL: pooled connections
        return
    codes = seed(database_url, [datetime.now(UTC), datetime.now(UTC)])
    engine = make_engine(database_url)
    targets = resolve_codes(engine, codes)

    async def run() -> tuple[int, Any]:
        writer = ClickWriter(engine, interval=0.001)
        writer.start()
        for n, code in enumerate(codes * 3):
            await writer.put(ClickRecord(targets[code], datetime.now(UTC), f"10.0.0.{n}", IPHONE, None))
        deadline = time.monotonic() + 10
        while writer.written < 6 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        [[checks]] = writer._connection.dbapi_connection.execute("PRAGMA foreign_keys").fetchall()
        kept = writer._connection
        await writer.close()
        assert writer._connection is None and kept.dbapi_connection is None  # closed, not pooled
        return checks, kept

    checks, _ = asyncio.run(run())
    assert checks == 0
    pooled = [engine.raw_connection() for _ in range(5)]
    assert [c.dbapi_connection.execute("PRAGMA foreign_keys").fetchall() for c in pooled] == [[(1,)]] * 5
    for connection in pooled:
        connection.close()
    with session_scope(engine, read_only=True) as session:
        assert sorted(session.scalars(select(Click.code))) == sorted(codes * 3)
