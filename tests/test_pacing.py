"""Quiet hours (per recipient's time zone) and rate limits, on the real workflow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.live import LiveService, wait_for


def _window_around_now_in_utc() -> dict[str, str]:
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    return {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}


def test_messages_in_quiet_hours_wait_and_the_rest_go(live: LiveService) -> None:
    # It is quiet hours in UTC (the window is around now); 12 hours away it is not.
    far = "Pacific/Kiritimati" if datetime.now(UTC).hour < 12 else "Pacific/Pago_Pago"
    live.post(
        "/api/contacts",
        [
            {"phone": "+12025550100", "timezone": "UTC"},
            {"phone": "+12025550101"},  # no zone: UTC
            {"phone": "+12025550102", "timezone": far},
        ],
    )
    cid = live.post(
        "/api/campaigns",
        {"name": "Night", "quiet_hours": _window_around_now_in_utc(), "variants": [{"name": "A", "body": "Hi"}]},
    ).json()["id"]
    live.post(f"/api/campaigns/{cid}/launch")
    wait_for(lambda: live.stats(cid)["sent"] == 1, what="the one recipient outside quiet hours")
    messages = {m["phone"]: m for m in live.messages(cid)}
    assert messages["+12025550102"]["status"] in ("sent", "delivered")
    assert messages["+12025550100"]["status"] == messages["+12025550101"]["status"] == "queued"
    assert live.get(f"/api/campaigns/{cid}").json()["status"] == "running"  # waiting for the window to end
    assert [e["to"] for e in live.fake.ledger()] == ["+12025550102"]
    assert live.post(f"/api/campaigns/{cid}/cancel").status_code == 202
    wait_for(
        lambda: {m["status"] for m in live.messages(cid, phone="+12025550100")} == {"cancelled"},
        what="the waiting messages cancelled",
    )


def test_a_rate_limit_paces_the_sends(live: LiveService) -> None:
    live.post("/api/contacts", [{"phone": f"+1202555{7000 + i}"} for i in range(11)])
    cid = live.post(
        "/api/campaigns", {"name": "Slow", "rate_limit_per_second": 5, "variants": [{"name": "A", "body": "Hi"}]}
    ).json()["id"]
    live.post(f"/api/campaigns/{cid}/launch")
    wait_for(lambda: live.get(f"/api/campaigns/{cid}").json()["status"] == "completed", what="completed")
    accepted = sorted(datetime.fromisoformat(e["accepted_at"]) for e in live.fake.ledger())
    assert len(accepted) == 11
    # 5 per second: the 6th send is at least ~1 s after the 1st, the 11th ~2 s after it.
    assert (accepted[5] - accepted[0]).total_seconds() >= 0.9
    assert (accepted[10] - accepted[0]).total_seconds() >= 1.9
