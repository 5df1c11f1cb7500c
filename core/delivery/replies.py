"""Inbound messages: replies, opt-outs (STOP), opt-ins (START) and HELP.

A message whose whole text is a keyword (any case, surrounding blanks and a trailing `.` or `!`
ignored) is a keyword: STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT opt the contact out;
START, UNSTOP, YES opt it in again; HELP and INFO get the configured help text back. Keywords
are stored with the replies (`Reply.keyword`) and counted as opt-outs, never as replies.

Every inbound message is stored, attributed to its contact (by phone) and to that contact's
latest campaign message sent in the 7 days before it (test sends excepted), last touch wins.
A STOP from a number we have no contact for creates an opted-out contact, so a later import of
that number does not message it.

The answers are settings: plugins.toml `[replies] help_text / stop_text / start_text`, or the
environment `TEXTPULSE_HELP_TEXT`, `TEXTPULSE_STOP_TEXT`, `TEXTPULSE_START_TEXT` (which win).
Only HELP answers by default; gateways such as Twilio confirm STOP and START themselves.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from core.contacts.phones import InvalidContact, normalize_phone
from core.db import session_scope
from core.hooks.abilities import unsubscribed_error_codes
from core.hooks.contracts import InboundMessage, SendResult
from core.models import Contact, Message, Reply, counted_messages, utcnow

OPT_OUT_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN_KEYWORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})
KEYWORDS = OPT_OUT_KEYWORDS | OPT_IN_KEYWORDS | HELP_KEYWORDS
REPLY_WINDOW = timedelta(days=7)
DEFAULT_HELP_TEXT = "Reply STOP to unsubscribe or START to subscribe again."


@dataclass(frozen=True)
class ReplyTexts:
    help: str | None = DEFAULT_HELP_TEXT
    stop: str | None = None
    start: str | None = None

    @classmethod
    def from_config(
        cls, file_config: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> ReplyTexts:
        """`[replies]` of plugins.toml, overridden by TEXTPULSE_HELP_TEXT / _STOP_TEXT / _START_TEXT."""
        table = dict((file_config or {}).get("replies", {}) or {})
        env = os.environ if environ is None else environ

        def text(name: str, default: str | None) -> str | None:
            value = env.get(f"TEXTPULSE_{name.upper()}_TEXT")
            if value is None:
                value = table.get(f"{name}_text", default)
            return str(value) if value else None  # an empty text turns the answer off

        return cls(help=text("help", DEFAULT_HELP_TEXT), stop=text("stop", None), start=text("start", None))


@dataclass
class InboundOutcome:
    reply: Reply
    keyword: str | None
    action: str | None  # "opted_out" | "opted_in" | "help" | None
    answer: str | None


def keyword_of(body: str) -> str | None:
    word = body.strip().rstrip(".!").strip().upper()
    return word if word in KEYWORDS else None


def _phone(raw: str) -> str:
    try:
        return normalize_phone(raw)
    except InvalidContact:
        return raw.strip()[:20]  # a short code or a sender name: stored as given


def latest_campaign_message(session: Session, contact_id: int, at: datetime) -> Message | None:
    """The contact's most recent campaign message sent within REPLY_WINDOW before `at`."""
    return session.scalars(
        select(Message)
        .where(
            col(Message.contact_id) == contact_id,
            counted_messages(),
            col(Message.sent_at).is_not(None),
            col(Message.sent_at) <= at,
            col(Message.sent_at) >= at - REPLY_WINDOW,
        )
        .order_by(col(Message.sent_at).desc(), col(Message.id).desc())
        .limit(1)
    ).first()


def _contact_for_opt_out(session: Session, phone: str, now: datetime) -> Contact | None:
    """A contact to hold the opt-out of a number we never imported (None if it is no phone number)."""
    try:
        normalize_phone(phone)
    except InvalidContact:
        return None
    try:
        with session.begin_nested():
            contact = Contact(phone=phone, opted_out_at=now, attributes={})  # no contact_attribute rows to write
            session.add(contact)
        return contact
    except IntegrityError:  # created meanwhile by a concurrent STOP
        return session.scalars(select(Contact).where(col(Contact.phone) == phone)).first()


def handle_inbound(
    engine: Engine, provider: str, inbound: InboundMessage, texts: ReplyTexts, *, now: datetime | None = None
) -> InboundOutcome:
    """Store the inbound message as a reply and carry out its keyword, in one transaction."""
    now = now or utcnow()
    phone = _phone(inbound.from_phone)
    keyword = keyword_of(inbound.body)
    action: str | None = None
    answer: str | None = None
    with session_scope(engine) as session:
        contact = session.scalars(select(Contact).where(col(Contact.phone) == phone)).first()
        if contact is None and keyword in OPT_OUT_KEYWORDS:
            contact = _contact_for_opt_out(session, phone, now)
        message = latest_campaign_message(session, contact.id, now) if contact and contact.id else None
        if contact is not None and keyword in OPT_OUT_KEYWORDS:
            session.execute(
                update(Contact)
                .where(col(Contact.id) == contact.id, col(Contact.opted_out_at).is_(None))
                .values(opted_out_at=now, updated_at=now)
            )
            action, answer = "opted_out", texts.stop
        elif contact is not None and keyword in OPT_IN_KEYWORDS:
            session.execute(
                update(Contact).where(col(Contact.id) == contact.id).values(opted_out_at=None, updated_at=now)
            )
            action, answer = "opted_in", texts.start
        elif keyword in HELP_KEYWORDS:
            action, answer = "help", texts.help
        reply = Reply(
            contact_id=contact.id if contact else None,
            campaign_id=message.campaign_id if message else None,
            message_id=message.id if message else None,
            phone=phone,
            body=inbound.body,
            keyword=keyword,
            provider=provider,
            provider_message_id=inbound.provider_message_id,
            received_at=now,
        )
        session.add(reply)
        session.flush()
    return InboundOutcome(reply=reply, keyword=keyword, action=action, answer=answer)


def opt_out_unsubscribed(engine: Engine, provider: Any, results: Iterable[SendResult]) -> int:
    """Opt out the contacts of messages the provider refused because the recipient unsubscribed.

    A provider names such error codes in `unsubscribed_error_codes` (Twilio: 21610).
    Returns how many contacts were opted out now.
    """
    codes = unsubscribed_error_codes(provider)
    message_ids = [
        r.message_id for r in results if codes and not r.accepted and not r.transient and r.error_code in codes
    ]
    if not message_ids:
        return 0
    now = utcnow()
    with session_scope(engine) as session:
        result = session.exec(
            update(Contact)
            .where(
                col(Contact.opted_out_at).is_(None),
                col(Contact.id).in_(select(col(Message.contact_id)).where(col(Message.id).in_(message_ids))),
            )
            .values(opted_out_at=now, updated_at=now)
        )
        return int(result.rowcount or 0)
