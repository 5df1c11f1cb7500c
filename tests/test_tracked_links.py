"""Tracked links through the whole path: API → workflow → rendered, tracked bodies → /r/{code};
per-recipient codes across 10k recipients; preview; test sends; a third-party shortener."""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from core.db import session_scope
from core.models import Click, Contact, Link, Message, ShortCode
from core.tracking.segments import count_segments
from tests.live import LiveService, wait_for

PHONES = [f"+1202555{n:04d}" for n in range(400, 406)]
BASE62 = re.compile(r"^[0-9A-Za-z]{7,}$")


def _contacts(live: LiveService, rows: list[dict[str, Any]]) -> None:
    response = live.post("/api/contacts", rows)
    assert response.status_code == 200, response.text
    assert response.json()["invalid"] == []


def _campaign(live: LiveService, body: str | list[str], **extra: Any) -> int:
    bodies = [body] if isinstance(body, str) else body
    variants = [{"name": chr(ord("A") + i), "body": b} for i, b in enumerate(bodies)]
    created = live.post("/api/campaigns", {"name": "Links", "variants": variants, **extra})
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


def _send(live: LiveService, body: str, count: int = len(PHONES), **extra: Any) -> tuple[int, list[dict[str, Any]]]:
    cid = _campaign(live, body, **extra)
    assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
    wait_for(lambda: live.stats(cid)["sent"] == count, what="every message sent", timeout=180, interval=0.25)
    return cid, sorted(live.messages(cid), key=lambda m: m["phone"])


def _codes(live: LiveService, body: str) -> list[str]:
    return re.findall(re.escape(live.url) + r"/r/([0-9A-Za-z]+)", body)


def _pattern(live: LiveService, template: str) -> re.Pattern[str]:
    """`template` with each `{link}` standing for one tracked URL of this service."""
    parts = [re.escape(part) for part in template.split("{link}")]
    return re.compile("^" + (re.escape(live.url) + r"/r/[0-9A-Za-z]{7,}").join(parts) + "$")


def _short_codes(live: LiveService, message_id: int) -> list[tuple[str, int, str]]:
    with session_scope(live.engine) as session:
        return [
            (code, position, destination)
            for code, position, destination in session.execute(
                select(ShortCode.code, Link.position, ShortCode.destination)
                .join(Link, Link.id == ShortCode.link_id)
                .where(ShortCode.message_id == message_id)
                .order_by(Link.position)
            )
        ]


def _clicks(live: LiveService) -> int:
    with session_scope(live.engine, read_only=True) as session:
        return int(session.scalar(select(func.count()).select_from(Click)) or 0)


def _location(url: str) -> str:
    response = httpx.get(url, headers={"user-agent": "Mozilla/5.0 (iPhone) Mobile/15E148"})
    assert response.status_code == 302, response.text
    return response.headers["location"]


def test_two_links_in_one_body_are_tracked_independently(live: LiveService) -> None:
    _contacts(live, [{"phone": p} for p in PHONES])
    body = "New: https://a.example/new and old (shop.example/old). Bye!"
    cid, messages = _send(live, body)
    seen: set[str] = set()
    for message in messages:
        assert _pattern(live, "New: {link} and old ({link}). Bye!").match(message["body"]), message["body"]
        first, second = _codes(live, message["body"])
        assert _short_codes(live, message["id"]) == [
            (first, 0, "https://a.example/new"),
            (second, 1, "https://shop.example/old"),
        ]
        seen |= {first, second}
    assert len(seen) == 2 * len(PHONES)
    with session_scope(live.engine) as session:
        links = session.execute(
            select(Link.position, Link.destination).where(Link.campaign_id == cid).order_by(Link.position)
        ).all()
    assert [tuple(link) for link in links] == [(0, "https://a.example/new"), (1, "https://shop.example/old")]

    # A click on the second link counts for that link only.
    first, second = _codes(live, messages[0]["body"])
    assert _location(f"{live.url}/r/{second}") == "https://shop.example/old"
    wait_for(
        lambda: live.get(f"/api/campaigns/{cid}/stats/links").json()["links"][1]["clicks"] == 1,
        what="the click on link 2",
    )
    stats = live.get(f"/api/campaigns/{cid}/stats/links").json()["links"]
    assert [(s["position"], s["url"], s["clicks"]) for s in stats] == [
        (0, "https://a.example/new", 0),
        (1, "https://shop.example/old", 1),
    ]


