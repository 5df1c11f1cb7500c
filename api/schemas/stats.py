"""The numbers of a campaign (API.md "Stats summary" and the other stats routes)."""

from typing import Literal, TypedDict

from api.schemas.campaigns import Winner
from api.schemas.fields import CampaignStatusName, Timestamp


class ClickCounts(TypedDict):
    """Clicks of the campaign: `total`/`unique` as asked (bots left out by default), raw counts beside."""

    total: int
    unique: int
    bots_total: int
    raw_total: int
    raw_unique: int


class StatsSummary(TypedDict):
    """The campaign's numbers; rates are fractions 0..1 and `unique` counts distinct contacts.

    A retried contact counts once, by its latest attempt (`recipients` never exceeds the audience;
    a failure that a retry delivered is no longer a failure); `attempts` counts every message
    handed to the provider, retries included."""

    campaign_id: int
    status: CampaignStatusName
    recipients: int
    attempts: int
    queued: int
    sent: int
    delivered: int
    undelivered: int
    failed: int
    delivery_rate: float
    clicks: ClickCounts
    ctr: float
    ctr_basis: Literal["delivered", "sent"]
    replies: int
    reply_rate: float
    opt_outs: int
    conversions: int
    revenue: float
    bots: Literal["included", "excluded"]
    updated_at: Timestamp


class ErrorCount(TypedDict):
    """Failed and undelivered messages with one error code; `share` is their part of all of them."""

    code: str
    text: str | None
    count: int
    share: float


class ErrorStats(TypedDict):
    """Failed and undelivered messages per error code, the most frequent first."""

    errors: list[ErrorCount]


class LinkCount(TypedDict):
    """Clicks on one tracked link (a position in a variant's body): human clicks and contacts, bots beside."""

    link_id: int
    url: str
    position: int
    variant: str
    clicks: int
    unique_clicks: int
    bot_clicks: int


class LinkStats(TypedDict):
    """Clicks per tracked link, by variant and position."""

    links: list[LinkCount]


class DeviceCount(TypedDict):
    """Clicks and clicking contacts of one operating system or device type (`other` when unknown)."""

    name: str
    clicks: int
    unique_clicks: int


class DeviceStats(TypedDict):
    """Clicks by operating system and by device type (mobile, tablet, desktop, other), most first."""

    os: list[DeviceCount]
    device: list[DeviceCount]


class TimingBucket(TypedDict):
    """Contacts whose first human click came within this time of the message (null bound: later)."""

    label: str
    upper_seconds: int | None
    contacts: int


class ClickTiming(TypedDict):
    """Histogram of the time from delivery (`basis` sent: from the send) to each contact's first human click."""

    basis: Literal["delivered", "sent"]
    buckets: list[TimingBucket]


class TrendBucket(TypedDict):
    """One day, week or month (starting at `start`, in the asked time zone) of the campaign's activity."""

    start: str
    sent: int
    delivered: int
    clicks: int
    unique_clicks: int
    replies: int
    conversions: int


class Trend(TypedDict):
    """The campaign's activity per bucket, oldest first; buckets without activity are left out."""

    interval: Literal["day", "week", "month"]
    tz: str
    buckets: list[TrendBucket]


class FunnelStep(TypedDict):
    """Distinct contacts that reached a step."""

    name: Literal["sent", "delivered", "clicked", "converted"]
    contacts: int


class Funnel(TypedDict):
    """Contacts sent → delivered → clicked → converted; conversions direct (clicked first) or influenced."""

    steps: list[FunnelStep]
    direct: int
    influenced: int
    revenue: float


class VariantCounts(TypedDict):
    """Distinct contacts reached, clicking and converting, with the rates over delivered (else sent)."""

    recipients: int
    sent: int
    delivered: int
    unique_clicks: int
    ctr: float
    conversions: int
    conversion_rate: float
    revenue: float


class VariantStatsRow(VariantCounts):
    """One variant's counts with its chance to be best on the campaign's metric (null: nothing compared)."""

    variant: str
    is_control: bool
    chance_to_win: float | None
    expected_loss: float | None
    interval: list[float] | None


class VariantStats(TypedDict):
    """Each variant side by side, "all variants" with every contact once, and the winner if chosen."""

    metric: Literal["ctr", "unique_clicks", "conversions", "revenue"]
    variants: list[VariantStatsRow]
    all_variants: VariantCounts
    winner: Winner | None
