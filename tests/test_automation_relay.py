"""The automation relay on the hot paths: while no automation listens (no `click` trigger on, no
run about a contact running) a batch of clicks or delivery reports costs one test and queues
nothing; once a run about a contact runs, human clicks are queued (bots' never)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.automations import runs
from core.contacts.importing import upsert_contacts
from core.db import make_engine
from core.hooks.registry import load_plugins
from core.settings import Settings
from core.statuses import RunStatus
from workflows.relay import AutomationRelay


async def _no_client() -> Any:
    raise AssertionError("nothing is signalled in this test")


def _clicks() -> list[dict[str, Any]]:
    at = datetime.now(UTC)
    return [
        {"contact_id": 1, "is_bot": False, "clicked_at": at, "campaign_id": 1, "message_id": 1},
        {"contact_id": 2, "is_bot": True, "clicked_at": at, "campaign_id": 1, "message_id": 2},
        {"contact_id": None, "is_bot": False, "clicked_at": at, "campaign_id": 1, "message_id": 3},
    ]


def test_the_hot_paths_cost_nothing_until_a_run_about_a_contact_runs(database_url: str, tmp_path: Path) -> None:
    settings = Settings.from_env({"TEXTPULSE_DATABASE_URL": database_url, "TEXTPULSE_DATA_DIR": str(tmp_path)})
    engine = make_engine(database_url)
    registry = load_plugins(settings, config={})
    relay = AutomationRelay(engine, registry, _no_client, task_queue="q", interval=60)

    async def scenario() -> list[int]:
        await relay.start()
        try:
            await relay._refresh()
            quiet = relay.listening
            relay.clicks_stored(_clicks())
            relay.statuses_stored([(1, "sent", "delivered")])
            queued_quiet = len(relay._queue)
            upsert_contacts(engine, [{"phone": "+12025559101"}])
            run_id = runs.record_run(
                engine, workflow="welcome_series", workflow_id="w-1", temporal_run_id="r-1", params={}, contact_id=1
            )
            await relay._refresh()
            relay.clicks_stored(_clicks())
            queued = [e.contact_id or 0 for e in relay._queue]
            runs.finish(engine, run_id, RunStatus.COMPLETED)
            await relay._refresh()
            relay._queue.clear()
            return [int(quiet), queued_quiet, *queued, int(relay.listening)]
        finally:
            relay._queue.clear()
            await relay.close()

    try:
        assert asyncio.run(scenario()) == [0, 0, 1, 0]  # quiet: nothing; then contact 1's human click only
    finally:
        registry.close()
        engine.dispose()
