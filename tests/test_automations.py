"""Automations on the real dev server with short waits (API.md "Automations")."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live import LiveService, wait_for
from workflows.automation_inputs import ContactEvent


@pytest.fixture
def live_once(scaled_database_url: str, temporal_address: str, tmp_path: Path) -> Iterator[LiveService]:
    """The service on one backend (PostgreSQL when the tests have it): the paths through the
    database are proven on both backends by the first tests here and tests/test_automation_sends.py."""
    service = LiveService(
        database_url=scaled_database_url, temporal_address=temporal_address, data_dir=tmp_path / "var"
    )
    service.start()
    yield service
    service.stop()


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


def _automations_live(
    database_url: str, temporal_address: str, tmp_path: Path, automations: dict[str, Any]
) -> LiveService:
    """The service with plugins.toml's `[automations]` tables as given, its fake provider fast."""
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path / "var",
        plugin_config={
            "plugins": {"fake": {"delivery_ratio": 1.0, "callback_delay_seconds": [0.01, 0.05], "seed": 3}},
            "automations": automations,
        },
    )
    live.start()
    return live


def _welcome_live(
    database_url: str, temporal_address: str, tmp_path: Path, steps: list[dict[str, Any]], stop_on: list[str]
) -> LiveService:
    series = {"welcome_series": {"enabled": True, "steps": steps, "stop_on": stop_on}}
    return _automations_live(database_url, temporal_address, tmp_path, series)


