"""The re-score of a campaign's clicks as a background job: `POST /api/campaigns/{id}/rescore`
starts this workflow (id `campaign-<id>-rescore`) and answers 202; `GET` on the same path reads
its state, and its progress from the activity's heartbeats (api/rescore_jobs.py).

A million clicks take minutes, too long for a request. The work is one activity
(workflows/rescore_activities.py: core/tracking/rescore.py on a worker, with that worker's bot
filters), which heartbeats after every chunk; a worker that dies mid-way loses it to the heartbeat
timeout, and the retry judges the campaign again from its first click (a verdict already
rewritten is rewritten to itself: nothing changes twice, and the counts, kept by the database's
triggers, stay exact whichever attempt wrote a row).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

RESCORE_ACTIVITY = "rescore_campaign"
# A chunk of 5,000 clicks takes well under a second; a minute without a heartbeat is a dead worker.
HEARTBEAT_TIMEOUT = timedelta(seconds=60)
# Ten million clicks at a few thousand a second, with room: the job's bound, not its cost.
START_TO_CLOSE = timedelta(hours=6)


@dataclass
class RescoreInput:
    campaign_id: int
    chunk: int = 5000


@dataclass
class RescoreProgress:
    """What an attempt has done so far: clicks judged and verdicts changed (a heartbeat's details)."""

    clicks: int = 0
    changed: int = 0


@workflow.defn(name="RescoreWorkflow")
class RescoreWorkflow:
    @workflow.run
    async def run(self, job: RescoreInput) -> dict[str, Any]:
        result: dict[str, Any] = await workflow.execute_activity(
            RESCORE_ACTIVITY,
            job,
            start_to_close_timeout=START_TO_CLOSE,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                maximum_interval=timedelta(seconds=30),
                maximum_attempts=5,
                non_retryable_error_types=["CampaignNotFound"],
            ),
        )
        return result
