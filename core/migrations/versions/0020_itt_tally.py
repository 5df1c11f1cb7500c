"""The intention-to-treat numbers kept by triggers: `/stats/variants` of a campaign with a control
group reads its uplifts' counts from a few rows instead of every message and conversion.

core/stats/evidence.py `intention_to_treat` (its module docstring has the definition) counts, per
arm, every contact of the arm and its events named by the campaign's `conversion.event` within
[its touch, touch + `window_hours`], whoever the event is attributed to. A treated contact's touch
is the earliest `COALESCE(sent_at, attempted_at, queued_at)` of its counted messages of the arm's
variant (and phase); a held-out contact's the earliest `COALESCE(touched_at, queued_at)` of its
control rows. Kept here per (campaign, variant, phase): `variant_id` 0 with `phase` `control` is
the held-out group; a variant under `test`, `remainder` (that phase's messages) or `*` (every
counted phase, retries included). The variants' recipients are migration 0018's; the held-out
group's is kept here.

- `campaign_itt_contact`: per (campaign, variant, phase, contact) its events in the window and
  their revenue in millionths, for the contacts with at least one (no row for the others);
- `campaign_itt_tally`: their converters, events, revenue in millionths, `revenue_sq_micros` (the
  sum over converting contacts of (revenue)², each rounded to a millionth: an integer, so that a
  contact's rows taken away and put back leave no float residue) and, under (0, `control`), the
  held-out contacts (`recipients`: control rows with a contact).

A contact's rows are computed again from its messages and events (deleted, then inserted where
the window holds an event: the tally follows by the cascade triggers of `campaign_itt_contact`)
whenever what they depend on changes: an event of the contact is written (its rows in every
campaign), one of its messages is written whose touch, old or new, is at most a second after one
of its events (its rows in that campaign: an event earlier than both the old and the new touch of
the row lies before the arm's window either way), or the campaign's `conversion` changes (the whole
campaign). The windows compare as the read path does (SQLite: julian days with a millisecond's
tolerance; PostgreSQL: epochs). The send's cost is one probe of `conversion`'s contact index per
message written, the body running only for contacts that converted since.

PostgreSQL: statement-level triggers over transition tables (named `zzz_`, after 0013's to 0018's:
a statement's campaign tally rows are taken first), grouped upserts in key order. SQLite: row
triggers with WHEN guards. Backfill in the migration's transaction (PostgreSQL: after locking
campaign, message and conversion against writes). Downgrade drops the lot.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here, not imported: a migration means what it meant when written.
KEYS = ["campaign_id", "variant_id", "phase"]
MEMBER = [*KEYS, "contact_id"]
TREATED_TOUCH = "COALESCE({m}.sent_at, {m}.attempted_at, {m}.queued_at)"
CONTROL_TOUCH = "COALESCE({m}.touched_at, {m}.queued_at)"
TOUCH_COLUMNS = "campaign_id, contact_id, variant_id, phase, sent_at, attempted_at, queued_at, touched_at"


def _touch(m: str) -> str:
    """A message row's touch, by its phase."""
    return f"CASE WHEN {m}.phase = 'control' THEN {CONTROL_TOUCH.format(m=m)} ELSE {TREATED_TOUCH.format(m=m)} END"


