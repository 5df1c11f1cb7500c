"""campaign_tally and campaign_clicker: a campaign's summary numbers kept by triggers, in the
transaction of every write to message and click, so /stats reads one row instead of scanning

- `message.superseded`: a later retry row of the same contact replaces this message (what
  core/stats/counting.py `superseded()` computes). Set by the trigger on a retry row's insert, so
  a message's contribution depends on its own row only (phase, superseded, status, sent_at,
  attempts): that is what makes "new minus old" of the rows a write touched its exact delta. The
  app only ever inserts retry rows; should one be deleted, or a message's campaign_id, contact_id
  or phase change (by hand), row-level triggers (`message_supersede_delete`, `_move`) set the flag
  again on the earlier messages of the (campaign, contact) before and after, and `repair()`
  recomputes it for the campaign before its recount.
- `campaign_tally`: one row per campaign (made with the campaign); each column is the sum over
  its messages, clicks or clickers of what each row contributes (`_message_tallies`,
  `_click_tallies`, `_clicker_tallies`), whichever code path wrote them: sending, callbacks,
  reconcile, cancel, the frequency cap, retries, automations, the clicks' COPY, rescoring.
- `campaign_clicker`: clicks per (campaign, contact) on counted messages, a person's and bots';
  the tally's unique counts move when one of these crosses zero, so re-scoring keeps them exact.

PostgreSQL: statement-level triggers over transition tables, one grouped upsert per statement
and table; the click's message is probed by primary key (a scalar subquery, never a join over
message). Two writers of one campaign serialise on its tally row from their first write of it to
their commit (`value + delta` under the row lock: exact); within a statement tally and clicker
rows are taken in key order (the grouped upserts' ORDER BY). A transaction of several statements
over several campaigns (a status batch's UPDATE per message, record_results, `_apply_pending`,
rescore's chunks, update_verdicts) takes its campaigns' tally rows first, in campaign id order
(core/stats/tallies.py `lock_tallies`), so that it and a click COPY over the same campaigns never
hold one each while waiting for the other's. SQLite (one writer at a time): row-level triggers
with WHEN guards, upserts of the tally and clicker rows (SQLite ≥ 3.24), in C, outside the GIL.
The tally row is made with its campaign (and by the backfill); the upserts would make a missing
one all the same rather than drop a change (`repair()` then puts its numbers right).

Backfill: a recount from message and click, before the triggers exist, in the migration's one
transaction; on PostgreSQL after `LOCK TABLE campaign, message, click IN SHARE ROW EXCLUSIVE MODE`,
so that no write commits between the recount's snapshot and the triggers (writes wait for the
commit; README "Upgrading"). Downgrade drops the lot.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 18:00:00
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here, not imported: a migration means what it meant when written (core/statuses.py).
UNCOUNTED = "('test_send', 'control')"


def _flag(condition: str) -> str:
    return f"CASE WHEN {condition} THEN 1 ELSE 0 END"


def _message_tallies(r: str) -> dict[str, str]:
    """What one message row (alias `r`) adds to each column of its campaign's tally."""
    counted = f"{r}.phase NOT IN {UNCOUNTED}"
    latest = f"{counted} AND NOT {r}.superseded"
    return {
        "recipients": _flag(latest),
        "queued": _flag(f"{latest} AND {r}.status IN ('queued', 'sending')"),
        "sent": _flag(f"{latest} AND {r}.sent_at IS NOT NULL"),
        "delivered": _flag(f"{latest} AND {r}.status = 'delivered'"),
        "undelivered": _flag(f"{latest} AND {r}.status = 'undelivered'"),
        "failed": _flag(f"{latest} AND {r}.status = 'failed'"),
        "attempts": _flag(f"{counted} AND ({r}.attempts > 0 OR {r}.sent_at IS NOT NULL)"),
    }


def _click_tallies(c: str) -> dict[str, str]:
    """What one counted click (alias `c`) adds: every click, and the bots' among them."""
    return {"clicks_raw": "1", "clicks_bot": _flag(f"{c}.is_bot")}


def _clicker_tallies(k: str) -> dict[str, str]:
    """What one (campaign, contact) clicker row adds to the unique counts."""
    return {
        "clickers_raw": _flag(f"{k}.human_clicks + {k}.bot_clicks > 0"),
        "clickers_human": _flag(f"{k}.human_clicks > 0"),
    }


TALLY_COLUMNS = [*_message_tallies("m"), *_click_tallies("c"), *_clicker_tallies("k")]


