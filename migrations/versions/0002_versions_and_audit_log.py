"""Optimistic concurrency (users.version) and the audit log.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN works everywhere, SQLite included, and in --sql mode.
    op.add_column("users", sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
    )
    op.create_index("ix_audit_log_user_id_id", "audit_log", ["user_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_user_id_id", table_name="audit_log")
    op.drop_table("audit_log")
    with op.batch_alter_table("users") as batch:  # SQLite: copy the table without it
        batch.drop_column("version")
