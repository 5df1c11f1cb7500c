"""Delivery status: one state machine for every provider (DESIGN.md "Status rules").

A status never moves backwards and terminal states are final: each move is a single
conditional UPDATE (`WHERE status IN <lower states>`), so concurrent and duplicate callbacks
are safe on SQLite and PostgreSQL alike. Every callback is stored raw (`status_event`).

A callback whose provider id is not known yet is stored unapplied (`applied = false`, no
`message_id`): it is applied when the send records that id (`apply_pending_events`). Two
transactions race here on PostgreSQL (READ COMMITTED): the webhook's insert of the event may
commit after the sender's lookup of pending events ran. So both sides look again after their
own commit: the sender records the id, commits, then applies pending events; the webhook stores
the event, commits, then applies it if its id is known by now. Whichever commits last sees the
other's row, so no callback is left behind. An event is claimed with a conditional UPDATE
(`applied = false → true`) before it moves its message, so the two never apply it twice.
Events still unapplied after that are callbacks for ids we never sent: kept for audit, flagged
by `applied = false` (see `unknown_events`), and answered 200 so the provider stops retrying.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Table, and_, bindparam, func, insert, literal_column, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnClause
from sqlmodel import Session, col
from sqlmodel.sql.sqltypes import UTCDateTime

from core.db import READ_ONLY, session_scope
from core.delivery.prepared import PreparedStatement
from core.hooks.contracts import StatusUpdate
from core.log import get_logger
from core.models import Message, StatusEvent, utcnow
from core.statuses import MESSAGE_RANK, MessageStatus

# core.statuses' order, keyed by plain strings: the callbacks' statuses are looked up here several
# times per update, and a str key finds a str faster than a StrEnum member.
RANK: dict[str, int] = {status.value: rank for status, rank in MESSAGE_RANK.items()}
LOOKUP_CHUNK = 500

log = get_logger("textpulse.delivery")


def lower_states(status: str) -> tuple[str, ...]:
    rank = RANK[status]
    return tuple(s for s, r in RANK.items() if r < rank)


@dataclass
class IngestOutcome:
    stored: int = 0
    applied: int = 0
    changed: int = 0
    unmatched: int = 0
    unmatched_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Callback:
    """One verified provider request: the updates it carries and its raw form for the audit trail."""

    provider: str
    updates: Sequence[StatusUpdate]
    raw: dict[str, Any]


# Told of the moves a transaction committed, all at once: (message id, old status, new status).
StatusListener = Callable[[Sequence[tuple[int, str, str]]], None]


# SQLModel sets `__table__` on table models; its type stubs do not declare it.
_MESSAGE: Table = Message.__table__  # type: ignore[attr-defined]
_EVENT: Table = StatusEvent.__table__  # type: ignore[attr-defined]
_UPDATES: dict[tuple[str, bool], Any] = {}
_UTC = UTCDateTime()  # the timestamps' column type
# The timestamps a move to a status sets (sent_at only when not set yet: a late `sent` keeps it).
SETS_SENT_AT = frozenset({MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.UNDELIVERED})
SETS_DELIVERED_AT = frozenset({MessageStatus.DELIVERED})
SETS_FAILED_AT = frozenset({MessageStatus.FAILED, MessageStatus.UNDELIVERED})


def _update_statement(status: str, with_error: bool) -> Any:
    """The conditional UPDATE that moves a message to `status` (built once, executed often)."""
    key = (status, with_error)
    if key not in _UPDATES:
        when = bindparam("when", type_=_MESSAGE.c.sent_at.type)
        values: dict[str, Any] = {"status": status, "status_changed_at": bindparam("now", type_=when.type)}
        if status in SETS_SENT_AT:
            values["sent_at"] = func.coalesce(_MESSAGE.c.sent_at, when)
        if status in SETS_DELIVERED_AT:
            values["delivered_at"] = when
        if status in SETS_FAILED_AT:
            values["failed_at"] = when
        if with_error:
            values["error_code"], values["error_text"] = bindparam("code"), bindparam("text")
        lower: list[ColumnClause[Any]] = [literal_column(f"'{s}'") for s in lower_states(status)]  # constants, inline
        _UPDATES[key] = (
            update(_MESSAGE).where(_MESSAGE.c.id == bindparam("mid"), _MESSAGE.c.status.in_(lower)).values(**values)
        )
    return _UPDATES[key]


def _apply(conn: Connection, message_id: int, upd: StatusUpdate, when: datetime) -> bool:
    """Move one message forward; False when the update would go backwards or repeats."""
    if upd.status not in RANK:
        return False
    with_error = upd.error_code is not None or upd.error_text is not None
    params: dict[str, Any] = {"mid": message_id, "when": when, "now": utcnow()}
    if with_error:
        params["code"], params["text"] = upd.error_code, upd.error_text
    result = conn.execute(_update_statement(upd.status, with_error), params)
    return bool(result.rowcount)


def _apply_many(conn: Connection, final: dict[int, StatusUpdate], now: datetime) -> None:
    """One UPDATE per message (to where it ends): PostgreSQL all in one statement (`_move_all`),
    elsewhere executed many at a time per statement shape.

    The caller has taken the messages' campaigns' tally rows first, in campaign id order
    (`lock_tallies`), then the messages: updates in message id order would take the tallies in
    the order of the messages."""
    if conn.dialect.name == "postgresql":
        _move_all(conn, final, now)
        return
    groups: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for message_id in sorted(final):
        upd = final[message_id]
        with_error = upd.error_code is not None or upd.error_text is not None
        params = {"mid": message_id, "when": upd.occurred_at or now, "now": now}
        if with_error:
            params["code"], params["text"] = upd.error_code, upd.error_text
        groups.setdefault((upd.status, with_error), []).append(params)
    for (status, with_error), params_list in groups.items():
        prepared = PreparedStatement.get(
            ("update", status, with_error), partial(_update_statement, status, with_error), conn.dialect
        )
        result = prepared.execute(conn, params_list)
        if result.rowcount not in (-1, len(params_list)):  # cannot happen while the rows are locked
            log.warning(
                "status updates did not all apply", status=status, expected=len(params_list), applied=result.rowcount
            )


def _quoted(statuses: frozenset[MessageStatus]) -> str:
    return ", ".join(f"'{s.value}'" for s in sorted(statuses))


def _rank_of(column: str) -> str:
    return f"CASE {column} " + " ".join(f"WHEN '{s}' THEN {r}" for s, r in RANK.items()) + " ELSE -1 END"


# PostgreSQL: every move of a batch in one UPDATE ... FROM unnest(arrays), so the statement-level
# tally triggers run once per batch, not once per message (an executemany is one statement per
# row on psycopg). The same moves as `_update_statement`'s, chosen per row by the new status.
_MOVE_ALL = text(
    f"""UPDATE message SET
    status = given.status,
    status_changed_at = :now,
    sent_at = CASE WHEN given.status IN ({_quoted(SETS_SENT_AT)})
        THEN coalesce(message.sent_at, given.moved_at) ELSE message.sent_at END,
    delivered_at = CASE WHEN given.status IN ({_quoted(SETS_DELIVERED_AT)})
        THEN given.moved_at ELSE message.delivered_at END,
    failed_at = CASE WHEN given.status IN ({_quoted(SETS_FAILED_AT)})
        THEN given.moved_at ELSE message.failed_at END,
    error_code = CASE WHEN given.with_error THEN given.code ELSE message.error_code END,
    error_text = CASE WHEN given.with_error THEN given.reason ELSE message.error_text END
