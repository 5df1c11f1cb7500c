"""The numbers of a campaign (API.md "Stats summary" and the other stats routes)."""

from typing import Literal, NotRequired, TypedDict

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
    handed to the provider, retries included. The control group never counts. `conversions` =
    distinct converting contacts (only the campaign's `conversion.event`, default `purchase`),
    `conversion_events` = those events, `revenue` = their sum. `opt_outs` = distinct contacts who
    opted out after the campaign's message: a STOP reply, or the carrier refusing the message
    because the recipient unsubscribed (e.g. Twilio 21610)."""

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
    conversion_events: int
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
    """One hour, day, week or month (starting at `start`, in the asked time zone) of the campaign's
    activity: `unique_clicks` and `conversions` are distinct contacts within the bucket,
    `conversion_events` the events and `revenue` their sum (the events add up to the summary's)."""

    start: str
    sent: int
    delivered: int
    clicks: int
    unique_clicks: int
    replies: int
    conversions: int
    conversion_events: int
    revenue: float


class Trend(TypedDict):
    """The campaign's activity per bucket, oldest first; buckets without activity are left out."""

    interval: Literal["hour", "day", "week", "month"]
    tz: str
    buckets: list[TrendBucket]


class FunnelStep(TypedDict):
    """Distinct contacts that reached a step."""

    name: Literal["sent", "delivered", "clicked", "converted"]
    contacts: int


class Funnel(TypedDict):
    """Contacts sent → delivered → clicked → converted (of `variant`, null: every variant; never the
    control group); converting contacts direct (clicked first) or influenced, their
    `conversion_events` and `revenue`."""

    variant: str | None
    steps: list[FunnelStep]
    direct: int
    influenced: int
    conversion_events: int
    revenue: float


class VariantCounts(TypedDict):
    """Distinct contacts reached, clicking and converting (each contact once, by its latest message).

    `ctr` = unique human clickers / delivered (else / sent, when the provider reports no delivery;
    null on the control row, which is sent nothing); `conversions` = converting contacts (only the
    campaign's `conversion.event`), `conversion_events` their events, `revenue` their sum;
    `conversion_rate` = conversions / recipients. A variant row's conversions are attributed (last
    touch: this campaign's conversions); the control row's are counted on an intention-to-treat
    basis: held-out contacts with the event within the window from their touch, whoever it is
    attributed to."""

    recipients: int
    sent: int
    delivered: int
    unique_clicks: int
    ctr: float | None
    conversions: int
    conversion_events: int
    conversion_rate: float
    revenue: float


class Uplift(TypedDict):
    """A variant's conversion rate over the control group's, as fractions (0.05 = 5 points / 5 %):
    `absolute` = rate − control rate, `relative` = absolute / control rate (null when the control
    converted nobody), a 95 % `interval` of `absolute`, and the chance the variant is better.

    Both rates are on an intention-to-treat basis, not last-touch attribution: every contact of the
    row (sent, failed, cancelled or never sent) and of the control group counts, converting when it
    had an event named by `conversion.event` within `window_hours` of its touch (its send, else its
    attempt, else its snapshot; a held-out contact: when the campaign sent the batch beside it),
    whichever campaign the event is attributed to. So the variant's rate here may differ from its
    row's `conversion_rate` (attributed)."""

    absolute: float | None
    relative: float | None
    interval: list[float] | None
    chance_better: float | None


class VariantStatsRow(VariantCounts):
    """One variant's counts (of the asked phase) with the statistics of the decision's evidence (the
    test cohort of an A/B campaign, whatever the phase): its chance to be best on the campaign's
    metric, the expected loss of choosing it, a 95 % interval of its rate and a p-value (null where
    nothing is compared). The control row (`is_control`) holds the held-out contacts: recipients and
    conversions, nothing sent, no statistics; with a control, every other row has its `uplift`
    (null while either side has no recipients)."""

    variant: str
    is_control: bool
    chance_to_win: float | None
    expected_loss: float | None
    interval: list[float] | None
    p_value: float | None
    uplift: NotRequired[Uplift | None]


class DecidedOn(TypedDict):
    """When the statistics named the winner, and the maturity window they counted clicks in (a
    click counted when it came within that many seconds of delivery, among messages delivered at
    least that long before); the rows' statistics are those of that moment."""

    as_of: str
    horizon_seconds: float | None


class SampleRatio(TypedDict):
    """The sample-ratio check: the observed split of the decision's evidence against the weights
    (chi-squared); `ok` false when p < 0.001. p_value null when there is nothing to check."""

    p_value: float | None
    ok: bool


class VariantStats(TypedDict):
    """Each variant side by side, the control group, "all variants" with every contact once (never
    the control), the sample-ratio check and the winner if chosen, with why.

    `phase`: the messages the count fields count (test | remainder | all); `evidence`: what the
    statistics and `srm` describe (`test`: the test cohort of an A/B campaign; `all`: the audience)."""

    metric: Literal["ctr", "unique_clicks", "conversions", "revenue"]
    phase: Literal["test", "remainder", "all"]
    evidence: Literal["test", "all"]
    decided_on: DecidedOn | None
    variants: list[VariantStatsRow]
    all_variants: VariantCounts
    winner: Winner | None
    srm: SampleRatio
