"""index message.sent_at: the redirect preloads the codes of messages just sent

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 16:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_message_sent_at"), "message", ["sent_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_message_sent_at"), table_name="message")