def _upsert(table: str, keys: list[str], columns: list[str], select: str) -> str:
    """Add the rows of `select` (keys, then deltas) onto `table`, creating the rows missing."""
    names = ", ".join([*keys, *columns])
    added = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in columns)
    return f"INSERT INTO {table} ({names}) {select} ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {added}"


Source = tuple[str, str, int]  # (FROM clause, the row's alias, sign)
Tallies = Callable[[str], dict[str, str]]


def _signed(sources: list[Source], keys: list[str], tallies: Tallies, where: Callable[[str], str] | None = None) -> str:
    """SELECT keys, sum(deltas) over the rows of each source (its contributions times its sign),
    grouped by keys, non-zero deltas only, in key order (two writers lock rows in the same order)."""
    parts = []
    for relation, alias, sign in sources:
        key_list = ", ".join(f"{alias}.{k} AS {k}" for k in keys)
        values = ", ".join(f"{sign} * ({e}) AS {n}" for n, e in tallies(alias).items())
        parts.append(f"SELECT {key_list}, {values} {relation} WHERE {where(alias) if where else 'true'}")
    names = list(tallies("x"))
    sums = ", ".join(f"sum({n})" for n in names)
    nonzero = " OR ".join(f"sum({n}) <> 0" for n in names)
    key_names = ", ".join(keys)
    return (
        f"SELECT {key_names}, {sums} FROM ({' UNION ALL '.join(parts)}) AS d "
        f"WHERE true GROUP BY {key_names} HAVING {nonzero} ORDER BY {key_names}"
    )


def _message_delta(sources: list[Source]) -> str:
    columns = list(_message_tallies("m"))
    return _upsert("campaign_tally", ["campaign_id"], columns, _signed(sources, ["campaign_id"], _message_tallies))


def _counted_click(c: str) -> str:
    """The click's message counts. A scalar subquery, so a probe of message's primary key per click
    on both databases (an EXISTS may become a hash join over the whole message table)."""
    return f"(SELECT cm.phase FROM message cm WHERE cm.id = {c}.message_id) NOT IN {UNCOUNTED}"


def _clicks_by_contact(c: str) -> dict[str, str]:
    return {"human_clicks": _flag(f"NOT {c}.is_bot"), "bot_clicks": _flag(f"{c}.is_bot")}


def _click_deltas(sources: list[Source]) -> list[str]:
    """The tally's click columns and the clickers' counts, for clicks of counted messages only."""
    return [
        _upsert(
            "campaign_tally",
            ["campaign_id"],
            list(_click_tallies("c")),
            _signed(sources, ["campaign_id"], _click_tallies, _counted_click),
        ),
        _upsert(
            "campaign_clicker",
            ["campaign_id", "contact_id"],
            list(_clicks_by_contact("c")),
            _signed(
                sources,
                ["campaign_id", "contact_id"],
                _clicks_by_contact,
                lambda c: f"{_counted_click(c)} AND {c}.contact_id IS NOT NULL",
            ),
        ),
    ]


def _clicker_delta(sources: list[Source]) -> str:
    columns = list(_clicker_tallies("k"))
    return _upsert("campaign_tally", ["campaign_id"], columns, _signed(sources, ["campaign_id"], _clicker_tallies))


# A retry row supersedes the earlier messages of its contact in its campaign (through the index on
# message.contact_id); the UPDATE's own trigger moves their contributions out of the latest counts.
SUPERSEDE_PG = """
UPDATE message SET superseded = true WHERE id = ANY (ARRAY(
  SELECT e.id FROM new_rows r JOIN LATERAL (
    SELECT id FROM message e WHERE e.contact_id = r.contact_id AND e.campaign_id = r.campaign_id
      AND e.id < r.id AND NOT e.superseded
  ) e ON true
  WHERE r.phase = 'retry' AND r.contact_id IS NOT NULL
))"""
SUPERSEDE_SQLITE = """
UPDATE message SET superseded = 1 WHERE campaign_id = NEW.campaign_id AND contact_id = NEW.contact_id
  AND id < NEW.id AND superseded = 0"""

# The flag again, after a retry row went (DELETE) or a row changed campaign, contact or phase: for
# each (campaign, contact) concerned, the rows whose flag is not "a later retry row exists" flip;
# their UPDATE's own trigger moves their contributions. Row-level on both databases, fired only by
# such writes (the app makes none: it inserts retry rows, and sets status columns).
def _recheck(row: str) -> str:
    return f"""
UPDATE message SET superseded = NOT superseded WHERE campaign_id = {row}.campaign_id
  AND contact_id = {row}.contact_id AND superseded <> EXISTS (
    SELECT 1 FROM message r WHERE r.campaign_id = message.campaign_id AND r.contact_id = message.contact_id
      AND r.phase = 'retry' AND r.id > message.id)"""


