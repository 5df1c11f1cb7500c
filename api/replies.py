"""/api/campaigns/{id}/replies: the inbound messages attributed to a campaign, one row each."""

from __future__ import annotations

from typing import cast

from litestar import Controller, get
from litestar.params import Parameter
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col

from api.paging import page
from api.params import Id, choice, one_of
from api.schemas.rows import ReplyPage, ReplyRow
from core.campaigns.definition import get_campaign, iso, variants_of
from core.db import session_scope
from core.models import Contact, Message, Reply

KEYWORDS = ("include", "exclude", "only")


class ReplyController(Controller):
    path = "/campaigns/{campaign_id:int}/replies"
    tags = ["replies"]

    @get("/", operation_id="listReplies", sync_to_thread=True)
    def list_replies(
        self,
        engine: Engine,
        campaign_id: Id,
        phone: str | None = None,
        keywords: str = choice(KEYWORDS, default="include", description="include (default) | exclude | only"),
        cursor: str | None = None,
        limit: int = Parameter(default=100, ge=1, le=1000),
    ) -> ReplyPage:
        """Replies attributed to the campaign (its contacts' latest message within 7 days), oldest first:
        who (contact, phone, opted out or not), to which message and variant, what they wrote, and the
        keyword (STOP, START, HELP, …) when the reply was one. `keywords=exclude` leaves keywords out,
        `only` shows nothing else (another value: 400)."""
        one_of("keywords", keywords, KEYWORDS)
        with session_scope(engine) as session:
            get_campaign(session, campaign_id)
            names = {v.id: v.name for v in variants_of(session, campaign_id)}
            query = select(Reply).where(col(Reply.campaign_id) == campaign_id)
            if phone:
                query = query.where(col(Reply.phone) == phone)
            if keywords == "exclude":
                query = query.where(col(Reply.keyword).is_(None))
            elif keywords == "only":
                query = query.where(col(Reply.keyword).is_not(None))
            # The page's replies first, then their contacts and variants in one query each.
            replies = page(session, query, col(Reply.id), cursor, limit, lambda r: r)
            contacts = {
                c.id: c
                for c in session.scalars(
                    select(Contact).where(col(Contact.id).in_({r.contact_id for r in replies["items"] if r.contact_id}))
                )
            }
            variant_of = dict(
                session.execute(
                    select(col(Message.id), col(Message.variant_id)).where(
                        col(Message.id).in_({r.message_id for r in replies["items"] if r.message_id})
                    )
                ).all()
            )
            return {
                "items": [
                    _row(r, contacts.get(r.contact_id), names.get(variant_of.get(r.message_id)))
                    for r in replies["items"]
                ],
                "next": replies["next"],
            }


def _row(reply: Reply, contact: Contact | None, variant: str | None) -> ReplyRow:
    # Cast: a stored reply's id is set and its received_at a string once iso() has it.
    return cast(
        ReplyRow,
        {
            "id": reply.id,
            "campaign_id": reply.campaign_id,
            "message_id": reply.message_id,
            "variant": variant,
            "contact_id": reply.contact_id,
            "phone": reply.phone,
            "name": contact.name if contact else None,
            "opted_out": bool(contact and contact.opted_out_at),
            "body": reply.body,
            "keyword": reply.keyword,
            "received_at": iso(reply.received_at),
            "provider": reply.provider,
            "provider_message_id": reply.provider_message_id,
        },
    )
