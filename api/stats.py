"""/api/campaigns/{id}/stats: the numbers of a campaign (API.md "Stats summary")."""

from __future__ import annotations

from typing import Literal, cast

from litestar import Controller, get
from sqlalchemy.engine import Engine

from api.dependencies import Registry
from api.schemas.stats import ClickTiming, DeviceStats, ErrorStats, Funnel, LinkStats, StatsSummary, Trend, VariantStats
from core.campaigns.definition import get_campaign
from core.db import session_scope
from core.stats import breakdowns, summary


class StatsController(Controller):
    path = "/campaigns/{campaign_id:int}/stats"
    tags = ["stats"]

    @get("/", operation_id="campaignStats", sync_to_thread=True)
    def summary(
        self,
        engine: Engine,
        registry: Registry,
        campaign_id: int,
        bots: Literal["exclude", "include"] = "exclude",
    ) -> StatsSummary:
        """Sent, delivered, failed, clicks (bot-filtered by default, raw beside), CTR, replies, conversions."""
        with session_scope(engine, read_only=True) as session:
            campaign = get_campaign(session, campaign_id)
            return cast(
                StatsSummary,
                summary.summary(
                    session,
                    campaign_id,
                    reports_delivery=registry.reports_delivery(campaign.provider),
                    include_bots=bots == "include",
                ),
            )

    @get("/variants", operation_id="campaignVariantStats", sync_to_thread=True)
    def variants(self, engine: Engine, registry: Registry, campaign_id: int) -> VariantStats:
        """Each variant side by side with its chance to win on the campaign's metric; "all variants"
        counts a contact once even if it received several."""
        with session_scope(engine, read_only=True) as session:
            campaign = get_campaign(session, campaign_id)
            return cast(
                VariantStats,
                breakdowns.variants(
                    session, campaign_id, reports_delivery=registry.reports_delivery(campaign.provider)
                ),
            )

    @get("/links", operation_id="campaignLinkStats", sync_to_thread=True)
    def links(self, engine: Engine, campaign_id: int) -> LinkStats:
        """Split of clicks per link: human clicks, unique contacts, and bot clicks beside."""
        with session_scope(engine, read_only=True) as session:
            get_campaign(session, campaign_id)
            return cast(LinkStats, breakdowns.links(session, campaign_id))

    @get("/devices", operation_id="campaignDeviceStats", sync_to_thread=True)
    def devices(self, engine: Engine, campaign_id: int, bots: Literal["exclude", "include"] = "exclude") -> DeviceStats:
        """Clicks by operating system and by device type (mobile, tablet, desktop, other)."""
        with session_scope(engine, read_only=True) as session:
            get_campaign(session, campaign_id)
            return cast(DeviceStats, breakdowns.devices(session, campaign_id, include_bots=bots == "include"))

    @get("/click-timing", operation_id="campaignClickTiming", sync_to_thread=True)
    def click_timing(self, engine: Engine, registry: Registry, campaign_id: int) -> ClickTiming:
        """Histogram of the time from delivery (else send) to each contact's first human click."""
        with session_scope(engine, read_only=True) as session:
            campaign = get_campaign(session, campaign_id)
            return cast(
                ClickTiming,
                breakdowns.click_timing(
                    session, campaign_id, reports_delivery=registry.reports_delivery(campaign.provider)
                ),
            )

    @get("/trend", operation_id="campaignTrend", sync_to_thread=True)
    def trend(self, engine: Engine, campaign_id: int, interval: str = "day", tz: str = "UTC") -> Trend:
        """Sent, delivered, clicks, replies and conversions per day, week or month (in `tz`)."""
        with session_scope(engine, read_only=True) as session:
            get_campaign(session, campaign_id)
            return cast(Trend, breakdowns.trend(session, campaign_id, interval=interval, tz=tz))

    @get("/funnel", operation_id="campaignFunnel", sync_to_thread=True)
    def funnel(self, engine: Engine, campaign_id: int) -> Funnel:
        """Contacts sent → delivered → clicked → converted; direct vs influenced conversions."""
        with session_scope(engine, read_only=True) as session:
            get_campaign(session, campaign_id)
            return cast(Funnel, breakdowns.funnel(session, campaign_id))

    @get("/errors", operation_id="campaignErrorStats", sync_to_thread=True)
    def errors(self, engine: Engine, campaign_id: int) -> ErrorStats:
        """Failed and undelivered messages per error code, with the provider's text for it; `share` is
        the code's part of all failed and undelivered messages."""
        with session_scope(engine, read_only=True) as session:
            get_campaign(session, campaign_id)
            return cast(ErrorStats, summary.errors(session, campaign_id))
