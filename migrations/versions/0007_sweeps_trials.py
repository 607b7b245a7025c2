"""sweeps: many trials from one request; a job may be a sweep's trial

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 11:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("trials", sa.JSON(), nullable=False),
        sa.Column("stopped", sa.JSON(), nullable=False),
        sa.Column("teacher_job_id", sa.String(36)),
        sa.Column("result", sa.JSON()),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_sweeps_tenant_id", "sweeps", ["tenant_id"])
    op.create_index("ix_sweeps_status", "sweeps", ["status"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("sweep_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("sweep_trial", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_jobs_sweep_id", "sweeps", ["sweep_id"], ["id"], ondelete="CASCADE")
        batch.create_index("ix_jobs_sweep_id", ["sweep_id"])
        batch.create_unique_constraint("uq_jobs_sweep_trial", ["sweep_id", "sweep_trial"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("uq_jobs_sweep_trial", type_="unique")
        batch.drop_index("ix_jobs_sweep_id")
        batch.drop_constraint("fk_jobs_sweep_id", type_="foreignkey")
        batch.drop_column("sweep_trial")
        batch.drop_column("sweep_id")
    op.drop_index("ix_sweeps_status", "sweeps")
    op.drop_index("ix_sweeps_tenant_id", "sweeps")
    op.drop_table("sweeps")
