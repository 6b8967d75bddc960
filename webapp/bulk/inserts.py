"""Bulk inserts of users, history included: a statement or two per batch (the
users, their audit rows), not one per user.

Used by the import (webapp/bulk/imports.py, from its stage: `insert_staged`) and
by `seed-users` (`insert_users`). They bypass the unit of work, and with it the
audit listener, so they record their users' history themselves, in the same
transaction.
"""

from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Executable, bindparam, exists, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as OrmSession

from ..db import Session
from ..domain import audit
from ..domain.audit import AUDITED
from ..domain.models import UTCDateTime, users_table, utcnow
from .jsonrows import json_rows
from .staging import staged


def insert_users(rows: list[dict[str, Any]]) -> set[str]:
    """Insert the users of `rows` (valid {name, email} dicts) whose email is new, with
    their history; return the emails stored.

    One INSERT ... SELECT ... ON CONFLICT (email) DO NOTHING RETURNING, the batch sent
    as one JSON parameter (see jsonrows). The unique index itself skips emails
    already taken, by stored users, earlier batches or a concurrent writer: no
    SELECT beforehand, no race after it. The rows it skipped are the ones missing
    from RETURNING. Ids follow the order of `rows`: both databases read the JSON
    array in order and number the rows as they insert them.
    """
    session = Session()
    now = utcnow()  # one stamp for the batch's users and their audit rows
    inserted = session.connection().execute(_insert_new(session.get_bind().dialect.name), {"users": rows, "now": now})
    # RETURNING's order is unspecified: sorted, the audit rows follow the users' ids.
    users = sorted((dict(user) for user in inserted.mappings()), key=lambda user: user["id"])
    record_bulk_inserts(session, users, now)
    return {user["email"] for user in users}


@cache
def _insert_new(dialect: str) -> Executable:
    users = users_table  # the table, not the mapped class: no ORM on this path
    fields = json_rows(dialect, "users", [users.c.name, users.c.email])
    now = bindparam("now", type_=UTCDateTime)
    # Emails already stored are left out before the INSERT sees them: on PostgreSQL
    # ON CONFLICT DO NOTHING skips a row only after taking its id from the sequence.
    # It still skips those a concurrent writer is inserting. (SQLite needs a WHERE
    # before ON CONFLICT in an INSERT ... SELECT anyway, to tell it from a join's ON.)
    rows = select(fields["name"], fields["email"], now, now).where(~exists().where(users.c.email == fields["email"]))
    return _insert_skipping_taken(dialect, rows)


def _insert_skipping_taken(dialect: str, rows: Any) -> Executable:
    """INSERT `rows` (name, email, created_at, updated_at) into users, skipping an email
    a concurrent writer took first, RETURNING what went in."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert  # each spells its ON CONFLICT
    users = users_table
    return (
        insert(users)
        .from_select(["name", "email", "created_at", "updated_at"], rows)
        .on_conflict_do_nothing(index_elements=[users.c.email])
        .returning(users.c.id, users.c.name, users.c.email, users.c.role)
    )


def record_bulk_inserts(session: OrmSession, users: list[dict[str, Any]], at: datetime) -> None:
    """Audit rows for users just inserted by a bulk Core statement, which bypasses the
    flush listener: one dict per user, with its id and the audited fields.

    The users go to the database as one JSON parameter (see jsonrows) and it writes
    their audit rows itself, in one INSERT ... SELECT, in the order given.
    """
    if users:
        statement = _audit_rows(session.get_bind().dialect.name)
        session.connection().execute(statement, {"users": users, **audit.stamps(at)})


@cache
def _audit_rows(dialect: str) -> Executable:
    users = users_table
    return audit.inserted(dialect, json_rows(dialect, "users", [users.c.id, *(users.c[name] for name in AUDITED)]))


def insert_staged(session: OrmSession, lines: list[int]) -> list[int]:
    """Move the staged rows of `lines` (in order, and all the stage holds from the
    first to the last) into users, in line order, with their history; return the
    lines not moved because their email was taken since they were staged (by a
    concurrent writer, which ON CONFLICT waits for).

    On PostgreSQL one statement does it all: the users' INSERT and their audit
    rows' INSERT are data-modifying CTEs, so no row comes back to Python but the
    lines left out. SQLite has no such CTEs: its users come back by RETURNING and
    go out again for their audit rows (see record_bulk_inserts).
    """
    dialect = session.get_bind().dialect.name
    now = utcnow()  # one stamp for the batch's users and their audit rows
    first, last = lines[0], lines[-1]
    values = {"first": first, "last": last, "now": now, **audit.stamps(now)}
    if dialect == "postgresql":
        return list(session.connection().execute(_move_with_history(), values).scalars())
    inserted = session.connection().execute(_move("sqlite"), values)
    users = sorted((dict(user) for user in inserted.mappings()), key=lambda user: user["id"])
    record_bulk_inserts(session, users, now)
    if len(users) == len(lines):
        return []
    moved = {user["email"] for user in users}
    batch = select(staged.c.line, staged.c.email).where(staged.c.line.between(first, last))
    return [line for line, email in session.connection().execute(batch) if email not in moved]


@cache
def _move(dialect: str) -> Any:
    users = users_table
    now = bindparam("now", type_=UTCDateTime)
    rows = (
        select(staged.c.name, staged.c.email, now, now)
        .where(staged.c.line.between(bindparam("first"), bindparam("last")))
        # Stored emails are left out before the INSERT sees them: ON CONFLICT DO NOTHING
        # skips a row only after taking its id from the sequence.
        .where(~exists().where(users.c.email == staged.c.email))
        .order_by(staged.c.line)
    )
    return _insert_skipping_taken(dialect, rows)


@cache
def _move_with_history() -> Executable:
    moved = _move("postgresql").cte("moved")
    history = audit.inserted("postgresql", moved.c, order_by=moved.c.id).cte("history")
    batch = staged.c.line.between(bindparam("first"), bindparam("last"))
    left_out = ~exists().where(moved.c.email == staged.c.email)
    return select(staged.c.line).where(batch, left_out).order_by(staged.c.line).add_cte(history)
