"""Indexes for sorted lists: (name, id) and (created_at, id).

Revision ID: 0006
Revises: 0004

A list sorted by name or by creation time pages by keyset on (column, id): the
next page is "WHERE (name, id) > (:key, :id) ORDER BY name, id LIMIT n", which an
index on exactly those columns answers by reading n entries, at any depth and in
either direction. The email needs none: uq_users_email already orders it, and an
email has no ties to break. The id order is the primary key's.
"""

from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None

INDEXES = {"ix_users_name_id": ["name", "id"], "ix_users_created_at_id": ["created_at", "id"]}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "users", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="users")
