"""The row shapes shared by several routes (API.md "Shapes shared by the routes")."""

from __future__ import annotations

from typing import Any

from core.campaigns.definition import iso
from core.models import Click, Message


def message_dict(m: Message, variant: str | None = None) -> dict[str, Any]:
    return {
        "id": m.id,
        "campaign_id": m.campaign_id,
        "contact_id": m.contact_id,
        "phone": m.phone,
        "variant": variant,
        "variant_id": m.variant_id,
        "phase": m.phase,
        "body": m.body,
        "characters": m.characters,
        "encoding": m.encoding,
        "segments": m.segments,
        "status": m.status,
        "error_code": m.error_code,
        "error_text": m.error_text,
        "provider": m.provider,
        "provider_message_id": m.provider_message_id,
        "queued_at": iso(m.queued_at),
        "sent_at": iso(m.sent_at),
        "delivered_at": iso(m.delivered_at),
        "failed_at": iso(m.failed_at),
    }


def click_dict(c: Click, phone: str | None = None, url: str | None = None) -> dict[str, Any]:
    return {
        "id": c.id,
        "message_id": c.message_id,
        "contact_id": c.contact_id,
        "phone": phone,
        "link_id": c.link_id,
        "url": url,
        "clicked_at": iso(c.clicked_at),
        "ip": c.ip,
        "user_agent": c.user_agent,
        "referer": c.referer,
        "os": c.os,
        "device": c.device,
        "is_bot": c.is_bot,
        "bot_score": c.bot_score,
        "bot_reasons": list(c.bot_reasons or []),
    }
