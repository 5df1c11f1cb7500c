"""Re-scoring a campaign's stored clicks (core/tracking/rescore.py): in the foreground from the CLI,
as a background job from the API (workflows/rescore.py: 202, then a job to poll), in chunks that
meet inside a burst; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from api.app import create_app
from core.db import make_engine
from core.settings import Settings
from core.tracking.rescore import rescore_campaign
from tests.live import LiveService, free_port, wait_for
from tests.test_bot_behaviour import IPHONE, ROOT, human_clicks, records, registry_for, rows, seed_links, write
from workflows.rescore import RescoreInput
from workflows.rescore_activities import RescoreActivities

LISTED = {"plugins": {"botfilters": {"networks": ["192.0.2.0/24"]}}}


def _stored_people(database_url: str, tmp_path: Path) -> tuple[int, list[list[str]]]:
    """A campaign whose 3 clicks from 192.0.2.0/24 were stored as people's."""
    campaign_id, codes = seed_links(database_url, 3)
    now = datetime.now(UTC)
    clicks = records(database_url, [c[0] for c in codes], ["192.0.2.7"] * 3, [IPHONE] * 3,
                     [now + timedelta(seconds=5 * n) for n in range(3)])  # fmt: skip
    write(database_url, registry_for(database_url, tmp_path), [clicks])
    assert human_clicks(database_url, campaign_id) == (3, 3, 0)
    return campaign_id, codes


def _service(database_url: str, temporal_address: str, tmp_path: Path, **options: Any) -> LiveService:
    config = {"plugins": {**LISTED["plugins"], "fake": {"delivery_ratio": 1.0, "seed": 7}}}
    service = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path / "var",
        plugin_config=config,
        **options,
    )
    service.start()
    return service


def test_rescore_over_the_api_is_a_job_to_poll(database_url: str, temporal_address: str, tmp_path: Path) -> None:
    """POST answers 202 with the job and where to poll; the worker re-judges with its filters (a
    network added); GET follows the job to its result, and every count has followed."""
    campaign_id, _ = _stored_people(database_url, tmp_path)
    service = _service(database_url, temporal_address, tmp_path)
    try:
        assert service.get(f"/api/campaigns/{campaign_id}/rescore").status_code == 404  # none started yet
        answer = service.post(f"/api/campaigns/{campaign_id}/rescore")
        assert answer.status_code == 202, answer.text
        assert answer.headers["location"] == f"/api/campaigns/{campaign_id}/rescore"
        job = answer.json()
        assert job["campaign_id"] == campaign_id and job["status"] in ("running", "completed"), job
        assert job["started_at"] and job["error"] is None

        def finished() -> dict[str, Any] | None:
            state = service.get(answer.headers["location"]).json()
            return state if state["status"] != "running" else None

        done = wait_for(finished, timeout=60, what="the re-score job to end")
        assert done["status"] == "completed", done
        assert done["result"] == {"clicks": 3, "changed": 3, "bots": 3, "humans": 0}
        assert done["progress"] == {"clicks": 3, "changed": 3} and done["completed_at"]
        assert human_clicks(database_url, campaign_id) == (0, 0, 3)
        assert service.get(f"/api/campaigns/{campaign_id}/stats").json()["clicks"]["total"] == 0
        listed = service.get(f"/api/campaigns/{campaign_id}/clicks").json()["items"]
        assert [(c["is_bot"], c["bot_reasons"]) for c in listed] == [(True, ["bot_network"])] * 3

        again = service.post(f"/api/campaigns/{campaign_id}/rescore")  # a finished job may be started again
        assert again.status_code == 202, again.text
        second = wait_for(finished, timeout=60, what="the second re-score to end")
        assert second["result"] == {"clicks": 3, "changed": 0, "bots": 3, "humans": 0}

        for method in (service.post, service.get):
            missing = method("/api/campaigns/999999/rescore")
            assert missing.status_code == 404 and "999999" in missing.json()["detail"]
        assert service.post("/api/campaigns/abc/rescore").status_code in (400, 404)
    finally:
        service.stop()


def test_a_second_rescore_while_one_runs_is_a_conflict(
    database_url: str, temporal_address: str, tmp_path: Path
) -> None:
    """No worker: the job stays running, and a second POST is 409 naming where to follow it."""
    campaign_id, _ = _stored_people(database_url, tmp_path)
    service = _service(database_url, temporal_address, tmp_path, run_worker=False)
    try:
        assert service.post(f"/api/campaigns/{campaign_id}/rescore").status_code == 202
        state = service.get(f"/api/campaigns/{campaign_id}/rescore").json()
        assert (state["status"], state["progress"], state["result"]) == ("running", {"clicks": 0, "changed": 0}, None)
        second = service.post(f"/api/campaigns/{campaign_id}/rescore")
        assert second.status_code == 409, second.text
        assert f"/api/campaigns/{campaign_id}/rescore" in second.json()["detail"]
        assert human_clicks(database_url, campaign_id) == (3, 3, 0)  # nothing judged without a worker
    finally:
        settings = service.settings
        service.stop()

    async def terminate() -> None:
        client = await Client.connect(temporal_address)
        await client.get_workflow_handle(f"{settings.workflow_id(campaign_id)}-rescore").terminate("test over")

    asyncio.run(terminate())


