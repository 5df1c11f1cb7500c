"""message.contact_id and click.contact_id nullable: a test send to a phone that is no contact

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 11:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.migrations.rebuild import rebuilding_tables as _rebuilding_tables

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with _rebuilding_tables():
        with op.batch_alter_table("message", schema=None) as batch_op:
            batch_op.alter_column("contact_id", existing_type=sa.Integer(), nullable=True)
        with op.batch_alter_table("click", schema=None) as batch_op:
            batch_op.alter_column("contact_id", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    # Test sends to phones that were no contact cannot keep a NULL: they go, with their codes and
    # clicks (they never counted in any statistic); what pointed at them forgets them.
    op.execute("DELETE FROM click WHERE contact_id IS NULL")
    no_contact = "SELECT id FROM message WHERE contact_id IS NULL"
    op.execute(f"DELETE FROM click WHERE message_id IN ({no_contact})")
    op.execute(f"DELETE FROM short_code WHERE message_id IN ({no_contact})")
    for table in ("status_event", "reply", "conversion"):
        op.execute(f"UPDATE {table} SET message_id = NULL WHERE message_id IN ({no_contact})")
    op.execute("DELETE FROM message WHERE contact_id IS NULL")
    with _rebuilding_tables():
        with op.batch_alter_table("click", schema=None) as batch_op:
            batch_op.alter_column("contact_id", existing_type=sa.Integer(), nullable=False)
        with op.batch_alter_table("message", schema=None) as batch_op:
            batch_op.alter_column("contact_id", existing_type=sa.Integer(), nullable=False)