FROM unnest(CAST(:mid AS INTEGER[]), CAST(:status AS VARCHAR[]), CAST(:moved_at AS TIMESTAMPTZ[]),
            CAST(:with_error AS BOOLEAN[]), CAST(:code AS VARCHAR[]), CAST(:reason AS VARCHAR[]))
    AS given(mid, status, moved_at, with_error, code, reason)
WHERE message.id = given.mid AND {_rank_of("message.status")} < {_rank_of("given.status")}"""
).bindparams(bindparam("now", type_=_MESSAGE.c.status_changed_at.type))


def _utc(value: datetime, dialect: Any) -> datetime | None:
    """As the column's type binds it (aware, in UTC; a naive time is refused)."""
    return _UTC.process_bind_param(value, dialect)


def _move_all(conn: Connection, final: dict[int, StatusUpdate], now: datetime) -> None:
    ids = sorted(final)
    updates = [final[i] for i in ids]
    result = conn.execute(
        _MOVE_ALL,
        {
            "now": now,
            "mid": ids,
            "status": [u.status for u in updates],
            "moved_at": [_utc(u.occurred_at or now, conn.dialect) for u in updates],
            "with_error": [u.error_code is not None or u.error_text is not None for u in updates],
            "code": [u.error_code for u in updates],
            "reason": [u.error_text for u in updates],
        },
    )
    if result.rowcount != len(ids):  # cannot happen while the rows are locked
        log.warning("status updates did not all apply", expected=len(ids), applied=result.rowcount)