def test_rescore_without_the_workflow_service_is_503(database_url: str, tmp_path: Path) -> None:
    campaign_id, _ = _stored_people(database_url, tmp_path)
    settings = Settings.from_env(
        {
            "TEXTPULSE_DATABASE_URL": database_url,
            "TEXTPULSE_DATA_DIR": str(tmp_path),
            "TEXTPULSE_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",  # nobody listens there
        }
    )
    registry = registry_for(database_url, tmp_path)
    with TestClient(app=create_app(settings, registry=registry)) as client:
        answer = client.post(f"/api/campaigns/{campaign_id}/rescore")
        assert answer.status_code == 503, answer.text
        assert "workflow service" in answer.json()["detail"]
        assert client.post("/api/campaigns/999999/rescore").status_code == 404  # checked before Temporal
    registry.close()


def test_the_rescore_activity_heartbeats_its_progress(database_url: str, tmp_path: Path) -> None:
    """Chunks of two: a heartbeat after each with the clicks judged and the verdicts changed so far;
    an unknown campaign is a failure no retry can mend."""
    campaign_id, _ = _stored_people(database_url, tmp_path)
    engine = make_engine(database_url)
    registry = registry_for(database_url, tmp_path, json.loads(json.dumps(LISTED)))
    activities = RescoreActivities(engine, registry)
    beats: list[Any] = []
    environment = ActivityEnvironment()
    environment.on_heartbeat = lambda *details: beats.append(details[0])
    result = environment.run(activities.rescore, RescoreInput(campaign_id, chunk=2))
    assert result == {"clicks": 3, "changed": 3, "bots": 3, "humans": 0}
    assert [beat["clicks"] for beat in beats] == [2, 3] and beats[-1]["changed"] == 3
    with pytest.raises(ApplicationError) as failed:
        environment.run(activities.rescore, RescoreInput(999999))
    assert failed.value.non_retryable and failed.value.type == "CampaignNotFound"
    registry.close()
    engine.dispose()


def test_rescore_from_the_cli_in_small_chunks(database_url: str, tmp_path: Path) -> None:
    """`textpulse rescore` (in the foreground) with a network added by environment, two clicks per
    chunk (so the chunks meet inside a burst), then back to the defaults: the verdicts follow the
    settings."""
    campaign_id, _ = _stored_people(database_url, tmp_path)
    env = {
        **os.environ,
        "TEXTPULSE_DATABASE_URL": database_url,
        "TEXTPULSE_DATA_DIR": str(tmp_path),
        "TEXTPULSE_CONFIG": str(tmp_path / "none.toml"),
    }

    def rescore(campaign: int, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "textpulse.cli", "rescore", "--campaign", str(campaign), "--chunk", "2"],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )

    done = rescore(campaign_id, TEXTPULSE_BOTFILTERS_NETWORKS="192.0.2.0/24")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"clicks": 3, "changed": 3, "bots": 3, "humans": 0}
    assert human_clicks(database_url, campaign_id) == (0, 0, 3)
    back = rescore(campaign_id)
    assert json.loads(back.stdout.strip().splitlines()[-1]) == {"clicks": 3, "changed": 3, "bots": 0, "humans": 3}
    missing = rescore(999999)
    assert missing.returncode == 1 and "999999" in missing.stderr


def test_rescore_finds_a_burst_across_chunks(database_url: str, tmp_path: Path) -> None:
    """Clicks stored as people's by a writer without the behaviour filters, re-scored two at a time:
    the burst spans three chunks and every click of it is found."""
    campaign_id, codes = seed_links(database_url, 6, sent_ago=timedelta(seconds=3))
    now = datetime.now(UTC)
    clicks = records(database_url, [c[0] for c in codes], ["203.0.113.5"] * 6, [IPHONE] * 6,
                     [now + timedelta(seconds=0.15 * n) for n in range(6)])  # fmt: skip
    off = {"plugins": {"disabled": ["bot_behaviour"]}}
    write(database_url, registry_for(database_url, tmp_path, off), [clicks])
    assert human_clicks(database_url, campaign_id) == (6, 6, 0)
    registry = registry_for(database_url, tmp_path, {"plugins": {"bot_behaviour": {"burst_recipients": 5}}})
    engine = make_engine(database_url)
    seen: list[tuple[int, int]] = []
    result = rescore_campaign(
        engine,
        campaign_id,
        registry.bot_filters,
        registry.together_filters,
        chunk=2,
        progress=lambda *p: seen.append(p),
    )
    engine.dispose()
    assert result == {"clicks": 6, "changed": 6, "bots": 6, "humans": 0}
    assert [clicks for clicks, _ in seen] == [2, 4, 6] and seen[-1][1] == 6
    assert [reasons for _, _, reasons in rows(database_url, campaign_id)] == [["burst"]] * 6
