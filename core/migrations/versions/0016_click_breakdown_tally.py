"""The click breakdowns kept by triggers: `/stats/links`, `/stats/devices` and `/stats/click-timing`
read a few rows per campaign instead of its clicks.

- `campaign_click_key`: per (campaign, dimension, key), the counted clicks of people and of bots
  and the distinct contacts among them (people's; anybody's). Dimensions: `link` (key: the link's
  id), `os` and `device` (key: the click's, `other` for none). A click counts where it counts on
  the summary (its message is no test send and no held-out control's).
- `campaign_click_key_contact`: per (campaign, dimension, key, contact), its clicks of people and
  of bots; the key's distinct counts move when one of these crosses zero (as `campaign_clicker`
  does for the summary's unique clicks, migration 0013).
- `campaign_clicker` gains the contact's first click of a person's (`first_click_id`,
  `first_at`, `first_message_id`: the earliest by time, then id) and which click-timing bucket it
  falls in measured from its message's delivery, else its send (`delivered_bucket`), and from its
  send (`sent_bucket`); NULL where there is nothing to measure from. A click's insert makes it the
  first when it is earlier; a first click's delete, move or verdict of a bot finds the contact's
  next through message.contact_id and click.message_id; a message's delivery or send time moves the
  buckets of the clickers whose first click it carries.
- `campaign_click_timing`: per (campaign, basis, bucket), the clickers whose first click falls in
  it (basis `delivered` or `sent`, the buckets of core/stats/breakdowns.py TIMING_BUCKETS, frozen
  here as their upper bounds).

PostgreSQL: statement-level triggers over transition tables, after 0013's (named `zz_`: they fire
in name order), the statement's campaign tally rows locked first as every writer takes them, then
one grouped upsert per table in key order; a click's message is probed by primary key. SQLite:
row-level triggers with WHEN guards; the first click's upsert makes the clicker row if 0013's
trigger has not yet (SQLite's trigger order is not one to lean on). Backfill: from click, message
and campaign_clicker in the migration's transaction (on PostgreSQL after locking them against
writes). Downgrade drops the lot.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here, not imported: a migration means what it meant when written.
UNCOUNTED = "('test_send', 'control')"
TIMING_UPPER_SECONDS = (60, 300, 900, 3600, 6 * 3600, 24 * 3600)  # then "over 24 h" (bucket 6)

KEY = ["campaign_id", "dim", "key"]
MEMBER = ["campaign_id", "dim", "key", "contact_id"]
TIMING = ["campaign_id", "basis", "bucket"]
FIRST = ["first_click_id", "first_at", "first_message_id", "delivered_bucket", "sent_bucket"]
DIMENSIONS = "(SELECT 'link' AS dim UNION ALL SELECT 'os' UNION ALL SELECT 'device') AS d"
BASES = "(SELECT 'delivered' AS basis UNION ALL SELECT 'sent') AS b"
EVENTS = {"INSERT": [("new_rows", 1)], "UPDATE": [("new_rows", 1), ("old_rows", -1)], "DELETE": [("old_rows", -1)]}
REFERENCING = {
    "INSERT": "NEW TABLE AS new_rows",
    "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "DELETE": "OLD TABLE AS old_rows",
}


def _flag(condition: str) -> str:
    return f"CASE WHEN {condition} THEN 1 ELSE 0 END"


def _counted_click(c: str) -> str:
    """The click's message counts: a probe of message's primary key (a scalar subquery)."""
    return f"(SELECT cm.phase FROM message cm WHERE cm.id = {c}.message_id) NOT IN {UNCOUNTED}"


def _key(c: str) -> str:
    """The click's key in dimension d.dim."""
    return (
        f"CASE d.dim WHEN 'link' THEN CAST({c}.link_id AS TEXT) WHEN 'os' THEN COALESCE({c}.os, 'other') "
        f"ELSE COALESCE({c}.device, 'other') END"
    )


