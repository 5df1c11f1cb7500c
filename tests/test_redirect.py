"""GET/HEAD /r/{code} over a real socket: the redirect, what a click records, and what never
redirects. On SQLite and PostgreSQL (the code cache reads each in its own way)."""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from api.redirect import NOT_FOUND_PAGE, location_header
from core.db import session_scope
from core.models import Click, ShortCode
from core.tracking.clients import client_ip
from tests.live import LiveService, wait_for
from textpulse import PluginContext, hookimpl

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
ANDROID = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/120.0.0.0 Mobile Safari/537.36"
PHONES = [f"+1202555{n:04d}" for n in range(200, 205)]


def _send_campaign(live: LiveService, body: str, phones: list[str] = PHONES, **extra: Any) -> tuple[int, list[dict]]:
    response = live.post("/api/contacts", [{"phone": p, "name": f"P{i}"} for i, p in enumerate(phones)])
    assert response.status_code == 200, response.text
    created = live.post("/api/campaigns", {"name": "Links", "variants": [{"name": "A", "body": body}], **extra})
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
    wait_for(lambda: live.stats(cid)["sent"] == len(phones), what="every message sent")
    return cid, sorted(live.messages(cid), key=lambda m: m["phone"])


def _links(live: LiveService, body: str) -> list[str]:
    return re.findall(re.escape(live.url) + r"/r/[0-9A-Za-z]+", body)


def _clicks(live: LiveService, count: int) -> list[Click]:
    def read() -> list[Click]:
        with session_scope(live.engine) as session:
            return list(session.scalars(select(Click).order_by(Click.id)))

    wait_for(lambda: len(read()) >= count, what=f"{count} click rows")
    return read()


def test_get_redirects_with_no_store_and_records_the_click(live: LiveService) -> None:
    cid, messages = _send_campaign(live, "Sale: https://shop.example/bf?x=1")
    [link] = _links(live, messages[0]["body"])
    response = httpx.get(link, headers={"user-agent": IPHONE, "referer": "https://chat.example/"})
    assert response.status_code == 302
    assert response.headers["location"] == "https://shop.example/bf?x=1"
    assert response.headers["cache-control"] == "no-store"
    assert response.content == b""
    [click] = _clicks(live, 1)
    assert (click.message_id, click.contact_id, click.campaign_id) == (
        messages[0]["id"],
        messages[0]["contact_id"],
        cid,
    )
    assert click.code == link.rsplit("/", 1)[1]
    assert (click.ip, click.user_agent, click.referer) == ("127.0.0.1", IPHONE, "https://chat.example/")
    assert (click.os, click.device, click.is_bot, click.bot_reasons) == ("iOS", "mobile", False, [])
    assert live.stats(cid)["clicks"] == {"total": 1, "unique": 1, "bots_total": 0, "raw_total": 1, "raw_unique": 1}


def test_head_redirects_and_is_kept_as_a_bot_probe(live: LiveService) -> None:
    cid, messages = _send_campaign(live, "Sale: https://shop.example/bf")
    [link] = _links(live, messages[1]["body"])
    response = httpx.head(link, headers={"user-agent": ANDROID})
    assert response.status_code == 302
    assert response.headers["location"] == "https://shop.example/bf"
    assert response.headers["cache-control"] == "no-store"
    [click] = _clicks(live, 1)
    assert click.contact_id == messages[1]["contact_id"]
    assert (click.is_bot, click.bot_score, click.bot_reasons) == (True, 1.0, ["head_request"])
    # Counted among raw and bot clicks only.
    assert live.stats(cid)["clicks"] == {"total": 0, "unique": 0, "bots_total": 1, "raw_total": 1, "raw_unique": 1}