class Dialect:
    def __init__(self, name: str) -> None:
        self.name = name

    def event(self, ca: str) -> str:
        if self.name == "sqlite":
            return f"COALESCE(NULLIF(CAST(json_extract({ca}.conversion, '$.event') AS TEXT), ''), 'purchase')"
        return f"COALESCE(NULLIF({ca}.conversion ->> 'event', ''), 'purchase')"

    def window(self, ca: str) -> str:
        if self.name == "sqlite":
            hours = f"CAST(json_extract({ca}.conversion, '$.window_hours') AS REAL)"
        else:
            hours = f"CAST({ca}.conversion ->> 'window_hours' AS DOUBLE PRECISION)"
        return f"(COALESCE(NULLIF({hours}, 0), 72.0) * 3600.0)"

    def within(self, later: str, earlier: str, seconds: str) -> str:
        """0 ≤ later − earlier ≤ seconds, as core/stats/evidence.py `_within` has it."""
        if self.name == "sqlite":
            apart = f"((julianday({later}) - julianday({earlier})) * 86400.0)"
            return f"({apart} >= -0.001 AND {apart} <= {seconds} + 0.001)"
        apart = f"(EXTRACT(epoch FROM {later}) - EXTRACT(epoch FROM {earlier}))"
        return f"({apart} >= 0 AND {apart} <= {seconds})"

    def converted_since(self, contact: str, touch: str) -> str:
        """An event of the contact at most a second before `touch` or later (the guard)."""
        if self.name == "sqlite":
            since = f"julianday(cg.occurred_at) >= julianday({touch}) - 1.0 / 86400.0"
        else:
            since = f"cg.occurred_at >= {touch} - INTERVAL '1 second'"
        return f"EXISTS (SELECT 1 FROM conversion cg WHERE cg.contact_id = {contact} AND {since})"


def _micros(value: str) -> str:
    return f"CAST(ROUND(COALESCE({value}, 0) * 1000000) AS BIGINT)"


def _touches(scope: str, source: str = "message m") -> str:
    """Per arm key and contact, the touch: over the messages of `source` that `scope` (a condition
    on `m`) picks."""
    treated = TREATED_TOUCH.format(m="m")
    parts = [
        f"SELECT m.campaign_id, 0 AS variant_id, 'control' AS phase, m.contact_id, {CONTROL_TOUCH.format(m='m')} AS touch "
        f"FROM {source} WHERE m.phase = 'control' AND m.contact_id IS NOT NULL AND {scope}",
        f"SELECT m.campaign_id, m.variant_id, '*' AS phase, m.contact_id, {treated} AS touch FROM {source} "
        f"WHERE m.phase NOT IN ('test_send', 'control') AND m.variant_id IS NOT NULL AND m.contact_id IS NOT NULL AND {scope}",
        f"SELECT m.campaign_id, m.variant_id, m.phase, m.contact_id, {treated} AS touch FROM {source} "
        f"WHERE m.phase IN ('test', 'remainder') AND m.variant_id IS NOT NULL AND m.contact_id IS NOT NULL AND {scope}",
    ]
    keys = ", ".join(MEMBER)
    return f"SELECT {keys}, min(touch) AS touch FROM ({' UNION ALL '.join(parts)}) AS u GROUP BY {keys}"


def _refill(d: Dialect, scope: str, source: str = "message m") -> str:
    """Insert the rows of the contacts and campaigns `scope` (over `m`) picks: their events within
    each arm's window, the arm's contacts without one left out."""
    t = [f"t.{k}" for k in MEMBER]
    return (
        f"INSERT INTO campaign_itt_contact ({', '.join(MEMBER)}, events, revenue_micros) "
        f"SELECT {', '.join(t)}, count(*), sum({_micros('cv.revenue')}) FROM ({_touches(scope, source)}) AS t "
        f"JOIN campaign ca ON ca.id = t.campaign_id "
        f"JOIN conversion cv ON cv.contact_id = t.contact_id AND cv.name = {d.event('ca')} "
        f"AND {d.within('cv.occurred_at', 't.touch', d.window('ca'))} "
        f"GROUP BY {', '.join(t)} ORDER BY {', '.join(t)}"
    )


def _flag(condition: str) -> str:
    return f"CASE WHEN {condition} THEN 1 ELSE 0 END"


def _contact_values(k: str) -> dict[str, str]:
    revenue = f"(CAST({k}.revenue_micros AS DOUBLE PRECISION) / 1000000.0)"
    return {
        "converters": _flag(f"{k}.events > 0"),
        "events": f"{k}.events",
        "revenue_micros": f"{k}.revenue_micros",
        "revenue_sq_micros": f"CASE WHEN {k}.events > 0 THEN CAST(ROUND({revenue} * {revenue} * 1000000.0) AS BIGINT) ELSE 0 END",
    }


