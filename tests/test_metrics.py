"""GET /metrics: Prometheus text format with the service's counts, open like /health."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.live import LiveService, wait_for

PHONES = ["+12025550150", "+12025550151", "+12025550152"]
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
SAMPLE = re.compile(r'^([a-z_]+)(?:\{([a-z_]+="[^"\\\n]*"(?:,[a-z_]+="[^"\\\n]*")*)\})? (-?[0-9.e+]+)$')


def parse_exposition(text: str) -> dict[str, float]:
    """`name{labels}` → value; every sample must follow the HELP and TYPE lines of its family."""
    assert text.endswith("\n")
    samples: dict[str, float] = {}
    helped: set[str] = set()
    typed: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("gauge", "counter") and name in helped
            typed[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match, f"not a Prometheus sample line: {line!r}"
            name, labels, value = match.groups()
            assert name in typed, f"{name} has no TYPE line before it"
            assert typed[name] != "counter" or name.endswith("_total")
            key = f"{name}{{{labels}}}" if labels else name
            assert key not in samples, f"{key} twice"
            samples[key] = float(value)
    return samples


def test_metrics_count_campaigns_messages_and_clicks(live: LiveService) -> None:
    empty = live.get("/metrics")
    assert empty.status_code == 200
    assert empty.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    before = parse_exposition(empty.text)
    assert before["textpulse_up"] == 1 and before["textpulse_database_up"] == 1
    assert before['textpulse_campaigns{status="draft"}'] == 0
    assert before['textpulse_clicks_total{bot="false"}'] == 0

    live.post("/api/contacts", [{"phone": p} for p in PHONES])
    cid = live.post(
        "/api/campaigns",
        {"name": "Metrics", "variants": [{"name": "A", "body": "New menu: https://diner.example/menu"}]},
    ).json()["id"]
    live.post("/api/campaigns", {"name": "Still a draft", "variants": [{"name": "A", "body": "Later"}]})
    assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
    wait_for(lambda: live.stats(cid)["delivered"] == len(PHONES), what="every message delivered")
    wait_for(lambda: live.get(f"/api/campaigns/{cid}").json()["status"] == "completed", what="campaign completed")
    links = [next(w for w in m["body"].split() if "/r/" in w) for m in live.messages(cid)]
    assert httpx.get(links[0], headers={"user-agent": IPHONE}, follow_redirects=False).status_code == 302
    assert httpx.get(links[1], headers={"user-agent": IPHONE}, follow_redirects=False).status_code == 302
    assert httpx.head(links[2], follow_redirects=False).status_code == 302  # a link scanner: a bot
    wait_for(lambda: live.stats(cid)["clicks"]["raw_total"] == 3, what="three clicks stored")
    live.post("/webhooks/fake/inbound", {"from": PHONES[0], "to": "+15550000000", "body": "See you there"})
    live.post("/webhooks/fake/inbound", {"from": PHONES[1], "to": "+15550000000", "body": "STOP"})
    live.post("/api/events", {"phone": PHONES[0], "name": "purchase", "revenue": 19.5})

    metrics = parse_exposition(live.get("/metrics").text)
    assert {k: v for k, v in metrics.items() if k.startswith("textpulse_campaigns")} == {
        'textpulse_campaigns{status="draft"}': 1,
        'textpulse_campaigns{status="scheduled"}': 0,
        'textpulse_campaigns{status="running"}': 0,
        'textpulse_campaigns{status="paused"}': 0,
        'textpulse_campaigns{status="waiting"}': 0,
        'textpulse_campaigns{status="held"}': 0,
        'textpulse_campaigns{status="completed"}': 1,
        'textpulse_campaigns{status="cancelled"}': 0,
        'textpulse_campaigns{status="failed"}': 0,
    }
    assert {k: v for k, v in metrics.items() if k.startswith("textpulse_messages")} == {
        'textpulse_messages{status="queued"}': 0,
        'textpulse_messages{status="sending"}': 0,
        'textpulse_messages{status="sent"}': 0,
        'textpulse_messages{status="delivered"}': 3,
        'textpulse_messages{status="undelivered"}': 0,
        'textpulse_messages{status="failed"}': 0,
        'textpulse_messages{status="cancelled"}': 0,
    }
    assert metrics['textpulse_clicks_total{bot="false"}'] == 2
    assert metrics['textpulse_clicks_total{bot="true"}'] == 1
    assert metrics['textpulse_replies_total{keyword="false"}'] == 1
    assert metrics['textpulse_replies_total{keyword="true"}'] == 1
    assert metrics["textpulse_conversions_total"] == 1
    assert metrics["textpulse_conversion_revenue_total"] == 19.5
    assert metrics["textpulse_click_queue_depth"] == 0
    assert metrics["textpulse_event_streams"] == 0
    assert metrics["textpulse_up"] == 1 and metrics["textpulse_database_up"] == 1


def test_metrics_need_no_api_key(database_url: str, temporal_address: str, tmp_path: Path) -> None:
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path,
        env={"TEXTPULSE_API_KEY": "s3cret"},
        run_worker=False,
    )
    live.start()
    try:
        response = live.get("/metrics")
        assert response.status_code == 200
        assert parse_exposition(response.text)["textpulse_up"] == 1
        assert live.get("/api/contacts").status_code == 401  # while /api still asks for it
    finally:
        live.stop()