def test_the_same_destination_twice_gets_two_codes(live: LiveService) -> None:
    _contacts(live, [{"phone": p} for p in PHONES[:2]])
    _, messages = _send(live, "Shop https://shop.example/x now, or later: https://shop.example/x", count=2)
    for message in messages:
        rows = _short_codes(live, message["id"])
        assert [(position, destination) for _, position, destination in rows] == [
            (0, "https://shop.example/x"),
            (1, "https://shop.example/x"),
        ]
        assert [code for code, _, _ in rows] == _codes(live, message["body"])
        assert len({code for code, _, _ in rows}) == 2


def test_links_produced_by_the_template_are_tracked_per_recipient(live: LiveService) -> None:
    _contacts(
        live,
        [
            {"phone": p, "name": f"N{i}", "attributes": {"url": f"https://shop.example/u/{i}"}}
            for i, p in enumerate(PHONES)
        ],
    )
    _, messages = _send(live, "Hi {{ name }}, your page: {{ attributes.url }}")
    for i, message in enumerate(messages):
        assert _pattern(live, f"Hi N{i}, your page: {{link}}").match(message["body"]), message["body"]
        [code] = _codes(live, message["body"])
        assert _location(f"{live.url}/r/{code}") == f"https://shop.example/u/{i}"


def test_utm_parameters_are_merged_and_an_existing_key_keeps_its_value(live: LiveService) -> None:
    _contacts(live, [{"phone": p} for p in PHONES[:1]])
    _, [message] = _send(
        live,
        "A https://shop.example/bf?utm_source=push&x=1#top and b shop.example/y",
        count=1,
        tracking={"shorten_links": True, "utm": {"utm_source": "sms", "utm_campaign": "bf"}},
    )
    first, second = _codes(live, message["body"])
    assert _location(f"{live.url}/r/{first}") == "https://shop.example/bf?utm_source=push&x=1&utm_campaign=bf#top"
    assert _location(f"{live.url}/r/{second}") == "https://shop.example/y?utm_source=sms&utm_campaign=bf"


def test_shorten_links_false_leaves_the_body_untouched(live: LiveService) -> None:
    _contacts(live, [{"phone": p, "name": "Ana"} for p in PHONES[:2]])
    body = "Hi {{ name }}: https://shop.example/bf?x=1 and shop.example/y."
    cid, messages = _send(live, body, count=2, tracking={"shorten_links": False, "utm": {"utm_source": "sms"}})
    assert [m["body"] for m in messages] == ["Hi Ana: https://shop.example/bf?x=1 and shop.example/y."] * 2
    assert live.fake.ledger()[0]["body"] == "Hi Ana: https://shop.example/bf?x=1 and shop.example/y."
    with session_scope(live.engine) as session:
        assert session.scalar(select(func.count()).select_from(ShortCode)) == 0
        assert session.scalar(select(func.count()).select_from(Link).where(Link.campaign_id == cid)) == 0


def test_preview_shows_characters_encoding_segments_and_warnings(live: LiveService) -> None:
    _contacts(live, [{"phone": PHONES[0], "name": "Ana"}, {"phone": PHONES[1], "name": "Bo"}])
    text = "Hi {{ name }}, 30% off everything in the shop this weekend only, see"
    cid = _campaign(live, [text + " https://shop.example/bf", "😀 " + text + " https://shop.example/bf"])
    response = live.post(f"/api/campaigns/{cid}/preview", {"limit": 1})
    assert response.status_code == 200, response.text
    [a, b] = response.json()["variants"]
    assert (a["variant"], b["variant"]) == ("A", "B")
    [plain], [emoji] = a["samples"], b["samples"]
    for sample in (plain, emoji):
        assert {"contact_id", "phone", "body", "characters", "encoding", "segments", "warnings"} <= set(sample)
        assert (sample["phone"], len(_codes(live, sample["body"]))) == (PHONES[0], 1)
    assert _pattern(live, "Hi Ana, 30% off everything in the shop this weekend only, see {link}").match(plain["body"])
    gsm_length = len(plain["body"])  # every character is one GSM-7 septet here
    assert 70 < gsm_length <= 160
    assert (plain["characters"], plain["encoding"], plain["segments"], plain["warnings"]) == (
        gsm_length,
        "GSM-7",
        1,
        [],
    )
    # One emoji: UCS-2, the emoji counts 2 UTF-16 units, and the text no longer fits one segment.
    assert (emoji["characters"], emoji["encoding"], emoji["segments"]) == (gsm_length + 3, "UCS-2", 2)
    assert emoji["warnings"] == [
        "'😀' is not in the GSM-7 alphabet: this message is sent as UCS-2 in 2 segments instead of 1 GSM-7 segment",
        "This message is 2 segments; each is billed as a separate SMS",
    ]
    assert count_segments(emoji["body"]).segments == 2
    with session_scope(live.engine) as session:  # nothing stored
        assert session.scalar(select(func.count()).select_from(Message)) == 0
        assert session.scalar(select(func.count()).select_from(ShortCode)) == 0


