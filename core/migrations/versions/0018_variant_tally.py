"""The numbers per variant kept by triggers: `/stats/variants` (its arms and "all variants") and one
variant's `/stats/funnel` read a few rows instead of the campaign's messages, clicks and conversions.

Rows are kept per (campaign, variant, phase): `variant_id` 0 is every variant together (a contact
once), `phase` is `test`, `remainder` (that phase's messages) or `*` (every counted phase). A
message counts where its campaign's `/stats/variants` counts it: no test send, no held-out
control, a variant set. Recipients, sent and delivered count each contact's latest message under
`*` (not superseded by a retry) and every message of the phase under `test` and `remainder` (as
core/stats/counting.py `counted(phase=...)` does); clicks and conversions count whichever attempt
they came from, under the variant and phase of the message they came from.

- `campaign_variant_tally`: recipients, sent, delivered; `clickers` (contacts with a click of a
  person's), `converters`, `direct_converters` (a conversion after a click), of conversions of any
  name; `conversion_events`, `unclicked_events`, `revenue_micros` (millionths: an exact sum).
- `campaign_variant_contact`: per (campaign, variant, phase, contact) its people's clicks,
  conversions and conversions after a click; the distinct counts move when one crosses zero.
- `campaign_variant_event`: per conversion name (the campaign's `conversion.event` is read from
  here): converters, events, revenue in millionths and `revenue_sq`, the sum over converting
  contacts of (the contact's revenue)², what revenue per recipient's variance is made from (a float:
  the square of a sum of millionths, exact enough for a variance).
- `campaign_variant_event_contact`: per (campaign, variant, phase, name, contact) its events and
  revenue; converters and `revenue_sq` move with it.

PostgreSQL: statement-level triggers over transition tables (named `zz_`, after 0013's and 0014's,
which take the statement's campaign tally rows first; these take them too, first), one grouped
upsert per table in key order; a click's or conversion's message probed by primary key. SQLite:
row-level triggers with WHEN guards. Backfill: from message, click and conversion in the
migration's transaction (on PostgreSQL after locking them against writes). Downgrade drops the lot.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here, not imported: a migration means what it meant when written.
UNCOUNTED = "('test_send', 'control')"
KEPT_PHASES = "('test', 'remainder')"
EVERY = "*"

ARM = ["campaign_id", "variant_id", "phase"]
MEMBER = [*ARM, "contact_id"]
EVENT = [*ARM, "name"]
EVENT_MEMBER = [*EVENT, "contact_id"]
# Each row once per key: its variant or all (whole_v), its phase or every phase (whole_p).
KEYS = "(SELECT 0 AS whole_v, 0 AS whole_p UNION ALL SELECT 0, 1 UNION ALL SELECT 1, 0 UNION ALL SELECT 1, 1) AS x"
EVENTS = {"INSERT": [("new_rows", 1)], "UPDATE": [("new_rows", 1), ("old_rows", -1)], "DELETE": [("old_rows", -1)]}
REFERENCING = {
    "INSERT": "NEW TABLE AS new_rows",
    "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "DELETE": "OLD TABLE AS old_rows",
}
Source = tuple[str, str, int]  # (FROM item, the row's alias, sign)

# Each table's columns a write's rows are read with (`mv`, `mp`: its message's variant and phase).
COLUMNS = {
    "message": ["campaign_id", "contact_id", "superseded", "sent_at", "status"],
    "click": ["campaign_id", "contact_id", "is_bot"],
    "conversion": ["campaign_id", "contact_id", "name", "revenue", "clicked"],
}


def _flag(condition: str) -> str:
    return f"CASE WHEN {condition} THEN 1 ELSE 0 END"


def _micros(value: str) -> str:
    return f"CAST(ROUND(COALESCE({value}, 0) * 1000000) AS BIGINT)"


def _rows(table: str, source: Source) -> str:
    """The source's rows with their message's variant, phase and campaign (probes of message's
    primary key for a click or a conversion: one of another campaign's message counts nowhere), as a
    relation aliased `s`."""
    relation, r, _ = source
    columns = [f"{r}.{c} AS {c}" for c in COLUMNS[table]]
    if table == "message":
        columns += [f"{r}.variant_id AS mv", f"{r}.phase AS mp", f"{r}.campaign_id AS mc"]
    else:
        for name, column in (("mv", "variant_id"), ("mp", "phase"), ("mc", "campaign_id")):
            columns.append(f"(SELECT cm.{column} FROM message cm WHERE cm.id = {r}.message_id) AS {name}")
    return f"(SELECT {', '.join(columns)} FROM {relation}) AS s"


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


def _keyed(
    table: str, sources: list[Source], keys: list[str], values: dict[str, str], where: str = "true"
) -> list[str]:
    """SELECTs of each source's rows once per key (their arm's keys, then `keys` beyond them) with
    `values` (expressions over `s` and `x`) times the source's sign."""
    parts = []
    for source in sources:
        sign = source[2]
        arm = [
            "s.campaign_id AS campaign_id",
            "CASE WHEN x.whole_v = 1 THEN 0 ELSE s.mv END AS variant_id",
            f"CASE WHEN x.whole_p = 1 THEN '{EVERY}' ELSE s.mp END AS phase",
        ]
        extra = [f"s.{k} AS {k}" for k in keys[3:]]
        columns = ", ".join([*arm, *extra, *(f"{sign} * ({e}) AS {n}" for n, e in values.items())])
        parts.append(
            f"SELECT {columns} FROM {_rows(table, source)} CROSS JOIN {KEYS} WHERE s.mv IS NOT NULL AND s.mc = s.campaign_id "
            f"AND s.mp NOT IN {UNCOUNTED} AND (x.whole_p = 1 OR s.mp IN {KEPT_PHASES}) AND {where}"
        )
    return parts