_LOOKUP = (
    select(_MESSAGE.c.provider_message_id, _MESSAGE.c.id, _MESSAGE.c.status)
    .where(
        _MESSAGE.c.provider == bindparam("provider"),
        _MESSAGE.c.provider_message_id.in_(bindparam("ids", expanding=True)),
    )
    .order_by(_MESSAGE.c.id)
)
# FOR NO KEY UPDATE (PostgreSQL): the moves change no key, and a click's insert takes FOR KEY SHARE
# on its message (the foreign key's check), which FOR UPDATE would conflict with: a click batch
# and a callback batch then locked the same messages in opposite orders and deadlocked.
_LOOKUP_LOCKED = _LOOKUP.with_for_update(key_share=True)


def _lookup(
    conn: Connection,
    provider: str,
    provider_ids: set[str],
    *,
    lock: bool = False,
) -> dict[str, tuple[int, str]]:
    """provider id → (message id, status); `lock` takes the rows (PostgreSQL) in id order."""
    found: dict[str, tuple[int, str]] = {}
    ids = sorted(provider_ids)
    for start in range(0, len(ids), LOOKUP_CHUNK):
        params = {"provider": provider, "ids": ids[start : start + LOOKUP_CHUNK]}
        for provider_id, message_id, status in conn.execute(_LOOKUP_LOCKED if lock else _LOOKUP, params):
            found[provider_id] = (message_id, status)
    return found


_LOCK_TALLIES_OF_PROVIDER_IDS = text(
    "SELECT campaign_id FROM campaign_tally WHERE campaign_id IN (SELECT campaign_id FROM message "
    "WHERE provider = :provider AND provider_message_id = ANY(CAST(:ids AS VARCHAR[]))) "
    "ORDER BY campaign_id FOR NO KEY UPDATE OF campaign_tally"
)


def _lock_tallies_of(conn: Connection, provider: str, provider_ids: set[str]) -> None:
    """PostgreSQL: the tally rows of the campaigns these provider ids belong to, in campaign id
    order (`tallies.lock_tallies`), in one statement (an array is one parameter, whatever its length)."""
    conn.execute(_LOCK_TALLIES_OF_PROVIDER_IDS, {"provider": provider, "ids": sorted(provider_ids)})


