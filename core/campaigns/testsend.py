"""Test sends: a campaign's variants, sent for real to a few phones before the launch.

A marketer checks on their own phone that the text reads right and that its tracked link lands
where it should (seed 004, step 3). So a test message is an ordinary message row: rendered for
that phone's contact, its links tracked with codes of their own that resolve and record clicks
like any other, sent through the campaign's provider, and with phase `test_send`, which every
statistic leaves out. Unknown phones become contacts (nothing else about known ones changes).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from core.campaigns.bodies import LinkStore, ShortCodes
from core.campaigns.definition import CampaignConflict, get_campaign, variants_of
from core.campaigns.idempotency import idempotency_key
from core.campaigns.rendering import TrackedLink, render_tracked
from core.campaigns.templates import compile_body
from core.contacts.phones import InvalidContact, normalize_phone
from core.db import session_scope
from core.delivery.sending import send_batch
from core.errors import Invalid
from core.hooks.registry import PluginRegistry
from core.models import Contact, Message, Variant
from core.statuses import CampaignStatus, Phase


class InvalidPhones(Invalid):
    """Some phones are not E.164 numbers; `problems` (also `extra`) names each one (index, phone, error)."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        super().__init__(
            "; ".join(f"phones[{p['index']}] {p['phone']!r}: {p['error']}" for p in problems), extra=problems
        )


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


def _contacts_for(session: Session, phones: list[str]) -> list[Contact]:
    known = {c.phone: c for c in session.scalars(select(Contact).where(col(Contact.phone).in_(phones)))}
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
        if campaign.status == CampaignStatus.CANCELLED:
            raise CampaignConflict(f"campaign {campaign_id} is cancelled: nothing more is sent for it")
        variants = [v for v in variants_of(session, campaign_id) if not v.is_control]
        contacts = _contacts_for(session, normalized)
        codes = ShortCodes(session, shortener)
        store = LinkStore(session, campaign_id)
        created: list[tuple[Message, Variant, tuple[TrackedLink, ...]]] = []
        for variant in variants:
            template = compile_body(variant.body, variant=variant.name)
            for contact in contacts:
                rendered = render_tracked(
                    template,
                    contact,
                    tracking=campaign.tracking or {},
                    shortener=shortener,
                    public_url=public_url,
                    variant=variant.name,
                    new_code=codes.draw_unused,
                )
                message = Message(
                    campaign_id=campaign_id,
                    contact_id=contact.id or 0,
                    variant_id=variant.id,
                    phase=Phase.TEST_SEND,
                    phone=contact.phone,
                    provider=campaign.provider,
                    body=rendered.body,
                    characters=rendered.segments.characters,
                    encoding=rendered.segments.encoding,
                    segments=rendered.segments.segments,
                    idempotency_key=idempotency_key(
                        campaign_id, Phase.TEST_SEND, contact.id or 0, variant_id=variant.id
                    ),
                )
                session.add(message)
                created.append((message, variant, rendered.links))
        session.flush()
        for message, variant, links in created:
            store.store(message.id or 0, variant.id or 0, links)
        sent = [(message.id or 0, variant.name) for message, variant, _ in created]
    for message_id, _ in sent:
        # One message per call: concurrent test sends of one campaign never share a batch.
        send_batch(engine, registry, campaign_id, message_id, message_id, phase=Phase.TEST_SEND)
    with session_scope(engine, read_only=True) as session:
        rows = {m.id: m for m in session.scalars(select(Message).where(col(Message.id).in_([i for i, _ in sent])))}
        return [(rows[message_id], name) for message_id, name in sent]
