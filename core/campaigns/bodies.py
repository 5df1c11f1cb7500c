"""Message bodies: queued rows rendered once, with their tracked links stored beside them.

A row is created without a body (snapshot, retry, a remainder waiting for its winner) and
rendered here when its batch is sent (core/delivery/sending.py: in the transaction that reads the
batch, so the text sent is the text stored), or before by `render_pending` (an automation's text).
Each tracked link is a ShortCode row (code → message, link) pointing at the Link row of its
(variant, position). Codes are drawn at random, so a code
already stored is astronomically rare; it is looked for and redrawn all the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from core.campaigns.definition import get_campaign, variants_of
from core.campaigns.rendering import TrackedLink, render_tracked
from core.campaigns.templates import BodyTemplateError, compile_body
from core.db import session_scope
from core.delivery.prepared import insert_rows, update_rows
from core.hooks.registry import PluginRegistry
from core.models import Contact, Link, Message, ShortCode, utcnow
from core.stats.tallies import lock_tallies
from core.statuses import MessageStatus
from core.tracking.segments import SegmentInfo

if TYPE_CHECKING:
    from core.hooks.contracts import Shortener

# Rows per IN list when looking codes up (under SQLite's 999 bound parameters).
LOOKUP_CHUNK = 900
RENDER_CHUNK = 500  # rows rendered per transaction by `render_pending`
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
    """The Link row of each (variant, position) a rendered message's tracked links point at, created
    on first use."""

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

    def store(self, message_id: int, variant_id: int, links: Sequence[TrackedLink]) -> None:
        """ShortCode rows for one message's links (a test send: a handful, through the ORM)."""
        for link in links:
            link_id = self.link_id(variant_id, link.position, link.destination)
            self.session.add(
                ShortCode(code=link.code, message_id=message_id, link_id=link_id, destination=link.destination)
            )


@dataclass(slots=True)
class Bare:
    """A queued row to render: its message and variant, and its contact's fields a body may use
    (templates.py `contact_context`, which reads `id` as the contact's): a plain row, never an ORM
    object (rendering is on the send path)."""

    message_id: int
    variant_id: int
    id: int | None  # the contact's
    phone: str
    name: str | None
    timezone: str | None
    attributes: dict[str, Any]


@dataclass(slots=True)
class Rendered:
    body: str
    failed: str | None = None  # the error code when the row cannot be sent (and is now failed)


class Renderer:
    """Renders one campaign's rows: its variants' templates compiled once, codes drawn fresh."""

    def __init__(self, session: Session, registry: PluginRegistry, campaign_id: int) -> None:
        campaign = get_campaign(session, campaign_id)
        self.campaign_id, self.tracking = campaign_id, campaign.tracking or {}
        self.shortener = registry.shortener
        self.public_url = registry.context.settings.public_url
        self.templates = {
            v.id: (v.name, compile_body(v.body, variant=v.name))
            for v in variants_of(session, campaign_id)
            if not v.is_control
        }

    def render(self, session: Session, rows: Sequence[Bare]) -> dict[int, Rendered]:
        """Render `rows` and store it all in `session`'s transaction: the body and its segments,
        the short codes, a row that cannot be rendered failed. Returns what each row now is. Core
        statements (one executemany each), no ORM objects per row. The caller holds the rows
        (`bare_rows`, send_batch's locked read) and the campaign's tally row, taken before them
        (a failed render moves the counts), so no other renderer stores codes for them."""
        codes = ShortCodes(session, self.shortener)
        store = LinkStore(session, self.campaign_id)
        bodies: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        pending: list[tuple[Bare, str, tuple[TrackedLink, ...], SegmentInfo]] = []
        out: dict[int, Rendered] = {}
        now = utcnow()
        for row in rows:
            name, template = self.templates[row.variant_id]
            try:
                tracked = render_tracked(
                    template,
                    row,
                    tracking=self.tracking,
                    shortener=self.shortener,
                    public_url=self.public_url,
                    variant=name,
                    new_code=codes.draw,
                )
            except BodyTemplateError as exc:  # the contact changed since creation: this one fails
                failures.append(_failure(row.message_id, TEMPLATE_ERROR, str(exc), now))
                out[row.message_id] = Rendered(" ", TEMPLATE_ERROR)
                continue
            if not tracked.body.strip():
                failures.append(_failure(row.message_id, EMPTY_BODY, f"variant {name!r} renders to an empty text", now))
                out[row.message_id] = Rendered(" ", EMPTY_BODY)
                continue
            pending.append((row, tracked.body, tracked.links, tracked.segments))
        clashes = codes.taken([link.code for _, _, links, _ in pending for link in links])
        short_codes: list[dict[str, Any]] = []
        for row, body, links, segments in pending:
            for link in links:
                if link.code in clashes:  # astronomically rare: redraw and put the new link in its place
                    fresh = codes.draw()
                    body = body.replace(
                        self.shortener.tracked_url(link.code, self.public_url),
                        self.shortener.tracked_url(fresh, self.public_url),
                    )
                    link = dataclasses.replace(link, code=fresh)
                link_id = store.link_id(row.variant_id, link.position, link.destination)
                short_codes.append(
                    {
                        "code": link.code,
                        "message_id": row.message_id,
                        "link_id": link_id,
                        "destination": link.destination,
                    }
                )
            bodies.append(
                {
                    "mid": row.message_id,
                    "body": body,
                    "characters": segments.characters,
                    "encoding": segments.encoding,
                    "segments": segments.segments,
                }
            )
            out[row.message_id] = Rendered(body)
        unrendered = lambda: [_MESSAGE.c.body == ""]  # noqa: E731 - a row rendered meanwhile stays as it is
        body_columns = {name: name for name in ("body", "characters", "encoding", "segments")}
        update_rows(session, "bodies:set_body", _MESSAGE, bodies, columns=body_columns, where=unrendered)
        failed = {"body": " ", "status": MessageStatus.FAILED}
        failed_columns = {"error_code": "error_code", "error_text": "error_text", "failed_at": "failed_at"}
        failed_columns["status_changed_at"] = "failed_at"
        update_rows(
            session, "bodies:set_failed", _MESSAGE, failures, columns=failed_columns, constants=failed, where=unrendered
        )
        insert_rows(session, "bodies:short_codes", _SHORT_CODE, short_codes, _SHORT_CODE_COLUMNS)
        return out


