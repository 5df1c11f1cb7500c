"""every id 64-bit on PostgreSQL: primary keys, the columns pointing at them and campaign.run_id
become BIGINT, with their sequences (SQLite's INTEGER already is 64-bit: nothing to do there)

The API accepts any id from 1 to 2**63 - 1; PostgreSQL's INTEGER ends at 2**31 - 1, which a busy
deployment's status events and clicks would reach in months. The columns are found, not listed:
every integer column named `id` or `*_id` of the schema as 0010 left it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 17:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID_COLUMNS = """
SELECT table_name, column_name FROM information_schema.columns
WHERE table_schema = current_schema() AND data_type = :data_type
  AND (column_name = 'id' OR column_name LIKE '%\\_id')
  AND table_name <> 'alembic_version'
ORDER BY table_name, column_name
"""


def _retype(source: str, target: str) -> None:
    """One ALTER TABLE per table with all its id columns (each rewrites the table and its indexes
    once, under an exclusive lock: on a big database this migration is downtime, README "Upgrading")."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    columns: dict[str, list[str]] = {}
    for table, column in bind.execute(sa.text(ID_COLUMNS), {"data_type": source}).all():
        columns.setdefault(table, []).append(column)
    for table, names in columns.items():
        changes = ", ".join(f'ALTER COLUMN "{name}" TYPE {target}' for name in names)
        op.execute(f'ALTER TABLE "{table}" {changes}')
        for name in names:
            sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table, "c": name}).scalar()
            if sequence:
                op.execute(f"ALTER SEQUENCE {sequence} AS {target}")


def upgrade() -> None:
    _retype("integer", "bigint")


def downgrade() -> None:
    _retype("bigint", "integer")
