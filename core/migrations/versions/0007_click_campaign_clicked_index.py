"""index click (campaign_id, clicked_at, id) in place of click (campaign_id): rescore reads a
campaign's clicks in that order, a chunk at a time (keyset), and every query by campaign still
has its index (the new one begins with campaign_id), so a click costs no extra index to write

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 13:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_click_campaign_clicked", "click", ["campaign_id", "clicked_at", "id"], unique=False)
    op.drop_index("ix_click_campaign_id", table_name="click")


def downgrade() -> None:
    op.create_index("ix_click_campaign_id", "click", ["campaign_id"], unique=False)
    op.drop_index("ix_click_campaign_clicked", table_name="click")
