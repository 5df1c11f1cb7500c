"""message.contact_id and click.contact_id nullable: a test send to a phone that is no contact

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 11:30:00
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


@contextmanager
def _rebuilding_tables() -> Iterator[None]:
    """SQLite cannot alter a column: batch mode copies the table into a new one and drops the old
    one, which foreign keys forbid while other tables point at its rows (short codes, clicks). So,
    as SQLite's own procedure for rebuilding a table says: foreign keys off (only possible between
    transactions: the one the migrations run in is committed and a new one begun), rebuild, check
    that every reference still holds, commit, foreign keys on again. PostgreSQL alters in place."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        yield
        return
    driver = bind.connection.driver_connection
    assert driver is not None
    driver.execute("COMMIT")
    driver.execute("PRAGMA foreign_keys = OFF")
    driver.execute("BEGIN IMMEDIATE")
    try:
        yield
        broken = driver.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"foreign keys broken by the rebuild: {broken[:10]}")
        driver.execute("COMMIT")
    except BaseException:
        driver.execute("ROLLBACK")
        raise
    finally:
        driver.execute("PRAGMA foreign_keys = ON")
        driver.execute("BEGIN IMMEDIATE")  # what the migration's own transaction goes on in


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