def ingest_callbacks(
    engine: Engine, callbacks: Sequence[Callback], *, on_change: StatusListener | None = None
) -> list[IngestOutcome]:
    """Store and apply many callbacks in one transaction (the webhook batches concurrent ones).

    The messages concerned are locked first (PostgreSQL: FOR UPDATE, in id order, so two writers
    never wait on each other crosswise; SQLite: the transaction is the only writer), so their
    statuses as read are the truth until commit. The state machine then runs here, in arrival
    order, and each message gets one UPDATE to where it ends, executed together with the others
    of its shape. Returns one outcome per callback.
    """
    outcomes = [IngestOutcome() for _ in callbacks]
    changes: list[tuple[int, str, str]] = []
    pending: dict[str, set[str]] = {}
    now = utcnow()
    with engine.begin() as conn:
        wanted: dict[str, set[str]] = {}
        for cb in callbacks:
            wanted.setdefault(cb.provider, set()).update(u.provider_message_id for u in cb.updates)
        if conn.dialect.name == "postgresql":
            # The tally rows first, then the messages, as the senders take them (tallies.lock_tallies):
            # the other order met a sender's claim and cancel_pending in a deadlock (seen in the suite).
            for provider, ids in wanted.items():
                _lock_tallies_of(conn, provider, ids)
        known = {provider: _lookup(conn, provider, ids, lock=True) for provider, ids in wanted.items()}
        status_now = {mid: status for per in known.values() for mid, status in per.values()}
        final: dict[int, StatusUpdate] = {}  # the last update that moves each message
        rows: list[dict[str, Any]] = []
        for index, cb in enumerate(callbacks):
            for upd in cb.updates:
                row: dict[str, Any] = {
                    "provider": cb.provider,
                    "provider_message_id": upd.provider_message_id,
                    "status": upd.status,
                    "error_code": upd.error_code,
                    "error_text": upd.error_text,
                    "occurred_at": upd.occurred_at,
                    "received_at": now,
                    "raw": cb.raw,
                    "message_id": None,
                    "applied": False,
                    "changed": False,
                }
                rows.append(row)
                outcomes[index].stored += 1
                match = known[cb.provider].get(upd.provider_message_id)
                if match is None:
                    outcomes[index].unmatched += 1
                    outcomes[index].unmatched_ids.append(upd.provider_message_id)
                    pending.setdefault(cb.provider, set()).add(upd.provider_message_id)
                    continue
                message_id = match[0]
                row["message_id"], row["applied"] = message_id, True
                outcomes[index].applied += 1
                old = status_now[message_id]
                if RANK.get(upd.status, -1) > RANK.get(old, 0):
                    row["changed"] = True
                    outcomes[index].changed += 1
                    status_now[message_id] = upd.status
                    final[message_id] = upd
                    changes.append((message_id, old, upd.status))
        _apply_many(conn, final, now)
        if rows:
            PreparedStatement.get("insert_event", lambda: insert(_EVENT), conn.dialect, list(rows[0])).execute(
                conn, rows
            )
    _notify(on_change, changes)
    for provider, ids in pending.items():
        # Look again after our commit: the sender may have recorded these ids meanwhile.
        late = _recheck(engine, provider, sorted(ids), on_change)
        for index, cb in enumerate(callbacks):
            if cb.provider == provider and late.intersection(outcomes[index].unmatched_ids):
                now_known = [pid for pid in outcomes[index].unmatched_ids if pid in late]
                outcomes[index].unmatched_ids = [pid for pid in outcomes[index].unmatched_ids if pid not in late]
                outcomes[index].unmatched -= len(now_known)
                outcomes[index].applied += len(now_known)
    return outcomes


def _recheck(engine: Engine, provider: str, provider_ids: list[str], on_change: StatusListener | None) -> set[str]:
    """The webhook's look after commit; the events are stored already, so a failure here is logged, not raised."""
    for attempt in range(3):
        try:
            return set(_apply_pending(engine, provider, provider_ids, on_change))
        except Exception as exc:  # a locked or restarting database
            log.warning("pending callbacks not rechecked", provider=provider, error=str(exc), attempt=attempt)
            time.sleep(0.05 * 2**attempt)
    log.error("pending callbacks left for the sender to apply", provider=provider, ids=provider_ids[:20])
    return set()


def _notify(on_change: StatusListener | None, changes: list[tuple[int, str, str]]) -> None:
    if on_change is None or not changes:
        return
    try:
        on_change(changes)
    except Exception:  # a listener's failure must not undo or repeat a stored callback
        log.exception("on_message_status listener failed", changes=len(changes))


def ingest_status_updates(
    engine: Engine,
    provider: str,
    updates: Sequence[StatusUpdate],
    raw: dict[str, Any],
    *,
    on_change: StatusListener | None = None,
) -> IngestOutcome:
    """Store one callback raw, then apply it to its message when that message is known."""
    return ingest_callbacks(engine, [Callback(provider, updates, raw)], on_change=on_change)[0]


def apply_pending_events(
    engine: Engine, provider: str, provider_message_ids: Sequence[str], *, on_change: StatusListener | None = None
) -> int:
    """Apply callbacks that arrived before their provider id was recorded; returns how many."""
    return len(_apply_pending(engine, provider, provider_message_ids, on_change))


