"""Clicks on tracked links: who asked (IP behind trusted proxies only), with what, and storage.

Parsing the user agent and writing rows happen off the redirect's hot path, in batches.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import bindparam, insert, select
from sqlalchemy.engine import Dialect, Engine

from core.db import is_sqlite, session_scope
from core.log import get_logger
from core.models import Click, Message, ShortCode

log = get_logger("textpulse.clicks")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CodeTarget(NamedTuple):
    """What a short code resolves to, all fixed at send time."""

    code: str
    destination: str
    message_id: int
    link_id: int
    contact_id: int
    campaign_id: int
    sent_at: datetime | None = None  # when the message went out (None: not yet, or not known)


@dataclass(slots=True)
class ClickRecord:
    """A click as the redirect saw it; user agent parsing and bot verdicts come at storage."""

    target: CodeTarget
    clicked_at: datetime
    ip: str | None
    user_agent: str | None
    referer: str | None
    probe: bool = False  # a HEAD request: kept, counted only among raw and bot clicks
    reasons: tuple[str, ...] = ()  # why it is a bot's (none: a person's), final once judged
    bot_score: float = 0.0
    # When its text was sent and delivered: filled in for bot filters that ask for them.
    sent_at: datetime | None = None
    delivered_at: datetime | None = None


# What a code resolves to (the fields of CodeTarget), in Core and in SQLite's own SQL.
_TARGETS = select(
    ShortCode.code,
    ShortCode.destination,
    ShortCode.message_id,
    ShortCode.link_id,
    Message.contact_id,
    Message.campaign_id,
    Message.sent_at,
).join(Message, Message.id == ShortCode.message_id)
_TARGETS_SQLITE = (
    "SELECT s.code, s.destination, s.message_id, s.link_id, m.contact_id, m.campaign_id, m.sent_at"
    " FROM short_code s JOIN message m ON m.id = s.message_id"
)
_RESOLVE = _TARGETS.where(ShortCode.code.in_(bindparam("codes", expanding=True)))  # other databases


def _sqlite_target(row: Any) -> CodeTarget:
    return CodeTarget(*row[:6], _sqlite_datetime(row[6]))


@lru_cache(maxsize=64)
def _resolve_sqlite(count: int) -> str:
    marks = "= ?" if count == 1 else f"IN ({','.join('?' * count)})"
    return f"{_TARGETS_SQLITE} WHERE s.code {marks}"


@contextmanager
def _sqlite_driver(engine: Engine, kept: Any = None) -> Iterator[Any]:
    """The sqlite3 connection of `kept` (a connection its owner keeps, from
    `engine.raw_connection()`), or of one from the pool, given back afterwards. In autocommit
    (core/db.py): a transaction is begun in SQL where one is wanted."""
    raw = kept if kept is not None else engine.raw_connection()
    try:
        yield raw.dbapi_connection
    finally:
        if kept is None:
            raw.close()  # back to the pool


def resolve_codes(engine: Engine, codes: Sequence[str], *, sqlite_connection: Any = None) -> dict[str, CodeTarget]:
    """The targets of those `codes` that exist, in one query (a code's target never changes).

    On SQLite the query runs on the driver's own connection in autocommit: no transaction and no
    lock, a read of the WAL snapshot that never waits for the click writer. The redirect keeps one
    such connection (`sqlite_connection`, from `engine.raw_connection()`): a pool checkout and a
    SQLAlchemy execution cost several times the primary-key read itself.
    """
    if not codes:
        return {}
    if is_sqlite(engine):
        with _sqlite_driver(engine, sqlite_connection) as driver:
            rows = driver.execute(_resolve_sqlite(len(codes)), tuple(codes)).fetchall()
        return {row[0]: _sqlite_target(row) for row in rows}
    with engine.connect() as conn:
        return {row[0]: CodeTarget(*row) for row in conn.execute(_RESOLVE, {"codes": list(codes)})}


def recent_codes(engine: Engine, sent_since: datetime, limit: int, known: Container[str] = ()) -> list[CodeTarget]:
    """The targets of codes in messages sent since `sent_since`, newest first, at most `limit`,
    leaving out the codes in `known` (those the caller has already)."""
    if is_sqlite(engine):  # the driver's rows as they come: a tenth of the cost of Core's
        with _sqlite_driver(engine) as driver:
            rows = driver.execute(
                f"{_TARGETS_SQLITE} WHERE m.sent_at >= ? ORDER BY m.sent_at DESC LIMIT ?",
                (_sqlite_timestamp(sent_since), limit),
            )
            return [_sqlite_target(row) for row in rows if row[0] not in known]
    query = _TARGETS.where(Message.sent_at >= sent_since).order_by(Message.sent_at.desc()).limit(limit)
    with engine.connect() as conn:
        return [CodeTarget(*row) for row in conn.execute(query) if row[0] not in known]


def _address(text: str) -> IPAddress | None:
    """An IP from a socket peer or a forwarded hop; some proxies add a port (`1.2.3.4:5`, `[::1]:5`)."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return ip


def _is_trusted(ip: IPAddress, trusted: Sequence[Network]) -> bool:
    return any(ip in net for net in trusted)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str | None:
    """Who clicked: the socket peer, unless the peer is a trusted proxy (TEXTPULSE_TRUSTED_PROXIES).

    Then `X-Forwarded-For` is read from the right, skipping trusted proxies; the first address that
    is not trusted is the client (anything left of it could have been written by the client itself).
    A garbled hop ends the walk and the peer is kept; when every hop is trusted, the leftmost wins.
    """
    if not peer or not forwarded_for or not trusted:
        return peer
    peer_ip = _address(peer)
    if peer_ip is None or not _is_trusted(peer_ip, trusted):
        return peer
    hops = [hop for hop in forwarded_for.split(",") if hop.strip()]
    ip: IPAddress | None = None
    for hop in reversed(hops):
        ip = _address(hop)
        if ip is None:
            return peer
        if not _is_trusted(ip, trusted):
            return str(ip)
    return str(ip) if ip is not None else peer


@lru_cache(maxsize=4096)
def parse_user_agent(user_agent: str | None) -> tuple[str | None, str]:
    """(OS family, device type: mobile | tablet | desktop | other)."""
    if not user_agent:
        return None, "other"
    from ua_parser import parse  # imported lazily: its tables load on first use

    result = parse(user_agent)
    os_family = result.os.family if result.os else None
    ua = user_agent.lower()
    if "ipad" in ua or "tablet" in ua or ("android" in ua and "mobile" not in ua):
        device = "tablet"
    elif "mobi" in ua or "iphone" in ua or "ipod" in ua or "windows phone" in ua:
        device = "mobile"
    elif os_family in ("Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora", "FreeBSD"):
        device = "desktop"
    else:
        device = "other"
    return (None if os_family == "Other" else os_family), device


# The click table's columns in the order `_click_values` produces them.
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


_SECOND_PREFIXES: dict[tuple[int, int, int, int], str] = {}  # a second -> "YYYY-MM-DD HH:MM:SS."


def _sqlite_timestamp(value: datetime) -> str:
    """What SQLAlchemy's SQLite DATETIME stores for an aware datetime (in UTC, no offset), without
    its ~3 µs of type processing per value (tests/test_code_cache.py compares the two). Clicks
    come many to a second: the part up to the second is formatted once per second and kept."""
    offset = value.utcoffset()
    if offset is None:  # naive: taken as it is, as SQLAlchemy does
        return value.isoformat(" ", "microseconds")
    if offset:
        value = value.astimezone(UTC)
    second = (value.toordinal(), value.hour, value.minute, value.second)
    prefix = _SECOND_PREFIXES.get(second)
    if prefix is None:
        if len(_SECOND_PREFIXES) >= 4096:
            _SECOND_PREFIXES.clear()
        prefix = _SECOND_PREFIXES[second] = f"{value.year:04d}-{value:%m-%d %H:%M:%S}."
    return f"{prefix}{value.microsecond:06d}"


@lru_cache(maxsize=8)
def _click_insert(dialect: Dialect) -> _ClickInsert | None:
    """The INSERT for clicks in the driver's own SQL, with the values it takes precomputed where
    they repeat (a human click's verdict) and the columns' own bind processors elsewhere."""
    mark = _PLACEHOLDERS.get(dialect.paramstyle)
    if mark is None:
        return None
    table = Click.__table__
    assert {c.name for c in table.columns} == {"id", *CLICK_COLUMNS}, "CLICK_COLUMNS is out of date"

    def processor(name: str) -> Callable[[Any], Any]:
        column = table.columns[name]
        return column.type.dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)

    stamp = _sqlite_timestamp if dialect.name == "sqlite" else processor("clicked_at")
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


