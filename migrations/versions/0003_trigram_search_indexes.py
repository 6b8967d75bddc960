"""Trigram indexes for substring search on PostgreSQL.

Revision ID: 0003
Revises: 0002

`q` searches are `ILIKE '%fragment%'` on name and email. A B-tree cannot serve a
leading wildcard; a pg_trgm GIN index can, so a search for a fragment few users
match costs about the same on a million users as on ten thousand. SQLite has no
pg_trgm: there a search scans the table, and this revision does nothing.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

INDEXES = {"ix_users_name_trgm": "name", "ix_users_email_trgm": "email"}


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    # pg_trgm is a trusted extension (PostgreSQL 13+): a database owner may create it.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, column in INDEXES.items():
        op.create_index(name, "users", [column], postgresql_using="gin", postgresql_ops={column: "gin_trgm_ops"})


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for name in INDEXES:
        op.drop_index(name, table_name="users")
    # The extension stays: other schemas in the database may use it, and it holds no data.
