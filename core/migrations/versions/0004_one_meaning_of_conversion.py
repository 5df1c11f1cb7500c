"""data only (issue 15): stored rows brought to the one meaning of conversion

- A control group's held-out rows get their touch time: the campaign's first send, as
  `attempted_at` (what core/campaigns/audience.py `stamp_control_touch` stamps from now on).
- A conversion event whose name is not its campaign's `conversion.event` (default `purchase`) was
  attributed and counted before; it stays stored, attributed to no campaign, so it counts nowhere.
  (Events of held-out contacts stored before are not moved to the control group: who was touched
  last at that time is not re-decided.)

No schema change. Downgrade changes nothing back: the older code reads these rows as they are.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AUDIENCE_PHASES = ("all", "test", "remainder", "retry")  # core.statuses, as they were at this revision
DEFAULT_EVENT = "purchase"

message = sa.table(
    "message",
    sa.column("id", sa.Integer()),
    sa.column("campaign_id", sa.Integer()),
    sa.column("phase", sa.String()),
    sa.column("sent_at", UTCDateTime()),
    sa.column("attempted_at", UTCDateTime()),
)
campaign = sa.table("campaign", sa.column("id", sa.Integer()), sa.column("conversion", sa.JSON()))
conversion = sa.table(
    "conversion",
    sa.column("campaign_id", sa.Integer()),
    sa.column("message_id", sa.Integer()),
    sa.column("name", sa.String()),
    sa.column("clicked", sa.Boolean()),
)


def upgrade() -> None:
    bind = op.get_bind()
    held_out = sa.select(message.c.campaign_id).where(message.c.phase == "control").distinct()
    first_sends = bind.execute(
        sa.select(message.c.campaign_id, sa.func.min(message.c.sent_at))
        .where(
            message.c.campaign_id.in_(held_out),
            message.c.phase.in_(AUDIENCE_PHASES),
            message.c.sent_at.is_not(None),
        )
        .group_by(message.c.campaign_id)
    ).all()
    for campaign_id, first_sent in first_sends:
        bind.execute(
            sa.update(message)
            .where(
                message.c.campaign_id == campaign_id,
                message.c.phase == "control",
                message.c.attempted_at.is_(None),
            )
            .values(attempted_at=first_sent)
        )
    attributed = bind.execute(
        sa.select(conversion.c.campaign_id, conversion.c.name).where(conversion.c.campaign_id.is_not(None)).distinct()
    ).all()
    names: dict[int, set[str]] = {}
    for campaign_id, name in attributed:
        names.setdefault(campaign_id, set()).add(name)
    ids = sorted(names)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for campaign_id, settings in bind.execute(
            sa.select(campaign.c.id, campaign.c.conversion).where(campaign.c.id.in_(chunk))
        ).all():
            event = (settings or {}).get("event") or DEFAULT_EVENT
            if names[campaign_id] - {event}:
                bind.execute(
                    sa.update(conversion)
                    .where(conversion.c.campaign_id == campaign_id, conversion.c.name != event)
                    .values(campaign_id=None, message_id=None, clicked=False)
                )


def downgrade() -> None:
    pass
