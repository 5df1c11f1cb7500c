"""SQLite: a message's send or delivery moves its variant numbers with one upsert, not four.

Migration 0018's row trigger `message_variant_update` took a changed message's old contributions
away and added its new ones: two statements, each an upsert per key (the variant and every
variant, under the message's phase and every phase). A send (`sent_at` set) or a delivery changes
none of the keys, only whether the message counts as sent or delivered, so it now goes to
`message_variant_flip`: one upsert of the difference under the keys it has. 0018's trigger keeps
the rest (a message's campaign, variant, phase or superseded flag changed), its body as 0018 made
it. The numbers are the same (tests/test_stat_tallies.py holds them to a recount); a send costs
about a twentieth less CPU (docs/benchmarks.md, "Snapshot and send, second round"). PostgreSQL: nothing changes (its
statement-level triggers group a statement's rows already).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here, not imported: a migration means what it meant when written.
KEYS_CHANGED = (
    "OLD.campaign_id IS NOT NEW.campaign_id OR OLD.variant_id IS NOT NEW.variant_id "
    "OR OLD.phase IS NOT NEW.phase OR OLD.superseded IS NOT NEW.superseded"
)
FLIPPED = "(OLD.sent_at IS NULL) <> (NEW.sent_at IS NULL) OR (OLD.status IS 'delivered') <> (NEW.status IS 'delivered')"
OLD_WHEN = f"{KEYS_CHANGED} OR {FLIPPED}"  # 0018's
UPDATE_OF = "campaign_id, contact_id, variant_id, phase, superseded, sent_at, status"  # 0018's
LATEST = "(x.whole_p = 0 OR NOT NEW.superseded)"  # every phase: the contact's latest message only
FLIP = f"""CREATE TRIGGER message_variant_flip AFTER UPDATE OF sent_at, status ON message
WHEN NOT ({KEYS_CHANGED}) AND ({FLIPPED}) AND NEW.variant_id IS NOT NULL AND NEW.phase NOT IN ('test_send', 'control')
BEGIN
INSERT INTO campaign_variant_tally (campaign_id, variant_id, phase, sent, delivered)
SELECT NEW.campaign_id, CASE WHEN x.whole_v = 1 THEN 0 ELSE NEW.variant_id END,
CASE WHEN x.whole_p = 1 THEN '*' ELSE NEW.phase END,
(NEW.sent_at IS NOT NULL) - (OLD.sent_at IS NOT NULL), (NEW.status IS 'delivered') - (OLD.status IS 'delivered')
FROM (SELECT 0 AS whole_v, 0 AS whole_p UNION ALL SELECT 0, 1 UNION ALL SELECT 1, 0 UNION ALL SELECT 1, 1) AS x
WHERE (x.whole_p = 1 OR NEW.phase IN ('test', 'remainder')) AND {LATEST}
ON CONFLICT (campaign_id, variant_id, phase) DO UPDATE SET sent = campaign_variant_tally.sent + excluded.sent,
delivered = campaign_variant_tally.delivered + excluded.delivered;
END"""


def _recreate_update(when: str) -> None:
    """0018's `message_variant_update` with its body as installed, under another WHEN."""
    bind = op.get_bind()
    sql = bind.execute(text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'message_variant_update'"))
    body = sql.scalar_one().split(" BEGIN\n", 1)[1]
    op.execute("DROP TRIGGER message_variant_update")
    op.execute(f"CREATE TRIGGER message_variant_update AFTER UPDATE OF {UPDATE_OF} ON message WHEN {when} BEGIN\n{body}")


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _recreate_update(KEYS_CHANGED)
    op.execute(FLIP)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("DROP TRIGGER IF EXISTS message_variant_flip")
    _recreate_update(OLD_WHEN)
