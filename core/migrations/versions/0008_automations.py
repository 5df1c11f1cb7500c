"""automations: campaign.kind, parent_id, run_id, follow_ups; the workflow_run table

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from core.migrations.rebuild import rebuilding_tables

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with rebuilding_tables(), op.batch_alter_table("campaign") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=20), nullable=False, server_default="campaign"))
        batch.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("run_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("follow_ups", sa.JSON(), nullable=True))
        batch.create_foreign_key("fk_campaign_parent_id", "campaign", ["parent_id"], ["id"])
    op.create_index("ix_campaign_kind", "campaign", ["kind"], unique=False)
    op.create_index("ix_campaign_parent_id", "campaign", ["parent_id"], unique=False)
    op.create_index("ix_campaign_run_id", "campaign", ["run_id"], unique=False)
    op.create_table(
        "workflow_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workflow", sa.String(length=100), nullable=False),
        sa.Column("workflow_id", sa.String(length=200), nullable=False),
        sa.Column("temporal_run_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("trigger", sa.String(length=30), nullable=True),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("campaign_ids", sa.JSON(), nullable=False),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("completed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["contact_id"], ["contact.id"]),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("temporal_run_id"),
    )
    op.create_index("ix_workflow_run_workflow_id", "workflow_run", ["workflow_id"], unique=False)
    op.create_index("ix_workflow_run_contact_status", "workflow_run", ["contact_id", "status"], unique=False)
    op.create_index("ix_workflow_run_campaign_status", "workflow_run", ["campaign_id", "status"], unique=False)
    op.create_index("ix_workflow_run_workflow_status", "workflow_run", ["workflow", "status", "id"], unique=False)


def downgrade() -> None:
    op.drop_table("workflow_run")
    op.drop_index("ix_campaign_run_id", table_name="campaign")
    op.drop_index("ix_campaign_parent_id", table_name="campaign")
    op.drop_index("ix_campaign_kind", table_name="campaign")
    with rebuilding_tables(), op.batch_alter_table("campaign") as batch:
        batch.drop_constraint("fk_campaign_parent_id", type_="foreignkey")
        batch.drop_column("follow_ups")
        batch.drop_column("run_id")
        batch.drop_column("parent_id")
        batch.drop_column("kind")
