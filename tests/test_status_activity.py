"""The status activity's retry: an attempt that made its move and then failed (its cancel of the
pending messages hit a PostgreSQL deadlock, seen in the suite) is retried; the retry finds the
move made and says so, instead of the refusal that the API would have answered as a 409."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from temporalio.testing import ActivityEnvironment

from core.campaigns.definition import apply_move, create_campaign, get_campaign
from core.campaigns.lifecycle import Move
from core.campaigns.schemas import CampaignCreate
from core.db import make_engine, session_scope
from core.hooks.registry import load_plugins
from core.settings import Settings
from workflows.activities import CampaignActivities
from workflows.inputs import CampaignStatusInput


def _running_campaign(database_url: str, tmp_path: Path) -> tuple[CampaignActivities, int]:
    settings = Settings.from_env({"TEXTPULSE_DATABASE_URL": database_url, "TEXTPULSE_DATA_DIR": str(tmp_path)})
    engine = make_engine(database_url)
    data = CampaignCreate.model_validate(
        {"name": "c", "audience": {"all": True}, "variants": [{"name": "A", "body": "hi"}]}
    )
    cid = int(create_campaign(engine, data, providers={"fake"})["id"])
    assert apply_move(engine, cid, Move.LAUNCH)  # running
    return CampaignActivities(engine, load_plugins(settings)), cid


def _attempt(number: int) -> ActivityEnvironment:
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(environment.info, attempt=number)
    return environment


def test_a_retried_move_already_made_is_reported_made(database_url: str, tmp_path: Path) -> None:
    activities, cid = _running_campaign(database_url, tmp_path)
    cancel = CampaignStatusInput(cid, "cancelled", move=Move.CANCEL)
    assert _attempt(1).run(activities.set_campaign_status, cancel) is True
    # The first attempt's answer was lost: its retry finds the campaign cancelled.
    assert _attempt(2).run(activities.set_campaign_status, cancel) is True
    with session_scope(activities.engine, read_only=True) as session:
        assert get_campaign(session, cid).status == "cancelled"


def test_a_first_attempt_that_cannot_move_is_still_refused(database_url: str, tmp_path: Path) -> None:
    activities, cid = _running_campaign(database_url, tmp_path)
    cancel = CampaignStatusInput(cid, "cancelled", move=Move.CANCEL)
    assert _attempt(1).run(activities.set_campaign_status, cancel) is True
    # A second cancel of its own (not a retry) is refused: the workflow answers it as a 409.
    assert _attempt(1).run(activities.set_campaign_status, cancel) is False
    # And a retry of a move its status does not allow stays refused.
    pause = CampaignStatusInput(cid, "paused", move=Move.PAUSE)
    assert _attempt(2).run(activities.set_campaign_status, pause) is False
