"""Click storage: a batch of clicks, judged, into the click table in one transaction.

The click writer (core/tracking/click_writer.py) calls `store_clicks` from its thread; the
insert and COPY paths are written for the few microseconds of Python a row may cost there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.engine import Dialect, Engine

from core.db import is_sqlite, session_scope
from core.hooks.contracts import BotFilter
from core.models import Click
from core.stats.tallies import lock_tallies
from core.tracking.bots import judge_clicks
from core.tracking.clicks import ClickRecord
from core.tracking.clients import parse_user_agent
from core.tracking.sqlite import sqlite_driver, sqlite_timestamp

_UPDATE_VERDICT_SQLITE = (
    "UPDATE click SET is_bot = ?, bot_score = ?, bot_reasons = ? WHERE message_id = ? AND code = ? AND clicked_at = ?"
)

# The click table's columns in the order the insert and COPY paths write them.
CLICK_COLUMNS = (
    "code",
    "campaign_id",
    "message_id",
    "link_id",
    "contact_id",
    "clicked_at",
    "ip",
    "user_agent",
    "referer",
    "os",
    "device",
    "is_bot",
    "bot_score",
    "bot_reasons",
)
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
# Rows per INSERT. A batch's last statement has fewer: with at most 64 rows there are at most 64
# statement texts, which the driver's cache of prepared statements (128) keeps; with 500, most
# batches prepared their statements anew, and a click row cost 72k instructions instead of 50k
# (callgrind, batches of 150-300 clicks). Smaller still saves little and releases the GIL more.
ROWS_PER_STATEMENT = 64


@dataclass(frozen=True)
class _ClickInsert:
    prefix: str  # INSERT INTO click (...) VALUES
    row: str  # (?, ?, …) for one row
    clicked_at: Callable[[datetime], Any]  # an aware datetime as the driver takes it
    verdict: Callable[[ClickRecord], tuple[Any, Any, Any]]  # a judged click -> (is_bot, bot_score, bot_reasons)


@lru_cache(maxsize=8)
def _click_insert(dialect: Dialect) -> _ClickInsert | None:
    """The INSERT for clicks in the driver's own SQL, with the values it takes precomputed where
    they repeat (a human click's verdict) and the columns' own bind processors elsewhere."""
    mark = _PLACEHOLDERS.get(dialect.paramstyle)
    if mark is None:
        return None
    table: Table = Click.__table__  # type: ignore[attr-defined]  # set by SQLModel, not in its stubs
    assert {c.name for c in table.columns} == {"id", *CLICK_COLUMNS}, "CLICK_COLUMNS is out of date"

    def processor(name: str) -> Callable[[Any], Any]:
        column = table.columns[name]
        return column.type.dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)

    stamp = sqlite_timestamp if dialect.name == "sqlite" else processor("clicked_at")
    is_bot, bot_score, bot_reasons = processor("is_bot"), processor("bot_score"), processor("bot_reasons")
    human = (is_bot(False), bot_score(0.0), bot_reasons([]))

    def verdict(record: ClickRecord) -> tuple[Any, Any, Any]:
        if not record.reasons and not record.bot_score:
            return human
        return (is_bot(bool(record.reasons)), bot_score(record.bot_score), bot_reasons(list(record.reasons)))

    return _ClickInsert(
        f"INSERT INTO {Click.__tablename__} ({', '.join(CLICK_COLUMNS)}) VALUES ",
        f"({', '.join([mark] * len(CLICK_COLUMNS))})",
        stamp,
        verdict,
    )


def click_rows(records: Sequence[ClickRecord]) -> list[dict[str, Any]]:
    """The rows `store_clicks` writes for `records`, as dicts (what `on_click` hooks receive)."""
    rows = []
    for record in records:
        target = record.target
        os_family, device = parse_user_agent(record.user_agent)
        reasons = record.reasons
        rows.append(
            {
                "code": target.code,
                "campaign_id": target.campaign_id,
                "message_id": target.message_id,
                "link_id": target.link_id,
                "contact_id": target.contact_id,
                "clicked_at": record.clicked_at,
                "ip": record.ip,
                "user_agent": record.user_agent,
                "referer": record.referer,
                "os": os_family,
                "device": device,
                "is_bot": bool(reasons),
                "bot_score": record.bot_score,
                "bot_reasons": list(reasons),
            }
        )
    return rows


def store_clicks(
    engine: Engine,
    records: Sequence[ClickRecord],
    filters: Sequence[BotFilter] = (),
    *,
    sqlite_connection: Any = None,
    judged: bool = False,
) -> int:
    """Judge a batch of clicks (`judge_clicks`) and insert them in one transaction; returns how
    many were written.

    This runs in a thread that shares the GIL with the redirects, so the Python work per row is
    kept to building one tuple in the driver's terms: the rows go in as one multi-row INSERT per
    ROWS_PER_STATEMENT (the driver releases the GIL while SQLite or the network works, once per
    statement rather than once per row as executemany would), and values that repeat are
    processed once. The ORM's bulk insert spent ~30 µs of Python per row; this ~4 µs.

    SQLite: on the driver's connection (`sqlite_connection`, kept by the click writer, or one
    from the pool), with the transaction begun and committed in SQL: the engine's transaction
    and pool machinery cost more than a small batch's inserts.
    """
    if not records:
        return 0
    if not judged:  # the click writer judges first when together-filters judge the batch too
        judge_clicks(engine, records, filters, sqlite_connection=sqlite_connection)
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        return _copy_clicks(engine, records)
    statement = _click_insert(engine.dialect)
    if statement is None:  # a driver with named parameters: the generic path
        with session_scope(engine) as session:
            session.execute(insert(Click), click_rows(records))
        return len(records)
    stamp, verdict = statement.clicked_at, statement.verdict
    params: list[Any] = []
    extend = params.extend
    for record in records:
        target = record.target
        os_family, device = parse_user_agent(record.user_agent)
        is_bot, bot_score, bot_reasons = verdict(record)
        extend(
            (
                target.code,
                target.campaign_id,
                target.message_id,
                target.link_id,
                target.contact_id,
                stamp(record.clicked_at),
                record.ip,
                record.user_agent,
                record.referer,
                os_family,
                device,
                is_bot,
                bot_score,
                bot_reasons,
            )
        )
    width = len(CLICK_COLUMNS)
    statements = [
        (
            statement.prefix + ", ".join([statement.row] * min(ROWS_PER_STATEMENT, len(records) - start)),
            tuple(params[start * width : (start + ROWS_PER_STATEMENT) * width]),
        )
        for start in range(0, len(records), ROWS_PER_STATEMENT)
    ]
    if is_sqlite(engine):
        with sqlite_driver(engine, sqlite_connection) as driver:
            driver.execute("BEGIN IMMEDIATE")
            try:
                for sql, values in statements:
                    driver.execute(sql, values)
                driver.execute("COMMIT")
            except BaseException:
                if driver.in_transaction:
                    driver.execute("ROLLBACK")
                raise
        return len(records)
    with engine.begin() as conn:
        lock_tallies(conn, _campaigns(records))  # several INSERTs: the tally rows first, in order
        for sql, values in statements:
            conn.exec_driver_sql(sql, values)
    return len(records)


def _campaigns(records: Sequence[ClickRecord]) -> set[int]:
    return {r.target.campaign_id for r in records}


def _copy_clicks(engine: Engine, records: Sequence[ClickRecord]) -> int:
    """PostgreSQL: the rows go in through COPY, which psycopg feeds row by row in C; a multi-row
    INSERT made psycopg parse a statement of thousands of placeholders in Python every time."""
    human = (False, 0.0, "[]")

    def verdict(record: ClickRecord) -> tuple[bool, float, str]:
        if not record.reasons and not record.bot_score:
            return human
        return (bool(record.reasons), record.bot_score, json.dumps(list(record.reasons)))

    with engine.begin() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(f"COPY click ({', '.join(CLICK_COLUMNS)}) FROM STDIN") as copy:
            for record in records:
                target = record.target
                copy.write_row(
                    (
                        target.code,
                        target.campaign_id,
                        target.message_id,
                        target.link_id,
                        target.contact_id,
                        record.clicked_at,
                        record.ip,
                        record.user_agent,
                        record.referer,
                        *parse_user_agent(record.user_agent),
                        *verdict(record),
                    )
                )
    return len(records)


def update_verdicts(engine: Engine, records: Sequence[ClickRecord], *, sqlite_connection: Any = None) -> int:
    """Write the verdicts of clicks stored already (re-judged since: a burst showed after them)
    over their rows, found by message, code and time (the writer knows no row ids; a code's
    clicks at one microsecond are one click, or a machine's). One transaction; returns how many
    clicks were given."""
    if not records:
        return 0
    if is_sqlite(engine):
        params = [
            (
                1 if record.reasons else 0,
                record.bot_score,
                json.dumps(list(record.reasons)),
                record.target.message_id,
                record.target.code,
                sqlite_timestamp(record.clicked_at),
            )
            for record in records
        ]
        with sqlite_driver(engine, sqlite_connection) as driver:
            driver.execute("BEGIN IMMEDIATE")
            try:
                driver.executemany(_UPDATE_VERDICT_SQLITE, params)
                driver.execute("COMMIT")
            except BaseException:
                if driver.in_transaction:
                    driver.execute("ROLLBACK")
                raise
        return len(records)
    table: Table = Click.__table__  # type: ignore[attr-defined]  # set by SQLModel, not in its stubs
    statement = (
        update(table)
        .where(
            table.c.message_id == bindparam("m"),
            table.c.code == bindparam("c"),
            table.c.clicked_at == bindparam("t"),
        )
        .values(is_bot=bindparam("b"), bot_score=bindparam("s"), bot_reasons=bindparam("r"))
    )
    with engine.begin() as conn:
        lock_tallies(conn, _campaigns(records))  # one UPDATE per click: the tally rows first, in order
        conn.execute(
            statement,
            [
                {
                    "m": record.target.message_id,
                    "c": record.target.code,
                    "t": record.clicked_at,
                    "b": bool(record.reasons),
                    "s": record.bot_score,
                    "r": list(record.reasons),
                }
                for record in records
            ],
        )
    return len(records)
