"""Delivery status: one state machine for every provider (DESIGN.md "Status rules").

A status never moves backwards and terminal states are final: the update is a single
conditional UPDATE (`WHERE status IN <lower states>`), so concurrent and duplicate callbacks
are safe on SQLite and PostgreSQL alike. Every callback is stored raw first; one whose
provider id is not known yet stays pending and is applied when the send records the id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.db import session_scope
from core.models import Message, StatusEvent, utcnow
from core.providers import StatusUpdate

RANK = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3, "undelivered": 3, "failed": 3, "cancelled": 3}
TERMINAL = frozenset(s for s, r in RANK.items() if r == 3)


def lower_states(status: str) -> tuple[str, ...]:
    rank = RANK[status]
    return tuple(s for s, r in RANK.items() if r < rank)


@dataclass
class IngestOutcome:
    stored: int = 0
    applied: int = 0
    changed: int = 0
    unmatched: int = 0


StatusListener = Callable[[int, str, str], None]


def _apply(session: Session, message_id: int, old_status: str, upd: StatusUpdate, when: datetime) -> bool:
    """Move one message forward; False when the update would go backwards or repeats."""
    if upd.status not in RANK or RANK[upd.status] <= RANK.get(old_status, 0):
        return False
    values: dict[str, Any] = {"status": upd.status, "status_changed_at": utcnow()}
    if upd.status in ("sent", "delivered", "undelivered"):
        values["sent_at"] = func.coalesce(Message.sent_at, when)
    if upd.status == "delivered":
        values["delivered_at"] = when
    if upd.status in ("failed", "undelivered"):
        values["failed_at"] = when
    if upd.error_code is not None or upd.error_text is not None:
        values["error_code"], values["error_text"] = upd.error_code, upd.error_text
    result = session.execute(
        update(Message).where(Message.id == message_id, Message.status.in_(lower_states(upd.status))).values(**values)
    )
    return bool(result.rowcount)


def ingest_status_updates(engine: Engine, provider: str, updates: Sequence[StatusUpdate], raw: dict[str, Any],
                          *, on_change: StatusListener | None = None) -> IngestOutcome:
    """Store each callback raw, then apply it to its message when that message is known."""
    outcome = IngestOutcome()
    changes: list[tuple[int, str, str]] = []
    with session_scope(engine) as session:
        for upd in updates:
            event = StatusEvent(provider=provider, provider_message_id=upd.provider_message_id, status=upd.status,
                                error_code=upd.error_code, error_text=upd.error_text, occurred_at=upd.occurred_at,
                                raw=raw)
            session.add(event)
            outcome.stored += 1
            row = session.execute(
                select(Message.id, Message.status)
                .where(Message.provider == provider, Message.provider_message_id == upd.provider_message_id)
            ).first()
            if row is None:
                outcome.unmatched += 1  # kept; applied once the send records this provider id
                continue
            message_id, old_status = row
            event.message_id, event.applied = message_id, True
            event.changed = _apply(session, message_id, old_status, upd, upd.occurred_at or event.received_at)
            outcome.applied += 1
            if event.changed:
                outcome.changed += 1
                changes.append((message_id, old_status, upd.status))
    if on_change:
        for change in changes:
            on_change(*change)
    return outcome


def apply_pending_events(engine: Engine, provider: str, provider_message_ids: Sequence[str],
                         *, on_change: StatusListener | None = None) -> int:
    """Apply callbacks that arrived before their provider id was recorded; returns how many."""
    applied = 0
    changes: list[tuple[int, str, str]] = []
    with session_scope(engine) as session:
        for start in range(0, len(provider_message_ids), 500):
            chunk = list(provider_message_ids[start : start + 500])
            events = session.scalars(
                select(StatusEvent).where(StatusEvent.provider == provider, StatusEvent.applied.is_(False),
                                          StatusEvent.provider_message_id.in_(chunk)).order_by(StatusEvent.id)
            ).all()
            for event in events:
                row = session.execute(
                    select(Message.id, Message.status)
                    .where(Message.provider == provider, Message.provider_message_id == event.provider_message_id)
                ).first()
                if row is None:
                    continue
                message_id, old_status = row
                upd = StatusUpdate(event.provider_message_id, event.status, event.error_code, event.error_text,
                                   event.occurred_at)
                event.message_id, event.applied = message_id, True
                event.changed = _apply(session, message_id, old_status, upd, upd.occurred_at or event.received_at)
                session.add(event)
                applied += 1
                if event.changed:
                    changes.append((message_id, old_status, upd.status))
    if on_change:
        for change in changes:
            on_change(*change)
    return applied
