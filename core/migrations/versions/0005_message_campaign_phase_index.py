"""index message (campaign_id, phase): a campaign's retry rows and control rows are found by it

(They were found by ranges of idempotency keys, which hold only under the C collation: on a
PostgreSQL database created with a locale such as en_US, punctuation is ignored in comparisons
and a range like `c7-control-` ≤ key < `c7-control.` misses the rows.)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 12:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_message_campaign_phase", "message", ["campaign_id", "phase"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_message_campaign_phase", table_name="message")