def _micros_between(dialect: str, later: str, earlier: str) -> str:
    """`later - earlier` in whole microseconds, exact (no float between them and a bucket's bound).
    SQLite holds a timestamp as 'YYYY-MM-DD HH:MM:SS.ffffff' (SQLAlchemy's format)."""
    if dialect == "postgresql":
        return f"(EXTRACT(EPOCH FROM ({later} - {earlier})) * 1000000)"
    seconds = f"(CAST(strftime('%s', {later}) AS INTEGER) - CAST(strftime('%s', {earlier}) AS INTEGER))"
    fraction = f"(CAST(substr({later}, 21, 6) AS INTEGER) - CAST(substr({earlier}, 21, 6) AS INTEGER))"
    return f"({seconds} * 1000000 + {fraction})"


def _bucket(dialect: str, later: str, earlier: str) -> str:
    """The click-timing bucket of a first click at `later` measured from `earlier` (NULL: none)."""
    between = _micros_between(dialect, later, earlier)
    bounds = " ".join(f"WHEN {between} < {upper * 1000000} THEN {i}" for i, upper in enumerate(TIMING_UPPER_SECONDS))
    return f"CASE WHEN {earlier} IS NULL OR {later} IS NULL THEN NULL {bounds} ELSE {len(TIMING_UPPER_SECONDS)} END"


def _buckets_from_message(dialect: str, at: str, message_id: str) -> tuple[str, str]:
    """(delivered_bucket, sent_bucket) of a first click at `at` on message `message_id`: probes of
    message's primary key."""

    def probe(start: str) -> str:
        return f"(SELECT {_bucket(dialect, at, start)} FROM message fm WHERE fm.id = {message_id})"

    return probe("COALESCE(fm.delivered_at, fm.sent_at)"), probe("fm.sent_at")


def _upsert(table: str, keys: list[str], columns: list[str], select: str) -> str:
    names = ", ".join([*keys, *columns])
    added = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in columns)
    return f"INSERT INTO {table} ({names}) {select} ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {added}"


ROW = "(SELECT 1) AS one"  # a SQLite row trigger's one-row relation, its NEW or OLD read over it


def _grouped(keys: list[str], values: list[str], parts: list[str]) -> str:
    names = ", ".join(keys)
    if all(f"FROM {ROW}" in part for part in parts):
        # A SQLite row trigger's few rows: no sorter. Its upsert takes them one by one, so two rows
        # of one key (a message sent and delivered in one slot) add up there.
        nonzero = " OR ".join(f"{v} <> 0" for v in values)
        return f"SELECT {names}, {', '.join(values)} FROM ({' UNION ALL '.join(parts)}) AS g WHERE {nonzero}"
    sums = ", ".join(f"sum({v})" for v in values)
    nonzero = " OR ".join(f"sum({v}) <> 0" for v in values)
    return (
        f"SELECT {names}, {sums} FROM ({' UNION ALL '.join(parts)}) AS g WHERE true "
        f"GROUP BY {names} HAVING {nonzero} ORDER BY {names}"
    )


# -- what each row contributes, for a set of (relation, alias, sign) sources ------------------------


def _click_parts(sources: list[tuple[str, str, int]], with_contact: bool) -> list[str]:
    parts = []
    for relation, c, sign in sources:
        contact = f"{c}.contact_id AS contact_id, " if with_contact else ""
        where = f"{_counted_click(c)}" + (f" AND {c}.contact_id IS NOT NULL" if with_contact else "")
        parts.append(
            f"SELECT {c}.campaign_id AS campaign_id, d.dim AS dim, {_key(c)} AS key, {contact}"
            f"{sign} * {_flag(f'NOT {c}.is_bot')} AS human_clicks, {sign} * {_flag(f'{c}.is_bot')} AS bot_clicks "
            f"FROM {relation} CROSS JOIN {DIMENSIONS} WHERE {where}"
        )
    return parts


def _key_clicks(sources: list[tuple[str, str, int]]) -> str:
    values = ["human_clicks", "bot_clicks"]
    return _upsert("campaign_click_key", KEY, values, _grouped(KEY, values, _click_parts(sources, False)))


def _member_clicks(sources: list[tuple[str, str, int]]) -> str:
    values = ["human_clicks", "bot_clicks"]
    return _upsert("campaign_click_key_contact", MEMBER, values, _grouped(MEMBER, values, _click_parts(sources, True)))


