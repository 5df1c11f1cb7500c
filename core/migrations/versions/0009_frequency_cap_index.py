"""index message (contact_id, attempted_at): the frequency cap counts a contact's messages handed
to the provider within its window, for one provider call's contacts at a time

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 15:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_message_contact_attempted", "message", ["contact_id", "attempted_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_message_contact_attempted", table_name="message")
