"""campaign_tally gains the summary's reply, opt-out and conversion numbers, kept by triggers on
reply and conversion as migration 0013's are on message and click, so `/stats` (and its live
stream) reads them from the one row instead of counting the campaign's replies and conversions.

- `campaign_tally.replies`: replies attributed to the campaign that are no keyword;
  `conversion_events` and `revenue_micros` (the events' revenue in millionths, an integer, so that
  the sum is exact whatever the order of the writes) of conversions attributed to a counted
  message of the campaign (never a held-out control's, never a test send's);
  `unclicked_events` those of them not preceded by a click of the contact (`clicked` false);
  `repliers`, `stoppers`, `converters`, `direct_converters`: distinct contacts with such a reply,
  with an opt-out keyword reply (STOP and its synonyms, frozen here as core/delivery/replies.py
  has them), with such a conversion, with such a conversion after a click (the funnel's
  `direct`).
- `campaign_responder`: per (campaign, contact), its replies, opt-out replies, conversions and
  conversions after a click; the distinct counts move when one of them crosses zero (as
  `campaign_clicker` does for clicks).
- `ix_message_campaign_error`: message (campaign_id, error_code) for the rows with an error code
  only, so that the other half of `opt_outs` (contacts whose message the carrier refused because
  they unsubscribed: the provider's codes, known only to the app) is read from the refused rows
  alone.

PostgreSQL: statement-level triggers over transition tables, one grouped upsert per statement and
table, in key order; the conversion's message is probed by primary key. SQLite: row-level triggers
with WHEN guards. Backfill: counted from reply and conversion in the migration's transaction (on
PostgreSQL after locking both tables against writes). Downgrade drops the lot.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 05:00:00
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here, not imported: a migration means what it meant when written.
UNCOUNTED = "('test_send', 'control')"
STOP_WORDS = "('CANCEL', 'END', 'QUIT', 'STOP', 'STOPALL', 'UNSUBSCRIBE')"

Tallies = Callable[[str], dict[str, str]]
Source = tuple[str, str, int]  # (FROM clause, the row's alias, sign)


def _flag(condition: str) -> str:
    return f"CASE WHEN {condition} THEN 1 ELSE 0 END"


def _reply_tallies(r: str) -> dict[str, str]:
    return {"replies": _flag(f"{r}.keyword IS NULL")}


def _reply_by_contact(r: str) -> dict[str, str]:
    return {
        "replies": _flag(f"{r}.keyword IS NULL"),
        "stops": _flag(f"{r}.keyword IN {STOP_WORDS}"),
        "conversions": "0",
        "clicked_conversions": "0",
    }


def _conversion_tallies(v: str) -> dict[str, str]:
    return {
        "conversion_events": "1",
        "revenue_micros": f"CAST(ROUND(COALESCE({v}.revenue, 0) * 1000000) AS BIGINT)",
        "unclicked_events": _flag(f"NOT {v}.clicked"),
    }


def _conversion_by_contact(v: str) -> dict[str, str]:
    return {"replies": "0", "stops": "0", "conversions": "1", "clicked_conversions": _flag(f"{v}.clicked")}


def _responder_tallies(k: str) -> dict[str, str]:
    return {
        "repliers": _flag(f"{k}.replies > 0"),
        "stoppers": _flag(f"{k}.stops > 0"),
        "converters": _flag(f"{k}.conversions > 0"),
        "direct_converters": _flag(f"{k}.clicked_conversions > 0"),
    }


NEW_COLUMNS = [*_reply_tallies("r"), *_conversion_tallies("v"), *_responder_tallies("k")]
RESPONDER_COLUMNS = list(_reply_by_contact("r"))


def _reply_counts(r: str) -> str:
    return f"{r}.campaign_id IS NOT NULL"


def _reply_by_contact_counts(r: str) -> str:
    counts = f"{r}.keyword IS NULL OR {r}.keyword IN {STOP_WORDS}"
    return f"{r}.campaign_id IS NOT NULL AND {r}.contact_id IS NOT NULL AND ({counts})"


def _conversion_counts(v: str) -> str:
    """Attributed to a counted message: a probe of message's primary key (a scalar subquery)."""
    return (
        f"{v}.campaign_id IS NOT NULL AND "
        f"(SELECT cm.phase FROM message cm WHERE cm.id = {v}.message_id) NOT IN {UNCOUNTED}"
    )