def _write(target: str, keys: list[str], values: dict[str, str], parts: list[str]) -> str:
    return _upsert(target, keys, list(values), _grouped(keys, list(values), parts))


def _statements(table: str, sources: list[Source]) -> list[str]:
    """What a write of `table` over `sources` adds, in the order the tables are taken."""
    if table == "message":
        # Every phase: each contact's latest message; one phase: its every message.
        latest = "(x.whole_p = 0 OR NOT s.superseded)"
        values = {
            "recipients": _flag(latest),
            "sent": _flag(f"{latest} AND s.sent_at IS NOT NULL"),
            "delivered": _flag(f"{latest} AND s.status = 'delivered'"),
        }
        return [_write("campaign_variant_tally", ARM, values, _keyed(table, sources, ARM, values))]
    if table == "click":
        values = {"human_clicks": _flag("NOT s.is_bot")}
        parts = _keyed(table, sources, MEMBER, values, "s.contact_id IS NOT NULL")
        return [_write("campaign_variant_contact", MEMBER, values, parts)]
    if table == "conversion":
        arm = {
            "conversion_events": "1",
            "unclicked_events": _flag("NOT s.clicked"),
            "revenue_micros": _micros("s.revenue"),
        }
        member = {"conversions": "1", "clicked_conversions": _flag("s.clicked")}
        event = {"events": "1", "revenue_micros": _micros("s.revenue")}
        with_contact = "s.contact_id IS NOT NULL"
        return [
            _write("campaign_variant_tally", ARM, arm, _keyed(table, sources, ARM, arm)),
            _write("campaign_variant_contact", MEMBER, member, _keyed(table, sources, MEMBER, member, with_contact)),
            _write("campaign_variant_event", EVENT, event, _keyed(table, sources, EVENT, event)),
            _write(
                "campaign_variant_event_contact",
                EVENT_MEMBER,
                event,
                _keyed(table, sources, EVENT_MEMBER, event, with_contact),
            ),
        ]
    if table == "campaign_variant_contact":
        target, keys = "campaign_variant_tally", ARM

        def values_of(k: str) -> dict[str, str]:
            return {
                "clickers": _flag(f"{k}.human_clicks > 0"),
                "converters": _flag(f"{k}.conversions > 0"),
                "direct_converters": _flag(f"{k}.clicked_conversions > 0"),
            }
    else:  # campaign_variant_event_contact
        target, keys = "campaign_variant_event", EVENT

        def values_of(k: str) -> dict[str, str]:
            revenue = f"(CAST({k}.revenue_micros AS DOUBLE PRECISION) / 1000000.0)"
            return {
                "converters": _flag(f"{k}.events > 0"),
                "revenue_sq": f"CASE WHEN {k}.events > 0 THEN {revenue} * {revenue} ELSE 0 END",
            }

    parts = []
    for relation, k, sign in sources:
        key_list = ", ".join(f"{k}.{c} AS {c}" for c in keys)
        columns = ", ".join(f"{sign} * ({e}) AS {n}" for n, e in values_of(k).items())
        parts.append(f"SELECT {key_list}, {columns} FROM {relation}")
    return [_write(target, keys, values_of("k"), parts)]


def _lock_tallies(sources: list[Source]) -> str:
    rows = " UNION ".join(f"SELECT {alias}.campaign_id FROM {relation}" for relation, alias, _ in sources)
    return f"PERFORM 1 FROM campaign_tally WHERE campaign_id IN ({rows}) ORDER BY campaign_id FOR NO KEY UPDATE"


TABLES = ("message", "click", "conversion", "campaign_variant_contact", "campaign_variant_event_contact")


def _pg_bodies() -> dict[tuple[str, str], list[str]]:
    bodies: dict[tuple[str, str], list[str]] = {}
    for event, relations in EVENTS.items():
        sources = [(f"{relation} r{i}", f"r{i}", sign) for i, (relation, sign) in enumerate(relations)]
        for table in TABLES:
            lock = [_lock_tallies(sources)] if table in COLUMNS else []
            bodies[(table, event)] = [*lock, *_statements(table, sources)]
    return bodies


