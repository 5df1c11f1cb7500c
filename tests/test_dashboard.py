"""The dashboard in a real browser (Debian's chromium, driven by Playwright): the campaign page's
numbers, their live update over SSE without a reload, the campaign list, a contact, 404 pages,
and an API key guarding it all whenever /api needs one (TEXTPULSE_API_KEY or a stored key)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from core import api_keys
from tests.live import LiveService, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONES = ["+12025550160", "+12025550161", "+12025550162", "+12025550163", "+12025550164", "+12025550165"]
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
LIVE_TIMEOUT_MS = 10_000


def count(n: int) -> str:
    return f"{n:,}"


def pct(x: float) -> str:
    return f"{x * 100:.1f}%"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def half_delivered(database_url: str, temporal_address: str, tmp_path: Path) -> Iterator[LiveService]:
    """The service with a provider that fails about half the messages (so errors show)."""
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path / "var",
        plugin_config={"plugins": {"fake": {"delivery_ratio": 0.5, "seed": 3, "callback_delay_seconds": [0.01, 0.05]}}},
    )
    live.start()
    yield live
    live.stop()


def _finished_campaign(live: LiveService, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """Six contacts, an A/B campaign with a tracked link, launched and settled."""
    contacts = [{"phone": p, "name": f"Guest {i}"} for i, p in enumerate(PHONES)]
    contacts[0]["name"] = "<b>Eve</b>"  # markup in data must show as text
    assert live.post("/api/contacts", contacts, headers=headers).status_code == 200
    cid = live.post(
        "/api/campaigns",
        {
            "name": "Spring <sale>",
            "variants": [
                {"name": "A", "body": "Hi {{ name }}, spring menu: https://bistro.example/spring", "weight": 50},
                {"name": "B", "body": "New spring dishes https://bistro.example/spring", "weight": 50},
            ],
            "conversion": {"event": "purchase", "window_hours": 24},
        },
        headers=headers,
    ).json()["id"]
    assert live.post(f"/api/campaigns/{cid}/launch", headers=headers).status_code == 202

    def settled() -> dict[str, Any]:
        s = live.get(f"/api/campaigns/{cid}/stats", headers=headers).json()
        done = s["delivered"] + s["failed"] + s["undelivered"] == len(PHONES) and s["status"] == "completed"
        return dict(s) if done else {}

    return cid, wait_for(settled, what="a final status for every message and the campaign completed")


def _link(message: dict[str, Any]) -> str:
    return next(word for word in message["body"].split() if "/r/" in word)


def test_campaign_page_shows_the_numbers_and_updates_them_live(
    half_delivered: LiveService, browser: Browser, tmp_path: Path
) -> None:
    live = half_delivered
    cid, stats = _finished_campaign(live)
    assert 0 < stats["delivered"] < len(PHONES) and stats["failed"] + stats["undelivered"] > 0
    messages = live.messages(cid)
    variants = live.get(f"/api/campaigns/{cid}/stats/variants").json()
    errors_route = live.get(f"/api/campaigns/{cid}/stats/errors")

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    console_errors: list[str] = []
    page.on("pageerror", lambda exc: console_errors.append(str(exc)))
    try:
        response = page.goto(f"{live.url}/campaigns/{cid}")
        assert response is not None and response.status == 200
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT_MS)
        assert page.locator("h1").inner_text().startswith("Spring <sale>")
        assert page.locator('[data-stat="status"]').inner_text() == "completed"

        def card(stat: str) -> str:
            return page.locator(f'#summary [data-stat="{stat}"]').inner_text()

        assert card("sent") == count(stats["sent"]) == "6"
        assert card("recipients") == "6"
        assert card("delivered") == count(stats["delivered"])
        assert card("undelivered") == count(stats["undelivered"])
        assert card("delivery_rate") == pct(stats["delivery_rate"])
        assert card("failed") == count(stats["failed"])
        assert (card("clicks.total"), card("clicks.unique"), card("clicks.raw_total"), card("clicks.bots_total")) == (
            "0",
            "0",
            "0",
            "0",
        )
        assert (card("ctr"), card("ctr_basis")) == ("0.0%", "delivered")
        assert (card("replies"), card("reply_rate"), card("opt_outs")) == ("0", "0.0%", "0")
        assert (card("conversions"), card("revenue")) == ("0", "0.00")

        # Variants side by side, each with the API's chance to win.
        for row in variants["variants"]:
            cells = page.locator(f'#variants tr[data-variant="{row["variant"]}"] td')
            assert cells.nth(1).inner_text() == count(row["recipients"])
            assert cells.nth(3).inner_text() == count(row["delivered"])
            assert cells.nth(8).inner_text().strip() == pct(row["chance_to_win"])
        assert sum(r["recipients"] for r in variants["variants"]) == 6

        # The message log: every message with its status, failures with their error code.
        log_rows = page.locator("#messages tbody tr")
        assert log_rows.count() == len(messages) == 6
        failed = next(m for m in messages if m["status"] in ("failed", "undelivered"))
        row = page.locator(f'#messages tr[data-message-id="{failed["id"]}"]')
        assert failed["status"] in row.inner_text() and failed["error_code"] in row.inner_text()
        link_row = page.locator("#links tbody tr")
        assert link_row.count() == 2  # one link in each variant
        # Errors by code: shown exactly when the API has the route.
        if errors_route.status_code == 404:
            expect(page.locator("#errors")).to_be_hidden()
        else:
            expect(page.locator("#errors")).to_be_visible()
            shown = [row.split("\t") for row in page.locator("#errors tbody tr").all_inner_texts()]
            assert [(cells[0], cells[2]) for cells in shown] == [
                (e["code"], count(e["count"])) for e in errors_route.json()["errors"]
            ]
            assert sum(e["count"] for e in errors_route.json()["errors"]) == stats["failed"] + stats["undelivered"]

        # A click, a reply and a purchase: the cards follow without a reload.
        page.evaluate("window.notReloaded = true")
        delivered = next(m for m in messages if m["status"] == "delivered")
        assert httpx.get(_link(delivered), headers={"user-agent": IPHONE}, follow_redirects=False).status_code == 302
        expect(page.locator('#summary [data-stat="clicks.total"]')).to_have_text("1", timeout=LIVE_TIMEOUT_MS)
        assert (card("clicks.unique"), card("clicks.raw_total"), card("clicks.bots_total")) == ("1", "1", "0")
        assert card("ctr") == pct(1 / stats["delivered"])
        purchase = {"phone": delivered["phone"], "name": "purchase", "revenue": 25}
        assert live.post("/api/events", purchase).status_code == 201
        assert (
            live.post(
                "/webhooks/fake/inbound", {"from": delivered["phone"], "to": "+15550000000", "body": "Table for two?"}
            ).status_code
            == 200
        )
        expect(page.locator('#summary [data-stat="revenue"]')).to_have_text("25.00", timeout=LIVE_TIMEOUT_MS)
        expect(page.locator('#summary [data-stat="replies"]')).to_have_text("1", timeout=LIVE_TIMEOUT_MS)
        assert card("conversions") == "1" and card("reply_rate") == pct(1 / stats["delivered"])
        assert page.evaluate("window.notReloaded") is True
        assert console_errors == []
        page.screenshot(path=str(tmp_path / "campaign.png"), full_page=True)

        # The list: this campaign with its numbers (CTR now counts the click).
        page.goto(f"{live.url}/")
        listed = page.locator(f'#campaigns tr[data-campaign-id="{cid}"]')
        assert listed.locator("td").nth(1).inner_text() == "completed"
        assert listed.locator('[data-col="sent"]').inner_text() == "6"
        assert listed.locator('[data-col="delivered"]').inner_text() == count(stats["delivered"])
        assert listed.locator('[data-col="ctr"]').inner_text() == pct(live.stats(cid)["ctr"])
        page.screenshot(path=str(tmp_path / "campaigns.png"), full_page=True)
        listed.get_by_role("link", name="Spring <sale>").click()
        expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT_MS)

        # The clicker's page: its message, click, reply and conversion.
        page.locator(f'#messages tr[data-message-id="{delivered["id"]}"] a').click()
        expect(page.locator("#contact-phone")).to_have_text(delivered["phone"])
        assert page.locator("#messages tbody tr").count() == 1
        assert "delivered" in page.locator("#messages tbody tr").inner_text()
        click_row = page.locator("#clicks tbody tr")
        assert click_row.count() == 1 and "https://bistro.example/spring" in click_row.inner_text()
        assert "human" in click_row.inner_text() and "iOS" in click_row.inner_text()
        assert "Table for two?" in page.locator("#replies tbody").inner_text()
        conversion = page.locator("#conversions tbody tr").inner_text()
        assert "purchase" in conversion and "25.00" in conversion and "direct" in conversion
        page.screenshot(path=str(tmp_path / "contact.png"), full_page=True)

        eve_id = live.get("/api/contacts", params={"phone": PHONES[0]}).json()["items"][0]["id"]
        eve = page.goto(f"{live.url}/contacts/{eve_id}")
        assert eve is not None and eve.status == 200
        assert page.locator("h1").inner_text().startswith("<b>Eve</b>")  # shown as text, not markup
        assert page.locator("h1 b").count() == 0

        for path, what in (
            (f"/campaigns/{cid + 1000}", f"campaign {cid + 1000}"),
            ("/contacts/999999", "contact 999999"),
        ):
            missing = page.goto(f"{live.url}{path}")
            assert missing is not None and missing.status == 404
            assert page.locator("h1").inner_text() == "Not found"
            assert f"{what} does not exist" in page.locator("main").inner_text()
    finally:
        context.close()


def _sign_in_by_form(page: Page, url: str, secret: str) -> None:
    """The key page at `url`, a wrong key refused, then `secret` through the form back to `url`."""
    asked = page.goto(url)
    assert asked is not None and asked.status == 401
    page.fill("#key", "wrong")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_have_text("That key is not the right one.")
    page.fill("#key", secret)
    page.click("button[type=submit]")
    expect(page).to_have_url(url)


def _holds_no_secret(page: Page, secret: str) -> None:
    assert page.locator('meta[name="textpulse-api-key"]').count() == 0 and secret not in page.content()
    assert page.evaluate("document.cookie") == ""  # HttpOnly: the page's scripts cannot read the session


def test_dashboard_is_behind_the_api_key_when_one_is_set(
    database_url: str, temporal_address: str, tmp_path: Path, browser: Browser
) -> None:
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path / "var",
        env={"TEXTPULSE_API_KEY": "s3cret"},
    )
    live.start()
    context = browser.new_context()
    try:
        auth = {"authorization": "Bearer s3cret"}
        cid, stats = _finished_campaign(live, headers=auth)
        assert stats["delivered"] == 6
        page: Page = context.new_page()

        _sign_in_by_form(page, f"{live.url}/campaigns/{cid}", "s3cret")
        expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT_MS)
        _holds_no_secret(page, "s3cret")
        cookie = next(c for c in context.cookies() if c["name"] == "textpulse_dashboard")
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax" and cookie["secure"] is False
        assert cookie["value"].startswith("env.") and "s3cret" not in cookie["value"]

        # The script reads the key-guarded event stream with the cookie: a click shows up live.
        message = live.get(f"/api/campaigns/{cid}/messages", headers=auth).json()["items"][0]
        assert httpx.get(_link(message), headers={"user-agent": IPHONE}, follow_redirects=False).status_code == 302
        expect(page.locator('#summary [data-stat="clicks.total"]')).to_have_text("1", timeout=LIVE_TIMEOUT_MS)
        export = page.request.get(f"{live.url}/campaigns/{cid}/export.csv")
        assert export.status == 200 and len(export.text().strip().splitlines()) == 7
        assert page.request.get(f"{live.url}/api/campaigns/{cid}/stats").status == 200
        assert page.request.post(f"{live.url}/api/campaigns/{cid}/cancel").status == 401  # reads only

        # A link with ?key= signs a fresh browser in and drops the key from the address.
        fresh = browser.new_context()
        try:
            other = fresh.new_page()
            other.goto(f"{live.url}/?key=s3cret")
            expect(other).to_have_url(f"{live.url}/")
            expect(other.locator(f'#campaigns tr[data-campaign-id="{cid}"]')).to_be_visible()
        finally:
            fresh.close()

        assert live.get("/").status_code == 401
        assert live.get("/", headers=auth).status_code == 200
        assert live.get(f"/campaigns/{cid}/export.csv").status_code == 401
        assert live.get(f"/api/campaigns/{cid}/events").status_code == 401
        assert live.get("/static/dashboard.js").status_code == 200
        redirected = live.post("/login", data={"key": "s3cret", "next": "//evil.example/"})
        assert redirected.status_code == 303 and redirected.headers["location"] == "/"
    finally:
        context.close()
        live.stop()


def test_a_stored_key_signs_the_dashboard_in_until_it_is_revoked(
    database_url: str, temporal_address: str, tmp_path: Path, browser: Browser
) -> None:
    """No TEXTPULSE_API_KEY, only stored keys: the dashboard is closed like /api, a named key
    signs in, the live cards follow over the cookie, and revoking the key ends the session within
    the refresh (0.2 s here)."""
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path / "var",
        env={"TEXTPULSE_API_KEY_REFRESH_SECONDS": "0.2"},
    )
    live.start()
    context = browser.new_context()
    try:
        api_keys.create(live.engine, "ops")  # stays live: with no key left, everything would open
        secret = api_keys.create(live.engine, "marketing")
        auth = {"authorization": f"Bearer {secret}"}
        wait_for(lambda: live.get("/").status_code == 401, timeout=5, what="the stored keys read")
        cid, stats = _finished_campaign(live, headers=auth)
        assert stats["delivered"] == 6
        page = context.new_page()

        _sign_in_by_form(page, f"{live.url}/campaigns/{cid}", secret)
        expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT_MS)
        assert page.locator('#summary [data-stat="delivered"]').inner_text() == "6"
        _holds_no_secret(page, secret)
        cookie = next(c for c in context.cookies() if c["name"] == "textpulse_dashboard")
        assert cookie["value"].startswith("marketing.") and cookie["httpOnly"] is True

        message = live.get(f"/api/campaigns/{cid}/messages", headers=auth).json()["items"][0]
        assert httpx.get(_link(message), headers={"user-agent": IPHONE}, follow_redirects=False).status_code == 302
        expect(page.locator('#summary [data-stat="clicks.total"]')).to_have_text("1", timeout=LIVE_TIMEOUT_MS)
        export = page.request.get(f"{live.url}/campaigns/{cid}/export.csv")
        assert export.status == 200 and len(export.text().strip().splitlines()) == 7
        assert page.request.get(f"{live.url}/api/campaigns/{cid}/stats").status == 200
        assert page.request.post(f"{live.url}/api/contacts", data=[{"phone": PHONES[0]}]).status == 401
        assert live.get(f"/campaigns/{cid}").status_code == 401  # without the cookie

        api_keys.revoke(live.engine, "marketing")
        revoked_at = time.monotonic()
        wait_for(
            lambda: page.request.get(f"{live.url}/api/campaigns/{cid}/stats").status == 401,
            timeout=5,
            interval=0.05,
            what="the revoked key's session refused",
        )
        assert time.monotonic() - revoked_at < 2
        again = page.reload()
        assert again is not None and again.status == 401 and page.locator("#key").is_visible()
    finally:
        context.close()
        live.stop()


def test_campaign_page_shows_messages_awaiting_a_report_and_a_held_campaigns_pick_a_winner_hint(
    database_url: str, temporal_address: str, tmp_path: Path, browser: Browser
) -> None:
    from sqlalchemy import update

    from core.db import session_scope
    from core.models import Campaign

    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path / "var",
        plugin_config={"plugins": {"fake": {"delivery_ratio": 1.0, "callback_delay_seconds": [0.01, 0.02]}}},
    )
    live.start()
    live.fake.dispatcher.close()  # the delivery reports are lost: every message stays `sent`
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        assert live.post("/api/contacts", [{"phone": p} for p in PHONES]).status_code == 200
        cid = live.post(
            "/api/campaigns",
            {
                "name": "Held <test>",
                "variants": [
                    {"name": "A", "body": "Hello", "weight": 50},
                    {"name": "B <b>", "body": "Hi", "weight": 50},
                ],
            },
        ).json()["id"]
        assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
        wait_for(
            lambda: (s := live.stats(cid))["sent"] == len(PHONES) and s["status"] == "completed",
            what="every message sent",
        )
        assert live.get(f"/api/campaigns/{cid}").json()["progress"]["awaiting_report"] == len(PHONES)

        page = context.new_page()
        page.goto(f"{live.url}/campaigns/{cid}")
        awaiting = page.locator("#awaiting-report")
        expect(awaiting).to_be_visible()
        assert awaiting.locator('[data-col="awaiting"]').inner_text() == str(len(PHONES))
        assert "messages await a delivery report" in awaiting.inner_text()
        assert "looked up at fake" in awaiting.inner_text()  # the fake can be asked (fetch_status)
        assert page.locator("#held").count() == 0

        # Held: an A/B test ended without a decisive variant under `fallback: hold`.
        with session_scope(live.engine) as session:
            session.execute(update(Campaign).where(Campaign.id == cid).values(status="held"))
        page.goto(f"{live.url}/campaigns/{cid}")
        assert page.locator('[data-stat="status"]').inner_text() == "held"
        held = page.locator("#held")
        expect(held).to_be_visible()
        assert "Pick a winner" in held.locator("h2").inner_text()
        for name in ("A", "B <b>"):
            line = held.locator(f'li[data-variant="{name}"] code').inner_text()
            assert line == (
                f"curl -X POST {live.url}/api/campaigns/{cid}/winner -H 'Content-Type: application/json' "
                f'-d \'{{"variant": "{name}"}}\''
            )
        assert held.locator("b").count() == 0  # a variant's name shows as text
        page.screenshot(path=str(tmp_path / "held.png"), full_page=True)
    finally:
        context.close()
        live.stop()


def _points(x: float) -> str:
    shown = f"{abs(x) * 100:.1f}"
    return ("−" if x < 0 and shown != "0.0" else "+") + shown


def _uplift_words(uplift: dict[str, Any] | None) -> str:
    """The dashboard's uplift, e.g. "+2.1 pts (−0.4 to +4.6), 91 % chance better"."""
    if not uplift or uplift["absolute"] is None:
        return "—"
    text = f"{_points(uplift['absolute'])} pts"
    if uplift["interval"] and None not in uplift["interval"]:
        text += f" ({_points(uplift['interval'][0])} to {_points(uplift['interval'][1])})"
    if uplift["chance_better"] is not None:
        text += f", {uplift['chance_better'] * 100:.0f} % chance better"
    return text