def _key_contacts(sources: list[tuple[str, str, int]]) -> str:
    parts = [
        f"SELECT {k}.campaign_id AS campaign_id, {k}.dim AS dim, {k}.key AS key, "
        f"{sign} * {_flag(f'{k}.human_clicks > 0')} AS human_contacts, "
        f"{sign} * {_flag(f'{k}.human_clicks + {k}.bot_clicks > 0')} AS any_contacts FROM {relation}"
        for relation, k, sign in sources
    ]
    values = ["human_contacts", "any_contacts"]
    return _upsert("campaign_click_key", KEY, values, _grouped(KEY, values, parts))


def _timing(sources: list[tuple[str, str, int]]) -> str:
    parts = []
    for relation, k, sign in sources:
        bucket = f"CASE b.basis WHEN 'delivered' THEN {k}.delivered_bucket ELSE {k}.sent_bucket END"
        parts.append(
            f"SELECT {k}.campaign_id AS campaign_id, b.basis AS basis, {bucket} AS bucket, {sign} AS contacts "
            f"FROM {relation} CROSS JOIN {BASES} WHERE {bucket} IS NOT NULL"
        )
    return _upsert("campaign_click_timing", TIMING, ["contacts"], _grouped(TIMING, ["contacts"], parts))


# -- the first click of a person's per clicker ------------------------------------------------------


def _earlier(table: str = "campaign_clicker") -> str:
    """The candidate (`excluded`) is earlier than the clicker's first click, or there is none."""
    return (
        f"{table}.first_click_id IS NULL OR excluded.first_at < {table}.first_at OR "
        f"(excluded.first_at = {table}.first_at AND excluded.first_click_id < {table}.first_click_id)"
    )


def _first_candidates(dialect: str, select_from: str, c: str) -> str:
    """Offer each human counted click of `select_from` (alias `c`) as its clicker's first click."""
    delivered, sent = _buckets_from_message(dialect, f"{c}.clicked_at", f"{c}.message_id")
    names = ", ".join(["campaign_id", "contact_id", "human_clicks", "bot_clicks", *FIRST])
    taken = ", ".join(f"{n} = excluded.{n}" for n in FIRST)
    values = f"{c}.campaign_id, {c}.contact_id, 0, 0, {c}.id, {c}.clicked_at, {c}.message_id, {delivered}, {sent}"
    return (
        f"INSERT INTO campaign_clicker ({names}) {select_from.format(values=values)} "
        f"ON CONFLICT (campaign_id, contact_id) DO UPDATE SET {taken} WHERE {_earlier()}"
    )


def _next_first(dialect: str, k: str) -> str:
    """The clicker `k`'s first click of a person's now, found through its messages (message.contact_id,
    then click.message_id); NULLs when it has none."""
    delivered = _bucket(dialect, "c.clicked_at", "COALESCE(m.delivered_at, m.sent_at)")
    sent = _bucket(dialect, "c.clicked_at", "m.sent_at")
    return (
        f"SELECT c.id, c.clicked_at, c.message_id, {delivered}, {sent} FROM message m "
        f"JOIN click c ON c.message_id = m.id WHERE m.contact_id = {k}.contact_id AND m.campaign_id = {k}.campaign_id "
        f"AND m.phase NOT IN {UNCOUNTED} AND c.campaign_id = {k}.campaign_id AND c.contact_id = {k}.contact_id "
        "AND NOT c.is_bot ORDER BY c.clicked_at, c.id LIMIT 1"
    )


def _refind_first(dialect: str, where: str) -> str:
    return (
        f"UPDATE campaign_clicker SET ({', '.join(FIRST)}) = ({_next_first(dialect, 'campaign_clicker')}) WHERE {where}"
    )


def _moved_buckets(dialect: str, m: str) -> tuple[str, str]:
    return (
        _bucket(dialect, "campaign_clicker.first_at", f"COALESCE({m}.delivered_at, {m}.sent_at)"),
        _bucket(dialect, "campaign_clicker.first_at", f"{m}.sent_at"),
    )


# -- PostgreSQL -------------------------------------------------------------------------------------


def _lock_tallies(sources: list[tuple[str, str, int]]) -> str:
    rows = " UNION ".join(f"SELECT {alias}.campaign_id FROM {relation}" for relation, alias, _ in sources)
    return f"PERFORM 1 FROM campaign_tally WHERE campaign_id IN ({rows}) ORDER BY campaign_id FOR NO KEY UPDATE"


