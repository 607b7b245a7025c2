"""trained teachers by content hash, and the cache of teacher outputs (issue 12)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 11:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _tenant() -> sa.Column:
    return sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)


def upgrade() -> None:
    op.create_table(
        "teacher_builds",
        _tenant(),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=True),
        sa.Column("artifact_id", sa.String(36), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "teacher_outputs",
        _tenant(),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("storage_key", sa.String(500), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_teacher_outputs_last_used_at", "teacher_outputs", ["last_used_at"])
    op.create_table(
        "teacher_cache_stats",
        _tenant(),
        *(
            sa.Column(name, sa.BigInteger(), nullable=False)
            for name in ("hits", "misses", "corrupt", "evictions", "bypassed", "teachers_reused")
        ),
    )


def downgrade() -> None:
    op.drop_table("teacher_cache_stats")
    op.drop_index("ix_teacher_outputs_last_used_at", "teacher_outputs")
    op.drop_table("teacher_outputs")
    op.drop_table("teacher_builds")