UNSUPERSEDE = "UPDATE message SET superseded = {false} WHERE id = NEW.id AND NEW.contact_id IS NULL AND superseded"
RECHECK_DELETE_WHEN = "OLD.phase = 'retry' AND OLD.contact_id IS NOT NULL"
RECHECK_MOVE_WHEN = "OLD.campaign_id {ne} NEW.campaign_id OR OLD.contact_id {ne} NEW.contact_id OR OLD.phase {ne} NEW.phase"
RECHECK_PG = f"""
CREATE FUNCTION message_supersede_recheck() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
{_recheck("OLD")};
IF TG_OP = 'UPDATE' THEN
{_recheck("NEW")};
{UNSUPERSEDE.format(false="false")};
END IF;
RETURN NULL;
END $$"""
RECHECK_TRIGGERS_PG = [
    "CREATE TRIGGER message_supersede_delete AFTER DELETE ON message FOR EACH ROW "
    f"WHEN ({RECHECK_DELETE_WHEN}) EXECUTE FUNCTION message_supersede_recheck()",
    "CREATE TRIGGER message_supersede_move AFTER UPDATE OF campaign_id, contact_id, phase ON message FOR EACH ROW "
    f"WHEN ({RECHECK_MOVE_WHEN.format(ne='IS DISTINCT FROM')}) EXECUTE FUNCTION message_supersede_recheck()",
]

EVENTS = {"INSERT": [("new_rows", 1)], "UPDATE": [("new_rows", 1), ("old_rows", -1)], "DELETE": [("old_rows", -1)]}


def _pg_statements(table: str, event: str) -> list[str]:
    """The statements a write of `event` on `table` runs on PostgreSQL, over the statement's rows
    (transition tables `new_rows`/`old_rows`)."""
    sources = [(f"FROM {relation} r{i}", f"r{i}", sign) for i, (relation, sign) in enumerate(EVENTS[event])]
    if table == "message":
        return [_message_delta(sources)]
    if table == "click":
        return _click_deltas(sources)
    return [_clicker_delta(sources)]


def _pg_create(table: str, event: str) -> None:
    name = f"{table}_tally_{event.lower()}"
    body = ";\n".join(_pg_statements(table, event))
    if table == "message" and event == "INSERT":
        body += f";\nIF EXISTS (SELECT 1 FROM new_rows WHERE phase = 'retry') THEN {SUPERSEDE_PG}; END IF"
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


# SQLite: row-level triggers, each statement a single-row upsert (no grouping), guarded by the
# trigger's WHEN so that a write that changes no count (most callbacks' duplicates, a clicker whose
# counts stay above zero) runs no statement at all.
Terms = list[tuple[str, int]]  # (NEW | OLD, sign)
CLICKER_KEYS = ["campaign_id", "contact_id"]


def _row_upsert(table: str, keys: list[str], tallies: Tallies, terms: Terms, where: str = "true") -> str:
    """Add the sum of the terms' contributions, keyed by the first term's row: an upsert, like
    PostgreSQL's (the campaign's tally row is made with its campaign, `CREATE_TALLY_ROW_SQLITE`,
    and by the backfill; should one be missing all the same, the change makes it rather than being
    dropped, and `repair()` puts its numbers right)."""
    names = list(tallies("x"))
    deltas = [" + ".join(f"{sign} * ({tallies(row)[n]})" for row, sign in terms) for n in names]
    row = terms[0][0]
    key_values = ", ".join(f"{row}.{k}" for k in keys)
    return _upsert(table, keys, names, f"SELECT {key_values}, {', '.join(deltas)} WHERE {where}")


def _changed(tallies: Tallies) -> str:
    return " OR ".join(
        f"({new}) <> ({old})" for new, old in zip(tallies("NEW").values(), tallies("OLD").values(), strict=True)
    )


def _same(keys: list[str]) -> str:
    return " AND ".join(f"OLD.{k} IS NEW.{k}" for k in keys)


def _click_rows(terms: Terms, row: str) -> list[str]:
    return [
        _row_upsert("campaign_tally", ["campaign_id"], _click_tallies, terms),
        _row_upsert(
            "campaign_clicker",
            ["campaign_id", "contact_id"],
            _clicks_by_contact,
            terms,
            f"{row}.contact_id IS NOT NULL",
        ),
    ]


