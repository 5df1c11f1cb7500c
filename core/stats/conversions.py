"""Conversion events (a purchase, a sign-up) and their last-touch attribution.

A conversion belongs to the contact's most recent campaign message sent before it, when it
falls inside that campaign's window (`conversion.window_hours`, default 72) and, if the campaign
names a conversion event, has that name. It is "direct" when the contact clicked a link of that
message (a human click) before converting, else "influenced".
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from core.campaigns.definition import iso
from core.contacts.phones import InvalidContact, normalize_phone
from core.db import session_scope
from core.errors import Invalid
from core.models import Campaign, Click, Contact, Conversion, Message, utcnow
from core.statuses import Phase

DEFAULT_WINDOW_HOURS = 72.0


class ConversionError(Invalid):
    """The event cannot be stored as sent; the message says why."""


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


def record_conversion(
    engine: Engine, data: dict[str, Any], *, on_stored: Callable[[dict[str, Any]], object] | None = None
) -> dict[str, Any]:
    occurred_at: datetime = data.get("occurred_at") or utcnow()
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=UTC)
    with session_scope(engine) as session:
        contact = _contact(session, data)
        row = session.execute(
            select(Message, Campaign)
            .join(Campaign, col(Campaign.id) == col(Message.campaign_id))
            .where(
                col(Message.contact_id) == contact.id,
                col(Message.phase) != Phase.TEST_SEND,
                col(Message.sent_at).is_not(None),
                col(Message.sent_at) <= occurred_at,
            )
            .order_by(col(Message.sent_at).desc())
            .limit(1)
        ).first()
        message = campaign = None
        clicked = False
        if row is not None:
            candidate, owner = row
            config = owner.conversion or {}
            window = timedelta(hours=float(config.get("window_hours") or DEFAULT_WINDOW_HOURS))
            name_ok = not config.get("event") or config["event"] == data["name"]
            if name_ok and occurred_at - candidate.sent_at <= window:
                message, campaign = candidate, owner
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
        body = {
            "id": conversion.id,
            "contact_id": contact.id,
            "phone": contact.phone,
            "name": conversion.name,
            "revenue": conversion.revenue,
            "occurred_at": iso(conversion.occurred_at),
            "campaign_id": conversion.campaign_id,
            "message_id": conversion.message_id,
            "attribution": ("direct" if clicked else "influenced") if campaign else None,
        }
    if on_stored:
        on_stored(body)
    return body