def _upsert(columns: list[str], select: str) -> str:
    names = ", ".join([*KEYS, *columns])
    added = ", ".join(f"{c} = campaign_itt_tally.{c} + excluded.{c}" for c in columns)
    return f"INSERT INTO campaign_itt_tally ({names}) {select} ON CONFLICT ({', '.join(KEYS)}) DO UPDATE SET {added}"


def _cascade(sources: list[tuple[str, str, int]]) -> str:
    """The tally's change from `campaign_itt_contact` rows (relation, alias, sign)."""
    names = list(_contact_values("x"))
    parts = []
    for relation, k, sign in sources:
        values = ", ".join(f"{sign} * ({e}) AS {n}" for n, e in _contact_values(k).items())
        parts.append(f"SELECT {', '.join(f'{k}.{c} AS {c}' for c in KEYS)}, {values} FROM {relation}")
    keys = ", ".join(KEYS)
    sums = ", ".join(f"sum({n})" for n in names)
    select = (
        f"SELECT {keys}, {sums} FROM ({' UNION ALL '.join(parts)}) AS g WHERE true GROUP BY {keys} "
        f"HAVING {' OR '.join(f'sum({n}) <> 0' for n in names)} ORDER BY {keys}"
    )
    return _upsert(names, select)


def _held_out(sources: list[tuple[str, str, int]]) -> str:
    """The held-out group's contacts from message rows (relation, alias, sign)."""
    parts = [
        f"SELECT {r}.campaign_id AS campaign_id, {sign} AS n FROM {relation} WHERE {r}.phase = 'control' "
        f"AND {r}.contact_id IS NOT NULL"
        for relation, r, sign in sources
    ]
    select = (
        f"SELECT campaign_id, 0, 'control', sum(n) FROM ({' UNION ALL '.join(parts)}) AS h WHERE true "
        f"GROUP BY campaign_id HAVING sum(n) <> 0 ORDER BY campaign_id"
    )
    return _upsert(["recipients"], select)


def _changed(o: str, n: str) -> str:
    """A message's touch-relevant columns moved between `o` and `n` (PostgreSQL spelling)."""
    return " OR ".join(f"{o}.{c} IS DISTINCT FROM {n}.{c}" for c in TOUCH_COLUMNS.split(", "))


# -- PostgreSQL --------------------------------------------------------------------------------

# The (campaign, contact) pairs a statement touched, each pair's messages by the contact index.
PAIRS = (
    "unnest(pairs_campaign, pairs_contact) AS p(campaign_id, contact_id) "
    "JOIN message m ON m.contact_id = p.contact_id AND m.campaign_id = p.campaign_id"
)
PG_REFRESH = """
IF pairs_campaign IS NOT NULL THEN
  DELETE FROM campaign_itt_contact r USING unnest(pairs_campaign, pairs_contact) AS p(campaign_id, contact_id)
   WHERE r.campaign_id = p.campaign_id AND r.contact_id = p.contact_id;
  {refill};
END IF;"""


