"""Where an import keeps its rows until the whole file has been read.

An import first stages its valid rows in a temporary table with no sequence,
keyed by email: the key finds a duplicate anywhere in the file, and a NOT EXISTS
the emails already stored, while nothing is inserted into users. Only then are
the staged rows moved into users, a batch at a time and in file order (so ids
still follow the file). Two things follow.

* No id burned. On PostgreSQL every row an INSERT reaches takes a value from the
  id sequence, and a rollback gives none back: an atomic import that inserted as
  it read, then found a bad row at the end of the file, burned an id per row (one
  8 MiB file, 444,026 of them). A refused atomic import now moves nothing and
  costs no id. Only a row the database refuses for a reason of its own, found
  while moving, can still cost the ids of the rows moved before it.
* No deadlock. Two imports inserting the same new emails in opposite orders would
  each wait at the unique index for the other's uncommitted row. Before moving,
  an import takes transaction-scoped advisory locks on the buckets its emails
  hash to, all of them, in one (sorted) order: of two imports that share a bucket
  the second waits for the first to commit, before it holds anything the first
  could want. A fixed number of buckets keeps the lock table small whatever the
  file's size. (SQLite runs one writer at a time.)

The table lives in the import's transaction: created when it starts, dropped
before the commit, gone with a rollback. SQLite takes the same path, so that one
path is tested on both.
"""

from collections.abc import Iterator
from functools import cache
from typing import Any

from sqlalchemy import Column, Executable, Integer, MetaData, String, Table, bindparam, exists, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as OrmSession

from ..domain.models import users_table
from .jsonrows import json_rows

EMAIL_LOCKS = 0x75736572  # "user": the advisory locks' class, beside anyone else's
EMAIL_BUCKETS = 64  # a power of two
_LOCK_BUCKETS = text(
    "SELECT count(pg_advisory_xact_lock(:class, bucket)) FROM "
    "(SELECT DISTINCT hashtext(email) & :buckets AS bucket FROM import_staged_rows ORDER BY bucket) AS buckets"
)

staged = Table(
    "import_staged_rows",
    MetaData(),
    Column("line", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("email", String(254), nullable=False, unique=True),
    prefixes=["TEMPORARY"],
)


def begin(session: OrmSession) -> None:
    """Create the (empty) staging table in the session's transaction."""
    connection = session.connection()
    staged.drop(connection, checkfirst=True)  # never there, but for an import that died oddly on this connection
    staged.create(connection)


def end(session: OrmSession) -> None:
    staged.drop(session.connection())


def stage(session: OrmSession, rows: dict[str, tuple[int, dict[str, Any]]]) -> set[str]:
    """Stage `rows` (email: (line, fields)); the emails staged. Those missing are
    taken, by a stored user or by a row staged before (an earlier batch)."""
    if not rows:
        return set()
    batch = [{"line": line, "name": fields["name"], "email": email} for email, (line, fields) in rows.items()]
    statement = _stage(session.get_bind().dialect.name)
    return set(session.connection().execute(statement, {"rows": batch}).scalars())


def lock_emails(session: OrmSession) -> None:
    """PostgreSQL: lock the buckets of the staged emails, in sorted order, until the end
    of the transaction."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection().execute(_LOCK_BUCKETS, {"class": EMAIL_LOCKS, "buckets": EMAIL_BUCKETS - 1})


def batches(session: OrmSession, size: int) -> Iterator[dict[str, tuple[int, dict[str, Any]]]]:
    """The staged rows in file order, `size` at a time, as stage() took them."""
    after = 0
    while True:
        found = session.connection().execute(_next_batch(), {"after": after, "size": size}).all()
        if not found:
            return
        yield {row.email: (row.line, {"name": row.name, "email": row.email}) for row in found}
        after = found[-1].line


@cache
def _stage(dialect: str) -> Executable:
    fields = json_rows(dialect, "rows", list(staged.c))
    users = users_table
    new = ~exists().where(users.c.email == fields["email"])
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(staged)
        .from_select(["line", "name", "email"], select(fields["line"], fields["name"], fields["email"]).where(new))
        .on_conflict_do_nothing(index_elements=[staged.c.email])
        .returning(staged.c.email)
    )


@cache
def _next_batch() -> Executable:
    return select(staged).where(staged.c.line > bindparam("after")).order_by(staged.c.line).limit(bindparam("size"))
