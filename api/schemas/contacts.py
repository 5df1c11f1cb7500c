"""Contacts as the API shows them: the list row, one contact with its history, and upsert answers."""

from typing import Any, TypedDict

from api.schemas.fields import OptionalTimestamp, Timestamp
from api.schemas.rows import ClickRow, MessageRow, RejectedRow


class ContactRow(TypedDict):
    """A person who may receive messages; `opted_out_at` is null unless they opted out."""

    id: int
    phone: str
    name: str | None
    timezone: str | None
    attributes: dict[str, Any]
    opted_out_at: OptionalTimestamp
    created_at: Timestamp
    updated_at: Timestamp


class ContactPage(TypedDict):
    """A page of contacts by id; `next` is the cursor of the following page, null on the last."""

    items: list[ContactRow]
    next: str | None


class ContactReply(TypedDict):
    """An inbound message of the contact, and the campaign message it is attributed to (if any)."""

    id: int
    campaign_id: int | None
    message_id: int | None
    body: str
    keyword: str | None
    received_at: Timestamp


class ContactConversion(TypedDict):
    """A conversion of the contact, and the campaign message it is attributed to (if any)."""

    id: int
    campaign_id: int | None
    message_id: int | None
    name: str
    revenue: float
    occurred_at: Timestamp


class ContactDetail(ContactRow):
    """A contact with its latest 200 messages and clicks, and all its replies and conversions, newest first."""

    messages: list[MessageRow]
    clicks: list[ClickRow]
    replies: list[ContactReply]
    conversions: list[ContactConversion]


class ContactsUpserted(TypedDict):
    """What an upsert did: contacts created, contacts updated, and each row refused with why."""

    created: int
    updated: int
    invalid: list[RejectedRow]