# -- test sends ----------------------------------------------------------------------------------


def test_test_send_refuses_bad_phones_naming_each(live: LiveService) -> None:
    cid = _campaign(live, "Hi https://shop.example/bf")
    response = live.post(f"/api/campaigns/{cid}/test-send", {"phones": ["+12025550410", "2025550411", "+999"]})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["status_code"] == 422
    assert "phones[1] '2025550411'" in body["detail"] and "phones[2] '+999'" in body["detail"]
    assert [(p["index"], p["phone"]) for p in body["extra"]] == [(1, "2025550411"), (2, "+999")]
    assert "no country code" in body["extra"][0]["error"]
    with session_scope(live.engine) as session:  # nothing stored, nothing sent
        assert session.scalar(select(func.count()).select_from(Contact)) == 0
    assert live.fake.ledger() == []
    assert live.post("/api/campaigns/999999/test-send", {"phones": ["+12025550410"]}).status_code == 404
    assert live.post(f"/api/campaigns/{cid}/test-send", {"phones": []}).status_code == 400


def test_test_send_is_a_real_tracked_send_left_out_of_stats(live: LiveService) -> None:
    _contacts(live, [{"phone": PHONES[0], "name": "Ana"}])
    cid = _campaign(
        live,
        [
            "A {{ name | default('friend') }}: https://shop.example/a",
            "B {{ name | default('friend') }}: https://shop.example/b",
        ],
    )
    response = live.post(f"/api/campaigns/{cid}/test-send", {"phones": [PHONES[0], "+1 (202) 555-0499", PHONES[0]]})
    assert response.status_code == 200, response.text
    messages = response.json()["messages"]
    assert [(m["phone"], m["variant"], m["phase"]) for m in messages] == [
        (PHONES[0], "A", "test_send"),
        ("+12025550499", "A", "test_send"),
        (PHONES[0], "B", "test_send"),
        ("+12025550499", "B", "test_send"),
    ]
    # Accepted by the provider when the answer was made (its delivery callback may be in already).
    assert all(m["sent_at"] and m["provider_message_id"].startswith("fake-") for m in messages)
    assert {m["status"] for m in messages} <= {"sent", "delivered"}
    assert _pattern(live, "A Ana: {link}").match(messages[0]["body"])
    assert _pattern(live, "B Test: {link}").match(messages[3]["body"])  # no contact: the sample name
    ledger = live.fake.ledger()
    assert sorted((e["to"], e["body"]) for e in ledger) == sorted((m["phone"], m["body"]) for m in messages)
    assert [m["contact_id"] is None for m in messages] == [False, True, False, True]
    with session_scope(live.engine) as session:  # the unknown phone is no contact; Ana is unchanged
        contacts = {c.phone: c.name for c in session.scalars(select(Contact))}
    assert contacts == {PHONES[0]: "Ana"}

    # The link works and its click is recorded, but a test send counts nowhere.
    [code] = _codes(live, messages[2]["body"])
    assert _location(f"{live.url}/r/{code}") == "https://shop.example/b"
    wait_for(lambda: _clicks(live) == 1, what="the click row")
    wait_for(lambda: {m["status"] for m in live.messages(cid)} == {"delivered"}, what="the test messages delivered")
    stats = live.stats(cid)
    assert (stats["recipients"], stats["sent"], stats["delivered"], stats["clicks"]["raw_total"]) == (0, 0, 0, 0)
    campaign = live.get(f"/api/campaigns/{cid}").json()
    assert campaign["status"] == "draft" and campaign["progress"]["messages"] == 0


def test_test_send_with_a_body_that_does_not_render_stores_nothing(live: LiveService) -> None:
    _contacts(live, [{"phone": PHONES[0], "name": "Ana"}])  # a contact without a city
    cid = _campaign(live, "Hi {{ attributes.city }}: https://shop.example/bf", audience={"contact_ids": [999_999]})
    response = live.post(f"/api/campaigns/{cid}/test-send", {"phones": [PHONES[1], PHONES[0]]})
    assert response.status_code == 422 and "city" in response.json()["detail"], response.text
    with session_scope(live.engine) as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 0
        assert session.scalar(select(func.count()).select_from(Contact)) == 1
    assert live.fake.ledger() == []


# -- codes ---------------------------------------------------------------------------------------


@pytest.fixture
def quiet_live(database_url: str, temporal_address: str, tmp_path: Path) -> Iterator[LiveService]:
    """Delivery callbacks held back for an hour: a 10k send without 20k webhook calls."""
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path,
        plugin_config={"plugins": {"fake": {"delivery_ratio": 1.0, "seed": 5, "callback_delay_seconds": [3600, 3600]}}},
    )
    live.start()
    yield live
    live.stop()


