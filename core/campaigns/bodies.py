"""Message bodies: queued rows rendered once, with their tracked links stored beside them.

A row is created without a body (snapshot, retry, a remainder waiting for its winner) and
rendered here when its variant is known. Each tracked link is a ShortCode row (code → message,
link) pointing at the Link row of its (variant, position). Codes are drawn at random, so a code
already stored is astronomically rare; it is looked for and redrawn all the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select, true
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from core.campaigns.definition import get_campaign, variants_of
from core.campaigns.rendering import TrackedLink, render_tracked
from core.campaigns.templates import BodyTemplateError, compile_body
from core.db import session_scope
from core.delivery.sending import CHUNK
from core.hooks.registry import PluginRegistry
from core.models import Contact, Link, Message, ShortCode, utcnow
from core.statuses import MessageStatus

if TYPE_CHECKING:
    from core.hooks.contracts import Shortener

# Rows per IN list when looking codes up (under SQLite's 999 bound parameters).
LOOKUP_CHUNK = 900
# Error codes of rows that cannot be rendered: no second attempt fixes them.
TEMPLATE_ERROR = "template_error"
EMPTY_BODY = "empty_body"


class ShortCodes:
    """Draws short codes from the shortener, never the same twice; `taken` finds those already stored."""

    def __init__(self, session: Session, shortener: Shortener) -> None:
        self.session, self.shortener, self.used = session, shortener, set[str]()

    def draw(self) -> str:
        while True:
            code = self.shortener.new_code()
            if code not in self.used:
                self.used.add(code)
                return code

    def draw_unused(self) -> str:
        """A code checked against the database at once (for a handful of codes, as a test send draws)."""
        code = self.draw()
        while self.taken([code]):
            code = self.draw()
        return code

    def taken(self, codes: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(codes), LOOKUP_CHUNK):
            part = codes[i : i + LOOKUP_CHUNK]
            found.update(self.session.scalars(select(col(ShortCode.code)).where(col(ShortCode.code).in_(part))))
        return found


class LinkStore:
    """Stores a rendered message's tracked links: a ShortCode per code, pointing at the Link row of
    (variant, position), which is created on first use."""

    def __init__(self, session: Session, campaign_id: int) -> None:
        self.session, self.campaign_id = session, campaign_id
        self.link_ids: dict[tuple[int, int], int] = {}

    def link_id(self, variant_id: int, position: int, destination: str) -> int:
        key = (variant_id, position)
        if key not in self.link_ids:
            link = self.session.scalars(
                select(Link).where(col(Link.variant_id) == variant_id, col(Link.position) == position)
            ).first()
            if link is None:
                link = Link(
                    campaign_id=self.campaign_id, variant_id=variant_id, position=position, destination=destination
                )
                self.session.add(link)
                self.session.flush()
            self.link_ids[key] = link.id or 0
        return self.link_ids[key]

    def store(self, message_id: int, variant_id: int, links: Iterable[TrackedLink]) -> None:
        for link in links:
            link_id = self.link_id(variant_id, link.position, link.destination)
            self.session.add(
                ShortCode(code=link.code, message_id=message_id, link_id=link_id, destination=link.destination)
            )


def _fail(message: Message, code: str, text: str) -> None:
    message.status, message.error_code, message.error_text = MessageStatus.FAILED, code, text
    message.failed_at = utcnow()


def render_pending(
    engine: Engine,
    registry: PluginRegistry,
    campaign_id: int,
    *,
    heartbeat: Callable[[], None] = lambda: None,
    only: Sequence[int] | None = None,
) -> int:
    """Render queued rows that have a variant but no body yet: text, tracked links, segments
    (`only`: just these message ids, e.g. the one text an automation step sends)."""
    shortener = registry.shortener
    public_url = registry.context.settings.public_url
    rendered = 0
    with session_scope(engine, read_only=True) as session:
        campaign = get_campaign(session, campaign_id)
        templates = {
            v.id: (v.name, compile_body(v.body, variant=v.name))
            for v in variants_of(session, campaign_id)
            if not v.is_control
        }
    while True:
        with session_scope(engine) as session:
            rows = session.execute(
                select(Message, Contact)
                .join(Contact, col(Contact.id) == col(Message.contact_id))
                .where(
                    col(Message.campaign_id) == campaign_id,
                    col(Message.status) == MessageStatus.QUEUED,
                    col(Message.body) == "",
                    col(Message.variant_id).is_not(None),
                    col(Message.id).in_(only) if only is not None else true(),
                )
                .order_by(col(Message.id))
                .limit(CHUNK)
            ).all()
            if not rows:
                return rendered
            codes = ShortCodes(session, shortener)
            store = LinkStore(session, campaign_id)
            pending: list[tuple[Message, tuple[TrackedLink, ...]]] = []
            for message, contact in rows:
                name, template = templates[message.variant_id]
                try:
                    out = render_tracked(
                        template,
                        contact,
                        tracking=campaign.tracking or {},
                        shortener=shortener,
                        public_url=public_url,
                        variant=name,
                        new_code=codes.draw,
                    )
                except BodyTemplateError as exc:  # the contact changed since creation: this one fails
                    _fail(message, TEMPLATE_ERROR, str(exc))
                    message.body = " "
                    pending.append((message, ()))
                    continue
                if not out.body.strip():
                    _fail(message, EMPTY_BODY, f"variant {name!r} renders to an empty text")
                message.body, message.characters = out.body or " ", out.segments.characters
                message.encoding, message.segments = out.segments.encoding, out.segments.segments
                pending.append((message, out.links))
            clashes = codes.taken([link.code for _, links in pending for link in links])
            for message, links in pending:
                kept = []
                for link in links:
                    if link.code in clashes:  # astronomically rare: redraw and put the new link in its place
                        fresh = codes.draw()
                        message.body = message.body.replace(
                            shortener.tracked_url(link.code, public_url), shortener.tracked_url(fresh, public_url)
                        )
                        link = dataclasses.replace(link, code=fresh)
                    kept.append(link)
                store.store(message.id or 0, message.variant_id or 0, kept)
                session.add(message)
            rendered += len(pending)
        heartbeat()