def test_campaign_page_shows_the_control_row_each_uplift_and_why_the_test_decided(
    database_url: str, temporal_address: str, tmp_path: Path, browser: Browser
) -> None:
    """An A/B campaign with a control group, through the real workflow: the test cannot decide (the
    sample is out of reach), the fallback sends every variant; purchases of a held-out contact and of
    a variant's contact. The variants table shows the API's control row and uplifts, and the
    decision in plain words with its reason."""
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path / "var",
        plugin_config={"plugins": {"fake": {"delivery_ratio": 1.0, "callback_delay_seconds": [0.01, 0.02]}}},
    )
    live.start()
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        phones = [f"+1202555{8100 + i:04d}" for i in range(10)]
        assert live.post("/api/contacts", [{"phone": p} for p in phones]).status_code == 200
        cid = live.post(
            "/api/campaigns",
            {
                "name": "Uplift",
                "control_percent": 20,
                "ab_test": {"test_percent": 50, "wait_seconds": 1, "min_sample": 1000, "fallback": "send_all_variants"},
                "variants": [
                    {"name": "A", "body": "A https://shop.example/a", "weight": 50},
                    {"name": "B", "body": "B https://shop.example/b", "weight": 50},
                ],
                "conversion": {"event": "purchase", "window_hours": 24},
            },
        ).json()["id"]
        assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
        wait_for(
            lambda: (s := live.stats(cid))["delivered"] == 8 and s["status"] == "completed",
            timeout=60,
            what="the campaign completed, 8 delivered",
        )
        held = live.messages(cid, phase="control")
        assert len(held) == 2
        buyer = next(m for m in live.messages(cid) if m["variant"] == "A" and m["status"] == "delivered")
        for phone in (held[0]["phone"], buyer["phone"]):
            assert live.post("/api/events", {"phone": phone, "name": "purchase", "revenue": 10}).status_code == 201
        body = live.get(f"/api/campaigns/{cid}/stats/variants").json()
        rows = {row["variant"]: row for row in body["variants"]}
        control = next(row for row in body["variants"] if row["is_control"])
        assert (control["recipients"], control["conversions"]) == (2, 1)  # the held-out purchase is the control's
        assert body["winner"]["method"] == "fallback" and body["winner"]["variant"] is None

        page = context.new_page()
        page.goto(f"{live.url}/campaigns/{cid}")
        table = page.locator("#variants")
        shown = table.locator(f'tr[data-variant="{control["variant"]}"]')
        assert "control" in shown.locator("td").first.inner_text()
        assert shown.locator('[data-col="recipients"]').inner_text() == "2"
        assert shown.locator('[data-col="held-out"]').inner_text() == "held out: nothing sent"
        assert shown.locator('[data-col="conversion_rate"]').inner_text() == pct(control["conversion_rate"]) == "50.0%"
        assert shown.locator('[data-col="chance"]').inner_text().strip() == "—"
        for name in ("A", "B"):
            row = table.locator(f'tr[data-variant="{name}"]')
            assert row.locator('[data-col="recipients"]').inner_text() == count(rows[name]["recipients"])
            assert row.locator('[data-col="conversion_rate"]').inner_text() == pct(rows[name]["conversion_rate"])
            assert row.locator('[data-col="uplift"]').inner_text().strip() == _uplift_words(rows[name]["uplift"])
        assert rows["A"]["uplift"]["absolute"] is not None
        assert " pts" in table.locator('tr[data-variant="A"] [data-col="uplift"]').inner_text()
        decision = page.locator("#decision")
        assert decision.get_attribute("data-method") == "fallback"
        assert "No clear winner" in decision.inner_text() and "every variant by weight" in decision.inner_text()
        assert decision.locator('[data-col="reason"]').inner_text() == f"Why: {body['winner']['reason'].rstrip('.')}."
        table.screenshot(path=str(tmp_path / "uplift.png"))
    finally:
        context.close()
        live.stop()


