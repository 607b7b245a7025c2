"""tenants, API keys, uploaded artifacts

Jobs and artifacts belong to a tenant. Rows from before tenants existed are given to a
tenant named "local" (the embedded default's tenant), created here when there are any.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 00:40:00
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _old_unique_name() -> str:
    # 0001's unique constraint has no name: PostgreSQL calls it jobs_idempotency_key_key;
    # SQLite's batch mode names it by the convention given below when it reflects the table.
    return "jobs_idempotency_key_key" if op.get_bind().dialect.name == "postgresql" else "uq_jobs_idempotency_key"


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("max_concurrent_jobs", sa.Integer(), nullable=True),
        sa.Column("submissions", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(100), nullable=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_api_keys_tenant_id", "api_keys", ["tenant_id"])

    conn = op.get_bind()
    local = None
    if (
        conn.execute(sa.text("SELECT 1 FROM jobs LIMIT 1")).first()
        or conn.execute(sa.text("SELECT 1 FROM artifacts LIMIT 1")).first()
    ):
        local = str(uuid.uuid4())
        conn.execute(
            sa.text("INSERT INTO tenants (id, name, submissions, created_at) VALUES (:id, 'local', 0, :at)"),
            {"id": local, "at": datetime.now(UTC)},
        )
    for table in ("jobs", "artifacts"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("tenant_id", sa.String(36), nullable=True))
        if local is not None:
            conn.execute(sa.text(f"UPDATE {table} SET tenant_id = :t"), {"t": local})
        with op.batch_alter_table(table) as batch:
            batch.alter_column("tenant_id", existing_type=sa.String(36), nullable=False)
            batch.create_foreign_key(f"fk_{table}_tenant_id", "tenants", ["tenant_id"], ["id"], ondelete="CASCADE")
            batch.create_index(f"ix_{table}_tenant_id", ["tenant_id"])

    with op.batch_alter_table("jobs", naming_convention={"uq": "uq_%(table_name)s_%(column_0_name)s"}) as batch:
        batch.drop_constraint(_old_unique_name(), type_="unique")
        batch.create_unique_constraint("uq_jobs_tenant_idempotency_key", ["tenant_id", "idempotency_key"])
    with op.batch_alter_table("artifacts") as batch:
        batch.add_column(sa.Column("name", sa.String(200), nullable=True))
        batch.add_column(sa.Column("inspection", sa.JSON(), nullable=True))
    op.create_index(
        "uq_artifacts_upload_content",
        "artifacts",
        ["tenant_id", "kind", "sha256"],
        unique=True,
        sqlite_where=sa.text("job_id IS NULL"),
        postgresql_where=sa.text("job_id IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_artifacts_upload_content", table_name="artifacts")
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_column("inspection")
        batch.drop_column("name")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("uq_jobs_tenant_idempotency_key", type_="unique")
        batch.create_unique_constraint(_old_unique_name(), ["idempotency_key"])
    for table in ("jobs", "artifacts"):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_tenant_id")
            batch.drop_constraint(f"fk_{table}_tenant_id", type_="foreignkey")
            batch.drop_column("tenant_id")
    op.drop_index("ix_api_keys_tenant_id", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("tenants")