def _pg_message(event: str) -> str:
    d = Dialect("postgresql")
    # Each written row's (campaign, contact, phase, touch); an UPDATE's before and after, from one
    # join of its old and new rows, for the rows whose touch-relevant columns moved.
    if event in ("INSERT", "DELETE"):
        rows = "new_rows" if event == "INSERT" else "old_rows"
        touched = f"SELECT n.campaign_id, n.contact_id, n.phase, {_touch('n')} AS touch FROM {rows} n"
    else:
        touched = (
            "SELECT v.campaign_id, v.contact_id, v.phase, v.touch FROM new_rows x JOIN old_rows o ON o.id = x.id "
            f"CROSS JOIN LATERAL (VALUES (x.campaign_id, x.contact_id, x.phase, {_touch('x')}), "
            f"(o.campaign_id, o.contact_id, o.phase, {_touch('o')})) AS v(campaign_id, contact_id, phase, touch) "
            f"WHERE {_changed('o', 'x')}"
        )
    # One probe of the contact's events per (campaign, contact), from its earliest touch.
    pairs = (
        "SELECT array_agg(campaign_id ORDER BY campaign_id, contact_id), "
        "array_agg(contact_id ORDER BY campaign_id, contact_id) INTO pairs_campaign, pairs_contact FROM ("
        f"SELECT t.campaign_id, t.contact_id, min(t.touch) AS since FROM ({touched}) AS t "
        "WHERE t.contact_id IS NOT NULL AND t.phase <> 'test_send' GROUP BY t.campaign_id, t.contact_id"
        f") AS c WHERE {d.converted_since('c.contact_id', 'c.since')}"
    )
    held = {
        "INSERT": [("new_rows n", "n", 1)],
        "DELETE": [("old_rows n", "n", -1)],
        "UPDATE": [("old_rows o", "o", -1), ("new_rows n", "n", 1)],
    }[event]
    return f"{pairs};\n{PG_REFRESH.format(refill=_refill(d, 'true', PAIRS))}\n{_held_out(held)};"


def _pg_conversion(event: str) -> str:
    d = Dialect("postgresql")
    relations = {"INSERT": ["new_rows"], "DELETE": ["old_rows"], "UPDATE": ["old_rows", "new_rows"]}[event]
    contacts = " UNION ".join(f"SELECT contact_id FROM {r}" for r in relations)
    pairs = (
        "SELECT array_agg(campaign_id ORDER BY campaign_id, contact_id), array_agg(contact_id ORDER BY campaign_id, contact_id) "
        f"INTO pairs_campaign, pairs_contact FROM (SELECT DISTINCT m.campaign_id, m.contact_id FROM message m "
        f"WHERE m.contact_id IN ({contacts}) AND m.phase <> 'test_send') AS q"
    )
    return f"{pairs};\n{PG_REFRESH.format(refill=_refill(d, 'true', PAIRS))}"


def _pg_campaign() -> str:
    d = Dialect("postgresql")
    scope = "m.campaign_id = NEW.id AND EXISTS (SELECT 1 FROM conversion cg WHERE cg.contact_id = m.contact_id)"
    return f"DELETE FROM campaign_itt_contact WHERE campaign_id = NEW.id;\n{_refill(d, scope)};"


REFERENCING = {
    "INSERT": "NEW TABLE AS new_rows",
    "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "DELETE": "OLD TABLE AS old_rows",
}
CASCADE_SOURCES = {
    "INSERT": [("new_rows k", "k", 1)],
    "UPDATE": [("old_rows o", "o", -1), ("new_rows k", "k", 1)],
    "DELETE": [("old_rows o", "o", -1)],
}
DECLARE = "DECLARE pairs_campaign bigint[]; pairs_contact bigint[];"


def _pg_functions() -> list[tuple[str, str, str, str]]:
    """(function, table, event, body) of each statement-level trigger."""
    out = []
    for event in ("INSERT", "UPDATE", "DELETE"):
        out.append((f"zzz_message_itt_{event.lower()}", "message", event, _pg_message(event)))
        out.append((f"zzz_conversion_itt_{event.lower()}", "conversion", event, _pg_conversion(event)))
        out.append(
            (f"zzz_itt_contact_{event.lower()}", "campaign_itt_contact", event, _cascade(CASCADE_SOURCES[event]) + ";")
        )
    return out


# -- SQLite ------------------------------------------------------------------------------------


# A contact's messages by the contact index (the planner might otherwise take (campaign_id, phase)
# and read every held-out row of the campaign).
BY_CONTACT = "message m INDEXED BY ix_message_contact_id"


