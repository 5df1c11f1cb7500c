"""A campaign's variants rendered for a few contacts, as they would be sent; nothing is stored.

Tracked links show a sample code of the real length, drawn from the shortener but never saved.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col

from core.campaigns.definition import get_campaign, iter_audience, variants_of
from core.campaigns.rendering import render_tracked
from core.campaigns.templates import compile_body
from core.db import session_scope
from core.hooks.registry import PluginRegistry
from core.models import Contact


def preview_campaign(
    engine: Engine, registry: PluginRegistry, campaign_id: int, *, contact_ids: list[int] | None, limit: int
) -> dict[str, Any]:
    """Each variant rendered for `limit` contacts (those named, else the audience's first), with
    characters, encoding, segments, warnings and the destinations of its links."""
    shortener = registry.shortener
    public_url = registry.context.settings.public_url
    with session_scope(engine, read_only=True) as session:
        campaign = get_campaign(session, campaign_id)
        if contact_ids:
            contacts = list(
                session.scalars(select(Contact).where(col(Contact.id).in_(contact_ids)).order_by(col(Contact.id)))
            )[:limit]
        else:
            contacts = []
            for contact in iter_audience(session, campaign):
                contacts.append(contact)
                if len(contacts) >= limit:
                    break
        out = []
        for variant in variants_of(session, campaign_id):
            if variant.is_control:
                continue
            template = compile_body(variant.body, variant=variant.name)
            samples = []
            for contact in contacts:
                rendered = render_tracked(
                    template,
                    contact,
                    tracking=campaign.tracking or {},
                    shortener=shortener,
                    public_url=public_url,
                    variant=variant.name,
                )
                samples.append(
                    {
                        "contact_id": contact.id,
                        "phone": contact.phone,
                        "body": rendered.body,
                        "characters": rendered.segments.characters,
                        "encoding": rendered.segments.encoding,
                        "segments": rendered.segments.segments,
                        "warnings": list(rendered.segments.warnings),
                        "links": rendered.destinations,
                    }
                )
            out.append({"variant": variant.name, "samples": samples})
        return {"variants": out}
