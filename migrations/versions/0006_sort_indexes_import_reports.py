"""Indexes for sorted lists: (name, id) and (created_at, id); import reports.

Revision ID: 0006
Revises: 0005

A list sorted by name or by creation time pages by keyset on (column, id): the
next page is "WHERE (name, id) > (:key, :id) ORDER BY name, id LIMIT n", which an
index on exactly those columns answers by reading n entries, at any depth and in
either direction. The email needs none: uq_users_email already orders it, and an
email has no ties to break. The id order is the primary key's.

import_reports keeps the report of an upload briefly, so that the form can
redirect to the page that shows it (post/redirect/get), whichever worker answers.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

INDEXES = {"ix_users_name_id": ["name", "id"], "ix_users_created_at_id": ["created_at", "id"]}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "users", columns)
    op.create_table(
        "import_reports",
        sa.Column("token", sa.String(43), primary_key=True),
        sa.Column("actor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
    )
    op.create_index("ix_import_reports_created_at", "import_reports", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_import_reports_created_at", table_name="import_reports")
    op.drop_table("import_reports")
    for name in INDEXES:
        op.drop_index(name, table_name="users")
