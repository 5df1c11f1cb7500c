"""Automations on the real dev server with short waits (API.md "Automations")."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.live import LiveService, wait_for


def _contacts(live: LiveService, n: int, base: int = 7000) -> list[str]:
    phones = [f"+1202555{base + i:04d}" for i in range(n)]
    assert live.post("/api/contacts", [{"phone": p} for p in phones]).status_code == 200
    return phones


def _completed(live: LiveService, cid: int) -> dict[str, Any]:
    return wait_for(
        lambda: (c := live.get(f"/api/campaigns/{cid}").json())["status"] == "completed" and c,
        what=f"campaign {cid} completed",
    )


def _run_ended(live: LiveService, run_id: int, timeout: float = 60) -> dict[str, Any]:
    return wait_for(
        lambda: (r := live.get(f"/api/workflows/runs/{run_id}").json())["status"] != "running" and r,
        timeout=timeout,
        what=f"run {run_id} ended",
    )


def _click(live: LiveService, message: dict[str, Any]) -> None:
    code = message["links"][0]["code"] if message.get("links") else message["body"].rsplit("/r/", 1)[1].split()[0]
    response = live.http.get(
        f"/r/{code}", headers={"user-agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)"}
    )
    assert response.status_code in (301, 302, 303, 307), response.text


def test_follow_up_texts_exactly_the_non_clickers(live: LiveService) -> None:
    phones = _contacts(live, 6)
    body = {"name": "Sale", "variants": [{"name": "A", "body": "Sale: https://shop.example/s"}]}
    cid = live.post("/api/campaigns", body).json()["id"]
    assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
    _completed(live, cid)
    messages = wait_for(
        lambda: (m := live.messages(cid)) and all(x["status"] == "delivered" for x in m) and m, what="delivered"
    )
    clickers = {m["phone"] for m in messages[:2]}
    for message in messages[:2]:
        _click(live, message)
    wait_for(lambda: live.stats(cid)["clicks"]["unique"] == 2, what="two clickers")
    response = live.post(
        "/api/workflows/follow_up/runs",
        {"params": {"campaign_id": cid, "after_seconds": 0.5, "audience": "not_clicked", "body": "Last day!"}},
    )
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["workflow"] == "follow_up" and run["status"] == "running" and run["campaign_id"] == cid
    ended = _run_ended(live, run["id"])
    assert ended["status"] == "completed", ended
    assert len(ended["campaign_ids"]) == 1
    follow = live.get(f"/api/campaigns/{ended['campaign_ids'][0]}").json()
    assert follow["kind"] == "follow_up" and follow["parent_id"] == cid and follow["run_id"] == run["id"]
    sent_to = {m["phone"] for m in live.messages(follow["id"])}
    assert sent_to == set(phones) - clickers
    assert ended["progress"]["matched"] == 4
    ledger = Counter(e["to"] for e in live.fake.ledger() if e["body"] == "Last day!")
    assert set(ledger) == set(phones) - clickers and max(ledger.values()) == 1
    listed = live.get("/api/campaigns", params={"kind": "follow_up"}).json()["items"]
    assert [c["id"] for c in listed] == [follow["id"]]