def _pg_name(table: str, event: str) -> str:
    return f"zz_{table}_variant_{event.lower()}"


WATCHED = {
    "message": "campaign_id, contact_id, variant_id, phase, superseded, sent_at, status",
    "click": "message_id, campaign_id, contact_id, is_bot",
    "conversion": "message_id, campaign_id, contact_id, name, revenue, clicked",
    "campaign_variant_contact": (
        "campaign_id, variant_id, phase, contact_id, human_clicks, conversions, clicked_conversions"
    ),
    "campaign_variant_event_contact": "campaign_id, variant_id, phase, name, contact_id, events, revenue_micros",
}


def _sqlite_triggers() -> list[tuple[str, str, str, list[str]]]:
    def row(alias: str, sign: int) -> list[Source]:
        return [(ROW, alias, sign)]  # the trigger's NEW or OLD, over a one-row relation

    def rows(table: str, alias: str, sign: int) -> list[str]:
        return _statements(table, row(alias, sign))

    triggers = []
    for table, columns in WATCHED.items():
        changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns.split(", "))
        if table == "message":  # what a message adds moves with these, not with every status
            keys = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in ("campaign_id", "variant_id", "phase", "superseded"))
            sent = "(OLD.sent_at IS NULL) <> (NEW.sent_at IS NULL)"
            delivered = "(OLD.status IS 'delivered') <> (NEW.status IS 'delivered')"
            changed = f"{keys} OR {sent} OR {delivered}"
        short = table.replace("campaign_variant_", "variant_")
        triggers += [
            (f"{short}_variant_insert", f"INSERT ON {table}", "true", rows(table, "NEW", 1)),
            (
                f"{short}_variant_update",
                f"UPDATE OF {columns} ON {table}",
                changed,
                [*rows(table, "OLD", -1), *rows(table, "NEW", 1)],
            ),
            (f"{short}_variant_delete", f"DELETE ON {table}", "true", rows(table, "OLD", -1)),
        ]
    return triggers


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")


def _arm_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("campaign_id", _id(), nullable=False),
        sa.Column("variant_id", _id(), nullable=False),
        sa.Column("phase", sa.String(length=20), nullable=False),
    ]


def _table(name: str, keys: list[str], extra: list[sa.Column[object]], counts: list[str]) -> None:
    op.create_table(
        name,
        *_arm_columns(),
        *extra,
        *(_count(c) for c in counts),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*keys),
        sqlite_with_rowid=False,
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        # Writers wait from here to the commit: none falls between the backfill and the triggers.
        op.execute("LOCK TABLE message, click, conversion IN SHARE ROW EXCLUSIVE MODE")
    tally = ["recipients", "sent", "delivered", "clickers", "converters", "direct_converters"]
    _table("campaign_variant_tally", ARM, [], [*tally, "conversion_events", "unclicked_events", "revenue_micros"])
    contact = [sa.Column("contact_id", _id(), nullable=False)]
    _table("campaign_variant_contact", MEMBER, contact, ["human_clicks", "conversions", "clicked_conversions"])
    name = [sa.Column("name", sa.String(length=100), nullable=False)]
    op.create_table(
        "campaign_variant_event",
        *_arm_columns(),
        *name,
        *(_count(c) for c in ("converters", "events", "revenue_micros")),
        sa.Column("revenue_sq", sa.Float(), nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*EVENT),
        sqlite_with_rowid=False,
    )
    name = [sa.Column("name", sa.String(length=100), nullable=False)]
    contact = [sa.Column("contact_id", _id(), nullable=False)]
    _table("campaign_variant_event_contact", EVENT_MEMBER, [*name, *contact], ["events", "revenue_micros"])
    # The backfill: every row's contributions as if just written, in the order the triggers add them.
    for table in TABLES:
        alias = "k" if table not in COLUMNS else "r"
        for statement in _statements(table, [(f"{table} {alias}", alias, 1)]):
            op.execute(statement)
    if dialect == "postgresql":
        for (table, event), statements in _pg_bodies().items():
            fn = _pg_name(table, event)
            body = ";\n".join(statements)
            op.execute(
                f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n{body};\nRETURN NULL;\nEND $$"
            )
            op.execute(
                f"CREATE TRIGGER {fn} AFTER {event} ON {table} REFERENCING {REFERENCING[event]} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {fn}()"
            )
        return
    for trigger, event, when, statements in _sqlite_triggers():
        body = "".join(f"{statement};\n" for statement in statements)
        op.execute(f"CREATE TRIGGER {trigger} AFTER {event} WHEN {when} BEGIN\n{body}END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, event in _pg_bodies():
            fn = _pg_name(table, event)
            op.execute(f"DROP TRIGGER IF EXISTS {fn} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {fn}()")
    else:
        for trigger, *_ in _sqlite_triggers():
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    for table in ("campaign_variant_event_contact", "campaign_variant_event", "campaign_variant_contact"):
        op.drop_table(table)
    op.drop_table("campaign_variant_tally")
