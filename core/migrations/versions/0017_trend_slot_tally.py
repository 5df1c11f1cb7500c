"""The trend kept by triggers: `/stats/trend` reads a campaign's quarter-hour slots instead of its
messages, clicks, replies and conversions.

- `campaign_slot`: per (campaign, 15-minute UTC slot), what the trend counts in it: messages sent
  and delivered (each contact's latest counted message, by `sent_at` and `delivered_at`), clicks of
  people's on counted messages (by `clicked_at`), replies that are no keyword (by `received_at`),
  conversions attributed to a counted message and their revenue in millionths (by `occurred_at`).
- `campaign_slot_contact`: per (campaign, kind, contact, slot), the contact's events of the kind
  (`click`: people's clicks; `conversion`) in the slot, and `gap`: the slots since the contact's
  previous slot with such an event (0: none, or GAP_CAP or more ago). Kept right per contact: any
  change to a contact's rows recomputes the gaps of its rows (a window over them, through the
  primary key).
- `campaign_slot_first`: per (campaign, kind, slot, gap), the contacts with an event in the slot
  whose previous one is `gap` slots earlier. A contact counts once in a local bucket (an hour, day,
  week or month in any zone) in the first of its slots there: a slot whose previous slot falls
  before the bucket's start (gap 0 always does). So the distinct clickers and converters of every
  bucket come from these rows. A month is at most 2,980 slots long (31 days and an hour's change of
  clocks), so any gap of GAP_CAP or more is as good as none.

PostgreSQL: statement-level triggers over transition tables (named `zz_`: after 0013's and 0014's,
which take the statement's campaign tally rows first, so writers of a campaign are serialised from
their first write to their commit); one grouped upsert per table in key order; the gaps of the
contacts a statement touched recomputed in one UPDATE (guarded, so that the UPDATE of the gaps
alone does not recompute them again). SQLite: row-level triggers with WHEN guards. Backfill: from
message, click, reply and conversion in the migration's transaction (on PostgreSQL after locking
them against writes), the gaps by a window function. Downgrade drops the lot.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here, not imported: a migration means what it meant when written.
UNCOUNTED = "('test_send', 'control')"
SLOT_SECONDS = 900
GAP_CAP = 3000

SLOT = ["campaign_id", "slot"]
SLOT_VALUES = ["sent", "delivered", "clicks", "replies", "conversion_events", "revenue_micros"]
MEMBER = ["campaign_id", "kind", "contact_id", "slot"]
FIRST = ["campaign_id", "kind", "slot", "gap"]
EVENTS = {"INSERT": [("new_rows", 1)], "UPDATE": [("new_rows", 1), ("old_rows", -1)], "DELETE": [("old_rows", -1)]}
REFERENCING = {
    "INSERT": "NEW TABLE AS new_rows",
    "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "DELETE": "OLD TABLE AS old_rows",
}
Source = tuple[str, str, int]  # (FROM item, the row's alias, sign)


def _flag(condition: str) -> str:
    return f"CASE WHEN {condition} THEN 1 ELSE 0 END"


def _slot(dialect: str, moment: str) -> str:
    if dialect == "postgresql":
        return f"CAST(floor(EXTRACT(EPOCH FROM {moment}) / {SLOT_SECONDS}) AS BIGINT)"
    return f"(CAST(strftime('%s', {moment}) AS INTEGER) / {SLOT_SECONDS})"


def _counted(row: str) -> str:
    """The row's message counts: a probe of message's primary key (a scalar subquery)."""
    return f"(SELECT cm.phase FROM message cm WHERE cm.id = {row}.message_id) NOT IN {UNCOUNTED}"


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


def _slot_part(dialect: str, source: Source, moment: str, where: str, values: dict[str, str]) -> str:
    relation, r, sign = source
    columns = ", ".join(f"{sign} * ({values[v]}) AS {v}" if v in values else f"0 AS {v}" for v in SLOT_VALUES)
    return (
        f"SELECT {r}.campaign_id AS campaign_id, {_slot(dialect, f'{r}.{moment}')} AS slot, {columns} "
        f"FROM {relation} WHERE {r}.{moment} IS NOT NULL AND {where}"
    )


def _slots(dialect: str, table: str, sources: list[Source]) -> str:
    """The upsert of campaign_slot for a write of `table` over `sources`."""
    parts = []
    for source in sources:
        r = source[1]
        if table == "message":
            latest = f"{r}.phase NOT IN {UNCOUNTED} AND NOT {r}.superseded"
            parts.append(_slot_part(dialect, source, "sent_at", latest, {"sent": "1"}))
            parts.append(_slot_part(dialect, source, "delivered_at", latest, {"delivered": "1"}))
        elif table == "click":
            parts.append(_slot_part(dialect, source, "clicked_at", _counted(r), {"clicks": _flag(f"NOT {r}.is_bot")}))
        elif table == "reply":
            counts = f"{r}.campaign_id IS NOT NULL AND {r}.keyword IS NULL"
            parts.append(_slot_part(dialect, source, "received_at", counts, {"replies": "1"}))
        else:
            counts = f"{r}.campaign_id IS NOT NULL AND {_counted(r)}"
            micros = f"CAST(ROUND(COALESCE({r}.revenue, 0) * 1000000) AS BIGINT)"
            values = {"conversion_events": "1", "revenue_micros": micros}
            parts.append(_slot_part(dialect, source, "occurred_at", counts, values))
    return _upsert("campaign_slot", SLOT, SLOT_VALUES, _grouped(SLOT, SLOT_VALUES, parts))


MEMBER_KIND = {"click": ("click", "clicked_at"), "conversion": ("conversion", "occurred_at")}


def _members(dialect: str, table: str, sources: list[Source]) -> str:
    """The upsert of campaign_slot_contact for a write of click or conversion over `sources`."""
    kind, moment = MEMBER_KIND[table]
    parts = []
    for relation, r, sign in sources:
        events = _flag(f"NOT {r}.is_bot") if table == "click" else "1"
        counts = f"{r}.campaign_id IS NOT NULL AND {r}.contact_id IS NOT NULL AND {_counted(r)}"
        parts.append(
            f"SELECT {r}.campaign_id AS campaign_id, '{kind}' AS kind, {r}.contact_id AS contact_id, "
            f"{_slot(dialect, f'{r}.{moment}')} AS slot, {sign} * ({events}) AS events "
            f"FROM {relation} WHERE {r}.{moment} IS NOT NULL AND {counts}"
        )
    return _upsert("campaign_slot_contact", MEMBER, ["events"], _grouped(MEMBER, ["events"], parts))


def _firsts(sources: list[Source]) -> str:
    """The upsert of campaign_slot_first from changed campaign_slot_contact rows: each present row
    (events > 0) stands for one contact at (slot, gap)."""
    parts = [
        f"SELECT {k}.campaign_id AS campaign_id, {k}.kind AS kind, {k}.slot AS slot, {k}.gap AS gap, "
        f"{sign} AS contacts FROM {relation} WHERE {k}.events > 0"
        for relation, k, sign in sources
    ]
    return _upsert("campaign_slot_first", FIRST, ["contacts"], _grouped(FIRST, ["contacts"], parts))


def _gap_of(k: str, previous: str) -> str:
    return f"CASE WHEN {previous} IS NULL OR {k}.slot - {previous} >= {GAP_CAP} THEN 0 ELSE {k}.slot - {previous} END"


def _window_gaps(where: str) -> str:
    """(campaign_id, kind, contact_id, slot, gap) of the present rows that `where` picks."""
    previous = "LAG(s.slot) OVER (PARTITION BY s.campaign_id, s.kind, s.contact_id ORDER BY s.slot)"
    return (
        f"SELECT s.campaign_id, s.kind, s.contact_id, s.slot, {_gap_of('s', previous)} AS gap "
        f"FROM campaign_slot_contact s WHERE s.events > 0 AND {where}"
    )


def _regap_pg(contacts: str) -> str:
    """Set the gaps of the present rows of `contacts` (a SELECT of campaign_id, kind, contact_id)."""
    rows = _window_gaps(f"(s.campaign_id, s.kind, s.contact_id) IN ({contacts})")
    return (
        f"UPDATE campaign_slot_contact m SET gap = w.gap FROM ({rows}) AS w "
        "WHERE m.campaign_id = w.campaign_id AND m.kind = w.kind AND m.contact_id = w.contact_id "
        "AND m.slot = w.slot AND m.gap <> w.gap"
    )


def _regap_sqlite(row: str) -> str:
    previous = (
        "(SELECT max(p.slot) FROM campaign_slot_contact p WHERE p.campaign_id = campaign_slot_contact.campaign_id "
        "AND p.kind = campaign_slot_contact.kind AND p.contact_id = campaign_slot_contact.contact_id "
        "AND p.slot < campaign_slot_contact.slot AND p.events > 0)"
    )
    gap = _gap_of("campaign_slot_contact", previous)
    return (
        f"UPDATE campaign_slot_contact SET gap = {gap} WHERE campaign_id = {row}.campaign_id AND kind = {row}.kind "
        f"AND contact_id = {row}.contact_id AND events > 0 AND gap <> {gap}"
    )


def _lock_tallies(sources: list[Source]) -> str:
    rows = " UNION ".join(f"SELECT {alias}.campaign_id FROM {relation}" for relation, alias, _ in sources)
    return f"PERFORM 1 FROM campaign_tally WHERE campaign_id IN ({rows}) ORDER BY campaign_id FOR NO KEY UPDATE"


SOURCES = ("message", "click", "reply", "conversion")


def _pg_bodies() -> dict[tuple[str, str], list[str]]:
    pg = "postgresql"
    bodies: dict[tuple[str, str], list[str]] = {}
    for event, relations in EVENTS.items():
        sources = [(f"{relation} r{i}", f"r{i}", sign) for i, (relation, sign) in enumerate(relations)]
        for table in SOURCES:
            statements = [_lock_tallies(sources), _slots(pg, table, sources)]
            if table in MEMBER_KIND:
                statements.append(_members(pg, table, sources))
            bodies[(table, event)] = statements
        firsts = [_firsts(sources)]
        if event == "UPDATE":  # a change of events crossing zero (not the gaps' own UPDATE)
            touched = (
                "SELECT n.campaign_id, n.kind, n.contact_id FROM new_rows n JOIN old_rows o ON o.campaign_id = "
                "n.campaign_id AND o.kind = n.kind AND o.contact_id = n.contact_id AND o.slot = n.slot "
                "WHERE (o.events > 0) <> (n.events > 0)"
            )
        else:
            relation = "new_rows" if event == "INSERT" else "old_rows"
            touched = f"SELECT campaign_id, kind, contact_id FROM {relation}"
        firsts.append(f"IF EXISTS ({touched}) THEN {_regap_pg(touched)}; END IF")
        bodies[("campaign_slot_contact", event)] = firsts
    return bodies


def _pg_name(table: str, event: str) -> str:
    return f"zz_{table}_trend_{event.lower()}"


WATCHED = {
    "message": "campaign_id, phase, superseded, sent_at, delivered_at",
    "click": "message_id, campaign_id, contact_id, is_bot, clicked_at",
    "reply": "campaign_id, keyword, received_at",
    "conversion": "message_id, campaign_id, contact_id, revenue, occurred_at",
}


def _sqlite_triggers() -> list[tuple[str, str, str, list[str]]]:
    lite = "sqlite"

    def row(alias: str, sign: int) -> list[Source]:
        return [(ROW, alias, sign)]  # the trigger's NEW or OLD, over a one-row relation

    def writes(table: str, alias: str, sign: int) -> list[str]:
        out = [_slots(lite, table, row(alias, sign))]
        if table in MEMBER_KIND:
            out.append(_members(lite, table, row(alias, sign)))
        return out

    triggers = []
    for table, columns in WATCHED.items():
        changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns.split(", "))
        # A message counts once sent: the audience's rows, inserted unsent, fire nothing.
        inserted = "NEW.sent_at IS NOT NULL OR NEW.delivered_at IS NOT NULL" if table == "message" else "true"
        deleted = inserted.replace("NEW.", "OLD.")
        triggers += [
            (f"{table}_trend_insert", f"INSERT ON {table}", inserted, writes(table, "NEW", 1)),
            (
                f"{table}_trend_update",
                f"UPDATE OF {columns} ON {table}",
                changed,
                [*writes(table, "OLD", -1), *writes(table, "NEW", 1)],
            ),
            (f"{table}_trend_delete", f"DELETE ON {table}", deleted, writes(table, "OLD", -1)),
        ]
    member = "campaign_slot_contact"
    triggers += [
        (f"{member}_first_insert", f"INSERT ON {member}", "NEW.events > 0", [_firsts(row("NEW", 1))]),
        (
            f"{member}_first_update",
            f"UPDATE OF events, gap ON {member}",
            "OLD.gap IS NOT NEW.gap OR (OLD.events > 0) <> (NEW.events > 0)",
            [_firsts(row("OLD", -1)), _firsts(row("NEW", 1))],
        ),
        (f"{member}_first_delete", f"DELETE ON {member}", "OLD.events > 0", [_firsts(row("OLD", -1))]),
        (f"{member}_gap_insert", f"INSERT ON {member}", "NEW.events > 0", [_regap_sqlite("NEW")]),
        (
            f"{member}_gap_update",
            f"UPDATE OF events ON {member}",
            "(OLD.events > 0) <> (NEW.events > 0)",
            [_regap_sqlite("NEW")],
        ),
        (f"{member}_gap_delete", f"DELETE ON {member}", "OLD.events > 0", [_regap_sqlite("OLD")]),
    ]
    return triggers


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        # Writers wait from here to the commit: none falls between the backfill and the triggers.
        op.execute("LOCK TABLE message, click, reply, conversion IN SHARE ROW EXCLUSIVE MODE")
    op.create_table(
        "campaign_slot",
        sa.Column("campaign_id", _id(), nullable=False),
        sa.Column("slot", sa.BigInteger(), nullable=False),
        *(_count(name) for name in SLOT_VALUES),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*SLOT),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "campaign_slot_contact",
        sa.Column("campaign_id", _id(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("contact_id", _id(), nullable=False),
        sa.Column("slot", sa.BigInteger(), nullable=False),
        _count("events"),
        _count("gap"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*MEMBER),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "campaign_slot_first",
        sa.Column("campaign_id", _id(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("slot", sa.BigInteger(), nullable=False),
        sa.Column("gap", sa.BigInteger(), nullable=False),
        _count("contacts"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*FIRST),
        sqlite_with_rowid=False,
    )
    # The backfill: every row's contributions as if just written, then the gaps, then their counts.
    for table in SOURCES:
        op.execute(_slots(dialect, table, [(f"{table} r", "r", 1)]))
        if table in MEMBER_KIND:
            op.execute(_members(dialect, table, [(f"{table} r", "r", 1)]))
    gaps = _window_gaps("true")
    op.execute(
        "UPDATE campaign_slot_contact SET gap = (SELECT w.gap FROM ("
        f"{gaps}) AS w WHERE w.campaign_id = campaign_slot_contact.campaign_id AND w.kind = campaign_slot_contact.kind "
        "AND w.contact_id = campaign_slot_contact.contact_id AND w.slot = campaign_slot_contact.slot) WHERE events > 0"
        if dialect == "sqlite"
        else _regap_pg("SELECT campaign_id, kind, contact_id FROM campaign_slot_contact")
    )
    op.execute(_firsts([("campaign_slot_contact k", "k", 1)]))
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
    if op.get_bind().dialect.name == "postgresql":
        for table, event in _pg_bodies():
            name = _pg_name(table, event)
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    else:
        for name, *_ in _sqlite_triggers():
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("campaign_slot_first")
    op.drop_table("campaign_slot_contact")
    op.drop_table("campaign_slot")