def _guarded_click_rows(row: str, sign: int) -> list[str]:
    """A click's contributions moved out (OLD, -1) or in (NEW, +1), if its message counts."""
    terms = [(row, sign)]
    counted = f"{_counted_click(row)}"
    return [
        _row_upsert("campaign_tally", ["campaign_id"], _click_tallies, terms, counted),
        _row_upsert(
            "campaign_clicker",
            ["campaign_id", "contact_id"],
            _clicks_by_contact,
            terms,
            f"{counted} AND {row}.contact_id IS NOT NULL",
        ),
    ]


def _sqlite_triggers() -> list[tuple[str, str, str, list[str]]]:
    """(name, event, WHEN, statements) of every SQLite trigger."""
    message_counted = f"NEW.phase NOT IN {UNCOUNTED}"
    message_cols = "status, sent_at, attempts, phase, superseded, campaign_id"
    click_keys = ["message_id", "campaign_id", "contact_id"]
    clicker_cols = "human_clicks, bot_clicks, campaign_id, contact_id"
    tally = "campaign_tally"
    return [
        (
            "message_tally_insert",
            "INSERT ON message",
            message_counted,
            [_row_upsert(tally, ["campaign_id"], _message_tallies, [("NEW", 1)])],
        ),
        (
            "message_tally_update",
            f"UPDATE OF {message_cols} ON message",
            f"OLD.campaign_id = NEW.campaign_id AND ({_changed(_message_tallies)})",
            [_row_upsert(tally, ["campaign_id"], _message_tallies, [("NEW", 1), ("OLD", -1)])],
        ),
        (
            "message_tally_move",
            "UPDATE OF campaign_id ON message",
            "OLD.campaign_id <> NEW.campaign_id",
            [
                _row_upsert(tally, ["campaign_id"], _message_tallies, [("OLD", -1)]),
                _row_upsert(tally, ["campaign_id"], _message_tallies, [("NEW", 1)]),
            ],
        ),
        (
            "message_tally_delete",
            "DELETE ON message",
            f"OLD.phase NOT IN {UNCOUNTED}",
            [_row_upsert(tally, ["campaign_id"], _message_tallies, [("OLD", -1)])],
        ),
        (
            "message_supersede",
            "INSERT ON message",
            "NEW.phase = 'retry' AND NEW.contact_id IS NOT NULL",
            [SUPERSEDE_SQLITE],
        ),
        ("message_supersede_delete", "DELETE ON message", RECHECK_DELETE_WHEN, [_recheck("OLD")]),
        (
            "message_supersede_move",
            "UPDATE OF campaign_id, contact_id, phase ON message",
            RECHECK_MOVE_WHEN.format(ne="IS NOT"),
            [_recheck("OLD"), _recheck("NEW"), UNSUPERSEDE.format(false="0")],
        ),
        ("click_tally_insert", "INSERT ON click", _counted_click("NEW"), _click_rows([("NEW", 1)], "NEW")),
        (
            "click_tally_update",
            "UPDATE OF is_bot ON click",
            f"{_same(click_keys)} AND OLD.is_bot IS NOT NEW.is_bot AND {_counted_click('NEW')}",
            _click_rows([("NEW", 1), ("OLD", -1)], "NEW"),
        ),
        (
            "click_tally_move",
            "UPDATE OF message_id, campaign_id, contact_id ON click",
            f"NOT ({_same(click_keys)})",
            [*_guarded_click_rows("OLD", -1), *_guarded_click_rows("NEW", 1)],
        ),
        ("click_tally_delete", "DELETE ON click", _counted_click("OLD"), _click_rows([("OLD", -1)], "OLD")),
        (
            "campaign_clicker_tally_insert",
            "INSERT ON campaign_clicker",
            "NEW.human_clicks + NEW.bot_clicks > 0",
            [_row_upsert(tally, ["campaign_id"], _clicker_tallies, [("NEW", 1)])],
        ),
        (
            "campaign_clicker_tally_update",
            f"UPDATE OF {clicker_cols} ON campaign_clicker",
            f"OLD.campaign_id = NEW.campaign_id AND ({_changed(_clicker_tallies)})",
            [_row_upsert(tally, ["campaign_id"], _clicker_tallies, [("NEW", 1), ("OLD", -1)])],
        ),
        (
            "campaign_clicker_tally_move",
            "UPDATE OF campaign_id ON campaign_clicker",
            "OLD.campaign_id <> NEW.campaign_id",
            [
                _row_upsert(tally, ["campaign_id"], _clicker_tallies, [("OLD", -1)]),
                _row_upsert(tally, ["campaign_id"], _clicker_tallies, [("NEW", 1)]),
            ],
        ),
        (
            "campaign_clicker_tally_delete",
            "DELETE ON campaign_clicker",
            "OLD.human_clicks + OLD.bot_clicks > 0",
            [_row_upsert(tally, ["campaign_id"], _clicker_tallies, [("OLD", -1)])],
        ),
    ]