@pytest.mark.parametrize(
    "path",
    [
        "/r/Zz9Zz9Zz",  # well-formed, never issued
        "/r/abc",  # too short to be a code
        "/r/abcdefgh-",  # not base62
        "/r/" + "a" * 33,  # longer than any code
        "/r/abcdefgh/extra",
        "/r//evil.example/x",
        "/r/%2F%2Fevil.example",
        "/r/",
    ],
)
def test_unknown_or_malformed_codes_are_a_small_404_page_never_a_redirect(live: LiveService, path: str) -> None:
    for method in ("GET", "HEAD"):
        response = httpx.request(method, live.url + path)
        assert response.status_code == 404
        assert "location" not in response.headers
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.headers["content-length"] == str(len(NOT_FOUND_PAGE))
        assert response.content == (NOT_FOUND_PAGE if method == "GET" else b"")
    with session_scope(live.engine) as session:
        assert session.scalars(select(Click)).all() == []


def test_other_methods_are_refused(live: LiveService) -> None:
    _, messages = _send_campaign(live, "Sale: https://shop.example/bf", phones=PHONES[:1])
    [link] = _links(live, messages[0]["body"])
    response = httpx.post(link)
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"
    assert "location" not in response.headers


def test_a_code_of_a_cancelled_campaign_still_redirects(
    database_url: str, temporal_address: str, tmp_path: Path
) -> None:
    # Small batches one at a time, so the campaign can be cancelled mid-send.
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path,
        env={"TEXTPULSE_BATCH_SIZE": "2", "TEXTPULSE_MAX_CONCURRENT_BATCHES": "1"},
    )
    live.start()
    try:
        phones = [f"+1202555{n:04d}" for n in range(300, 400)]
        assert live.post("/api/contacts", [{"phone": p} for p in phones]).status_code == 200
        cid = live.post(
            "/api/campaigns", {"name": "Stop", "variants": [{"name": "A", "body": "Go https://shop.example/stop"}]}
        ).json()["id"]
        assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
        wait_for(lambda: live.stats(cid)["sent"] >= 2, what="a first batch sent")
        cancelled = live.post(f"/api/campaigns/{cid}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        wait_for(lambda: live.get(f"/api/campaigns/{cid}").json()["status"] == "cancelled", what="cancelled")
        sent = [m for m in live.messages(cid) if m["sent_at"] is not None]
        assert 2 <= len(sent) < len(phones)
        [link] = _links(live, sent[0]["body"])
        response = httpx.get(link, headers={"user-agent": IPHONE})
        assert response.status_code == 302 and response.headers["location"] == "https://shop.example/stop"
        [click] = _clicks(live, 1)
        assert click.message_id == sent[0]["id"]
    finally:
        live.stop()


@pytest.fixture
def proxied_live(database_url: str, temporal_address: str, tmp_path: Path) -> Iterator[LiveService]:
    """The service behind a proxy on this machine: only 127.0.0.1 may say who the client was."""
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path,
        env={"TEXTPULSE_TRUSTED_PROXIES": "127.0.0.1/32, 10.0.0.0/8"},
    )
    live.start()
    yield live
    live.stop()


def test_forwarded_for_is_believed_from_trusted_proxies_only(proxied_live: LiveService) -> None:
    live = proxied_live
    _, messages = _send_campaign(live, "Sale: https://shop.example/bf", phones=PHONES[:1])
    [link] = _links(live, messages[0]["body"])
    cases = [
        ("198.51.100.7", "198.51.100.7"),
        ("203.0.113.9, 198.51.100.7", "198.51.100.7"),  # the rightmost address not trusted
        ("203.0.113.9, 198.51.100.7, 10.1.2.3", "198.51.100.7"),  # a trusted inner proxy is skipped
        ("198.51.100.7:54321", "198.51.100.7"),
        ("[2001:db8::5]:443", "2001:db8::5"),
        ("not-an-ip, 198.51.100.7", "198.51.100.7"),
        ("198.51.100.7, not-an-ip", "127.0.0.1"),  # a garbled last hop: believe the socket
    ]
    for forwarded, _ in cases:
        assert httpx.get(link, headers={"x-forwarded-for": forwarded}).status_code == 302
    clicks = _clicks(live, len(cases))
    assert [c.ip for c in clicks] == [ip for _, ip in cases]