def _conversion_by_contact_counts(v: str) -> str:
    return f"{_conversion_counts(v)} AND {v}.contact_id IS NOT NULL"


def _upsert(table: str, keys: list[str], columns: list[str], select: str) -> str:
    """Add the rows of `select` (keys, then deltas) onto `table`, creating the rows missing."""
    names = ", ".join([*keys, *columns])
    added = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in columns)
    return f"INSERT INTO {table} ({names}) {select} ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {added}"


def _signed(sources: list[Source], keys: list[str], tallies: Tallies, where: Callable[[str], str]) -> str:
    """SELECT keys, sum(deltas) over the rows of each source, grouped by keys, non-zero deltas
    only, in key order (two writers lock rows in the same order)."""
    parts = []
    for relation, alias, sign in sources:
        key_list = ", ".join(f"{alias}.{k} AS {k}" for k in keys)
        values = ", ".join(f"{sign} * ({e}) AS {n}" for n, e in tallies(alias).items())
        parts.append(f"SELECT {key_list}, {values} {relation} WHERE {where(alias)}")
    names = list(tallies("x"))
    sums = ", ".join(f"sum({n})" for n in names)
    nonzero = " OR ".join(f"sum({n}) <> 0" for n in names)
    key_names = ", ".join(keys)
    return (
        f"SELECT {key_names}, {sums} FROM ({' UNION ALL '.join(parts)}) AS d "
        f"WHERE true GROUP BY {key_names} HAVING {nonzero} ORDER BY {key_names}"
    )


CAMPAIGN = ["campaign_id"]
RESPONDER = ["campaign_id", "contact_id"]
# table: [(target table, keys, contributions, which rows count)]
PLAN: dict[str, list[tuple[str, list[str], Tallies, Callable[[str], str]]]] = {
    "reply": [
        ("campaign_tally", CAMPAIGN, _reply_tallies, _reply_counts),
        ("campaign_responder", RESPONDER, _reply_by_contact, _reply_by_contact_counts),
    ],
    "conversion": [
        ("campaign_tally", CAMPAIGN, _conversion_tallies, _conversion_counts),
        ("campaign_responder", RESPONDER, _conversion_by_contact, _conversion_by_contact_counts),
    ],
    "campaign_responder": [("campaign_tally", CAMPAIGN, _responder_tallies, lambda k: "true")],
}
EVENTS = {"INSERT": [("new_rows", 1)], "UPDATE": [("new_rows", 1), ("old_rows", -1)], "DELETE": [("old_rows", -1)]}


def _statements(table: str, sources: list[Source]) -> list[str]:
    return [
        _upsert(target, keys, list(tallies("x")), _signed(sources, keys, tallies, where))
        for target, keys, tallies, where in PLAN[table]
    ]


def _pg_create(table: str, event: str) -> None:
    name = f"{table}_tally_{event.lower()}"
    sources = [(f"FROM {relation} r{i}", f"r{i}", sign) for i, (relation, sign) in enumerate(EVENTS[event])]
    statements = _statements(table, sources)
    if table != "campaign_responder":
        # The statement's campaigns' tally rows first, in campaign order, as every writer takes
        # them: a STOP reply adds nothing to the tally itself (its upsert is left out), so its
        # responder row would be taken before the tally row, and a plain reply of the same
        # contact at the same time takes them the other way round.
        rows = " UNION ".join(f"SELECT campaign_id {relation}" for relation, _, _ in sources)
        statements.insert(
            0,
            f"PERFORM 1 FROM campaign_tally WHERE campaign_id IN ({rows}) "
            "ORDER BY campaign_id FOR NO KEY UPDATE",
        )
    body = ";\n".join(statements)
    referencing = {
        "INSERT": "NEW TABLE AS new_rows",
        "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "DELETE": "OLD TABLE AS old_rows",
    }[event]
    op.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n{body};\nRETURN NULL;\nEND $$")
    op.execute(
        f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {referencing} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
    )


