"""A/B tests on the real workflow: test cohort, wait, winner by statistics / fallback / by hand,
remainder; control groups held out."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live import LiveService, wait_for

PHONE_BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"


@pytest.fixture
def ab_live(scaled_database_url: str, temporal_address: str, tmp_path: Path):
    """The service on one backend (PostgreSQL when the tests have it): these tests are about the
    workflow's stages; the statistics' queries are tested on both backends (test_variants_stats.py,
    test_conversion_numbers.py)."""
    live = LiveService(
        database_url=scaled_database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path,
        env={"TEXTPULSE_AB_POLL_SECONDS": "1", "TEXTPULSE_BATCH_SIZE": "50"},
    )
    live.start()
    yield live
    live.stop()


def _campaign(live: LiveService, n: int, ab_test: dict[str, Any] | None, **extra: Any) -> int:
    live.post("/api/contacts", [{"phone": f"+1202555{5000 + i:04d}", "name": f"N{i}"} for i in range(n)])
    response = live.post(
        "/api/campaigns",
        {
            "name": "AB",
            "ab_test": ab_test,
            **extra,
            "variants": [
                {"name": "A", "body": "A: https://shop.example/a", "weight": 50},
                {"name": "B", "body": "B: https://shop.example/b", "weight": 50},
            ],
        },
    )
    assert response.status_code == 201, response.text
    cid = int(response.json()["id"])
    assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
    return cid


def _campaign_json(live: LiveService, cid: int) -> dict[str, Any]:
    return dict(live.get(f"/api/campaigns/{cid}").json())


def _by_phase_variant(live: LiveService, cid: int) -> Counter[tuple[str, str | None]]:
    return Counter((m["phase"], m["variant"]) for m in live.messages(cid))


def test_a_clear_winner_ends_the_wait_early_and_gets_the_remainder(ab_live: LiveService) -> None:
    live = ab_live
    cid = _campaign(
        live,
        200,
        {
            "test_percent": 50,
            "wait_seconds": 600,
            "metric": "ctr",
            "min_sample": 20,
            "fallback": "send_all_variants",
            "maturity_seconds": 15,  # the clicks below come within seconds of delivery
        },
    )
    wait_for(lambda: _campaign_json(live, cid)["status"] == "waiting", what="the test waiting")
    test = [m for m in live.messages(cid, phase="test")]
    assert Counter(m["variant"] for m in test) == {"A": 50, "B": 50}
    assert all(
        m["phase"] == "remainder" and m["status"] == "queued" and m["variant"] is None
        for m in live.messages(cid, phase="remainder")
    )
    wait_for(lambda: live.stats(cid)["delivered"] == 100, what="test cohort delivered")
    for m in [m for m in test if m["variant"] == "B"][:25]:
        assert httpx.get(m["body"].split()[-1], headers={"user-agent": PHONE_BROWSER}).status_code == 302
    campaign = wait_for(
        lambda: (c := _campaign_json(live, cid))["status"] == "completed" and c,
        timeout=60,
        what="completed long before the 600 s wait",
    )
    assert campaign["winner"]["variant"] == "B" and campaign["winner"]["method"] == "bayesian"
    assert "chance to be best on ctr" in campaign["winner"]["reason"]
    assert _by_phase_variant(live, cid) == {("test", "A"): 50, ("test", "B"): 50, ("remainder", "B"): 100}
    assert len(live.fake.ledger()) == 200
    variants = live.get(f"/api/campaigns/{cid}/stats/variants").json()
    assert variants["winner"]["variant"] == "B"
    # The table shows the statistics the decision was made on, and they stay put: later clicks on
    # A's test messages move the counts, not the decision's figures.
    kept = campaign["winner"]["evidence"]
    assert variants["decided_on"] == {"as_of": kept["as_of"], "horizon_seconds": kept["horizon_seconds"]}
    chances = {row["variant"]: row["chance_to_win"] for row in variants["variants"]}
    assert chances == {name: row["chance_to_win"] for name, row in kept["variants"].items()}
    assert chances["B"] >= 0.95
    for m in [m for m in test if m["variant"] == "A"][:25]:
        httpx.get(m["body"].split()[-1], headers={"user-agent": PHONE_BROWSER})
    wait_for(lambda: live.stats(cid)["clicks"]["unique"] >= 50, what="the later clicks stored")
    later = live.get(f"/api/campaigns/{cid}/stats/variants").json()
    assert {row["variant"]: row["chance_to_win"] for row in later["variants"]} == chances
    assert {row["variant"]: row["unique_clicks"] for row in later["variants"]} == {"A": 25, "B": 25}


def test_too_small_a_sample_falls_back_to_all_variants(ab_live: LiveService) -> None:
    live = ab_live
    cid = _campaign(
        live, 40, {"test_percent": 25, "wait_seconds": 2, "min_sample": 1000, "fallback": "send_all_variants"}
    )
    campaign = wait_for(
        lambda: (c := _campaign_json(live, cid))["status"] == "completed" and c,
        timeout=60,
        what="completed after the wait",
    )
    assert campaign["winner"]["method"] == "fallback" and campaign["winner"]["variant"] is None
    assert "fewer than 1000 delivered" in campaign["winner"]["reason"]
    assert _by_phase_variant(live, cid) == {
        ("test", "A"): 5,
        ("test", "B"): 5,
        ("remainder", "A"): 15,
        ("remainder", "B"): 15,
    }


def _held(live: LiveService) -> int:
    """An A/B campaign whose test cannot be decided (min_sample out of reach) under `fallback: hold`."""
    cid = _campaign(live, 20, {"test_percent": 50, "wait_seconds": 1, "min_sample": 1000, "fallback": "hold"})
    campaign = wait_for(lambda: (c := _campaign_json(live, cid))["status"] == "held" and c, timeout=60, what="held")
    assert campaign["winner"]["method"] == "fallback" and campaign["winner"]["variant"] is None
    assert "held" in campaign["winner"]["reason"]
    return cid


def test_hold_keeps_the_remainder_queued_until_a_variant_is_picked(ab_live: LiveService) -> None:
    live = ab_live
    cid = _held(live)
    remainder = live.messages(cid, phase="remainder")
    assert len(remainder) == 10 and {m["status"] for m in remainder} == {"queued"}
    assert len(live.fake.ledger()) == 10 and live.stats(cid)["queued"] == 10
    # Not decisive yet: "decide by the policy" is refused with why; pause is no move from held.
    undecided = live.post(f"/api/campaigns/{cid}/winner", {})
    assert undecided.status_code == 409 and "name the variant" in undecided.json()["detail"]
    paused = live.post(f"/api/campaigns/{cid}/pause")
    assert paused.status_code == 409 and "it is held" in paused.json()["detail"]
    assert live.post(f"/api/campaigns/{cid}/winner", {"variant": "B"}).status_code == 202
    campaign = wait_for(
        lambda: (c := _campaign_json(live, cid))["status"] == "completed" and c, timeout=60, what="completed"
    )
    assert campaign["winner"]["method"] == "manual" and campaign["winner"]["variant"] == "B"
    assert Counter(v for (phase, v) in _by_phase_variant(live, cid).elements() if phase == "remainder") == {"B": 10}
    ledger = live.fake.ledger()
    assert len(ledger) == 20 and len({entry["to"] for entry in ledger}) == 20


def test_a_held_campaign_can_be_cancelled(ab_live: LiveService) -> None:
    live = ab_live
    cid = _held(live)
    cancelled = live.post(f"/api/campaigns/{cid}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    wait_for(
        lambda: {m["status"] for m in live.messages(cid, phase="remainder")} == {"cancelled"},
        what="the held remainder cancelled",
    )
    assert live.post(f"/api/campaigns/{cid}/winner", {"variant": "A"}).status_code == 409
    assert len(live.fake.ledger()) == 10


def test_winner_chosen_by_hand_and_conflicts(ab_live: LiveService) -> None:
    live = ab_live
    cid = _campaign(live, 20, {"test_percent": 50, "wait_seconds": 600, "min_sample": 1000})
    early = live.post(f"/api/campaigns/{cid}/winner", {"variant": "A"})
    if early.status_code == 409:  # still sending the test cohort
        assert "no A/B test waiting" in early.json()["detail"]
    wait_for(lambda: _campaign_json(live, cid)["status"] == "waiting", what="waiting")
    unknown = live.post(f"/api/campaigns/{cid}/winner", {"variant": "Z"})
    assert unknown.status_code == 422 and "'Z'" in unknown.json()["detail"]
    assert live.post(f"/api/campaigns/{cid}/winner", {"variant": "A"}).status_code == 202
    campaign = wait_for(
        lambda: (c := _campaign_json(live, cid))["status"] == "completed" and c, timeout=60, what="completed"
    )
    assert campaign["winner"]["method"] == "manual" and campaign["winner"]["variant"] == "A"
    assert Counter(v for (phase, v) in _by_phase_variant(live, cid).elements() if phase == "remainder") == {"A": 10}
    assert live.post(f"/api/campaigns/{cid}/winner", {}).status_code == 409


def test_control_group_is_held_out_and_not_counted(ab_live: LiveService) -> None:
    live = ab_live
    cid = _campaign(live, 50, None, control_percent=10)
    wait_for(lambda: _campaign_json(live, cid)["status"] == "completed", what="completed")
    control = live.messages(cid, phase="control")
    assert len(control) == 5 and {m["status"] for m in control} == {"cancelled"}
    assert {m["to"] for m in live.fake.ledger()}.isdisjoint({m["phone"] for m in control})
    stats = wait_for(lambda: (s := live.stats(cid))["delivered"] == 45 and s, what="45 delivered")
    assert stats["recipients"] == 45 and stats["sent"] == 45


def test_a_fallback_must_name_a_variant(live: LiveService) -> None:
    response = live.post(
        "/api/campaigns",
        {
            "name": "x",
            "ab_test": {"fallback": "send_variant:C"},
            "variants": [{"name": "A", "body": "a"}, {"name": "B", "body": "b"}],
        },
    )
    assert response.status_code == 400 and "'C'" in response.text
