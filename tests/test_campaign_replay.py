"""Campaign workflows that were running before a deploy go on after it: recorded histories
replay on today's code without a nondeterminism error, so a change that would break running
campaigns fails CI (such changes go behind `workflow.patched`).

- tests/histories/campaign_<case>.json: the workflow before issue 10 (commit 115b5d2: activities
  called by name, statuses set with `only_from` lists, batches in waves, signals): a plain send;
  A/B tests decided by statistics, by hand, by "decide now" and held (remainder cancelled); a
  scheduled start; a cancel while scheduled; pause, resume and cancel mid-send; a quiet-hours
  wait; a retry-failed run.
- tests/histories/issue11/campaign_<case>.json: the workflow of issue 11 (sliding window, control
  by updates, `held`, the status lookup after the settle window): the same paths and held then
  picked, held then cancelled, cancelled mid-batch, a control group.
tests/histories/record.py records them anew (run it on the commit before a workflow change).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from workflows.campaign import CampaignWorkflow

ROOT = Path(__file__).parent / "histories"
HISTORIES = sorted(ROOT.glob("campaign_*.json")) + sorted((ROOT / "issue11").glob("campaign_*.json"))


def test_every_recorded_case_is_there() -> None:
    assert len(HISTORIES) == 10 + 13
    recorded = {path.stem for path in HISTORIES if path.parent.name == "issue11"}
    paths = {"all", "ab_statistics", "ab_held_picked", "ab_held_cancelled", "control_group", "pause_resume"}
    assert {f"campaign_{name}" for name in paths | {"cancel_mid_batch", "retry"}} <= recorded


@pytest.mark.parametrize("path", HISTORIES, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_a_run_recorded_before_replays_on_todays_workflow(path: Path) -> None:
    workflow_id = path.stem.replace("campaign_", "campaign-")
    history = WorkflowHistory.from_json(workflow_id, path.read_text())
    asyncio.run(Replayer(workflows=[CampaignWorkflow]).replay_workflow(history))