_MESSAGE = Message.__table__  # type: ignore[attr-defined]  # set by SQLModel, not in its stubs
_SHORT_CODE = ShortCode.__table__  # type: ignore[attr-defined]
_SHORT_CODE_COLUMNS = ("code", "message_id", "link_id", "destination")


def _failure(message_id: int, code: str, text: str, now: datetime) -> dict[str, Any]:
    return {"mid": message_id, "error_code": code, "error_text": text, "failed_at": now}


def bare_rows(session: Session, where: Sequence[Any], *, limit: int | None = None) -> list[Bare]:
    """Queued rows with a variant and no body yet, under `where`, in id order, with their contacts,
    locked (PostgreSQL: FOR UPDATE of the messages; a renderer waiting on them finds them rendered
    and skips them; SQLite: the one writer) until the caller's transaction ends."""
    query = (
        select(
            col(Message.id),
            col(Message.variant_id),
            col(Contact.phone),
            col(Contact.name),
            col(Contact.timezone),
            col(Contact.attributes),
            col(Message.contact_id),
        )
        .join(Contact, col(Contact.id) == col(Message.contact_id))
        .where(
            col(Message.status) == MessageStatus.QUEUED,
            col(Message.body) == "",
            col(Message.variant_id).is_not(None),
            *where,
        )
        .order_by(col(Message.id))
    )
    if limit is not None:
        query = query.limit(limit)
    query = query.with_for_update(of=Message)
    return [Bare(r[0], r[1], r[6], r[2], r[3], r[4], dict(r[5] or {})) for r in session.execute(query)]


def render_pending(
    engine: Engine,
    registry: PluginRegistry,
    campaign_id: int,
    *,
    heartbeat: Callable[[], None] = lambda: None,
    only: Sequence[int] | None = None,
) -> int:
    """Render queued rows that have a variant but no body yet: text, tracked links, segments
    (`only`: just these message ids, e.g. the one text an automation step sends). A campaign's
    batches render their own rows as they are sent (core/delivery/sending.py); this is for the
    callers that want the text stored before."""
    rendered = 0
    where = [col(Message.campaign_id) == campaign_id]
    if only is not None:
        where.append(col(Message.id).in_(only))
    while True:
        with session_scope(engine) as session:
            session.connection()  # begin (SQLite: the write lock, so no other renderer meanwhile)
            lock_tallies(session, [campaign_id])  # a text that does not render moves the counts
            rows = bare_rows(session, where, limit=RENDER_CHUNK)
            if not rows:
                return rendered
            Renderer(session, registry, campaign_id).render(session, rows)
            rendered += len(rows)
        heartbeat()
