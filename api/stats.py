"""/api/campaigns/{id}/stats: the numbers of a campaign (API.md "Stats summary")."""

from __future__ import annotations

from typing import Any, Literal

from litestar import Controller, get
from litestar.datastructures import State

from core.campaigns.definition import get_campaign
from core.db import session_scope
from core.stats import breakdowns, summary


def _reports_delivery(state: State, provider_name: str) -> bool:
    provider = state.registry.providers.get(provider_name)
    return bool(getattr(provider, "reports_delivery", True))


class StatsController(Controller):
    path = "/campaigns/{campaign_id:int}/stats"
    tags = ["stats"]

    @get("/", operation_id="campaignStats", sync_to_thread=True)
    def summary(
        self, state: State, campaign_id: int, bots: Literal["exclude", "include"] = "exclude"
    ) -> dict[str, Any]:
        """Sent, delivered, failed, clicks (bot-filtered by default, raw beside), CTR, replies, conversions."""
        with session_scope(state.engine, read_only=True) as session:
            campaign = get_campaign(session, campaign_id)
            return summary.summary(
                session,
                campaign_id,
                reports_delivery=_reports_delivery(state, campaign.provider),
                include_bots=bots == "include",
            )

    @get("/variants", operation_id="campaignVariantStats", sync_to_thread=True)
    def variants(self, state: State, campaign_id: int) -> dict[str, Any]:
        """Each variant side by side with its chance to win on the campaign's metric; "all variants"
        counts a contact once even if it received several."""
        with session_scope(state.engine, read_only=True) as session:
            campaign = get_campaign(session, campaign_id)
            return breakdowns.variants(
                session, campaign_id, reports_delivery=_reports_delivery(state, campaign.provider)
            )

    @get("/links", operation_id="campaignLinkStats", sync_to_thread=True)
    def links(self, state: State, campaign_id: int) -> dict[str, Any]:
        """Split of clicks per link: human clicks, unique contacts, and bot clicks beside."""
        with session_scope(state.engine, read_only=True) as session:
            get_campaign(session, campaign_id)
            return breakdowns.links(session, campaign_id)

    @get("/devices", operation_id="campaignDeviceStats", sync_to_thread=True)
    def devices(
        self, state: State, campaign_id: int, bots: Literal["exclude", "include"] = "exclude"
    ) -> dict[str, Any]:
        """Clicks by operating system and by device type (mobile, tablet, desktop, other)."""
        with session_scope(state.engine, read_only=True) as session:
            get_campaign(session, campaign_id)
            return breakdowns.devices(session, campaign_id, include_bots=bots == "include")

    @get("/click-timing", operation_id="campaignClickTiming", sync_to_thread=True)
    def click_timing(self, state: State, campaign_id: int) -> dict[str, Any]:
        """Histogram of the time from delivery (else send) to each contact's first human click."""
        with session_scope(state.engine, read_only=True) as session:
            campaign = get_campaign(session, campaign_id)
            return breakdowns.click_timing(
                session, campaign_id, reports_delivery=_reports_delivery(state, campaign.provider)
            )

    @get("/trend", operation_id="campaignTrend", sync_to_thread=True)
    def trend(self, state: State, campaign_id: int, interval: str = "day", tz: str = "UTC") -> dict[str, Any]:
        """Sent, delivered, clicks, replies and conversions per day, week or month (in `tz`)."""
        with session_scope(state.engine, read_only=True) as session:
            get_campaign(session, campaign_id)
            return breakdowns.trend(session, campaign_id, interval=interval, tz=tz)

    @get("/funnel", operation_id="campaignFunnel", sync_to_thread=True)
    def funnel(self, state: State, campaign_id: int) -> dict[str, Any]:
        """Contacts sent → delivered → clicked → converted; direct vs influenced conversions."""
        with session_scope(state.engine, read_only=True) as session:
            get_campaign(session, campaign_id)
            return breakdowns.funnel(session, campaign_id)

    @get("/errors", operation_id="campaignErrorStats", sync_to_thread=True)
    def errors(self, state: State, campaign_id: int) -> dict[str, Any]:
        """Failed and undelivered messages per error code, with the provider's text for it; `share` is
        the code's part of all failed and undelivered messages."""
        with session_scope(state.engine, read_only=True) as session:
            get_campaign(session, campaign_id)
            return summary.errors(session, campaign_id)