def _pg_bodies() -> dict[tuple[str, str], list[str]]:
    pg = "postgresql"
    bodies: dict[tuple[str, str], list[str]] = {}
    for event, relations in EVENTS.items():
        sources = [(f"{relation} r{i}", f"r{i}", sign) for i, (relation, sign) in enumerate(relations)]
        click = [_lock_tallies(sources), _key_clicks(sources), _member_clicks(sources)]
        if event != "INSERT":
            click.append(
                f"UPDATE campaign_clicker SET ({', '.join(FIRST)}) = ({_next_first(pg, 'campaign_clicker')}) "
                "FROM old_rows o WHERE campaign_clicker.campaign_id = o.campaign_id "
                "AND campaign_clicker.contact_id = o.contact_id AND campaign_clicker.first_click_id = o.id"
            )
        if event != "DELETE":
            select_from = (
                "SELECT DISTINCT ON (r.campaign_id, r.contact_id) {values} FROM new_rows r "
                f"WHERE NOT r.is_bot AND r.contact_id IS NOT NULL AND {_counted_click('r')} "
                "ORDER BY r.campaign_id, r.contact_id, r.clicked_at, r.id"
            )
            click.append(_first_candidates(pg, select_from, "r"))
        bodies[("click", event)] = click
        bodies[("campaign_click_key_contact", event)] = [_key_contacts(sources)]
        bodies[("campaign_clicker", event)] = [_timing(sources)]
    delivered, sent = _moved_buckets(pg, "n")
    bodies[("message", "UPDATE")] = [
        f"UPDATE campaign_clicker SET delivered_bucket = {delivered}, sent_bucket = {sent} FROM new_rows n "
        "WHERE campaign_clicker.campaign_id = n.campaign_id AND campaign_clicker.contact_id = n.contact_id "
        f"AND campaign_clicker.first_message_id = n.id AND (campaign_clicker.delivered_bucket IS DISTINCT FROM {delivered} "
        f"OR campaign_clicker.sent_bucket IS DISTINCT FROM {sent})"
    ]
    return bodies


def _pg_name(table: str, event: str) -> str:
    return f"zz_{table}_breakdown_{event.lower()}"


# -- SQLite -----------------------------------------------------------------------------------------