def judge_clicks(
    engine: Engine, records: Sequence[ClickRecord], filters: Sequence[Any] = (), *, sqlite_connection: Any = None
) -> None:
    """Settle each click's verdict in place: a HEAD request is a probe (`head_request`), then every
    bot filter gives a score and maybe a reason. A click with a reason is a bot's; its score is the
    highest given. A filter that fails is skipped (logged), the click judged by the others."""
    if any(getattr(f, "needs_message_times", False) for f in filters):
        _fill_message_times(engine, records, sqlite_connection=sqlite_connection)
    judges = [(getattr(f, "name", "?"), f.judge) for f in filters]
    for record in records:
        reasons = record.reasons
        score = record.bot_score if not reasons else max(record.bot_score, 1.0)
        found: list[str] | None = None  # the reasons, once one is added (most clicks have none)
        if record.probe and "head_request" not in reasons:
            found = [*reasons, "head_request"]
            score = 1.0
        for name, judge in judges:
            try:
                filter_score, reason = judge(record)
                if filter_score > score:
                    score = float(filter_score)
            except Exception as exc:
                log.warning("bot filter failed", filter=name, error=str(exc))
                continue
            if reason:
                if found is None:
                    found = list(reasons)
                if reason not in found:
                    found.append(reason)
        if found is not None:
            record.reasons = tuple(found)
        record.bot_score = score


