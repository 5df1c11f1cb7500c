"""Test sends: a campaign's variants, sent for real to a few phones before the launch.

A marketer checks on their own phone that the text reads right and that its tracked link lands
where it should (seed 004, step 3). So a test message is an ordinary message row: its links
tracked with codes of their own that resolve and record clicks like any other, sent at once
through the campaign's provider, and with phase `test_send`, which every statistic leaves out.

A test send never creates or changes a contact (API.md "Launch checks and test sends"):
- a phone that is a contact is rendered for that contact, and its message row names it;
- a phone that is no contact is rendered with sample values: `name` "Test", `phone` that phone,
  no attributes. Each attribute a body names (`attributes.city`, `attributes["city"]`,
  `contact.attributes.city`) is a lenient undefined there: it renders as empty text, `{% if %}`
  finds it false and `| default(...)` applies, where a contact's missing attribute is a 422 as
  at create time. Its message row has no contact (`contact_id` null), nor have its clicks;
- an opted-out contact's phone is refused (OptedOutPhones, 422 naming each) unless the request
  says `allow_opted_out`; then it is sent like any other;
- a provider that is not configured (its `check_config`) is a 422, as at launch: nothing is sent.
The messages go out one provider call each, now: not held by quiet hours, a pause or the
campaign's rate limit (a cancelled campaign takes no test sends at all).
"""

from __future__ import annotations

from typing import Any

from jinja2 import ChainableUndefined, nodes
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from core.campaigns.bodies import LinkStore, ShortCodes
from core.campaigns.definition import CampaignConflict, CampaignInvalid, get_campaign, iso, variants_of
from core.campaigns.idempotency import idempotency_key
from core.campaigns.launch_checks import provider_problems
from core.campaigns.rendering import TrackedLink, render_tracked
from core.campaigns.templates import compile_body
from core.contacts.phones import InvalidContact, normalize_phone
from core.db import session_scope
from core.delivery.replies import opt_out_unsubscribed
from core.delivery.sending import BatchOutcome, record_results
from core.errors import Invalid
from core.hooks.contracts import OutgoingMessage
from core.hooks.registry import PluginRegistry
from core.models import Contact, Message, Variant, utcnow
from core.statuses import CampaignStatus, MessageStatus, Phase

# The name a phone that is no contact is greeted with.
SAMPLE_NAME = "Test"
# Parses bodies to find the attributes they name (rendering is core.campaigns.templates' business).
_parser = SandboxedEnvironment()