def _apply_pending(
    engine: Engine, provider: str, provider_message_ids: Sequence[str], on_change: StatusListener | None
) -> list[str]:
    """The provider ids of the events applied, one entry per event."""
    applied: list[str] = []
    changes: list[tuple[int, str, str]] = []
    if not _any_pending(engine, provider, provider_message_ids):
        return applied  # the usual case: no write transaction (on SQLite, no wait for the write lock)
    with engine.begin() as conn:
        found: list[tuple[int, int, Any]] = []
        for start in range(0, len(provider_message_ids), LOOKUP_CHUNK):
            chunk = list(provider_message_ids[start : start + LOOKUP_CHUNK])
            events = conn.execute(
                select(
                    _EVENT.c.id,
                    _EVENT.c.provider_message_id,
                    _EVENT.c.status,
                    _EVENT.c.error_code,
                    _EVENT.c.error_text,
                    _EVENT.c.occurred_at,
                    _EVENT.c.received_at,
                ).where(*_not_applied(provider, chunk))
            ).all()
            if not events:
                continue
            pending_ids = {e.provider_message_id for e in events}
            if conn.dialect.name == "postgresql":
                # The tally rows first, then the messages, as ingest_callbacks and the senders take
                # them: the other order deadlocked with a callback batch (seen in the suite).
                _lock_tallies_of(conn, provider, pending_ids)
            known = _lookup(conn, provider, pending_ids, lock=True)
            found += [(known[e.provider_message_id][0], e.id, e) for e in events if e.provider_message_id in known]
        # Message id order, like ingest_callbacks, so the two never wait on each other crosswise.
        for message_id, _, event in sorted(found, key=lambda f: (f[0], f[1])):
            claimed = conn.execute(
                update(_EVENT)
                .where(_EVENT.c.id == event.id, _EVENT.c.applied.is_(False))
                .values(applied=True, message_id=message_id)
            ).rowcount
            if not claimed:
                continue  # the other side of the race applied it
            old = conn.scalar(select(_MESSAGE.c.status).where(_MESSAGE.c.id == message_id)) or MessageStatus.QUEUED
            upd = StatusUpdate(
                event.provider_message_id, event.status, event.error_code, event.error_text, event.occurred_at
            )
            applied.append(event.provider_message_id)
            if RANK.get(upd.status, -1) > RANK.get(old, 0) and _apply(
                conn, message_id, upd, upd.occurred_at or event.received_at
            ):
                conn.execute(update(_EVENT).where(_EVENT.c.id == event.id).values(changed=True))
                changes.append((message_id, old, upd.status))
    _notify(on_change, changes)
    return applied


def _any_pending(engine: Engine, provider: str, provider_message_ids: Sequence[str]) -> bool:
    """Is any callback for these provider ids stored and not applied? Read in a read-only
    transaction, after the caller's commit recorded the ids (so a callback stored before it is
    seen; one stored after it found its message)."""
    with engine.execution_options(**{READ_ONLY: True}).connect() as conn:
        for start in range(0, len(provider_message_ids), LOOKUP_CHUNK):
            chunk = list(provider_message_ids[start : start + LOOKUP_CHUNK])
            if conn.execute(select(_EVENT.c.id).where(*_not_applied(provider, chunk)).limit(1)).first() is not None:
                return True
    return False


def _not_applied(provider: str, provider_message_ids: list[str]) -> list[Any]:
    """The stored callbacks of these provider ids not applied to a message yet."""
    return [
        _EVENT.c.provider == provider,
        _EVENT.c.applied.is_(False),
        _EVENT.c.provider_message_id.in_(provider_message_ids),
    ]


def unknown_events(session: Session, *, provider: str | None = None, limit: int = 100) -> list[StatusEvent]:
    """Callbacks not (yet) matched to any message we sent, newest first: the flagged ones."""
    query = select(StatusEvent).where(col(StatusEvent.applied).is_(False))
    if provider is not None:
        query = query.where(col(StatusEvent.provider) == provider)
    return list(session.scalars(query.order_by(col(StatusEvent.id).desc()).limit(limit)))


def sweep_campaign(engine: Engine, campaign_id: int, *, on_change: StatusListener | None = None) -> int:
    """Apply any callback of this campaign still pending (a safety net run when sending ends: a
    callback stored just before its provider id was recorded is normally applied by whichever of
    the sender and the webhook commits last; this covers a process that died in between)."""
    with session_scope(engine, read_only=True) as session:
        rows = session.execute(
            select(col(Message.provider), col(Message.provider_message_id))
            .join(
                StatusEvent,
                and_(
                    col(StatusEvent.provider) == col(Message.provider),
                    col(StatusEvent.provider_message_id) == col(Message.provider_message_id),
                ),
            )
            .where(col(Message.campaign_id) == campaign_id, col(StatusEvent.applied).is_(False))
            .distinct()
        ).all()
    by_provider: dict[str, list[str]] = {}
    for provider, provider_id in rows:
        by_provider.setdefault(provider, []).append(provider_id)
    return sum(
        apply_pending_events(engine, provider, ids, on_change=on_change) for provider, ids in by_provider.items()
    )
