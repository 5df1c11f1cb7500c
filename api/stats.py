"""/api/campaigns/{id}/stats: the numbers of a campaign (API.md "Stats summary")."""

from __future__ import annotations

from typing import cast

from litestar import Controller, get
from litestar.params import Parameter
from sqlalchemy.engine import Engine

from api.dependencies import Registry
from api.params import Id, choice, one_of
from api.schemas.stats import ClickTiming, DeviceStats, ErrorStats, Funnel, LinkStats, StatsSummary, Trend, VariantStats
from core.campaigns.definition import get_campaign
from core.db import session_scope
from core.stats import breakdowns, summary
from core.stats import variants as variant_stats

BOTS = ("exclude", "include")
BOTS_PARAM = choice(BOTS, default="exclude", description="exclude (default) | include: bot clicks in the counts")


class StatsController(Controller):
    path = "/campaigns/{campaign_id:int}/stats"
    tags = ["stats"]

    @get("/", operation_id="campaignStats", sync_to_thread=True)
    def summary(
        self,
        engine: Engine,
        registry: Registry,
        campaign_id: Id,
        bots: str = BOTS_PARAM,
    ) -> StatsSummary:
        """Sent, delivered, failed, clicks (bot-filtered by default, raw beside), CTR, replies, opt-outs
        (STOP replies and carrier opt-outs), conversions (converting contacts), conversion events and
        revenue; the control group never counts."""
        one_of("bots", bots, BOTS)
        with session_scope(engine, read_only=True) as session:
            campaign = get_campaign(session, campaign_id)
            return cast(
                StatsSummary,
                summary.summary(
                    session,
                    campaign_id,
                    reports_delivery=registry.reports_delivery(campaign.provider),
                    include_bots=bots == "include",
                    unsubscribed_codes=registry.unsubscribed_error_codes(campaign.provider),
                ),
            )

    @get("/variants", operation_id="campaignVariantStats", sync_to_thread=True)
    def variants(
        self,
        engine: Engine,
        registry: Registry,
        campaign_id: Id,
        phase: str = choice(
            variant_stats.PHASES,
            default="all",
            description="test | remainder | all (default): the messages the count fields count",
        ),
    ) -> VariantStats:
        """Each variant side by side (the counts of `phase`: test | remainder | all), the control group
        with each variant's uplift over it, "all variants" (a contact once, never the control), the
        sample-ratio check and the winner with why. Chance to win, expected loss, interval and p-value
        describe the evidence the decision used (an A/B campaign's test cohort) whatever `phase`."""
        one_of("phase", phase, variant_stats.PHASES)
        with session_scope(engine, read_only=True) as session:
            campaign = get_campaign(session, campaign_id)
            return cast(
                VariantStats,
                variant_stats.variants(
                    session, campaign_id, reports_delivery=registry.reports_delivery(campaign.provider), phase=phase
                ),
            )

    @get("/links", operation_id="campaignLinkStats", sync_to_thread=True)
    def links(self, engine: Engine, campaign_id: Id) -> LinkStats:
        """Split of clicks per link: human clicks, unique contacts, and bot clicks beside."""
        with session_scope(engine, read_only=True) as session:
            get_campaign(session, campaign_id)
            return cast(LinkStats, breakdowns.links(session, campaign_id))

    @get("/devices", operation_id="campaignDeviceStats", sync_to_thread=True)
    def devices(self, engine: Engine, campaign_id: Id, bots: str = BOTS_PARAM) -> DeviceStats:
        """Clicks by operating system and by device type (mobile, tablet, desktop, other)."""
        one_of("bots", bots, BOTS)
        with session_scope(engine, read_only=True) as session:
            get_campaign(session, campaign_id)
            return cast(DeviceStats, breakdowns.devices(session, campaign_id, include_bots=bots == "include"))

    @get("/click-timing", operation_id="campaignClickTiming", sync_to_thread=True)
    def click_timing(self, engine: Engine, registry: Registry, campaign_id: Id) -> ClickTiming:
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
    def trend(
        self,
        engine: Engine,
        campaign_id: Id,
        interval: str = choice(breakdowns.TREND_INTERVALS, default="day", description="hour | day | week | month"),
        tz: str = Parameter(default="UTC", description="the IANA time zone the buckets start in (default UTC)"),
    ) -> Trend:
        """Sent, delivered, clicks, replies, conversions (converting contacts), conversion events and
        revenue per hour, day, week or month (in `tz`); the control group never counts."""
        one_of("interval", interval, breakdowns.TREND_INTERVALS)
        with session_scope(engine, read_only=True) as session:
            get_campaign(session, campaign_id)
            return cast(Trend, breakdowns.trend(session, campaign_id, interval=interval, tz=tz))

    @get("/funnel", operation_id="campaignFunnel", sync_to_thread=True)
    def funnel(
        self,
        engine: Engine,
        campaign_id: Id,
        variant: str | None = Parameter(default=None, description="one variant's funnel (its name); default all"),
    ) -> Funnel:
        """Contacts sent → delivered → clicked → converted (of one variant with `?variant=`; never the
        control group); direct vs influenced converting contacts, conversion events and revenue. An
        unknown variant is a 400 naming the campaign's variants."""
        with session_scope(engine, read_only=True) as session:
            get_campaign(session, campaign_id)
            return cast(Funnel, breakdowns.funnel(session, campaign_id, variant=variant or None))

    @get("/errors", operation_id="campaignErrorStats", sync_to_thread=True)
    def errors(self, engine: Engine, campaign_id: Id) -> ErrorStats:
        """Failed and undelivered messages, and those held back by the frequency cap (`frequency_cap`),
        per error code, with the provider's text for it; `share` is the code's part of all of them."""
        with session_scope(engine, read_only=True) as session:
            get_campaign(session, campaign_id)
            return cast(ErrorStats, summary.errors(session, campaign_id))