def test_forwarded_for_from_anyone_else_is_ignored(live: LiveService) -> None:
    _, messages = _send_campaign(live, "Sale: https://shop.example/bf", phones=PHONES[:1])
    [link] = _links(live, messages[0]["body"])
    assert httpx.get(link, headers={"x-forwarded-for": "198.51.100.7"}).status_code == 302
    assert [c.ip for c in _clicks(live, 1)] == ["127.0.0.1"]


def test_a_forwarded_link_is_attributed_to_the_original_recipient(proxied_live: LiveService) -> None:
    live = proxied_live
    cid, messages = _send_campaign(live, "Hi {{ name }}: https://shop.example/bf")
    recipient, other = messages[0], messages[3]
    [link] = _links(live, recipient["body"])
    # The recipient opens it on an iPhone; a friend it was forwarded to, elsewhere, on Android.
    assert httpx.get(link, headers={"user-agent": IPHONE, "x-forwarded-for": "198.51.100.1"}).status_code == 302
    assert httpx.get(link, headers={"user-agent": ANDROID, "x-forwarded-for": "203.0.113.77"}).status_code == 302
    first, second = _clicks(live, 2)
    assert {first.contact_id, second.contact_id} == {recipient["contact_id"]}
    assert {first.message_id, second.message_id} == {recipient["id"]}
    assert (first.ip, first.os) == ("198.51.100.1", "iOS")
    assert (second.ip, second.os, second.device) == ("203.0.113.77", "Android", "mobile")
    assert other["contact_id"] != recipient["contact_id"]
    assert live.stats(cid)["clicks"]["unique"] == 1


def test_the_code_resolves_to_the_destination_stored_at_send_time(live: LiveService) -> None:
    _, messages = _send_campaign(live, "Sale: https://shop.example/bf", phones=PHONES[:1])
    [link] = _links(live, messages[0]["body"])
    code = link.rsplit("/", 1)[1]
    assert httpx.get(link, params={"next": "https://evil.example/"}).headers["location"] == "https://shop.example/bf"
    with session_scope(live.engine) as session:
        assert session.get(ShortCode, code).destination == "https://shop.example/bf"


# -- pure parts ----------------------------------------------------------------------------------

TRUSTED = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("127.0.0.1", None, "127.0.0.1"),
        ("192.0.2.1", "198.51.100.7", "192.0.2.1"),  # an untrusted peer's header is ignored
        ("127.0.0.1", "198.51.100.7", "198.51.100.7"),
        ("::ffff:127.0.0.1", "198.51.100.7", "198.51.100.7"),  # an IPv4 peer on a dual-stack socket
        ("127.0.0.1", "10.0.0.2, 10.0.0.3", "10.0.0.2"),  # every hop trusted: the leftmost
        ("127.0.0.1", "", "127.0.0.1"),
        ("127.0.0.1", " , ", "127.0.0.1"),
    ],
)
def test_client_ip(peer: str, forwarded: str | None, expected: str) -> None:
    assert client_ip(peer, forwarded, TRUSTED) == expected
    assert client_ip(peer, forwarded, ()) == peer


@pytest.mark.parametrize(
    ("destination", "header"),
    [
        ("https://shop.example/bf?x=1#top", b"https://shop.example/bf?x=1#top"),
        ("https://shop.example/caf\u00e9?q=s\u00fc\u00df", b"https://shop.example/caf%C3%A9?q=s%C3%BC%C3%9F"),
        ("https://b\u00fccher.example/a%20b", b"https://xn--bcher-kva.example/a%20b"),
        ("https://shop.example/a\r\nSet-Cookie: x=1", b"https://shop.example/aSet-Cookie:%20x=1"),  # no header split
    ],
)
def test_location_header_is_ascii_and_keeps_escapes(destination: str, header: bytes) -> None:
    assert location_header(destination) == header