def _row_statements(table: str, row: str, sign: int) -> list[str]:
    """SQLite: a row's contributions moved in (NEW, +1) or out (OLD, -1), each where it counts."""
    statements = []
    for target, keys, tallies, where in PLAN[table]:
        names = list(tallies(row))
        deltas = ", ".join(f"{sign} * ({tallies(row)[n]})" for n in names)
        key_values = ", ".join(f"{row}.{k}" for k in keys)
        statements.append(_upsert(target, keys, names, f"SELECT {key_values}, {deltas} WHERE {where(row)}"))
    return statements


# SQLite: the columns whose change can move a count, per table (an UPDATE of any other fires nothing).
WATCHED = {
    "reply": "campaign_id, contact_id, keyword",
    "conversion": "campaign_id, contact_id, message_id, revenue, clicked",
    "campaign_responder": "campaign_id, contact_id, replies, stops, conversions, clicked_conversions",
}


def _sqlite_triggers() -> list[tuple[str, str, str, list[str]]]:
    """(name, event, WHEN, statements) of every SQLite trigger: out with the old row, in with the new."""
    triggers = []
    for table, columns in WATCHED.items():
        changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns.split(", "))
        triggers += [
            (f"{table}_tally_insert", f"INSERT ON {table}", "true", _row_statements(table, "NEW", 1)),
            (
                f"{table}_tally_update",
                f"UPDATE OF {columns} ON {table}",
                changed,
                [*_row_statements(table, "OLD", -1), *_row_statements(table, "NEW", 1)],
            ),
            (f"{table}_tally_delete", f"DELETE ON {table}", "true", _row_statements(table, "OLD", -1)),
        ]
    return triggers


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        # Writers of replies and conversions wait from here to the commit: none falls between the
        # backfill's snapshot and the triggers (README "Upgrading").
        op.execute("LOCK TABLE reply, conversion IN SHARE ROW EXCLUSIVE MODE")
    for name in NEW_COLUMNS:
        op.add_column("campaign_tally", sa.Column(name, sa.BigInteger(), nullable=False, server_default="0"))
    op.create_table(
        "campaign_responder",
        sa.Column("campaign_id", _id(), nullable=False),
        sa.Column("contact_id", _id(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False, server_default="0") for name in RESPONDER_COLUMNS),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("campaign_id", "contact_id"),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_message_campaign_error",
        "message",
        ["campaign_id", "error_code"],
        postgresql_where=sa.text("error_code IS NOT NULL"),
        sqlite_where=sa.text("error_code IS NOT NULL"),
    )
    # The backfill: every row's contributions, as if each had just been inserted.
    for table in ("reply", "conversion"):
        for statement in _statements(table, [(f"FROM {table} r", "r", 1)]):
            op.execute(statement)
    for statement in _statements("campaign_responder", [("FROM campaign_responder r", "r", 1)]):
        op.execute(statement)
    if dialect == "postgresql":
        for table in PLAN:
            for event in EVENTS:
                _pg_create(table, event)
        return
    for name, event, when, statements in _sqlite_triggers():
        body = "".join(f"{statement};\n" for statement in statements)
        op.execute(f"CREATE TRIGGER {name} AFTER {event} WHEN {when} BEGIN\n{body}END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in PLAN:
            for event in EVENTS:
                name = f"{table}_tally_{event.lower()}"
                op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
                op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    else:
        for name, *_ in _sqlite_triggers():
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_index("ix_message_campaign_error", table_name="message")
    op.drop_table("campaign_responder")
    for name in reversed(NEW_COLUMNS):
        op.drop_column("campaign_tally", name)
