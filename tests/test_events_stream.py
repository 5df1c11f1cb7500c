"""GET /api/campaigns/{id}/events over a real socket: the summary at once, again on each change,
keep-alive comments in between, and nothing left running once the client goes away."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api import stats_events
from tests.live import LiveService, wait_for

PHONES = ["+12025550140", "+12025550141"]
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"


def sse_blocks(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The stream cut into blocks: `event`, `data` (JSON-decoded) and `comments` of each."""
    block: dict[str, Any] = {"event": None, "data": None, "comments": []}
    for line in response.iter_lines():
        if line == "":
            if block["event"] or block["data"] is not None or block["comments"]:
                yield block
            block = {"event": None, "data": None, "comments": []}
        elif line.startswith(":"):
            block["comments"].append(line[1:].strip())
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                block["event"] = value
            elif field == "data":
                block["data"] = json.loads(value)


def _numbers(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k != "updated_at"}


def _completed_campaign(live: LiveService) -> tuple[int, list[dict[str, Any]]]:
    live.post("/api/contacts", [{"phone": p, "name": f"S{i}"} for i, p in enumerate(PHONES)])
    cid = live.post(
        "/api/campaigns",
        {"name": "Stream", "variants": [{"name": "A", "body": "Doors open at 8: https://venue.example/tickets"}]},
    ).json()["id"]
    assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
    wait_for(lambda: live.stats(cid)["delivered"] == len(PHONES), what="every message delivered")
    wait_for(lambda: live.get(f"/api/campaigns/{cid}").json()["status"] == "completed", what="campaign completed")
    return cid, live.messages(cid)


def _open_streams(live: LiveService) -> int:
    line = next(ln for ln in live.get("/metrics").text.splitlines() if ln.startswith("textpulse_event_streams "))
    return int(line.split()[1])


def test_stats_event_comes_at_once_and_again_when_a_click_changes_the_numbers(live: LiveService) -> None:
    cid, messages = _completed_campaign(live)
    link = next(word for word in messages[0]["body"].split() if "/r/" in word)

    with (
        httpx.Client(base_url=live.url, timeout=10) as client,
        client.stream("GET", f"/api/campaigns/{cid}/events") as response,
    ):
        started = time.monotonic()
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        blocks = sse_blocks(response)
        first = next(blocks)
        assert time.monotonic() - started < stats_events.POLL_SECONDS  # before the first poll
        assert first["event"] == "stats"
        assert _numbers(first["data"]) == _numbers(live.stats(cid))
        assert (first["data"]["status"], first["data"]["delivered"], first["data"]["clicks"]["total"]) == (
            "completed",
            2,
            0,
        )
        assert _open_streams(live) == 1

        clicked = httpx.get(link, headers={"user-agent": IPHONE}, follow_redirects=False)
        assert clicked.status_code == 302
        second = next(b for b in blocks if b["event"] == "stats")
        assert second["data"]["clicks"] == {"total": 1, "unique": 1, "bots_total": 0, "raw_total": 1, "raw_unique": 1}
        assert second["data"]["ctr"] == 0.5
        assert _numbers(second["data"]) == _numbers(live.stats(cid))

    wait_for(lambda: _open_streams(live) == 0, timeout=10, what="the stream to end after the client left")


def test_a_quiet_stream_sends_keep_alive_comments(live: LiveService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats_events, "KEEPALIVE_SECONDS", 0.5)
    cid, _ = _completed_campaign(live)
    with (
        httpx.Client(base_url=live.url, timeout=10) as client,
        client.stream("GET", f"/api/campaigns/{cid}/events") as response,
    ):
        blocks = sse_blocks(response)
        assert next(blocks)["event"] == "stats"
        for _ in range(2):  # nothing changes: only comments, no repeated stats event
            assert next(blocks) == {"event": None, "data": None, "comments": ["keep-alive"]}


def test_events_of_an_unknown_campaign_are_a_404_before_any_stream(live: LiveService) -> None:
    response = live.get("/api/campaigns/4242/events")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["detail"] == "campaign 4242 does not exist"