def _base62(code: str) -> int:
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    value = 0
    for char in code:
        value = value * 62 + alphabet.index(char)
    return value


def test_per_recipient_codes_are_unique_across_10k_recipients(quiet_live: LiveService) -> None:
    live = quiet_live
    count = 10_000
    _contacts(live, [{"phone": f"+1202555{n:04d}"} for n in range(count)])
    cid, _ = _send(live, "Flash sale: https://shop.example/flash", count=count)
    with session_scope(live.engine) as session:
        rows = session.execute(
            select(Message.id, Message.contact_id, Message.body, ShortCode.code, ShortCode.message_id)
            .join(ShortCode, ShortCode.message_id == Message.id, isouter=True)
            .where(Message.campaign_id == cid)
            .order_by(Message.id)
        ).all()
    assert len(rows) == count  # one message per recipient, one code per message
    body_codes = []
    for message_id, _, body, code, code_message in rows:
        [in_body] = _codes(live, body)
        assert in_body == code and code_message == message_id  # the body's link is this message's own
        assert BASE62.match(code), code
        body_codes.append(code)
    assert len(set(body_codes)) == count
    assert len({contact_id for _, contact_id, _, _, _ in rows}) == count
    # Random, not sequential: neighbouring messages' codes are far apart and in no order.
    values = [_base62(code) for code in body_codes]
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    assert min(abs(step) for step in steps) > 1000
    assert 0.4 < sum(step > 0 for step in steps) / len(steps) < 0.6
    # Every 500th link, opened over HTTP, lands and is attributed to its own recipient.
    sample = rows[::500]
    for _, _, _, code, _ in sample:
        assert _location(f"{live.url}/r/{code}") == "https://shop.example/flash"
    wait_for(lambda: _clicks(live) == len(sample), what="a click row per link opened")
    with session_scope(live.engine) as session:
        clicks = {(c.message_id, c.contact_id) for c in session.scalars(select(Click))}
    assert clicks == {(message_id, contact_id) for message_id, contact_id, _, _, _ in sample}


@pytest.fixture
def acme_shortener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A third-party shortener plugin: longer codes of its own, drawn from a seeded generator."""
    (tmp_path / "acme_links.py").write_text(
        textwrap.dedent("""
        import random
        from core.hooks.hookspecs import hookimpl

        ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

        class AcmeShortener:
            def __init__(self):
                self.random = random.Random(42)
            def new_code(self):
                return "Ac" + "".join(self.random.choice(ALPHABET) for _ in range(10))
            def tracked_url(self, code, public_url):
                return f"{public_url}/r/{code}"

        @hookimpl
        def make_shortener(config):
            return AcmeShortener()
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "acme_links"
    sys.modules.pop("acme_links", None)


def test_a_third_party_shortener_is_a_drop_in(
    database_url: str, temporal_address: str, tmp_path: Path, acme_shortener: str
) -> None:
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path / "var",
        plugin_config={
            "plugins": {"enabled": [acme_shortener], "fake": {"delivery_ratio": 1.0, "callback_delay_seconds": 0.05}}
        },
    )
    live.start()
    try:
        _contacts(live, [{"phone": p} for p in PHONES[:3]])
        _, messages = _send(live, "Sale: https://shop.example/acme", count=3)
        for message in messages:
            [code] = _codes(live, message["body"])
            assert code.startswith("Ac") and len(code) == 12
            assert _location(f"{live.url}/r/{code}") == "https://shop.example/acme"
    finally:
        live.stop()


def test_builtin_codes_are_random_base62_of_at_least_7_characters(tmp_path: Path) -> None:
    from core.hooks.registry import load_plugins
    from core.settings import Settings
    from plugins.shortener import BuiltinShortener, is_wellformed_code

    codes = [BuiltinShortener().new_code() for _ in range(2000)]
    assert all(len(code) == 8 and BASE62.match(code) and is_wellformed_code(code) for code in codes)
    assert len(set(codes)) == len(codes)
    with pytest.raises(ValueError, match="at least 7 characters"):
        BuiltinShortener(6)
    settings = Settings.from_env({"TEXTPULSE_DATA_DIR": str(tmp_path)})
    registry = load_plugins(settings, config={"plugins": {"shortener": {"length": 12}}})
    try:
        assert len(registry.shortener.new_code()) == 12
        assert registry.shortener.tracked_url("abcdefgh", "https://t.example") == "https://t.example/r/abcdefgh"
    finally:
        registry.close()