class InvalidPhones(Invalid):
    """Some phones are not E.164 numbers; `problems` (also `extra`) names each one (index, phone, error)."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        super().__init__(
            "; ".join(f"phones[{p['index']}] {p['phone']!r}: {p['error']}" for p in problems), extra=problems
        )


class OptedOutPhones(Invalid):
    """Some phones are opted-out contacts; `extra` lists them ({phone, contact_id, opted_out_at})."""

    def __init__(self, contacts: list[Contact]) -> None:
        extra = [{"phone": c.phone, "contact_id": c.id, "opted_out_at": iso(c.opted_out_at)} for c in contacts]
        named = ", ".join(f"{c.phone} (opted out at {iso(c.opted_out_at)})" for c in contacts)
        super().__init__(
            f"phones of opted-out contacts: {named}; nothing was sent. "
            'Pass "allow_opted_out": true to send the test to them anyway',
            extra=extra,
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


def _is_attributes(node: nodes.Node) -> bool:
    """`attributes`, `contact.attributes` or `contact["attributes"]`."""
    if isinstance(node, nodes.Name):
        return node.name == "attributes"
    if isinstance(node, nodes.Getattr):
        return node.attr == "attributes" and isinstance(node.node, nodes.Name) and node.node.name == "contact"
    if isinstance(node, nodes.Getitem):
        return (
            isinstance(node.arg, nodes.Const)
            and node.arg.value == "attributes"
            and isinstance(node.node, nodes.Name)
            and node.node.name == "contact"
        )
    return False


def named_attributes(body: str) -> set[str]:
    """The attribute names a body reads by a constant name (`attributes.city`, `attributes['city']`)."""
    names: set[str] = set()
    for node in _parser.parse(body).find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr) and _is_attributes(node.node):
            names.add(node.attr)
        elif (
            isinstance(node, nodes.Getitem)
            and _is_attributes(node.node)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        ):
            names.add(node.arg.value)
    return names


def sample_contact(phone: str, attribute_names: set[str]) -> Contact:
    """What a phone that is no contact is rendered with; never added to a session, never stored."""
    attributes = {name: ChainableUndefined(name=name) for name in sorted(attribute_names)}
    return Contact(phone=phone, name=SAMPLE_NAME, attributes=attributes)


def _recipients(
    session: Session, phones: list[str], attribute_names: set[str], *, allow_opted_out: bool
) -> list[Contact]:
    """The contact of each phone (read only), or a sample for a phone that is no contact;
    OptedOutPhones when some are opted out and that is not allowed."""
    known = {c.phone: c for c in session.scalars(select(Contact).where(col(Contact.phone).in_(phones)))}
    opted_out = [known[p] for p in phones if p in known and known[p].opted_out_at is not None]
    if opted_out and not allow_opted_out:
        raise OptedOutPhones(opted_out)
    return [known[phone] if phone in known else sample_contact(phone, attribute_names) for phone in phones]


def send_test_messages(
    engine: Engine, registry: PluginRegistry, campaign_id: int, phones: list[Any], *, allow_opted_out: bool = False
) -> list[tuple[Message, str]]:
    """Create and send one test message per (phone, sendable variant); each message as sent, with
    its variant's name.

    Everything is created in one transaction first (a body that does not render for one of the
    phones is a BodyTemplateError, an opted-out phone without `allow_opted_out` is OptedOutPhones,
    and nothing is stored), then each message is sent on its own.
    """
    normalized = normalize_phones(phones)
    public_url = registry.context.settings.public_url
    shortener = registry.shortener
    with session_scope(engine) as session:
        campaign = get_campaign(session, campaign_id)
        if campaign.status == CampaignStatus.CANCELLED:
            raise CampaignConflict(f"campaign {campaign_id} is cancelled: nothing more is sent for it")
        if problems := provider_problems(registry, campaign.provider):  # as at launch: a 422, nothing sent
            raise CampaignInvalid(f"cannot test-send campaign {campaign_id}: {'; '.join(problems)}", extra=problems)
        provider = registry.provider(campaign.provider)
        variants = [v for v in variants_of(session, campaign_id) if not v.is_control]
        templates = [(v, compile_body(v.body, variant=v.name)) for v in variants]
        names = set().union(*(named_attributes(v.body) for v in variants))
        recipients = _recipients(session, normalized, names, allow_opted_out=allow_opted_out)
        codes = ShortCodes(session, shortener)
        store = LinkStore(session, campaign_id)
        created: list[tuple[Message, Variant, tuple[TrackedLink, ...]]] = []
        for variant, template in templates:
            for recipient in recipients:
                rendered = render_tracked(
                    template,
                    recipient,
                    tracking=campaign.tracking or {},
                    shortener=shortener,
                    public_url=public_url,
                    variant=variant.name,
                    new_code=codes.draw_unused,
                )
                message = Message(
                    campaign_id=campaign_id,
                    contact_id=recipient.id,  # None: the phone is no contact
                    variant_id=variant.id,
                    phase=Phase.TEST_SEND,
                    phone=recipient.phone,
                    provider=campaign.provider,
                    body=rendered.body,
                    characters=rendered.segments.characters,
                    encoding=rendered.segments.encoding,
                    segments=rendered.segments.segments,
                    idempotency_key=idempotency_key(
                        campaign_id, Phase.TEST_SEND, recipient.id or 0, variant_id=variant.id
                    ),
                )
                session.add(message)
                created.append((message, variant, rendered.links))
        session.flush()
        for message, variant, links in created:
            store.store(message.id or 0, variant.id or 0, links)
        sent = [(message.id or 0, message.phone, message.body, message.idempotency_key) for message, _, _ in created]
    callback_url = f"{public_url}/webhooks/{provider.name}/status"
    for message_id, phone, body, key in sent:
        # One message per provider call: a test send is a handful of messages, each answered alone.
        with session_scope(engine) as session:
            session.execute(
                update(Message)
                .where(col(Message.id) == message_id)
                .values(status=MessageStatus.SENDING, attempted_at=utcnow(), attempts=col(Message.attempts) + 1)
            )
        results = provider.send_batch([OutgoingMessage(message_id, phone, body, key, callback_url)])
        record_results(engine, provider.name, results, BatchOutcome())
        opt_out_unsubscribed(engine, provider, results)  # the gateway says the number unsubscribed
    ids = [message_id for message_id, *_ in sent]
    with session_scope(engine, read_only=True) as session:
        rows = {m.id: m for m in session.scalars(select(Message).where(col(Message.id).in_(ids)))}
        return [(rows[message.id or 0], variant.name) for message, variant, _ in created]
