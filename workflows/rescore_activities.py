"""The re-score activity: a campaign's clicks judged again with this worker's bot filters
(core/tracking/rescore.py), heartbeating its progress after every chunk (workflows/rescore.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.campaigns.definition import CampaignNotFound
from core.hooks.registry import PluginRegistry
from core.tracking.rescore import rescore_campaign
from workflows.rescore import RESCORE_ACTIVITY, RescoreInput, RescoreProgress


class RescoreActivities:
    def __init__(self, engine: Engine, registry: PluginRegistry) -> None:
        self.engine = engine
        self.registry = registry

    @activity.defn(name=RESCORE_ACTIVITY)
    def rescore(self, job: RescoreInput) -> dict[str, Any]:
        """Synchronous (the worker's thread pool): the judging is CPU and database work."""

        def heartbeat(clicks: int, changed: int) -> None:
            activity.heartbeat(asdict(RescoreProgress(clicks, changed)))

        try:
            result = rescore_campaign(
                self.engine,
                job.campaign_id,
                self.registry.bot_filters,
                self.registry.together_filters,
                chunk=job.chunk,
                progress=heartbeat,
            )
        except CampaignNotFound as exc:  # deleted since the API checked it: retrying cannot help
            raise ApplicationError(str(exc), type="CampaignNotFound", non_retryable=True) from None
        return dict(result)

    def all(self) -> list[Callable[..., Any]]:
        return [self.rescore]