# A delivery receipt comes seconds after the send, rarely minutes: a click this long after its
# text was sent is not looked up (its `delivered_at` stays None; a filter judges by `sent_at`).
DELIVERY_LOOKUP_WINDOW = timedelta(minutes=1)


def _fill_message_times(engine: Engine, records: Sequence[ClickRecord], *, sqlite_connection: Any = None) -> None:
    """Give each click its message's `sent_at` (known from the code) and, for clicks within
    DELIVERY_LOOKUP_WINDOW of that (or when it is unknown), `delivered_at`: one query a batch."""
    wanted = []
    for record in records:
        sent_at = record.sent_at = record.target.sent_at
        if sent_at is None or record.clicked_at - sent_at < DELIVERY_LOOKUP_WINDOW:
            wanted.append(record)
    ids = list({record.target.message_id for record in wanted})
    times: dict[int, tuple[datetime | None, datetime | None]] = {}
    if not ids:
        return
    if is_sqlite(engine):  # the driver's rows, timestamps parsed in C
        with _sqlite_driver(engine, sqlite_connection) as driver:
            for start in range(0, len(ids), 512):
                chunk = ids[start : start + 512]
                # As many marks as the next power of two (the first id again in the rest): a
                # dozen statement texts in all, so they do not crowd the INSERTs out of the
                # driver's statement cache.
                size = 1 << (len(chunk) - 1).bit_length()
                padded = chunk + chunk[:1] * (size - len(chunk))
                rows = driver.execute(_message_times_sql(size), padded)
                times.update((row[0], (_sqlite_datetime(row[1]), _sqlite_datetime(row[2]))) for row in rows)
    else:
        with engine.connect() as conn:
            for start in range(0, len(ids), 900):
                query = select(Message.id, Message.sent_at, Message.delivered_at).where(
                    Message.id.in_(ids[start : start + 900])
                )
                times.update((row[0], (row[1], row[2])) for row in conn.execute(query))
    for record in wanted:
        record.sent_at, record.delivered_at = times.get(record.target.message_id, (None, None))


@lru_cache(maxsize=16)
def _message_times_sql(count: int) -> str:
    return f"SELECT id, sent_at, delivered_at FROM message WHERE id IN ({','.join('?' * count)})"


def _sqlite_datetime(value: str | None) -> datetime | None:
    """A timestamp as SQLAlchemy's SQLite DATETIME stores it (UTC, no offset), aware."""
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


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
    engine: Engine, records: Sequence[ClickRecord], filters: Sequence[Any] = (), *, sqlite_connection: Any = None
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
        with _sqlite_driver(engine, sqlite_connection) as driver:
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
        for sql, values in statements:
            conn.exec_driver_sql(sql, values)
    return len(records)


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