def _sqlite_triggers() -> list[tuple[str, str, str, list[str]]]:
    lite = "sqlite"
    click_cols = "message_id, campaign_id, contact_id, link_id, os, device, is_bot, clicked_at"
    click_changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in click_cols.split(", "))
    member_cols = "campaign_id, dim, key, human_clicks, bot_clicks"
    member_changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in member_cols.split(", "))
    bucket_cols = "campaign_id, delivered_bucket, sent_bucket"
    bucket_changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in bucket_cols.split(", "))

    def row(alias: str, sign: int) -> list[tuple[str, str, int]]:
        return [(ROW, alias, sign)]  # the trigger's NEW or OLD, over a one-row relation

    def clicks(alias: str, sign: int) -> list[str]:
        return [_key_clicks(row(alias, sign)), _member_clicks(row(alias, sign))]

    candidate = _first_candidates(
        lite,
        f"SELECT {{values}} WHERE NOT NEW.is_bot AND NEW.contact_id IS NOT NULL AND {_counted_click('NEW')}",
        "NEW",
    )
    refind = _refind_first(
        lite, "campaign_id = OLD.campaign_id AND contact_id = OLD.contact_id AND first_click_id = OLD.id"
    )
    delivered, sent = _moved_buckets(lite, "NEW")
    moved = (
        f"UPDATE campaign_clicker SET delivered_bucket = {delivered}, sent_bucket = {sent} "
        "WHERE campaign_id = NEW.campaign_id AND contact_id = NEW.contact_id AND first_message_id = NEW.id"
    )

    def members(alias: str, sign: int) -> str:
        return _key_contacts(row(alias, sign))

    def timing(alias: str, sign: int) -> str:
        return _timing(row(alias, sign))

    return [
        ("click_breakdown_insert", "INSERT ON click", "true", [*clicks("NEW", 1), candidate]),
        (
            "click_breakdown_update",
            f"UPDATE OF {click_cols} ON click",
            click_changed,
            [*clicks("OLD", -1), *clicks("NEW", 1), refind, candidate],
        ),
        ("click_breakdown_delete", "DELETE ON click", "true", [*clicks("OLD", -1), refind]),
        ("click_key_contact_insert", "INSERT ON campaign_click_key_contact", "true", [members("NEW", 1)]),
        (
            "click_key_contact_update",
            f"UPDATE OF {member_cols} ON campaign_click_key_contact",
            member_changed,
            [members("OLD", -1), members("NEW", 1)],
        ),
        ("click_key_contact_delete", "DELETE ON campaign_click_key_contact", "true", [members("OLD", -1)]),
        ("clicker_timing_insert", "INSERT ON campaign_clicker", "true", [timing("NEW", 1)]),
        (
            "clicker_timing_update",
            f"UPDATE OF {bucket_cols} ON campaign_clicker",
            bucket_changed,
            [timing("OLD", -1), timing("NEW", 1)],
        ),
        ("clicker_timing_delete", "DELETE ON campaign_clicker", "true", [timing("OLD", -1)]),
        (
            "message_first_click_moved",
            "UPDATE OF delivered_at, sent_at ON message",
            "NEW.contact_id IS NOT NULL AND (OLD.delivered_at IS NOT NEW.delivered_at OR OLD.sent_at IS NOT NEW.sent_at)",
            [moved],
        ),
    ]


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        # Writers of clicks, messages and clickers wait from here to the commit: none falls between
        # the backfill's snapshot and the triggers (README "Upgrading").
        op.execute("LOCK TABLE click, message, campaign_clicker IN SHARE ROW EXCLUSIVE MODE")
    op.create_table(
        "campaign_click_key",
        sa.Column("campaign_id", _id(), nullable=False),
        sa.Column("dim", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        *(_count(n) for n in ("human_clicks", "bot_clicks", "human_contacts", "any_contacts")),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*KEY),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "campaign_click_key_contact",
        sa.Column("campaign_id", _id(), nullable=False),
        sa.Column("dim", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("contact_id", _id(), nullable=False),
        *(_count(n) for n in ("human_clicks", "bot_clicks")),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*MEMBER),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "campaign_click_timing",
        sa.Column("campaign_id", _id(), nullable=False),
        sa.Column("basis", sa.String(length=10), nullable=False),
        sa.Column("bucket", sa.SmallInteger(), nullable=False),
        _count("contacts"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*TIMING),
        sqlite_with_rowid=False,
    )
    for column in (
        sa.Column("first_click_id", _id(), nullable=True),
        sa.Column("first_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("first_message_id", _id(), nullable=True),
        sa.Column("delivered_bucket", sa.SmallInteger(), nullable=True),
        sa.Column("sent_bucket", sa.SmallInteger(), nullable=True),
    ):
        op.add_column("campaign_clicker", column)
    # The backfill: each table's rows as if every click had just been written, then the firsts.
    clicks = [("click r", "r", 1)]
    op.execute(_member_clicks(clicks))
    op.execute(_key_clicks(clicks))
    op.execute(_key_contacts([("campaign_click_key_contact k", "k", 1)]))
    op.execute(_refind_first(dialect, "true"))
    op.execute(_timing([("campaign_clicker k", "k", 1)]))
    if dialect == "postgresql":
        for (table, event), statements in _pg_bodies().items():
            name = _pg_name(table, event)
            body = ";\n".join(statements)
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n{body};\nRETURN NULL;\nEND $$"
            )
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {REFERENCING[event]} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
            )
        return
    for name, event, when, statements in _sqlite_triggers():
        body = "".join(f"{statement};\n" for statement in statements)
        op.execute(f"CREATE TRIGGER {name} AFTER {event} WHEN {when} BEGIN\n{body}END")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for table, event in _pg_bodies():
            name = _pg_name(table, event)
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    else:
        for name, *_ in _sqlite_triggers():
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    for column in reversed(FIRST):
        op.drop_column("campaign_clicker", column)
    op.drop_table("campaign_click_timing")
    op.drop_table("campaign_click_key_contact")
    op.drop_table("campaign_click_key")
