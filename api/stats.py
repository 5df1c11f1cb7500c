"""/api/campaigns/{id}/stats: the numbers of a campaign (API.md "Stats summary")."""

from __future__ import annotations

from typing import Any, Literal

from litestar import Controller, get
from litestar.datastructures import State

from core import stats
from core.campaigns import get_campaign
from core.db import session_scope


class StatsController(Controller):
    path = "/campaigns/{campaign_id:int}/stats"
    tags = ["stats"]

    @get("/", operation_id="campaignStats", sync_to_thread=True)
    def summary(self, state: State, campaign_id: int, bots: Literal["exclude", "include"] = "exclude") -> dict[str, Any]:
        """Sent, delivered, failed, clicks (bot-filtered by default, raw beside), CTR, replies, conversions."""
        with session_scope(state.engine, read_only=True) as session:
            campaign = get_campaign(session, campaign_id)
            provider = state.registry.providers.get(campaign.provider)
            reports_delivery = bool(getattr(provider, "reports_delivery", True))
            return stats.summary(session, campaign_id, reports_delivery=reports_delivery,
                                 include_bots=bots == "include")
