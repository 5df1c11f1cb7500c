"""message.touched_at: a held-out control row's touch gets a column of its own (issue 15 review)

- Adds the nullable column `message.touched_at`. Only control rows (phase `control`) carry it: the
  time their campaign sent the batch beside them (core/campaigns/audience.py `stamp_control_touch`).
- Backfill: 0004 (and the code of its time) stamped that touch on control rows as `attempted_at`;
  it moves to `touched_at`, and `attempted_at` is cleared on control rows, so `attempted_at` again
  means "handed to the provider" (a control row never is).

Downgrade puts the touch back in `attempted_at` (where 0004's code reads it) and drops the column.

About 0004 (data only, released in no version, so it is left as it is — it may have run on dev
databases, and a revision must mean one thing everywhere): its downgrade is a no-op and cannot undo
all of it. Its stamp of control rows is undone by the downgrade of this revision plus clearing
`attempted_at` on control rows by hand if wanted; its detaching of events of other names than the
campaign's `conversion.event` (campaign_id, message_id null, clicked false) is not reversible: the
events stay stored with their contact, name, revenue and time, but which message they had been
attributed to is gone. That is what the code since 0004 stores for such an event too (an event
the campaign does not count is attributed to nothing), so nothing reads the lost link. The
control group's numbers and every uplift no longer depend on attribution at all (they are read
from the events in each contact's window, core/stats/evidence.py `intention_to_treat`), so old
campaigns whose held-out conversions stayed with other campaigns get a correct uplift.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

message = sa.table(
    "message",
    sa.column("phase", sa.String()),
    sa.column("attempted_at", UTCDateTime()),
    sa.column("touched_at", UTCDateTime()),
)
CONTROL = "control"


def upgrade() -> None:
    with op.batch_alter_table("message") as batch:
        batch.add_column(sa.Column("touched_at", UTCDateTime(), nullable=True))
    op.execute(
        sa.update(message)
        .where(message.c.phase == CONTROL, message.c.attempted_at.is_not(None))
        .values(touched_at=message.c.attempted_at)
    )
    op.execute(sa.update(message).where(message.c.phase == CONTROL).values(attempted_at=None))


def downgrade() -> None:
    op.execute(
        sa.update(message)
        .where(message.c.phase == CONTROL, message.c.touched_at.is_not(None))
        .values(attempted_at=message.c.touched_at)
    )
    with op.batch_alter_table("message") as batch:
        batch.drop_column("touched_at")