def _runs(live: LiveService, **params: Any) -> list[dict[str, Any]]:
    response = live.get("/api/workflows/runs", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def _all_ended(runs: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    return runs if runs and all(r["status"] != "running" for r in runs) else None


def _texts(live: LiveService, body: str) -> Counter[str]:
    return Counter(e["to"] for e in live.fake.ledger() if e["body"].startswith(body))


def test_welcome_series_stops_for_the_contact_who_replied(
    database_url: str, temporal_address: str, tmp_path: Path
) -> None:
    steps = [{"after_seconds": 0.5, "body": "Welcome 1"}, {"after_seconds": 2.5, "body": "Welcome 2"}]
    live = _welcome_live(database_url, temporal_address, tmp_path, steps, ["reply"])
    try:
        replier, quiet = _contacts(live, 2, base=7100)
        runs = wait_for(lambda: len(r := _runs(live, workflow="welcome_series")) == 2 and r, what="two series")
        assert {r["trigger"] for r in runs} == {"contact_created"} and all(r["contact_id"] for r in runs)
        wait_for(lambda: len(_texts(live, "Welcome 1")) == 2, what="step 1 to both")
        inbound = live.post("/webhooks/fake/inbound", {"from": replier, "to": "+15550000000", "body": "thanks!"})
        assert inbound.status_code in (200, 204), inbound.text
        ended = wait_for(
            lambda: _all_ended(_runs(live, workflow="welcome_series")),
            what="both series ended",
        )
        by_contact = {r["contact_id"]: r for r in ended}
        assert sorted(r["progress"].get("stopped", "") for r in ended) == ["", "reply"]
        assert _texts(live, "Welcome 1") == Counter({replier: 1, quiet: 1})
        assert _texts(live, "Welcome 2") == Counter({quiet: 1})
        # Re-adding a contact starts no second series; a second start for the same contact is a no-op.
        assert live.post("/api/contacts", [{"phone": replier, "name": "Again"}]).json()["updated"] == 1
        assert live.service is not None and live.service.relay is not None
        for contact_id in by_contact:
            live.service.relay.publish(ContactEvent("contact_created", contact_id, time.time()))
        time.sleep(1.5)
        assert len(_runs(live, workflow="welcome_series")) == 2
        # Each step is one campaign across contacts, of kind automation, with every stat.
        steps_listed = live.get("/api/campaigns", params={"kind": "automation"}).json()["items"]
        assert sorted(c["name"] for c in steps_listed) == ["welcome_series: step 1", "welcome_series: step 2"]
        step1 = next(c for c in steps_listed if c["name"].endswith("step 1"))
        assert live.stats(step1["id"])["sent"] + live.stats(step1["id"])["delivered"] >= 2
    finally:
        live.stop()


def test_a_click_reaches_the_contacts_run_at_once(
    scaled_database_url: str, temporal_address: str, tmp_path: Path
) -> None:
    steps = [{"after_seconds": 0.2, "body": "Hello https://shop.example/w"}, {"after_seconds": 120, "body": "Later"}]
    live = _welcome_live(scaled_database_url, temporal_address, tmp_path, steps, ["click"])
    try:
        _contacts(live, 1, base=7200)
        run = wait_for(lambda: (r := _runs(live, workflow="welcome_series")) and r[0], what="a series")
        step1 = wait_for(
            lambda: (c := live.get("/api/campaigns", params={"kind": "automation"}).json()["items"]) and c[0],
            what="step 1 sent",
        )
        message = wait_for(
            lambda: (m := live.messages(step1["id"])) and m[0]["status"] == "delivered" and m[0], what="delivered"
        )
        _click(live, message)
        # The second step is two minutes away: the run ends now only because the click was signalled.
        ended = _run_ended(live, run["id"], timeout=20)
        assert ended["status"] == "completed" and ended["progress"]["stopped"] == "click"
        assert not _texts(live, "Later")
    finally:
        live.stop()


def test_cancel_a_run_sends_nothing_more(scaled_database_url: str, temporal_address: str, tmp_path: Path) -> None:
    steps = [{"after_seconds": 0.2, "body": "One"}, {"after_seconds": 2, "body": "Two"}]
    live = _welcome_live(scaled_database_url, temporal_address, tmp_path, steps, ["reply"])
    try:
        (phone,) = _contacts(live, 1, base=7300)
        run = wait_for(lambda: (r := _runs(live, workflow="welcome_series")) and r[0], what="a series")
        wait_for(lambda: _texts(live, "One"), what="step 1")
        response = live.post(f"/api/workflows/runs/{run['id']}/cancel")
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "cancelled"
        again = live.post(f"/api/workflows/runs/{run['id']}/cancel")
        assert again.status_code == 409 and "ended" in again.json()["detail"]
        time.sleep(2.5)  # past the second step's time
        assert not _texts(live, "Two")
        assert live.get(f"/api/workflows/runs/{run['id']}").json()["status"] == "cancelled"
    finally:
        live.stop()


def test_follow_ups_in_the_campaign_body_start_at_launch(live_once: LiveService) -> None:
    live = live_once
    phones = _contacts(live, 3, base=7400)
    body = {
        "name": "With follow-up",
        "variants": [{"name": "A", "body": "Hi https://shop.example/f"}],
        "follow_ups": [{"after_seconds": 0.2, "audience": "not_clicked", "body": "Did you see it?"}],
    }
    created = live.post("/api/campaigns", body)
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    assert created.json()["follow_ups"][0]["body"] == "Did you see it?"
    assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
    run = wait_for(lambda: (r := _runs(live, workflow="follow_up")) and r[0], what="the follow-up run")
    assert run["campaign_id"] == cid and run["params"]["campaign_id"] == cid
    ended = _run_ended(live, run["id"])
    assert ended["status"] == "completed", ended
    follow_id = ended["campaign_ids"][0]
    wait_for(lambda: len(live.messages(follow_id)) == 3, what="three follow-up messages")
    assert {m["phone"] for m in live.messages(follow_id)} == set(phones)
    children = live.get("/api/campaigns", params={"parent_id": cid}).json()["items"]
    assert [c["id"] for c in children] == [follow_id]


def test_follow_up_with_nobody_matching_completes_without_a_campaign(live_once: LiveService) -> None:
    live = live_once
    _contacts(live, 2, base=7500)
    cid = live.post("/api/campaigns", {"name": "N", "variants": [{"name": "A", "body": "Hi"}]}).json()["id"]
    live.post(f"/api/campaigns/{cid}/launch")
    _completed(live, cid)
    run = live.post(
        "/api/workflows/follow_up/runs",
        {"params": {"campaign_id": cid, "after_seconds": 0, "audience": "clicked", "body": "x"}},
    ).json()
    ended = _run_ended(live, run["id"])
    assert ended["status"] == "completed" and ended["campaign_ids"] == [] and ended["progress"]["matched"] == 0


def test_params_are_checked_before_anything_starts(live_once: LiveService) -> None:
    live = live_once
    listed = live.get("/api/workflows").json()["items"]
    names = {a["name"]: a for a in listed}
    assert {"follow_up", "welcome_series"} <= set(names)
    assert names["follow_up"]["triggers"] == ["campaign_completed"]
    schema = names["welcome_series"]["params"]
    assert schema["type"] == "object" and "steps" in schema["required"]
    cases = [
        ({"campaign_id": "seven", "body": "x"}, "campaign_id"),
        ({"body": "x"}, "campaign_id"),
        ({"campaign_id": 1, "body": "x", "audience": "everyone"}, "audience"),
        ({"campaign_id": 1, "body": "x", "after_secs": 5}, "after_secs"),
        ({"campaign_id": 999, "body": "x"}, "campaign_id"),
    ]
    for params, field in cases:
        response = live.post("/api/workflows/follow_up/runs", {"params": params})
        assert response.status_code == 422, (params, response.text)
        assert field in response.json()["detail"], response.text
    assert live.post("/api/workflows/nope/runs", {"params": {}}).status_code == 404
    assert live.post("/api/workflows/follow_up/runs", {"params": []}).status_code in (400, 422)
    assert live.post("/api/workflows/follow_up/runs", {"parameters": {}}).status_code == 400
    assert _runs(live) == []
    assert live.get("/api/workflows/runs", params={"status": "sleeping"}).status_code == 400
    assert live.get("/api/workflows/runs/12345").status_code == 404
    assert live.post("/api/workflows/runs/12345/cancel").status_code == 404


def test_follow_up_turned_on_in_plugins_toml_follows_every_campaign(
    scaled_database_url: str, temporal_address: str, tmp_path: Path
) -> None:
    follow_up = {"follow_up": {"enabled": True, "after_seconds": 0.2, "body": "Still there?"}}
    live = _automations_live(scaled_database_url, temporal_address, tmp_path, follow_up)
    try:
        _contacts(live, 2, base=7600)
        cid = live.post("/api/campaigns", {"name": "P", "variants": [{"name": "A", "body": "Hi"}]}).json()["id"]
        live.post(f"/api/campaigns/{cid}/launch")
        run = wait_for(lambda: (r := _runs(live, workflow="follow_up")) and r[0], what="a triggered follow-up")
        assert run["trigger"] == "campaign_completed" and run["params"]["campaign_id"] == cid
        ended = _run_ended(live, run["id"])
        assert ended["status"] == "completed" and len(ended["campaign_ids"]) == 1
        follow = live.get(f"/api/campaigns/{ended['campaign_ids'][0]}").json()
        assert follow["kind"] == "follow_up" and follow["parent_id"] == cid
        _completed(live, follow["id"])
        time.sleep(1.0)  # a follow-up's own completion starts no follow-up of the follow-up
        assert len(_runs(live, workflow="follow_up")) == 1
    finally:
        live.stop()


def test_a_run_terminated_in_temporal_is_closed_by_the_sweep(
    scaled_database_url: str, temporal_address: str, tmp_path: Path
) -> None:
    steps = [{"after_seconds": 600, "body": "Much later"}]
    live = _welcome_live(scaled_database_url, temporal_address, tmp_path, steps, ["reply"])
    try:
        _contacts(live, 1, base=7700)
        run = wait_for(lambda: (r := _runs(live, workflow="welcome_series")) and r[0], what="a series")
        service = live.service
        assert service is not None and service.client is not None and service.sweeper is not None
        handle = service.client.get_workflow_handle(run["workflow_id"])
        live._run(handle.terminate(reason="by hand"))

        # Visibility lags the close by a moment: sweep until the row is closed.
        def swept() -> dict[str, Any] | None:
            live._run(service.sweeper.sweep())
            row = live.get(f"/api/workflows/runs/{run['id']}").json()
            return row if row["status"] != "running" else None

        ended = wait_for(swept, what="the row closed by a sweep")
        assert ended["status"] == "failed" and "terminated" in ended["error"]
        assert live._run(service.sweeper.sweep()) == 0  # closed once
    finally:
        live.stop()
