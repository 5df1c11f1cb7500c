"""The payloads of the on_* hooks, built from what the domain just stored.

Callers build them only when a plugin listens (`PluginRegistry.listens`), so a process without
listeners pays nothing; the dataclasses themselves live in `core.hooks.contracts`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col

from core.hooks.contracts import ClickRecorded, ConversionRecorded, MessageStatusChanged, ReplyReceived
from core.log import get_logger
from core.models import Message, Reply

if TYPE_CHECKING:
    from core.hooks.registry import PluginRegistry

log = get_logger("textpulse.hooks")

# Messages read per query when the moves of a batch of callbacks are told.
READ_CHUNK = 500

_MESSAGES = select(
    col(Message.id),
    col(Message.campaign_id),
    col(Message.contact_id),
    col(Message.phone),
    col(Message.provider),
    col(Message.provider_message_id),
    col(Message.error_code),
    col(Message.error_text),
    col(Message.status_changed_at),
)


def messages_status_changed(engine: Engine, changes: Sequence[tuple[int, str, str]]) -> list[MessageStatusChanged]:
    """The moves (message id, old status, new status) a transaction committed, with what a listener
    needs to know of each message, read in one query per READ_CHUNK messages after the commit (the
    error code and time are the message's as stored now)."""
    ids = sorted({message_id for message_id, _, _ in changes})
    rows: dict[int, Any] = {}
    with engine.connect() as conn:
        for start in range(0, len(ids), READ_CHUNK):
            chunk = ids[start : start + READ_CHUNK]
            rows.update((row.id, row) for row in conn.execute(_MESSAGES.where(col(Message.id).in_(chunk))))
    return [
        MessageStatusChanged(
            message_id=message_id,
            campaign_id=row.campaign_id,
            contact_id=row.contact_id,
            phone=row.phone,
            provider=row.provider,
            provider_message_id=row.provider_message_id,
            old_status=str(old_status),
            new_status=str(new_status),
            error_code=row.error_code,
            error_text=row.error_text,
            changed_at=row.status_changed_at,
        )
        for message_id, old_status, new_status in changes
        if (row := rows.get(message_id)) is not None
    ]


def click_recorded(row: Mapping[str, Any]) -> ClickRecorded:
    """A stored click row (`core.tracking` writes these keys) as the on_click payload."""
    return ClickRecorded(
        code=row["code"],
        campaign_id=row["campaign_id"],
        message_id=row["message_id"],
        link_id=row["link_id"],
        contact_id=row["contact_id"],
        clicked_at=row["clicked_at"],
        ip=row["ip"],
        user_agent=row["user_agent"],
        referer=row["referer"],
        os=row["os"],
        device=row["device"],
        is_bot=bool(row["is_bot"]),
        bot_score=float(row["bot_score"] or 0.0),
        bot_reasons=tuple(row["bot_reasons"] or ()),
    )


def reply_received(reply: Reply, action: str | None = None) -> ReplyReceived:
    """A stored reply, with what was done about its keyword (`opted_out`, `opted_in`, `help`)."""
    return ReplyReceived(
        reply_id=reply.id or 0,
        phone=reply.phone,
        body=reply.body,
        provider=reply.provider,
        received_at=reply.received_at,
        contact_id=reply.contact_id,
        campaign_id=reply.campaign_id,
        message_id=reply.message_id,
        keyword=reply.keyword,
        action=action,
        provider_message_id=reply.provider_message_id,
    )


def conversion_recorded(body: Mapping[str, Any]) -> ConversionRecorded:
    """The answer of POST /api/events (a stored conversion) as the on_conversion payload."""
    occurred_at = body["occurred_at"]
    if isinstance(occurred_at, str):
        occurred_at = datetime.fromisoformat(occurred_at)
    return ConversionRecorded(
        conversion_id=body["id"],
        contact_id=body["contact_id"],
        phone=body["phone"],
        name=body["name"],
        revenue=float(body["revenue"] or 0.0),
        occurred_at=occurred_at,
        campaign_id=body.get("campaign_id"),
        message_id=body.get("message_id"),
        attribution=body.get("attribution"),
    )


def status_listener(
    engine: Engine, registry: PluginRegistry
) -> Callable[[Sequence[tuple[int, str, str]]], None] | None:
    """Tells the plugins' `on_message_status` of committed moves, (message id, old, new) each,
    reading the batch's messages in one query; None when no plugin listens (nothing is read)."""
    if not registry.listens("on_message_status"):
        return None

    def notify(changes: Sequence[tuple[int, str, str]]) -> None:
        for event in messages_status_changed(engine, changes):
            try:
                registry.pm.hook.on_message_status(event=event)
            except Exception:  # a listener failing on one move is still told of the others
                log.exception("on_message_status listener failed", message_id=event.message_id)

    return notify