def _sqlite_refresh(scope: str, clear: str, source: str = BY_CONTACT) -> list[str]:
    return [f"DELETE FROM campaign_itt_contact WHERE {clear}", _refill(Dialect("sqlite"), scope, source)]


def _sqlite_triggers() -> list[tuple[str, str, str, list[str]]]:
    d = Dialect("sqlite")

    def pair(row: str) -> tuple[str, str]:
        scope = f"m.campaign_id = {row}.campaign_id AND m.contact_id = {row}.contact_id"
        clear = f"campaign_id = {row}.campaign_id AND contact_id = {row}.contact_id"
        return scope, clear

    def guard(row: str) -> str:
        return f"{row}.contact_id IS NOT NULL AND {row}.phase <> 'test_send' AND {d.converted_since(f'{row}.contact_id', _touch(row))}"

    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in TOUCH_COLUMNS.split(", "))
    moved = "OLD.campaign_id IS NOT NEW.campaign_id OR OLD.contact_id IS NOT NEW.contact_id"
    one = "(SELECT 1) AS one"
    held_when = "(OLD.phase = 'control' AND OLD.contact_id IS NOT NULL) OR (NEW.phase = 'control' AND NEW.contact_id IS NOT NULL)"
    held_changed = (
        "OLD.phase IS NOT NEW.phase OR OLD.campaign_id IS NOT NEW.campaign_id OR OLD.contact_id IS NOT NEW.contact_id"
    )
    contact_rows = "m.contact_id = {row}.contact_id AND m.phase <> 'test_send'"
    return [
        ("message_itt_insert", "INSERT ON message", guard("NEW"), _sqlite_refresh(*pair("NEW"))),
        (
            "message_itt_update",
            f"UPDATE OF {TOUCH_COLUMNS} ON message",
            f"({changed}) AND ({guard('NEW')})",
            _sqlite_refresh(*pair("NEW")),
        ),
        (
            "message_itt_update_old",
            f"UPDATE OF {TOUCH_COLUMNS} ON message",
            f"({changed}) AND ({moved} OR NOT ({guard('NEW')})) AND ({guard('OLD')})",
            _sqlite_refresh(*pair("OLD")),
        ),
        ("message_itt_delete", "DELETE ON message", guard("OLD"), _sqlite_refresh(*pair("OLD"))),
        (
            "message_held_out_insert",
            "INSERT ON message",
            "NEW.phase = 'control' AND NEW.contact_id IS NOT NULL",
            [_held_out([(one, "NEW", 1)])],
        ),
        (
            "message_held_out_update",
            "UPDATE OF phase, campaign_id, contact_id ON message",
            f"({held_changed}) AND ({held_when})",
            [_held_out([(one, "OLD", -1), (one, "NEW", 1)])],
        ),
        (
            "message_held_out_delete",
            "DELETE ON message",
            "OLD.phase = 'control' AND OLD.contact_id IS NOT NULL",
            [_held_out([(one, "OLD", -1)])],
        ),
        (
            "conversion_itt_insert",
            "INSERT ON conversion",
            "true",
            _sqlite_refresh(contact_rows.format(row="NEW"), "contact_id = NEW.contact_id"),
        ),
        (
            "conversion_itt_update",
            "UPDATE OF contact_id, name, revenue, occurred_at ON conversion",
            "true",
            [
                *_sqlite_refresh(contact_rows.format(row="OLD"), "contact_id = OLD.contact_id"),
                *_sqlite_refresh(
                    f"{contact_rows.format(row='NEW')} AND OLD.contact_id IS NOT NEW.contact_id",
                    "contact_id = NEW.contact_id AND OLD.contact_id IS NOT NEW.contact_id",
                ),
            ],
        ),
        (
            "conversion_itt_delete",
            "DELETE ON conversion",
            "true",
            _sqlite_refresh(contact_rows.format(row="OLD"), "contact_id = OLD.contact_id"),
        ),
        (
            "campaign_itt_conversion",
            "UPDATE OF conversion ON campaign",
            "OLD.conversion IS NOT NEW.conversion",
            _sqlite_refresh(
                "m.campaign_id = NEW.id AND EXISTS (SELECT 1 FROM conversion cg WHERE cg.contact_id = m.contact_id)",
                "campaign_id = NEW.id",
                "message m",
            ),
        ),
        ("itt_contact_insert", "INSERT ON campaign_itt_contact", "true", [_cascade([(one, "NEW", 1)])]),
        (
            "itt_contact_update",
            "UPDATE ON campaign_itt_contact",
            "true",
            [_cascade([(one, "OLD", -1), (one, "NEW", 1)])],
        ),
        ("itt_contact_delete", "DELETE ON campaign_itt_contact", "true", [_cascade([(one, "OLD", -1)])]),
    ]


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")


