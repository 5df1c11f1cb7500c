"""The row shapes shared by several routes (API.md "Shapes shared by the routes"), and their pages."""

from typing import Any, Literal, TypedDict

from api.schemas.fields import Encoding, MessageStatusName, OptionalTimestamp, PhaseName, Timestamp


class MessageRow(TypedDict):
    """One message: a recipient and a send, with its status, error and the body as sent."""

    id: int
    campaign_id: int
    contact_id: int | None  # null: a test send to a phone that is no contact
    phone: str
    variant: str | None
    variant_id: int | None
    phase: PhaseName
    body: str
    characters: int
    encoding: Encoding
    segments: int
    status: MessageStatusName
    error_code: str | None
    error_text: str | None
    provider: str
    provider_message_id: str | None
    queued_at: Timestamp
    sent_at: OptionalTimestamp
    delivered_at: OptionalTimestamp
    failed_at: OptionalTimestamp


class MessagePage(TypedDict):
    """A page of the message log; `next` is the cursor of the following page, null on the last."""

    items: list[MessageRow]
    next: str | None


class ClickRow(TypedDict):
    """One request to a tracked link: who, which link, from where, and the bot verdict with reasons."""

    id: int
    message_id: int
    contact_id: int | None  # null: a click on a test send to a phone that is no contact
    phone: str | None
    link_id: int
    url: str | None
    clicked_at: Timestamp
    ip: str | None
    user_agent: str | None
    referer: str | None
    os: str | None
    device: str | None
    is_bot: bool
    bot_score: float
    bot_reasons: list[str]


class ClickPage(TypedDict):
    """A page of a campaign's clicks; `next` is the cursor of the following page, null on the last."""

    items: list[ClickRow]
    next: str | None


class ReplyRow(TypedDict):
    """One inbound message attributed to the campaign; `keyword` is set for STOP, START, HELP and the like."""

    id: int
    campaign_id: int | None
    message_id: int | None
    variant: str | None
    contact_id: int | None
    phone: str
    name: str | None
    opted_out: bool
    body: str
    keyword: str | None
    received_at: Timestamp
    provider: str
    provider_message_id: str | None


class ReplyPage(TypedDict):
    """A page of a campaign's replies; `next` is the cursor of the following page, null on the last."""

    items: list[ReplyRow]
    next: str | None


class ConversionRow(TypedDict):
    """A stored event and the campaign message it is attributed to: `direct` (clicked first),
    `influenced`, `control` (a held-out contact of the campaign's control group), or null (no touch
    within the window, or not the event the campaign counts: stored, counted nowhere)."""

    id: int
    contact_id: int
    phone: str
    name: str
    revenue: float
    occurred_at: Timestamp
    campaign_id: int | None
    message_id: int | None
    attribution: Literal["direct", "influenced", "control"] | None


class RejectedRow(TypedDict):
    """An input row that was not accepted: its index in the request, what it gave as phone, and why."""

    index: int
    phone: Any
    error: str