def test_bot_verdicts_show_their_reasons_in_words(live: LiveService, browser: Browser) -> None:
    """The campaign page lists the latest bot clicks with why, in words (the code as the title);
    the contact page says why for each of its bot clicks."""
    cid, _ = _finished_campaign(live)
    message = next(m for m in live.messages(cid) if m["status"] == "delivered")
    link = _link(message)
    with httpx.Client(follow_redirects=False) as client:
        assert client.get(link, headers={"user-agent": "curl/8.5.0"}).status_code == 302
        assert client.head(link, headers={"user-agent": IPHONE}).status_code == 302
    wait_for(lambda: live.stats(cid)["clicks"]["bots_total"] == 2, what="two bot clicks stored")
    listed = live.get(f"/api/campaigns/{cid}/clicks", params={"bots": "only"}).json()["items"]
    reasons = sorted(r for c in listed for r in c["bot_reasons"])
    assert "head_request" in reasons and any(r.startswith("bot_user_agent") for r in reasons)
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{live.url}/campaigns/{cid}")
        rows = page.locator("#bot-clicks tbody tr")
        assert rows.count() == 2
        words = page.locator("#bot-clicks").inner_text()
        assert "HEAD request (a link checker's probe)" in words
        assert page.locator('#bot-clicks [data-reason="head_request"]').get_attribute("title") == "head_request"
        assert "curl/8.5.0" in words
        page.goto(f"{live.url}/contacts/{message['contact_id']}")
        verdicts = page.locator('#clicks [data-col="verdict"]').all_inner_texts()
        assert len(verdicts) == 2 and all(v.startswith("bot") for v in verdicts)
        assert any("HEAD request" in v for v in verdicts)
    finally:
        context.close()