PG_TABLES = ("message", "click", "campaign_clicker")
# Every campaign has its tally row from its insert on (the backfill made the others' rows).
CREATE_TALLY_ROW_SQLITE = (
    "CREATE TRIGGER campaign_tally_create AFTER INSERT ON campaign "
    "BEGIN INSERT OR IGNORE INTO campaign_tally (campaign_id) VALUES (NEW.id); END"
)
CREATE_TALLY_ROW_PG = """
CREATE FUNCTION campaign_tally_create() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
INSERT INTO campaign_tally (campaign_id) SELECT id FROM new_rows ORDER BY id ON CONFLICT DO NOTHING;
RETURN NULL;
END $$"""


def _create_triggers(dialect: str) -> None:
    if dialect == "postgresql":
        op.execute(CREATE_TALLY_ROW_PG)
        op.execute(
            "CREATE TRIGGER campaign_tally_create AFTER INSERT ON campaign REFERENCING NEW TABLE AS new_rows "
            "FOR EACH STATEMENT EXECUTE FUNCTION campaign_tally_create()"
        )
        for table in PG_TABLES:
            for event in EVENTS:
                _pg_create(table, event)
        op.execute(RECHECK_PG)
        for trigger in RECHECK_TRIGGERS_PG:
            op.execute(trigger)
        return
    op.execute(CREATE_TALLY_ROW_SQLITE)
    for name, event, when, statements in _sqlite_triggers():
        body = "".join(f"{statement};\n" for statement in statements)
        op.execute(f"CREATE TRIGGER {name} AFTER {event} WHEN {when} BEGIN\n{body}END")


def _drop_triggers(dialect: str) -> None:
    if dialect == "postgresql":
        for table, event in [("campaign", "create"), *((t, e.lower()) for t in PG_TABLES for e in EVENTS)]:
            name = f"{table}_tally_{event}" if table != "campaign" else "campaign_tally_create"
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
        op.execute("DROP TRIGGER IF EXISTS message_supersede_delete ON message")
        op.execute("DROP TRIGGER IF EXISTS message_supersede_move ON message")
        op.execute("DROP FUNCTION IF EXISTS message_supersede_recheck()")
        return
    op.execute("DROP TRIGGER IF EXISTS campaign_tally_create")
    for name, *_ in _sqlite_triggers():
        op.execute(f"DROP TRIGGER IF EXISTS {name}")


BACKFILL_SUPERSEDED = """
UPDATE message SET superseded = true WHERE contact_id IS NOT NULL AND EXISTS (
  SELECT 1 FROM message r WHERE r.campaign_id = message.campaign_id AND r.phase = 'retry'
    AND r.contact_id = message.contact_id AND r.id > message.id)"""


def _backfill(dialect: str) -> None:
    if dialect == "postgresql":
        # Writers wait from here to the migration's commit (one transaction, triggers made before
        # it): a write committed between the recount's snapshot and CREATE TRIGGER would be in
        # neither. SHARE ROW EXCLUSIVE: reads go on, writes (and another such lock) wait.
        op.execute("LOCK TABLE campaign, message, click IN SHARE ROW EXCLUSIVE MODE")
    op.execute(BACKFILL_SUPERSEDED)
    op.execute("INSERT INTO campaign_tally (campaign_id) SELECT id FROM campaign")
    op.execute(_message_delta([("FROM message r", "r", 1)]))
    for statement in _click_deltas([("FROM click r", "r", 1)]):
        op.execute(statement)
    op.execute(_clicker_delta([("FROM campaign_clicker r", "r", 1)]))


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.add_column("message", sa.Column("superseded", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "campaign_tally",
        sa.Column("campaign_id", _id(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False, server_default="0") for name in TALLY_COLUMNS),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("campaign_id"),
    )
    op.create_table(
        "campaign_clicker",
        sa.Column("campaign_id", _id(), nullable=False),
        sa.Column("contact_id", _id(), nullable=False),
        sa.Column("human_clicks", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("bot_clicks", sa.BigInteger(), nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("campaign_id", "contact_id"),
        sqlite_with_rowid=False,
    )
    _backfill(dialect)
    _create_triggers(dialect)


def downgrade() -> None:
    _drop_triggers(op.get_bind().dialect.name)
    op.drop_table("campaign_clicker")
    op.drop_table("campaign_tally")
    op.drop_column("message", "superseded")
