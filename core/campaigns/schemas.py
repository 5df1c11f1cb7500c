"""Request bodies of the public API (API.md), separate from the table models."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.campaigns.engagement import ENGAGEMENTS, Engagement

MAX_ID = 2**63 - 1  # ids are 64-bit integers: a bigger one can name nothing
# An id in a request body: 1 to 2**63 - 1, else a 400 naming the field (never a query that overflows).
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VariantIn(Strict):
    name: str = Field(min_length=1, max_length=50)
    body: str = Field(min_length=1, max_length=5000)
    weight: float = Field(default=1, ge=0)
    is_control: bool = False


class AudienceIn(Strict):
    all: bool | None = None
    contact_ids: list[RowId] | None = None
    attributes: dict[str, Any] | None = None
    # An engagement audience: recipients of campaign `campaign` who did (not) engage
    # (core/campaigns/engagement.py); the two come together.
    campaign: RowId | None = None
    engagement: Engagement | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> AudienceIn:
        if self.campaign is not None and self.engagement is None:
            raise ValueError(f"audience.engagement is required with audience.campaign: one of {', '.join(ENGAGEMENTS)}")
        if self.engagement is not None and self.campaign is None:
            raise ValueError(
                "audience.campaign (the id of the campaign engaged with) is required with audience.engagement"
            )
        kinds = ("all", "contact_ids", "attributes", "campaign")
        given = [k for k in kinds if getattr(self, k) not in (None, False)]
        if len(given) != 1:
            raise ValueError(
                "audience needs exactly one of 'all': true, 'contact_ids', 'attributes' or 'campaign' "
                "(with 'engagement')"
            )
        return self


class AbTestIn(Strict):
    test_percent: float = Field(default=20, gt=0, le=100)
    wait_seconds: float = Field(default=7200, ge=0)
    metric: Literal["ctr", "unique_clicks", "conversions", "revenue"] = "ctr"
    min_sample: int = Field(default=100, ge=0)
    fallback: str = "send_all_variants"
    # The decision's outcome window (docs/ab-testing.md "Matured outcomes"); None: 1,800 s for
    # clicks, the conversion window for conversions and revenue.
    maturity_seconds: float | None = Field(default=None, gt=0)

    @field_validator("fallback")
    @classmethod
    def _fallback(cls, value: str) -> str:
        if value in ("send_all_variants", "hold") or (value.startswith("send_variant:") and len(value) > 13):
            return value
        raise ValueError("fallback must be 'send_all_variants', 'hold' or 'send_variant:<name>'")


class QuietHoursIn(Strict):
    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f"{value!r} is not a time of day like 21:00")
        return value


class TrackingIn(Strict):
    shorten_links: bool = True
    utm: dict[str, str] | None = None


class ConversionIn(Strict):
    event: str = Field(min_length=1, max_length=100)
    window_hours: float = Field(default=72, gt=0)


class FollowUpIn(Strict):
    """A follow-up of the campaign (the built-in `follow_up` automation's params less
    `campaign_id`), started when the campaign is launched."""

    after_seconds: float = Field(ge=0, le=10 * 365 * 86400)
    audience: Literal["clicked", "not_clicked", "replied", "not_replied", "converted", "not_converted"] = "not_clicked"
    body: str = Field(min_length=1, max_length=5000)
    provider: str | None = None
    name: str | None = Field(default=None, max_length=200)


class CampaignCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    provider: str = "fake"
    audience: AudienceIn = Field(default_factory=lambda: AudienceIn(all=True))
    variants: list[VariantIn] = Field(min_length=1, max_length=26)
    control_percent: float = Field(default=0, ge=0, lt=100)
    ab_test: AbTestIn | None = None
    variant_by_attribute: str | None = None
    schedule_at: datetime | None = None
    quiet_hours: QuietHoursIn | None = None
    rate_limit_per_second: float | None = Field(default=None, gt=0)
    tracking: TrackingIn = Field(default_factory=TrackingIn)
    conversion: ConversionIn | None = None
    follow_ups: list[FollowUpIn] | None = Field(default=None, max_length=10)

    @model_validator(mode="after")
    def _variants(self) -> CampaignCreate:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        if not any(not v.is_control for v in self.variants):
            raise ValueError("at least one variant must not be a control")
        if sum(v.weight for v in self.variants if not v.is_control) <= 0:
            raise ValueError("variant weights must add up to more than 0")
        if self.ab_test is not None:
            if self.variant_by_attribute:
                raise ValueError("ab_test and variant_by_attribute cannot be combined")
            if len([v for v in self.variants if not v.is_control]) < 2:
                raise ValueError("an A/B test needs at least two variants that are not controls")
            fallback = self.ab_test.fallback
            if fallback.startswith("send_variant:") and fallback.split(":", 1)[1] not in names:
                raise ValueError(f"ab_test.fallback names {fallback.split(':', 1)[1]!r}, which is not a variant")
        return self


class PreviewIn(Strict):
    contact_ids: list[RowId] | None = None
    limit: int = Field(default=3, ge=1, le=50)


class WinnerIn(Strict):
    variant: str | None = None


class TestSendIn(Strict):
    phones: list[str] = Field(min_length=1, max_length=20)
    # An opted-out contact's phone is refused (422) unless this says to send to it anyway.
    allow_opted_out: bool = False
