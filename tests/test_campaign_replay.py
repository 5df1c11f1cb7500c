"""Campaign workflows that were running before a deploy go on after it: histories recorded with
the workflow as it was before issue 10 (activities called by name, statuses set with `only_from`
lists) replay on today's code without a nondeterminism error.

tests/histories/campaign_<case>.json were recorded from commit 115b5d2's workflows/campaign.py,
with its nine activities mocked under their registered names: a plain send in waves; A/B tests
decided by statistics, by hand, by "decide now" and held; a scheduled start; a cancel while
scheduled; pause, resume and cancel mid-send; a quiet-hours wait; a retry-failed run.
tests/histories/record.py records them anew (run it on the commit before a workflow change).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from workflows.campaign import CampaignWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("campaign_*.json"))


def test_every_recorded_case_is_there() -> None:
    assert len(HISTORIES) == 10


@pytest.mark.parametrize("path", HISTORIES, ids=lambda path: path.stem)
def test_a_run_recorded_before_replays_on_todays_workflow(path: Path) -> None:
    workflow_id = path.stem.replace("campaign_", "campaign-")
    history = WorkflowHistory.from_json(workflow_id, path.read_text())
    asyncio.run(Replayer(workflows=[CampaignWorkflow]).replay_workflow(history))
