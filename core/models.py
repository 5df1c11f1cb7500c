"""The whole data model (DESIGN.md "Data"): one table class per product noun.

Timestamps are aware UTC datetimes (sqlmodel's UTCDateTime: naive values are refused).
JSON columns hold free-form settings that the workflow reads as a whole.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    SmallInteger,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Field, SQLModel, col

from core.statuses import UNCOUNTED_PHASES, CampaignKind, CampaignStatus, MessageStatus, Phase, RunStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


# A person who may receive messages; phone is E.164 and unique.
class Contact(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    phone: str = Field(max_length=20, unique=True, index=True)
    name: str | None = Field(default=None, max_length=200)
    timezone: str | None = Field(default=None, max_length=64)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    opted_out_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


# One attribute of a contact as text (core/contacts/attributes.py `attribute_text`), a row per key
# that is not null: what attribute filters read, through (key, value, contact_id). Whoever writes
# `Contact.attributes` writes these rows in the same transaction (`store_attributes`).
class ContactAttribute(SQLModel, table=True):
    __tablename__ = "contact_attribute"
    __table_args__ = (
        Index("ix_contact_attribute_key_value", "key", "value", "contact_id"),
        {"sqlite_with_rowid": False},  # the primary key is the table: a probe by contact reads no more
    )
    contact_id: int = Field(foreign_key="contact.id", primary_key=True, ondelete="CASCADE")
    key: str = Field(primary_key=True, max_length=100)
    value: str = Field(sa_column=Column(Text, nullable=False))


# A campaign and everything it was created with; the workflow reads these settings.
class Campaign(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    status: str = Field(default=CampaignStatus.DRAFT, max_length=20, index=True)
    provider: str = Field(default="fake", max_length=50)
    audience: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    control_percent: float = 0
    ab_test: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    variant_by_attribute: str | None = Field(default=None, max_length=100)
    schedule_at: datetime | None = None
    quiet_hours: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    rate_limit_per_second: float | None = None
    tracking: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    conversion: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    winner: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    recipients: int = 0
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    launched_at: datetime | None = None
    completed_at: datetime | None = None
    # What sent it (API.md "Automations"): `campaign` (a marketer's), `follow_up` (of `parent_id`),
    # `automation` (a step of an automation); `run_id` is the automation run that made it.
    kind: str = Field(default=CampaignKind.CAMPAIGN, max_length=20, index=True)
    parent_id: int | None = Field(default=None, foreign_key="campaign.id", index=True)
    run_id: int | None = Field(default=None, index=True)
    # `follow_ups` of the campaign body: follow_up runs started when the campaign is launched.
    follow_ups: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


# One message text of a campaign; a control variant is held out and never sent.
class Variant(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("campaign_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    name: str = Field(max_length=50)
    body: str
    weight: float = 1
    is_control: bool = False


# A destination found in a variant's body, by position; short codes point at it.
class Link(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("variant_id", "position"),)
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    variant_id: int = Field(foreign_key="variant.id")
    position: int
    destination: str


# One row per recipient per send. The idempotency key makes creation and sending retry-safe.
class Message(SQLModel, table=True):
    __table_args__ = (
        Index("ix_message_campaign_status", "campaign_id", "status"),
        Index("ix_message_campaign_phase", "campaign_id", "phase"),  # retry and control rows
        Index("ix_message_provider_id", "provider", "provider_message_id"),
        Index("ix_message_contact_attempted", "contact_id", "attempted_at"),  # the frequency cap's count
        # The refused rows (an error code) only: opt-outs by an unsubscribed code (migration 0014).
        Index(
            "ix_message_campaign_error",
            "campaign_id",
            "error_code",
            sqlite_where=text("error_code IS NOT NULL"),
            postgresql_where=text("error_code IS NOT NULL"),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    # None for a test send to a phone that is no contact (core/campaigns/testsend.py).
    contact_id: int | None = Field(default=None, foreign_key="contact.id", index=True)
    variant_id: int | None = Field(default=None, foreign_key="variant.id")
    phase: str = Field(default=Phase.ALL, max_length=20)
    phone: str = Field(max_length=20)
    body: str
    characters: int = 0
    encoding: str = Field(default="GSM-7", max_length=8)
    segments: int = 1
    status: str = Field(default=MessageStatus.QUEUED, max_length=20)
    provider: str = Field(max_length=50)
    provider_message_id: str | None = Field(default=None, max_length=100)
    idempotency_key: str = Field(max_length=120, unique=True)
    error_code: str | None = Field(default=None, max_length=40)
    error_text: str | None = None
    attempts: int = 0
    attempted_at: datetime | None = None  # last handed to the provider (never for a held-out row)
    # A held-out control row's touch: when its campaign sent the batch it stands beside
    # (core/campaigns/audience.py `stamp_control_touch`); null for every other row.
    touched_at: datetime | None = None
    queued_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = Field(default=None, index=True)  # the redirect preloads codes just sent
    delivered_at: datetime | None = None
    failed_at: datetime | None = None
    status_changed_at: datetime = Field(default_factory=utcnow)
    # A later retry row of the same contact replaces this message in the campaign's numbers: set by
    # the database when that retry row is inserted (migration 0013's triggers). No Python-side
    # column default: an insert that leaves it out gets the server's (false).
    superseded: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))


# A tracked link: one code for one (message, link); the redirect resolves it.
class ShortCode(SQLModel, table=True):
    __tablename__ = "short_code"
    code: str = Field(primary_key=True, max_length=32)
    message_id: int = Field(foreign_key="message.id", index=True)
    link_id: int = Field(foreign_key="link.id")
    destination: str


# A request to a tracked link; bots are kept, flagged, and explained.
class Click(SQLModel, table=True):
    # By campaign in time order: rescore reads a campaign's clicks so, a chunk at a time.
    __table_args__ = (Index("ix_click_campaign_clicked", "campaign_id", "clicked_at", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32)
    campaign_id: int = Field(foreign_key="campaign.id")
    message_id: int = Field(foreign_key="message.id", index=True)
    link_id: int = Field(foreign_key="link.id")
    contact_id: int | None = Field(default=None, foreign_key="contact.id")  # None: its message's is
    clicked_at: datetime = Field(default_factory=utcnow)
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = None
    referer: str | None = None
    os: str | None = Field(default=None, max_length=64)
    device: str | None = Field(default=None, max_length=16)
    is_bot: bool = False
    bot_score: float = 0
    bot_reasons: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


# Every raw provider callback, kept for audit; unmatched ones wait for their provider id.
class StatusEvent(SQLModel, table=True):
    __tablename__ = "status_event"
    __table_args__ = (Index("ix_status_event_pending", "provider", "provider_message_id", "applied"),)
    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=50)
    provider_message_id: str = Field(max_length=100)
    message_id: int | None = Field(default=None, foreign_key="message.id", index=True)
    status: str = Field(max_length=20)
    error_code: str | None = Field(default=None, max_length=40)
    error_text: str | None = None
    occurred_at: datetime | None = None
    received_at: datetime = Field(default_factory=utcnow)
    applied: bool = False
    changed: bool = False
    raw: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


# An inbound SMS, attributed to the contact's latest campaign message within 7 days.
class Reply(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    contact_id: int | None = Field(default=None, foreign_key="contact.id", index=True)
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id", index=True)
    message_id: int | None = Field(default=None, foreign_key="message.id")
    phone: str = Field(max_length=20)
    body: str
    keyword: str | None = Field(default=None, max_length=20)
    provider: str = Field(max_length=50)
    provider_message_id: str | None = Field(default=None, max_length=100)
    received_at: datetime = Field(default_factory=utcnow)


# A conversion (purchase, sign-up) reported by the shop, attributed last-touch.
class Conversion(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(foreign_key="contact.id", index=True)
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id", index=True)
    message_id: int | None = Field(default=None, foreign_key="message.id")
    name: str = Field(max_length=100)
    revenue: float = 0
    occurred_at: datetime = Field(default_factory=utcnow)
    clicked: bool = False


# One run of an automation (API.md "Automations"), as the API lists it. A row is made by whoever
# first knows of the run (the API that started it, the relay that started it on an event, or the
# run's own first activity), keyed by Temporal's run id, so it is made once.
class WorkflowRun(SQLModel, table=True):
    __tablename__ = "workflow_run"
    __table_args__ = (
        Index("ix_workflow_run_contact_status", "contact_id", "status"),  # a contact's running automations
        Index("ix_workflow_run_campaign_status", "campaign_id", "status"),  # runs about a campaign
        Index("ix_workflow_run_workflow_status", "workflow", "status", "id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    workflow: str = Field(max_length=100)  # the automation's name
    workflow_id: str = Field(max_length=200, index=True)  # Temporal's workflow id
    temporal_run_id: str = Field(max_length=64, unique=True)
    status: str = Field(default=RunStatus.RUNNING, max_length=20)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    trigger: str | None = Field(default=None, max_length=30)  # what started it; None: the API or CLI
    contact_id: int | None = Field(default=None, foreign_key="contact.id")  # the contact it is about
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id")  # the campaign it is about
    progress: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    campaign_ids: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    error: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    completed_at: datetime | None = None


# A named key to /api (README.md "API keys"); only the sha256 of its secret is kept, and `prefix`
# (its first 8 characters) tells keys apart in listings. Rotating a name leaves the old row valid
# until its `expires_at`: a name's current key is its row with neither `expires_at` nor
# `revoked_at`, one at most (the partial unique index); revoked and expired rows stay, as a record.
class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"
    __table_args__ = (
        Index(
            "ux_api_key_current_name",
            "name",
            unique=True,
            sqlite_where=text("expires_at IS NULL AND revoked_at IS NULL"),
            postgresql_where=text("expires_at IS NULL AND revoked_at IS NULL"),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    secret_hash: str = Field(max_length=64, unique=True)  # sha256 hex of the secret
    prefix: str = Field(max_length=8)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None  # a rotated-out key: valid until then
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None  # written at most once a minute per key and process


def _tally() -> Any:
    return Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default=text("0")))


# A campaign's summary numbers, kept by database triggers in the transaction of every write to its
# messages, clicks and clickers (migration 0013; core/stats/tallies.py reads them). Never written
# by the application: each column is the sum of what the campaign's rows contribute to it.
class CampaignTally(SQLModel, table=True):
    __tablename__ = "campaign_tally"
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True, ondelete="CASCADE")
    recipients: int = _tally()  # each contact's latest counted message
    queued: int = _tally()
    sent: int = _tally()
    delivered: int = _tally()
    undelivered: int = _tally()
    failed: int = _tally()
    attempts: int = _tally()  # every counted message handed to the provider, retries included
    clicks_raw: int = _tally()  # clicks on counted messages
    clicks_bot: int = _tally()
    clickers_raw: int = _tally()  # contacts with a click
    clickers_human: int = _tally()  # contacts with a click not a bot's
    # Migration 0014: replies and conversions (core/stats/summary.py has their definitions).
    replies: int = _tally()  # replies that are no keyword
    conversion_events: int = _tally()  # conversions attributed to a counted message
    revenue_micros: int = _tally()  # their revenue, in millionths (an exact sum)
    repliers: int = _tally()  # contacts with such a reply
    stoppers: int = _tally()  # contacts with an opt-out keyword reply
    converters: int = _tally()  # contacts with such a conversion
    unclicked_events: int = _tally()  # such conversions with no click of the contact before them
    direct_converters: int = _tally()  # contacts with such a conversion after a click (funnel `direct`)


# A contact's clicks in a campaign (on its counted messages), a person's and bots': the tally's
# unique counts move when one of these crosses zero, so re-judging a click keeps them exact.
class CampaignClicker(SQLModel, table=True):
    __tablename__ = "campaign_clicker"
    __table_args__ = ({"sqlite_with_rowid": False},)
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True, ondelete="CASCADE")
    contact_id: int = Field(primary_key=True)
    human_clicks: int = _tally()
    bot_clicks: int = _tally()
    # Migration 0016: its first click of a person's (the earliest, then the lowest id) and the
    # click-timing bucket (core/stats/breakdowns.py TIMING_BUCKETS) it falls in, measured from its
    # message's delivery else its send, and from its send; None where nothing is measured.
    first_click_id: int | None = Field(default=None, sa_column=Column(BigInteger().with_variant(Integer(), "sqlite")))
    first_at: datetime | None = None
    first_message_id: int | None = Field(default=None, sa_column=Column(BigInteger().with_variant(Integer(), "sqlite")))
    delivered_bucket: int | None = Field(default=None, sa_column=Column(SmallInteger))
    sent_bucket: int | None = Field(default=None, sa_column=Column(SmallInteger))


# A campaign's clicks per link, operating system and device (`dim`: link | os | device; `key`: the
# link's id, the click's os or device, `other` for none): people's and bots' clicks and the distinct
# contacts among them, kept by migration 0016's triggers; `/stats/links` and `/stats/devices` read
# these rows.
class CampaignClickKey(SQLModel, table=True):
    __tablename__ = "campaign_click_key"
    __table_args__ = ({"sqlite_with_rowid": False},)
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True, ondelete="CASCADE")
    dim: str = Field(primary_key=True, max_length=8)
    key: str = Field(primary_key=True, max_length=64)
    human_clicks: int = _tally()
    bot_clicks: int = _tally()
    human_contacts: int = _tally()  # contacts with a click of a person's
    any_contacts: int = _tally()  # contacts with any click


# A contact's clicks per key: the key's distinct counts move when one of these crosses zero.
class CampaignClickKeyContact(SQLModel, table=True):
    __tablename__ = "campaign_click_key_contact"
    __table_args__ = ({"sqlite_with_rowid": False},)
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True, ondelete="CASCADE")
    dim: str = Field(primary_key=True, max_length=8)
    key: str = Field(primary_key=True, max_length=64)
    contact_id: int = Field(primary_key=True)
    human_clicks: int = _tally()
    bot_clicks: int = _tally()


# The clickers whose first click of a person's falls in each click-timing bucket, measured from
# the delivery (`basis` delivered: else the send) or the send (`sent`); migration 0016.
class CampaignClickTiming(SQLModel, table=True):
    __tablename__ = "campaign_click_timing"
    __table_args__ = ({"sqlite_with_rowid": False},)
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True, ondelete="CASCADE")
    basis: str = Field(primary_key=True, max_length=10)
    bucket: int = Field(sa_column=Column(SmallInteger, primary_key=True))
    contacts: int = _tally()


# A campaign's trend per quarter-hour UTC slot (`slot`: seconds since the epoch // 900), kept by
# migration 0017's triggers; core/stats/breakdowns.py `trend` folds the slots into local buckets.
class CampaignSlot(SQLModel, table=True):
    __tablename__ = "campaign_slot"
    __table_args__ = ({"sqlite_with_rowid": False},)
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True, ondelete="CASCADE")
    slot: int = Field(sa_column=Column(BigInteger, primary_key=True))
    sent: int = _tally()
    delivered: int = _tally()
    clicks: int = _tally()  # people's clicks
    replies: int = _tally()  # replies that are no keyword
    conversion_events: int = _tally()
    revenue_micros: int = _tally()


# A contact's events of a kind (`click`: people's clicks; `conversion`) in a slot, and the slots
# since its previous slot with such an event (`gap`; 0: none within a month's reach).
class CampaignSlotContact(SQLModel, table=True):
    __tablename__ = "campaign_slot_contact"
    __table_args__ = ({"sqlite_with_rowid": False},)
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True, ondelete="CASCADE")
    kind: str = Field(primary_key=True, max_length=10)
    contact_id: int = Field(primary_key=True)
    slot: int = Field(sa_column=Column(BigInteger, primary_key=True))
    events: int = _tally()
    gap: int = _tally()


# The contacts with an event of a kind in a slot whose previous one is `gap` slots earlier: a
# contact counts in a bucket once, in its slot whose previous slot is before the bucket's start.
class CampaignSlotFirst(SQLModel, table=True):
    __tablename__ = "campaign_slot_first"
    __table_args__ = ({"sqlite_with_rowid": False},)
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True, ondelete="CASCADE")
    kind: str = Field(primary_key=True, max_length=10)
    slot: int = Field(sa_column=Column(BigInteger, primary_key=True))
    gap: int = Field(sa_column=Column(BigInteger, primary_key=True))
    contacts: int = _tally()


# A campaign's numbers per variant and phase (`variant_id` 0: every variant together; `phase`:
# test, remainder, or `*` for every counted phase), kept by migration 0018's triggers:
# core/stats/evidence.py `arms` and `overall`, and one variant's funnel, read these rows.
class CampaignVariantTally(SQLModel, table=True):
    __tablename__ = "campaign_variant_tally"
    __table_args__ = ({"sqlite_with_rowid": False},)
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True, ondelete="CASCADE")
    variant_id: int = Field(primary_key=True)
    phase: str = Field(primary_key=True, max_length=20)
    recipients: int = _tally()
    sent: int = _tally()
    delivered: int = _tally()
    clickers: int = _tally()  # contacts with a click of a person's
    converters: int = _tally()  # contacts with a conversion (of any name)
    direct_converters: int = _tally()  # contacts with a conversion after a click
    conversion_events: int = _tally()
    unclicked_events: int = _tally()
    revenue_micros: int = _tally()


# A contact's people's clicks, conversions and conversions after a click per variant and phase.
class CampaignVariantContact(SQLModel, table=True):
    __tablename__ = "campaign_variant_contact"
    __table_args__ = ({"sqlite_with_rowid": False},)
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True, ondelete="CASCADE")
    variant_id: int = Field(primary_key=True)
    phase: str = Field(primary_key=True, max_length=20)
    contact_id: int = Field(primary_key=True)
    human_clicks: int = _tally()
    conversions: int = _tally()
    clicked_conversions: int = _tally()


# Conversions of one name per variant and phase: converters, events, revenue (millionths) and the
# sum over converting contacts of (the contact's revenue)², a variance's makings.
class CampaignVariantEvent(SQLModel, table=True):
    __tablename__ = "campaign_variant_event"
    __table_args__ = ({"sqlite_with_rowid": False},)
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True, ondelete="CASCADE")
    variant_id: int = Field(primary_key=True)
    phase: str = Field(primary_key=True, max_length=20)
    name: str = Field(primary_key=True, max_length=100)
    converters: int = _tally()
    events: int = _tally()
    revenue_micros: int = _tally()
    revenue_sq: float = Field(default=0.0, sa_column=Column(Float, nullable=False, server_default=text("0")))


class CampaignVariantEventContact(SQLModel, table=True):
    __tablename__ = "campaign_variant_event_contact"
    __table_args__ = ({"sqlite_with_rowid": False},)
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True, ondelete="CASCADE")
    variant_id: int = Field(primary_key=True)
    phase: str = Field(primary_key=True, max_length=20)
    name: str = Field(primary_key=True, max_length=100)
    contact_id: int = Field(primary_key=True)
    events: int = _tally()
    revenue_micros: int = _tally()


# The intention-to-treat numbers (core/stats/evidence.py `intention_to_treat`) per variant and phase
# (`variant_id` 0, `phase` `control`: the held-out group, with its contacts as `recipients`), kept by
# migration 0020's triggers; `CampaignIttContact` holds each contact's events within its window.
class CampaignIttTally(SQLModel, table=True):
    __tablename__ = "campaign_itt_tally"
    __table_args__ = ({"sqlite_with_rowid": False},)
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True, ondelete="CASCADE")
    variant_id: int = Field(primary_key=True)
    phase: str = Field(primary_key=True, max_length=20)
    recipients: int = _tally()  # the held-out group's contacts (its row only)
    converters: int = _tally()
    events: int = _tally()
    revenue_micros: int = _tally()
    revenue_sq_micros: int = _tally()  # Σ over converters of (revenue)², each in millionths


class CampaignIttContact(SQLModel, table=True):
    __tablename__ = "campaign_itt_contact"
    __table_args__ = (Index("ix_campaign_itt_contact_contact", "contact_id"), {"sqlite_with_rowid": False})
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True, ondelete="CASCADE")
    variant_id: int = Field(primary_key=True)
    phase: str = Field(primary_key=True, max_length=20)
    contact_id: int = Field(primary_key=True)
    events: int = _tally()
    revenue_micros: int = _tally()


# A contact's replies, opt-out replies and conversions in a campaign: the tally's distinct counts
# (repliers, stoppers, converters) move when one of these crosses zero (migration 0014).
class CampaignResponder(SQLModel, table=True):
    __tablename__ = "campaign_responder"
    __table_args__ = ({"sqlite_with_rowid": False},)
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True, ondelete="CASCADE")
    contact_id: int = Field(primary_key=True)
    replies: int = _tally()
    stops: int = _tally()
    conversions: int = _tally()
    clicked_conversions: int = _tally()  # conversions after a click of the contact (`clicked`)


# A campaign's listed failures (those `/stats/errors` shows) per error code and text (its first
# ERROR_TEXT_KEPT characters), kept by migration 0015's triggers on message.
ERROR_TEXT_KEPT = 500


class CampaignError(SQLModel, table=True):
    __tablename__ = "campaign_error"
    __table_args__ = ({"sqlite_with_rowid": False},)
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True, ondelete="CASCADE")
    code: str = Field(primary_key=True, max_length=40)
    text: str = Field(primary_key=True, max_length=ERROR_TEXT_KEPT)
    messages: int = _tally()


# Every id (primary keys, the columns pointing at them, `campaign.run_id`) is a 64-bit integer on
# both databases, so any id the API accepts (1 to 2**63 - 1) is one a table can hold: on SQLite an
# INTEGER already is, and a primary key must stay INTEGER there to be the rowid; on PostgreSQL it
# is BIGINT (migration 0011), since a busy deployment's status events and clicks would outgrow
# INTEGER's 2**31.
ID_TYPE = BigInteger().with_variant(Integer(), "sqlite")
for _table in SQLModel.metadata.tables.values():
    for _column in _table.columns:
        if isinstance(_column.type, Integer) and (_column.name == "id" or _column.name.endswith("_id")):
            _column.type = ID_TYPE


def counted_messages() -> ColumnElement[bool]:
    """The messages that count in a campaign's numbers (not test sends, not held-out controls)."""
    return col(Message.phase).notin_(UNCOUNTED_PHASES)
