"""Conversion events (a purchase, a sign-up) and their last-touch attribution (API.md "Definitions").

Every event is stored: it is the contact's history. It is a conversion of a campaign when the
contact's most recent touch before it is a message of that campaign, the event falls inside that
campaign's window (`conversion.window_hours`, default 72) and has the campaign's event name
(`conversion.event`, default `purchase`). An event of another name is stored attributed to no
campaign (`campaign_id` and `message_id` null): it never counts as a conversion anywhere, and it
does not fall through to an earlier campaign either, since the latest touch is the one that owns
what the contact does next.

A touch is a message sent to the contact (test sends excepted) at its `sent_at`, or a held-out row
of a control group (phase `control`, never sent) at the time its campaign sent the batch beside it,
stamped on the control row as its `touched_at` as the batches go (core/campaigns/audience.py
`stamp_control_touch`; migration 0006 moved the older stamps there from `attempted_at`). So a
held-out contact's conversion is attributed to that campaign's control group (`message_id` is the
control row; attribution `control`), not to an earlier campaign; a later message of another
campaign still wins. (The contact page shows this attribution; the control group's numbers and
every uplift on /stats/variants do not read it: core/stats/evidence.py `intention_to_treat`.) A
conversion of a sent message is "direct" when the contact clicked a link of that message (a human
click) before converting, else "influenced".

The touch is found by one query on the contact's messages (the index on `message.contact_id`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from core.campaigns.definition import iso
from core.contacts.phones import InvalidContact, normalize_phone
from core.db import session_scope
from core.errors import Invalid
from core.models import Campaign, Click, Contact, Conversion, Message, utcnow
from core.statuses import Phase

DEFAULT_WINDOW_HOURS = 72.0
DEFAULT_EVENT = "purchase"


class ConversionError(Invalid):
    """The event cannot be stored as sent; the message says why."""


def conversion_event(campaign: Campaign) -> str:
    """The event name that counts as a conversion of the campaign (default `purchase`)."""
    return str((campaign.conversion or {}).get("event") or DEFAULT_EVENT)


def conversion_window(campaign: Campaign) -> timedelta:
    """How long after its touch an event may still be the campaign's conversion (default 72 h)."""
    return timedelta(hours=float((campaign.conversion or {}).get("window_hours") or DEFAULT_WINDOW_HOURS))


def touched_at() -> Any:
    """When a message touched its contact: its send, or for a held-out control row its `touched_at`
    (null until the campaign sends the batch beside it; null for a message never sent)."""
    return case((col(Message.phase) == Phase.CONTROL, col(Message.touched_at)), else_=col(Message.sent_at))


def _contact(session: Session, data: dict[str, Any]) -> Contact:
    if data.get("contact_id") is not None:
        contact = session.get(Contact, data["contact_id"])
        if contact is None:
            raise ConversionError(f"contact {data['contact_id']} does not exist")
        return contact
    if not data.get("phone"):
        raise ConversionError("give 'phone' or 'contact_id'")
    try:
        phone = normalize_phone(data["phone"])
    except InvalidContact as exc:
        raise ConversionError(str(exc)) from exc
    contact = session.scalars(select(Contact).where(col(Contact.phone) == phone)).first()
    if contact is None:
        raise ConversionError(f"no contact has the phone {phone}")
    return contact


def last_touch(session: Session, contact_id: int, at: datetime) -> tuple[Message, Campaign, datetime] | None:
    """The contact's most recent touch at or before `at`: (message, its campaign, touch time)."""
    touch = touched_at()
    row = session.execute(
        select(Message, Campaign, touch)
        .join(Campaign, col(Campaign.id) == col(Message.campaign_id))
        .where(
            col(Message.contact_id) == contact_id,
            col(Message.phase) != Phase.TEST_SEND,
            touch.is_not(None),
            touch <= at,
        )
        .order_by(touch.desc(), col(Message.id).desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    message, campaign, when = row
    if when.tzinfo is None:  # stored naive (UTC) by an older writer
        when = when.replace(tzinfo=UTC)
    return message, campaign, when


def record_conversion(
    engine: Engine, data: dict[str, Any], *, on_stored: Callable[[dict[str, Any]], object] | None = None
) -> dict[str, Any]:
    occurred_at: datetime = data.get("occurred_at") or utcnow()
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=UTC)
    with session_scope(engine) as session:
        contact = _contact(session, data)
        found = last_touch(session, contact.id or 0, occurred_at)
        message = campaign = None
        clicked = False
        if found is not None:
            candidate, owner, when = found
            if data["name"] == conversion_event(owner) and occurred_at - when <= conversion_window(owner):
                message, campaign = candidate, owner
                if candidate.phase != Phase.CONTROL:  # a held-out contact got nothing to click
                    clicked = (
                        session.scalar(
                            select(col(Click.id))
                            .where(
                                col(Click.message_id) == candidate.id,
                                col(Click.is_bot).is_(False),
                                col(Click.clicked_at) <= occurred_at,
                            )
                            .limit(1)
                        )
                        is not None
                    )
        conversion = Conversion(
            contact_id=contact.id or 0,
            campaign_id=campaign.id if campaign else None,
            message_id=message.id if message else None,
            name=data["name"],
            revenue=float(data.get("revenue") or 0),
            occurred_at=occurred_at,
            clicked=clicked,
        )
        session.add(conversion)
        session.flush()
        attribution = None
        if message is not None:
            attribution = "control" if message.phase == Phase.CONTROL else "direct" if clicked else "influenced"
        body = {
            "id": conversion.id,
            "contact_id": contact.id,
            "phone": contact.phone,
            "name": conversion.name,
            "revenue": conversion.revenue,
            "occurred_at": iso(conversion.occurred_at),
            "campaign_id": conversion.campaign_id,
            "message_id": conversion.message_id,
            "attribution": attribution,
        }
    if on_stored:
        on_stored(body)
    return body
