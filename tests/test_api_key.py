"""TEXTPULSE_API_KEY guards /api only: redirects, webhooks and /health stay open."""

from __future__ import annotations

from pathlib import Path

from tests.live import LiveService


def test_api_key_guards_the_api_and_nothing_else(database_url: str, temporal_address: str, tmp_path: Path) -> None:
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path,
        env={"TEXTPULSE_API_KEY": "s3cret"},
    )
    live.start()
    try:
        denied = live.get("/api/contacts")
        assert denied.status_code == 401 and "Bearer" in denied.json()["detail"]
        assert live.get("/api/contacts", headers={"authorization": "Bearer wrong"}).status_code == 401
        auth = {"authorization": "Bearer s3cret"}
        assert live.post("/api/contacts", [{"phone": "+12025550100"}], headers=auth).status_code == 200
        cid = live.post(
            "/api/campaigns", {"name": "K", "variants": [{"name": "A", "body": "https://a.example/x"}]}, headers=auth
        ).json()["id"]
        assert live.post(f"/api/campaigns/{cid}/launch", headers=auth).status_code == 202
        assert live.get("/health").status_code == 200
        assert live.get("/r/unknown00").status_code == 404  # reachable without a key
        status = live.post("/webhooks/fake/status", {"message_id": "nobody", "status": "sent"})
        assert status.status_code == 200
    finally:
        live.stop()
