"""Stats breakdowns, clicks, conversions and the CSV export, read back over HTTP."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import httpx

from tests.live import LiveService, wait_for

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
IPAD = "Mozilla/5.0 (iPad; CPU OS 16_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"
PHONES = ["+12025550100", "+12025550101", "+12025550102", "+12025550103"]


def _links_of(body: str) -> list[str]:
    return [word.rstrip(".,") for word in body.split() if "/r/" in word]


def _delivered_campaign(live: LiveService) -> tuple[int, dict[str, list[str]]]:
    live.post("/api/contacts", [{"phone": p, "name": f"N{i}"} for i, p in enumerate(PHONES)])
    cid = live.post(
        "/api/campaigns",
        {
            "name": "Movie night",
            "variants": [
                {"name": "A", "body": "Reviews https://films.example/reviews merch https://films.example/shop"}
            ],
            "conversion": {"event": "purchase", "window_hours": 24},
        },
    ).json()["id"]
    live.post(f"/api/campaigns/{cid}/launch")
    wait_for(lambda: live.stats(cid)["delivered"] == len(PHONES), what="delivered")
    return cid, {m["phone"]: _links_of(m["body"]) for m in live.messages(cid)}


def test_breakdowns_conversions_and_export(live: LiveService) -> None:
    cid, links = _delivered_campaign(live)
    reviews = {phone: urls[0] for phone, urls in links.items()}
    shop = {phone: urls[1] for phone, urls in links.items()}
    httpx.get(reviews[PHONES[0]], headers={"user-agent": IPHONE})
    httpx.get(reviews[PHONES[0]], headers={"user-agent": IPHONE})
    httpx.get(shop[PHONES[0]], headers={"user-agent": IPHONE})
    httpx.get(reviews[PHONES[1]], headers={"user-agent": IPAD})
    httpx.get(shop[PHONES[2]], headers={"user-agent": WINDOWS})
    httpx.head(shop[PHONES[3]])  # a link scanner: a bot click, not a human one
    wait_for(lambda: live.stats(cid)["clicks"]["raw_total"] == 6, what="six clicks stored")

    by_url = {row["url"]: row for row in live.get(f"/api/campaigns/{cid}/stats/links").json()["links"]}
    assert by_url["https://films.example/reviews"] | {"link_id": 0} == {
        "link_id": 0,
        "url": "https://films.example/reviews",
        "position": 0,
        "variant": "A",
        "clicks": 3,
        "unique_clicks": 2,
        "bot_clicks": 0,
    }
    assert (
        by_url["https://films.example/shop"]["clicks"],
        by_url["https://films.example/shop"]["unique_clicks"],
        by_url["https://films.example/shop"]["bot_clicks"],
    ) == (2, 2, 1)

    devices = live.get(f"/api/campaigns/{cid}/stats/devices").json()
    assert {row["name"]: (row["clicks"], row["unique_clicks"]) for row in devices["device"]} == {
        "mobile": (3, 1),
        "tablet": (1, 1),
        "desktop": (1, 1),
    }
    assert {row["name"]: row["clicks"] for row in devices["os"]} == {"iOS": 4, "Windows": 1}

    timing = live.get(f"/api/campaigns/{cid}/stats/click-timing").json()
    assert timing["basis"] == "delivered"
    assert sum(b["contacts"] for b in timing["buckets"]) == 3  # first human click of three contacts
    assert timing["buckets"][0] == {"label": "under 1 min", "upper_seconds": 60, "contacts": 3}

    # Conversions: a buyer who clicked (direct), one who did not (influenced), one out of window.
    now = datetime.now(UTC)
    direct = live.post("/api/events", {"phone": PHONES[0], "name": "purchase", "revenue": 30})
    assert direct.status_code == 201 and direct.json()["attribution"] == "direct"
    assert direct.json()["campaign_id"] == cid
    influenced = live.post(
        "/api/events", {"contact_id": direct.json()["contact_id"] + 3, "name": "purchase", "revenue": 12.5}
    )
    assert influenced.json()["attribution"] == "influenced"
    late = live.post(
        "/api/events", {"phone": PHONES[1], "name": "purchase", "occurred_at": (now + timedelta(hours=30)).isoformat()}
    )
    assert late.json()["attribution"] is None and late.json()["campaign_id"] is None
    other = live.post("/api/events", {"phone": PHONES[2], "name": "signup"})
    assert other.json()["campaign_id"] is None  # the campaign counts purchases only
    unknown = live.post("/api/events", {"phone": "+12025559999", "name": "purchase"})
    assert unknown.status_code == 422 and "+12025559999" in unknown.json()["detail"]

    stats = live.stats(cid)
    # Two converting contacts, two purchase events: the signup and the late purchase count nowhere.
    assert (stats["conversions"], stats["conversion_events"], stats["revenue"]) == (2, 2, 42.5)
    funnel = live.get(f"/api/campaigns/{cid}/stats/funnel").json()
    assert [(s["name"], s["contacts"]) for s in funnel["steps"]] == [
        ("sent", 4),
        ("delivered", 4),
        ("clicked", 3),
        ("converted", 2),
    ]
    assert (funnel["direct"], funnel["influenced"], funnel["conversion_events"], funnel["revenue"]) == (1, 1, 2, 42.5)

    trend = live.get(f"/api/campaigns/{cid}/stats/trend", params={"interval": "day"}).json()
    assert trend["interval"] == "day" and len(trend["buckets"]) == 1
    bucket = trend["buckets"][0]
    assert (bucket["sent"], bucket["delivered"], bucket["clicks"], bucket["unique_clicks"], bucket["conversions"]) == (
        4,
        4,
        5,
        3,
        2,
    )
    assert (bucket["conversion_events"], bucket["revenue"]) == (2, 42.5)
    hourly = live.get(f"/api/campaigns/{cid}/stats/trend", params={"interval": "hour"})
    assert hourly.status_code == 200 and hourly.json()["interval"] == "hour"
    assert sum(b["sent"] for b in hourly.json()["buckets"]) == 4
    assert live.get(f"/api/campaigns/{cid}/stats/trend", params={"interval": "fortnight"}).status_code == 400
    assert live.get(f"/api/campaigns/{cid}/stats/trend", params={"tz": "Nowhere/City"}).status_code == 400

    clicks = live.get(f"/api/campaigns/{cid}/clicks").json()["items"]
    assert len(clicks) == 6
    probe = next(c for c in clicks if c["is_bot"])
    # A HEAD request, and from an HTTP library rather than a browser: two reasons.
    assert probe["bot_reasons"] == ["head_request", "bot_user_agent"] and probe["phone"] == PHONES[3]
    assert probe["url"] == "https://films.example/shop"
    assert len(live.get(f"/api/campaigns/{cid}/clicks", params={"bots": "exclude"}).json()["items"]) == 5

    export = live.get(f"/api/campaigns/{cid}/export.csv")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert len(rows) == 4
    first = next(r for r in rows if r["phone"] == "'" + PHONES[0])  # a leading + is quoted
    assert (first["clicks"], first["bot_clicks"], first["conversions"], first["revenue"]) == ("3", "0", "1", "30.0")
    assert first["conversion_events"] == "1"
    assert first["status"] == "delivered" and first["variant"] == "A"


def test_reports_of_an_unknown_campaign_are_404(live: LiveService) -> None:
    for path in ("links", "devices", "click-timing", "trend", "funnel"):
        assert live.get(f"/api/campaigns/42/stats/{path}").status_code == 404
    assert live.get("/api/campaigns/42/clicks").status_code == 404
    assert live.get("/api/campaigns/42/export.csv").status_code == 404
