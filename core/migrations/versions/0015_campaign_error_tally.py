"""campaign_error: a campaign's failed messages per error code and text, kept by triggers on
message as migration 0013's tallies are, so `/stats/errors` reads a few rows instead of the
campaign's failures.

A message counts where `/stats/errors` lists it (core/stats/summary.py `errors`): it is its
contact's latest counted message (not a test send's, not a held-out control's, not superseded by a
retry) and it failed or went undelivered, or was cancelled over the frequency cap (code
`frequency_cap`). Its key: the error code (`unknown` for none) and the first TEXT_KEPT characters
of the error text ('' for none; a provider's texts are a line, and a primary key has a size limit
on PostgreSQL).

PostgreSQL: statement-level triggers over transition tables (one grouped upsert per statement, in
key order, after 0013's own: a statement's campaign tally row is locked first, so two writers take
a campaign's error rows in one order). SQLite: row-level triggers with WHEN guards, so a write that
neither lists nor unlists a message runs no statement. Backfill: counted from message in the
migration's transaction (on PostgreSQL after locking message against writes).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here, not imported: a migration means what it meant when written.
UNCOUNTED = "('test_send', 'control')"
TEXT_KEPT = 500
KEYS = ["campaign_id", "code", "text"]


def _listed(m: str) -> str:
    latest = f"{m}.phase NOT IN {UNCOUNTED} AND NOT {m}.superseded"
    failed = f"{m}.status IN ('failed', 'undelivered')"
    capped = f"({m}.status = 'cancelled' AND {m}.error_code = 'frequency_cap')"
    return f"{latest} AND ({failed} OR {capped})"


def _keys(m: str) -> dict[str, str]:
    return {
        "campaign_id": f"{m}.campaign_id",
        "code": f"COALESCE({m}.error_code, 'unknown')",
        "text": f"SUBSTR(COALESCE({m}.error_text, ''), 1, {TEXT_KEPT})",
    }


def _upsert(select: str) -> str:
    return (
        f"INSERT INTO campaign_error (campaign_id, code, text, messages) {select} "
        "ON CONFLICT (campaign_id, code, text) DO UPDATE SET messages = campaign_error.messages + excluded.messages"
    )


EVENTS = {"INSERT": [("new_rows", 1)], "UPDATE": [("new_rows", 1), ("old_rows", -1)], "DELETE": [("old_rows", -1)]}


def _grouped(sources: list[tuple[str, str, int]]) -> str:
    parts = []
    for relation, alias, sign in sources:
        keys = ", ".join(f"{e} AS {k}" for k, e in _keys(alias).items())
        parts.append(f"SELECT {keys}, {sign} AS messages FROM {relation} {alias} WHERE {_listed(alias)}")
    names = ", ".join(KEYS)
    return _upsert(
        f"SELECT {names}, sum(messages) FROM ({' UNION ALL '.join(parts)}) AS d WHERE true "
        f"GROUP BY {names} HAVING sum(messages) <> 0 ORDER BY {names}"
    )


def _row(m: str, sign: int) -> str:
    keys = ", ".join(_keys(m).values())
    return _upsert(f"SELECT {keys}, {sign} WHERE {_listed(m)}")


WATCHED = "status, error_code, error_text, phase, superseded, campaign_id"


def _sqlite_triggers() -> list[tuple[str, str, str, list[str]]]:
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in WATCHED.split(", "))
    return [
        ("message_error_insert", "INSERT ON message", _listed("NEW"), [_row("NEW", 1)]),
        (
            "message_error_update",
            f"UPDATE OF {WATCHED} ON message",
            f"({changed}) AND (({_listed('OLD')}) OR ({_listed('NEW')}))",
            [_row("OLD", -1), _row("NEW", 1)],
        ),
        ("message_error_delete", "DELETE ON message", _listed("OLD"), [_row("OLD", -1)]),
    ]


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("LOCK TABLE message IN SHARE ROW EXCLUSIVE MODE")
    op.create_table(
        "campaign_error",
        sa.Column("campaign_id", _id(), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("text", sa.String(length=TEXT_KEPT), nullable=False),
        sa.Column("messages", sa.BigInteger(), nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("campaign_id", "code", "text"),
        sqlite_with_rowid=False,
    )
    op.execute(_grouped([("message", "r", 1)]))
    if dialect == "postgresql":
        for event, sources in EVENTS.items():
            name = f"message_error_{event.lower()}"
            relations = [(relation, f"r{i}", sign) for i, (relation, sign) in enumerate(sources)]
            referencing = {
                "INSERT": "NEW TABLE AS new_rows",
                "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
                "DELETE": "OLD TABLE AS old_rows",
            }[event]
            body = _grouped(relations)
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n{body};\nRETURN NULL;\nEND $$"
            )
            # "zz": after 0013's message_tally_* triggers (PostgreSQL fires them in name order).
            op.execute(
                f"CREATE TRIGGER zz_{name} AFTER {event} ON message REFERENCING {referencing} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
            )
        return
    for name, event, when, statements in _sqlite_triggers():
        body = "".join(f"{statement};\n" for statement in statements)
        op.execute(f"CREATE TRIGGER {name} AFTER {event} WHEN {when} BEGIN\n{body}END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for event in EVENTS:
            name = f"message_error_{event.lower()}"
            op.execute(f"DROP TRIGGER IF EXISTS zz_{name} ON message")
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    else:
        for name, *_ in _sqlite_triggers():
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("campaign_error")