def _key_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("campaign_id", _id(), nullable=False),
        sa.Column("variant_id", _id(), nullable=False),
        sa.Column("phase", sa.String(length=20), nullable=False),
    ]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        # Writers wait from here to the commit: none falls between the backfill and the triggers.
        op.execute("LOCK TABLE campaign, message, conversion IN SHARE ROW EXCLUSIVE MODE")
    op.create_table(
        "campaign_itt_tally",
        *_key_columns(),
        *(_count(c) for c in ("recipients", "converters", "events", "revenue_micros", "revenue_sq_micros")),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*KEYS),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "campaign_itt_contact",
        *_key_columns(),
        sa.Column("contact_id", _id(), nullable=False),
        *(_count(c) for c in ("events", "revenue_micros")),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*MEMBER),
        sqlite_with_rowid=False,
    )
    # A contact's rows in every campaign (a conversion's write): found by contact.
    op.create_index("ix_campaign_itt_contact_contact", "campaign_itt_contact", ["contact_id"])
    d = Dialect(dialect)
    # The backfill, in the order the triggers add: the held-out contacts, then every contact's rows
    # (the tally from them, as the cascade adds it).
    op.execute(_held_out([("message r", "r", 1)]))
    op.execute(_refill(d, "EXISTS (SELECT 1 FROM conversion cg WHERE cg.contact_id = m.contact_id)"))
    op.execute(_cascade([("campaign_itt_contact k", "k", 1)]))
    if dialect == "postgresql":
        for fn, table, event, body in _pg_functions():
            op.execute(
                f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$\n{DECLARE}\nBEGIN\n{body}\nRETURN NULL;\nEND $$"
            )
            op.execute(
                f"CREATE TRIGGER {fn} AFTER {event} ON {table} REFERENCING {REFERENCING[event]} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {fn}()"
            )
        op.execute(
            "CREATE FUNCTION campaign_itt_conversion() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
            f"{_pg_campaign()}\nRETURN NULL;\nEND $$"
        )
        op.execute(
            "CREATE TRIGGER campaign_itt_conversion AFTER UPDATE OF conversion ON campaign FOR EACH ROW "
            "WHEN (OLD.conversion::text IS DISTINCT FROM NEW.conversion::text) EXECUTE FUNCTION campaign_itt_conversion()"
        )
        return
    for trigger, event, when, statements in _sqlite_triggers():
        body = "".join(f"{statement};\n" for statement in statements)
        op.execute(f"CREATE TRIGGER {trigger} AFTER {event} WHEN {when} BEGIN\n{body}END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS campaign_itt_conversion ON campaign")
        op.execute("DROP FUNCTION IF EXISTS campaign_itt_conversion()")
        for fn, table, _, _ in _pg_functions():
            op.execute(f"DROP TRIGGER IF EXISTS {fn} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {fn}()")
    else:
        for trigger, *_ in _sqlite_triggers():
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.drop_index("ix_campaign_itt_contact_contact", table_name="campaign_itt_contact")
    op.drop_table("campaign_itt_contact")
    op.drop_table("campaign_itt_tally")