def test_the_redirect_mounted_in_litestar_answers_alike(database_url: str, tmp_path: Path) -> None:
    """create_app() on its own (no RedirectFront ahead of it) serves /r through its mount."""
    from litestar.testing import TestClient

    from api.app import create_app
    from core.hooks.registry import load_plugins
    from core.settings import Settings
    from tests.test_click_durability import DESTINATION, seed_codes

    code = seed_codes(database_url)[0]
    settings = Settings.from_env({"TEXTPULSE_DATABASE_URL": database_url, "TEXTPULSE_DATA_DIR": str(tmp_path)})
    registry = load_plugins(settings, config={})
    app = create_app(settings, registry=registry)
    with TestClient(app=app) as client:
        response = client.get(f"/r/{code}", follow_redirects=False, headers={"user-agent": IPHONE})
        assert (response.status_code, response.headers["location"]) == (302, DESTINATION)
        assert response.headers["cache-control"] == "no-store"
        missing = client.get("/r/Zz9Zz9Zz", follow_redirects=False)
        assert (missing.status_code, missing.content) == (404, NOT_FOUND_PAGE)
    registry.close()
    # Leaving the client ran the lifespan shutdown, which wrote the queued click.
    with session_scope(app.state.engine) as session:
        assert [(c.code, c.os) for c in session.scalars(select(Click))] == [(code, "iOS")]


# -- a shortener of another format ---------------------------------------------------------------

TICKET = re.compile(r"tkt-[0-9a-f]{4}-[0-9a-f]{4}")


class TicketShortener:
    """Codes like `tkt-4f2a-91c0`: dashes, so never a well-formed code of the built-in shortener."""

    name = "tickets"

    def new_code(self) -> str:
        return f"tkt-{secrets.token_hex(2)}-{secrets.token_hex(2)}"

    def tracked_url(self, code: str, public_url: str) -> str:
        return f"{public_url}/r/{code}"

    def is_code(self, code: str) -> bool:
        return TICKET.fullmatch(code) is not None


@hookimpl
def make_shortener(config: PluginContext) -> TicketShortener:
    """This module is a plugin too, in the test below: its shortener replaces the built-in one."""
    return TicketShortener()


@pytest.mark.parametrize("enabled", [["tests.test_redirect"], []], ids=["ticket shortener", "built-in shortener"])
def test_the_redirect_asks_the_enabled_shortener_what_a_code_looks_like(
    database_url: str, tmp_path: Path, enabled: list[str]
) -> None:
    from litestar.testing import TestClient

    from api.app import create_app
    from core.db import make_engine
    from core.hooks.registry import load_plugins
    from core.settings import Settings
    from tests.test_code_cache import DESTINATION, metric, seed

    ticket = TicketShortener().new_code()
    [ticket, base62] = seed(database_url, [datetime.now(UTC)] * 2, codes=[ticket, "Ab3dEf7h"])
    # Nothing loaded ahead of the clicks: every code is asked of the shortener, then read.
    env = {"TEXTPULSE_REDIRECT_PRELOAD_HOURS": "0", "TEXTPULSE_REDIRECT_REFRESH_SECONDS": "0"}
    settings = Settings.from_env({"TEXTPULSE_DATABASE_URL": database_url, "TEXTPULSE_DATA_DIR": str(tmp_path), **env})
    registry = load_plugins(settings, config={"plugins": {"enabled": enabled}})
    assert isinstance(registry.shortener, TicketShortener) is bool(enabled)
    with TestClient(app=create_app(settings, registry=registry)) as client:
        answers = {code: client.get(f"/r/{code}", follow_redirects=False) for code in (ticket, base62)}
        # The shortener's own codes redirect; a code of another format is a 404 without a read.
        mine, other = (ticket, base62) if enabled else (base62, ticket)
        assert (answers[mine].status_code, answers[mine].headers["location"]) == (302, DESTINATION)
        assert (answers[other].status_code, answers[other].content) == (404, NOT_FOUND_PAGE)
        assert metric(client, "textpulse_redirect_cache_misses_total") == 1
    registry.close()
    engine = make_engine(database_url)
    with session_scope(engine, read_only=True) as session:
        assert [c.code for c in session.scalars(select(Click))] == [mine]
    engine.dispose()
