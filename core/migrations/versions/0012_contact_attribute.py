"""contact_attribute: each contact's attributes as (contact_id, key, value as text) rows, indexed
by (key, value, contact_id), so attribute filters read an index instead of every contact's JSON

Backfilled from contact.attributes, a chunk of contacts at a time, with the text form of
core/contacts/attributes.py (`attribute_rows`); the index is built after the rows are in. A later
change of that text form comes with a migration that rewrites the rows. Downgrade drops the table
(contact.attributes still holds everything).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from core.contacts.attributes import attribute_rows, write_attribute_rows

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK = 5000  # contacts read per query

contact = sa.table("contact", sa.column("id", sa.BigInteger()), sa.column("attributes", sa.JSON()))


def upgrade() -> None:
    op.create_table(
        "contact_attribute",
        sa.Column("contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contact.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("contact_id", "key"),
        sqlite_with_rowid=False,
    )
    bind = op.get_bind()
    last_id = 0
    while True:
        chunk = bind.execute(
            sa.select(contact.c.id, contact.c.attributes)
            .where(contact.c.id > last_id)
            .order_by(contact.c.id)
            .limit(CHUNK)
        ).all()
        if not chunk:
            break
        last_id = chunk[-1][0]
        rows = [row for cid, attributes in chunk if isinstance(attributes, dict) for row in attribute_rows(cid, attributes)]
        write_attribute_rows(bind, rows)
    op.create_index("ix_contact_attribute_key_value", "contact_attribute", ["key", "value", "contact_id"])


def downgrade() -> None:
    op.drop_table("contact_attribute")
