"""Test sends: a campaign's variants, sent for real to a few phones before the launch.

A marketer checks on their own phone that the text reads right and that its tracked link lands
where it should (seed 004, step 3). So a test message is an ordinary message row: rendered for
that phone's contact, its links tracked with codes of their own that resolve and record clicks
like any other, sent through the campaign's provider, and with phase `test_send`, which every
statistic leaves out. Unknown phones become contacts (nothing else about known ones changes).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from core.campaigns.audience import ShortCodes, link_id_for
from core.campaigns.definition import CampaignConflict, get_campaign, variants_of
from core.campaigns.rendering import render_message
from core.campaigns.templates import compile_body
from core.contacts.directory import InvalidContact, normalize_phone
from core.db import session_scope
from core.delivery.sending import send_batch
from core.errors import Invalid
from core.hooks.registry import PluginRegistry
from core.models import Contact, Message, ShortCode, Variant

PHASE = "test_send"


class InvalidPhones(Invalid):
    """Some phones are not E.164 numbers; `problems` (also `extra`) names each one (index, phone, error)."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        super().__init__(
            "; ".join(f"phones[{p['index']}] {p['phone']!r}: {p['error']}" for p in problems), extra=problems
        )


@dataclass
class _Tracked:
    code: str
    position: int
    destination: str


def normalize_phones(phones: list[Any]) -> list[str]:
    """E.164 for each phone, duplicates dropped in order; every bad one is reported at once."""
    normalized: list[str] = []
    problems: list[dict[str, Any]] = []
    for index, raw in enumerate(phones):
        try:
            phone = normalize_phone(raw)
        except InvalidContact as exc:
            problems.append({"index": index, "phone": raw, "error": str(exc)})
            continue
        if phone not in normalized:
            normalized.append(phone)
    if problems:
        raise InvalidPhones(problems)
    return normalized


def _contacts_for(session: Any, phones: list[str]) -> list[Contact]:
    known = {c.phone: c for c in session.scalars(select(Contact).where(Contact.phone.in_(phones)))}
    contacts = []
    for phone in phones:
        contact = known.get(phone)
        if contact is None:
            contact = Contact(phone=phone)
            session.add(contact)
        contacts.append(contact)
    session.flush()
    return contacts


def send_test_messages(
    engine: Engine, registry: PluginRegistry, campaign_id: int, phones: list[Any]
) -> list[tuple[Message, str]]:
    """Create and send one test message per (phone, sendable variant); each message as sent, with
    its variant's name.

    Everything is created in one transaction first (a body that does not render for one of the
    phones is a BodyTemplateError and nothing is stored), then each message is sent on its own
    through `send_batch`, so opted-out contacts are skipped exactly as in a real send.
    """
    normalized = normalize_phones(phones)
    public_url = registry.context.settings.public_url
    shortener = registry.shortener
    with session_scope(engine) as session:
        campaign = get_campaign(session, campaign_id)
        if campaign.status == "cancelled":
            raise CampaignConflict(f"campaign {campaign_id} is cancelled: nothing more is sent for it")
        variants = [v for v in variants_of(session, campaign_id) if not v.is_control]
        contacts = _contacts_for(session, normalized)
        codes = ShortCodes(session, shortener)
        link_cache: dict[tuple[int, int], int] = {}
        created: list[tuple[Message, Variant, list[_Tracked]]] = []
        for variant in variants:
            template = compile_body(variant.body, variant=variant.name)
            for contact in contacts:
                tracked: list[_Tracked] = []

                def tracked_url(position: int, destination: str, tracked: list[_Tracked] = tracked) -> str:
                    code = codes.draw()
                    while codes.taken([code]):  # a handful of codes: check each before use
                        code = codes.draw()
                    tracked.append(_Tracked(code, position, destination))
                    return str(shortener.tracked_url(code, public_url))

                rendered = render_message(
                    template, contact, tracking=campaign.tracking or {}, tracked_url=tracked_url, variant=variant.name
                )
                message = Message(
                    campaign_id=campaign_id,
                    contact_id=contact.id or 0,
                    variant_id=variant.id,
                    phase=PHASE,
                    phone=contact.phone,
                    provider=campaign.provider,
                    body=rendered.body,
                    characters=rendered.segments.characters,
                    encoding=rendered.segments.encoding,
                    segments=rendered.segments.segments,
                    idempotency_key=f"c{campaign_id}-{PHASE}-{contact.id}-v{variant.id}-{secrets.token_hex(6)}",
                )
                session.add(message)
                created.append((message, variant, tracked))
        session.flush()
        for message, variant, tracked in created:
            for item in tracked:
                link_id = link_id_for(
                    session, link_cache, campaign_id, variant.id or 0, item.position, item.destination
                )
                session.add(
                    ShortCode(code=item.code, message_id=message.id or 0, link_id=link_id, destination=item.destination)
                )
        sent = [(message.id or 0, variant.name) for message, variant, _ in created]
    for message_id, _ in sent:
        # One message per call: concurrent test sends of one campaign never share a batch.
        send_batch(engine, registry, campaign_id, message_id, message_id, phase=PHASE)
    with session_scope(engine, read_only=True) as session:
        rows = {m.id: m for m in session.scalars(select(Message).where(Message.id.in_([i for i, _ in sent])))}
        return [(rows[message_id], name) for message_id, name in sent]
