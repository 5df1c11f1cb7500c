"""Automation runs that were running before a deploy go on after it: histories of the built-in
automations (recorded by tests/histories/record_automations.py on the real service) replay on
today's code without a nondeterminism error. A change to plugins/follow_up.py,
plugins/welcome_series.py or the building blocks (workflows/automation.py) that would break
running automations fails here; such changes go behind `workflow.patched`.

- follow_up: texted the non-clickers (a child campaign), nobody matched, cancelled while waiting;
- welcome_series: every step sent, stopped by a reply (a signal), cancelled between steps.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from plugins.follow_up import FollowUpWorkflow
from plugins.welcome_series import WelcomeSeriesWorkflow

ROOT = Path(__file__).parent / "histories" / "automations"
HISTORIES = sorted(ROOT.glob("*.json"))


def test_every_recorded_case_is_there() -> None:
    names = {path.stem for path in HISTORIES}
    assert names == {
        "follow_up_texted",
        "follow_up_nobody",
        "follow_up_cancelled",
        "welcome_series_all_steps",
        "welcome_series_replied",
        "welcome_series_cancelled",
    }


def _events(path: Path) -> list[str]:
    return [event["eventType"] for event in json.loads(path.read_text())["events"]]


def test_the_histories_took_the_paths_they_are_named_for() -> None:
    texted = _events(ROOT / "follow_up_texted.json")
    assert "EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED" in texted
    assert "EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED" not in _events(ROOT / "follow_up_nobody.json")
    assert _events(ROOT / "follow_up_cancelled.json")[-1] == "EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED"
    assert _events(ROOT / "welcome_series_cancelled.json")[-1] == "EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED"
    assert "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED" in _events(ROOT / "welcome_series_replied.json")
    assert _events(ROOT / "welcome_series_all_steps.json")[-1] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"


@pytest.mark.parametrize("path", HISTORIES, ids=lambda path: path.stem)
def test_a_run_recorded_before_replays_on_todays_workflow(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    asyncio.run(Replayer(workflows=[FollowUpWorkflow, WelcomeSeriesWorkflow]).replay_workflow(history))
