"""A campaign as the API shows it (API.md "A campaign"), its preview and its test sends."""

from typing import Any, Literal, NotRequired, TypedDict

from api.schemas.fields import CampaignKindName, CampaignStatusName, Encoding, OptionalTimestamp, Timestamp
from api.schemas.rows import MessageRow


class CampaignVariant(TypedDict):
    """One message text of the campaign; a control variant is held out and never sent."""

    id: int
    name: str
    body: str
    weight: float
    is_control: bool


class Progress(TypedDict):
    """How far sending is: messages created for the campaign, still pending, and processed;
    `awaiting_report`: handed to the provider (sent, or sending with a provider id) and no
    delivery report yet — looked up at the provider after the settle window when it can say."""

    recipients: int
    messages: int
    pending: int
    processed: int
    fraction: float
    awaiting_report: int


class Winner(TypedDict):
    """The A/B test's outcome: the variant sent to the remainder (null: all by weight, or held) and why."""

    variant: str | None
    metric: str
    method: Literal["bayesian", "fallback", "manual"]
    reason: str
    hold: NotRequired[bool]  # the remainder is held until a variant is picked
    evidence: NotRequired[dict[str, Any]]  # the statistics' figures when they decided (`/stats/variants`)


class AudienceSettings(TypedDict):
    """Who the campaign is for, as created: everybody, these contacts, or contacts with these attributes."""

    all: NotRequired[bool]
    contact_ids: NotRequired[list[int]]
    attributes: NotRequired[dict[str, Any]]
    campaign: NotRequired[int]  # with `engagement`: that campaign's clickers, non-clickers, repliers, …
    engagement: NotRequired[str]


class AbTestSettings(TypedDict):
    """The A/B test as created: the share tested, the wait, the metric, the sample and the fallback."""

    test_percent: float
    wait_seconds: float
    metric: Literal["ctr", "unique_clicks", "conversions", "revenue"]
    min_sample: int
    fallback: str


class QuietHoursSettings(TypedDict):
    """Local times of day (HH:MM, the contact's time zone) between which nothing is sent."""

    start: str
    end: str


class TrackingSettings(TypedDict):
    """Whether links are replaced by tracked short links, and the UTM parameters added to them."""

    shorten_links: bool
    utm: dict[str, str] | None


class ConversionSettings(TypedDict):
    """Which conversion event counts for the campaign, and for how long after a message."""

    event: str
    window_hours: float


class CampaignDetail(TypedDict):
    """A campaign: status, variants, progress, A/B winner, and the settings it was created with."""

    id: int
    name: str
    status: CampaignStatusName
    provider: str
    variants: list[CampaignVariant]
    winner: Winner | None
    progress: Progress
    error: str | None
    created_at: Timestamp
    launched_at: OptionalTimestamp
    completed_at: OptionalTimestamp
    audience: AudienceSettings
    control_percent: float
    ab_test: AbTestSettings | None
    variant_by_attribute: str | None
    schedule_at: OptionalTimestamp
    quiet_hours: QuietHoursSettings | None
    rate_limit_per_second: float | None
    tracking: TrackingSettings
    conversion: ConversionSettings | None
    kind: CampaignKindName  # campaign | follow_up | automation
    parent_id: int | None  # a follow-up's campaign
    run_id: int | None  # the automation run that made it
    follow_ups: list[dict[str, Any]]  # follow_up runs started at launch (the follow_up params less campaign_id)


class CampaignPage(TypedDict):
    """A page of campaigns by id; `next` is the cursor of the following page, null on the last."""

    items: list[CampaignDetail]
    next: str | None


class PreviewSample(TypedDict):
    """One variant rendered for one contact, as it would be sent, with what it costs and the links in it."""

    contact_id: int
    phone: str
    body: str
    characters: int
    encoding: Encoding
    segments: int
    warnings: list[str]
    links: list[str]


class PreviewVariant(TypedDict):
    """A variant's samples, one per previewed contact."""

    variant: str
    samples: list[PreviewSample]


class CampaignPreview(TypedDict):
    """Each variant that is sent (controls are not) rendered for a few contacts; nothing is stored."""

    variants: list[PreviewVariant]


class SentTestMessages(TypedDict):
    """The test messages, as sent: one per phone and sendable variant, phase `test_send`."""

    messages: list[MessageRow]
