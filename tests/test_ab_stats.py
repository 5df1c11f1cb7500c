"""A/B statistics: posteriors by Monte Carlo, and /stats/variants over HTTP."""

from __future__ import annotations

import httpx

from core.stats.ab import Arm, compare, pick_winner
from tests.live import LiveService, wait_for

PHONE_BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"


def test_a_clearly_better_variant_wins() -> None:
    a, b = compare([Arm("A", 30, 1000), Arm("B", 60, 1000)])
    assert b.chance_to_win > 0.99 and a.chance_to_win < 0.01
    assert abs(a.chance_to_win + b.chance_to_win - 1) < 1e-3  # each is rounded to 4 places
    assert b.expected_loss < a.expected_loss
    assert a.interval[0] < 0.03 < a.interval[1] and b.interval[0] < 0.06 < b.interval[1]
    assert pick_winner([a, b]) == b


def test_equal_variants_split_the_chance_and_nobody_wins() -> None:
    a, b = compare([Arm("A", 50, 1000), Arm("B", 50, 1000)])
    assert 0.45 < a.chance_to_win < 0.55 and 0.45 < b.chance_to_win < 0.55
    assert pick_winner([a, b]) is None


def test_the_answer_is_the_same_on_every_read() -> None:
    arms = [Arm("A", 5, 40), Arm("B", 9, 41), Arm("C", 7, 39)]
    assert compare(arms, seed=3) == compare(arms, seed=3)


def test_revenue_scales_the_rate_by_value() -> None:
    cheap, dear = compare([Arm("A", 100, 1000, value=10.0), Arm("B", 100, 1000, value=50.0)])
    assert dear.chance_to_win > 0.99 and dear.mean == 5 * cheap.mean


def test_variant_stats_side_by_side(live: LiveService) -> None:
    live.post("/api/contacts", [{"phone": f"+1202555{4000 + i}", "name": f"N{i}"} for i in range(20)])
    cid = live.post(
        "/api/campaigns",
        {
            "name": "AB",
            "variants": [
                {"name": "A", "body": "A https://a.example/x", "weight": 1},
                {"name": "B", "body": "B https://a.example/x", "weight": 1},
            ],
        },
    ).json()["id"]
    live.post(f"/api/campaigns/{cid}/launch")
    wait_for(lambda: live.stats(cid)["delivered"] == 20, what="delivered")
    messages = live.messages(cid)
    b_links = [m["body"].split()[-1] for m in messages if m["variant"] == "B"]
    for url in b_links[:6]:
        assert httpx.get(url, headers={"user-agent": PHONE_BROWSER}).status_code == 302
    wait_for(lambda: live.stats(cid)["clicks"]["unique"] == 6, what="six clickers")
    body = live.get(f"/api/campaigns/{cid}/stats/variants").json()
    rows = {row["variant"]: row for row in body["variants"]}
    assert body["metric"] == "ctr" and body["winner"] is None
    assert (rows["A"]["recipients"], rows["B"]["recipients"]) == (10, 10)
    assert (rows["A"]["unique_clicks"], rows["B"]["unique_clicks"]) == (0, 6)
    assert rows["B"]["ctr"] == 0.6 and rows["A"]["ctr"] == 0.0
    assert rows["B"]["chance_to_win"] > 0.99
    assert rows["A"]["interval"][0] >= 0 and rows["B"]["interval"][1] <= 1
    assert body["all_variants"]["recipients"] == 20 and body["all_variants"]["unique_clicks"] == 6
