"""Where an import keeps its rows until the whole file has been read.

An import first stages its valid rows in a temporary table with no sequence,
while nothing is inserted into users. Once the file is read, one statement finds
the staged rows that repeat an earlier line's email or name one already stored,
and they are taken out; only then are the rest moved into users, a range of lines
at a time and in file order, so ids still follow the file (see inserts). Two
things follow.

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

On PostgreSQL a batch is staged with COPY (a temporary table writes no WAL, and
COPY parses no SQL per row); SQLite gets it as one JSON parameter (see jsonrows).
The table lives in the import's transaction: created when it starts, dropped
before the commit, gone with a rollback.
"""

import re
from collections.abc import Iterator
from functools import cache

from sqlalchemy import (
    Column,
    Executable,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session as OrmSession

from ..domain.models import users_table
from .jsonrows import json_rows

EMAIL_LOCKS = 0x75736572  # "user": the advisory locks' class, beside anyone else's
EMAIL_BUCKETS = 64  # a power of two
_LOCK_BUCKETS = text(
    "SELECT count(pg_advisory_xact_lock(:class, bucket)) FROM "
    "(SELECT DISTINCT hashtext(email) & :buckets AS bucket FROM import_staged_rows ORDER BY bucket) AS buckets"
)
# COPY's text format gives these a meaning; the schema lets none of them but the
# backslash into a name or an email, and the backslash is doubled.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_NEEDS_ESCAPE = re.compile(r"[\\\r]")
_COPY = "COPY import_staged_rows (line, name, email) FROM STDIN"

staged = Table(
    "import_staged_rows",
    MetaData(),
    Column("line", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("email", String(254), nullable=False),
    prefixes=["TEMPORARY"],
)

# (line, name, email) of a valid row, as the stage takes it.
StagedRow = tuple[int, str, str]


def begin(session: OrmSession) -> None:
    """Create the (empty) staging table in the session's transaction."""
    connection = session.connection()
    staged.drop(connection, checkfirst=True)  # never there, but for an import that died oddly on this connection
    staged.create(connection)


def end(session: OrmSession) -> None:
    staged.drop(session.connection())


def stage(session: OrmSession, rows: list[StagedRow]) -> None:
    """Add `rows` to the stage. Their lines are new to it; their emails may not be
    (see rejections)."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        _copy(session.connection(), rows)
    else:
        batch = [{"line": line, "name": name, "email": email} for line, name, email in rows]
        session.connection().execute(_stage_json(), {"rows": batch})


def _copy(connection: Connection, rows: list[StagedRow]) -> None:
    # copy_expert runs outside SQLAlchemy's execute(), so its errors are turned into
    # SQLAlchemy's here, a lost connection invalidated: the request's one retry and
    # the error handlers see what they would see from any other statement.
    dbapi_connection = connection.connection.dbapi_connection
    assert dbapi_connection is not None
    cursor = dbapi_connection.cursor()
    try:
        cursor.copy_expert(_COPY, _CopyText(rows))
    except connection.dialect.loaded_dbapi.Error as error:
        lost = connection.dialect.is_disconnect(error, dbapi_connection, cursor)
        if lost:
            connection.invalidate(error)
        raise DBAPIError.instance(
            _COPY, None, error, connection.dialect.loaded_dbapi.Error, connection_invalidated=lost
        ) from error
    finally:
        cursor.close()


class _CopyText:
    """The rows in COPY's text format, as a file copy_expert reads: a block of rows
    per read, made as it is asked for."""

    ROWS_PER_READ = 1000

    def __init__(self, rows: list[StagedRow]) -> None:
        self.rows = rows
        self.position = 0

    def read(self, size: int = -1) -> str:
        block = self.rows[self.position : self.position + self.ROWS_PER_READ]
        self.position += len(block)
        text = "".join(f"{line}\t{name}\t{email}\n" for line, name, email in block)
        # Only the tabs and newlines put in above, no backslash or carriage return: as
        # good as escaped, found by three C loops instead of translate() per value.
        if text.count("\t") == 2 * len(block) and text.count("\n") == len(block) and not _NEEDS_ESCAPE.search(text):
            return text
        escapes = _COPY_ESCAPES
        return "".join(
            f"{line}\t{name.translate(escapes)}\t{email.translate(escapes)}\n" for line, name, email in block
        )

    readline = read


def rejections(session: OrmSession) -> Iterator[tuple[int, int | None]]:
    """The staged rows that cannot be inserted: (line, first) for a row repeating the
    email of an earlier line `first`, (line, None) for a row whose email is stored
    already. Once per import, when the file is read: a duplicate anywhere in the file
    is found however far apart the two lines are. Streamed, a few thousand at a
    time: a file of a million stored emails is a million of them."""
    found = session.connection().execute(_rejections(), execution_options={"yield_per": 5000})
    yield from ((line, first) for line, first in found)


def remove_rejections(session: OrmSession) -> None:
    """Take the rows `rejections` yields out of the stage."""
    found = _rejections().subquery()
    session.connection().execute(delete(staged).where(staged.c.line.in_(select(found.c.line))))


def batches(session: OrmSession, size: int) -> Iterator[list[int]]:
    """The staged lines in order, `size` at a time: a batch in memory, not the file."""
    after = 0
    while lines := list(session.connection().execute(_next_lines(), {"after": after, "size": size}).scalars()):
        yield lines
        after = lines[-1]


def lock_emails(session: OrmSession) -> None:
    """PostgreSQL: lock the buckets of the staged emails, in sorted order, until the end
    of the transaction."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection().execute(_LOCK_BUCKETS, {"class": EMAIL_LOCKS, "buckets": EMAIL_BUCKETS - 1})


@cache
def _stage_json() -> Executable:
    fields = json_rows("sqlite", "rows", list(staged.c))
    return insert(staged).from_select(list(fields), select(*fields.values()))


@cache
def _next_lines() -> Select[int]:
    after, size = bindparam("after", type_=Integer), bindparam("size", type_=Integer)
    return select(staged.c.line).where(staged.c.line > after).order_by(staged.c.line).limit(size)


@cache
def _rejections() -> Select[int, int | None]:
    # Each repeated email's first line, by a hash aggregate over the stage, joined
    # back to the stage's rows; then an index probe into users per row, as the
    # INSERT's own would be.
    repeated = (
        select(staged.c.email, func.min(staged.c.line).label("first"))
        .group_by(staged.c.email)
        .having(func.count() > 1)
        .subquery("repeated")
    )
    later = staged.outerjoin(repeated, (repeated.c.email == staged.c.email) & (repeated.c.first != staged.c.line))
    stored = exists().where(users_table.c.email == staged.c.email)
    return select(staged.c.line, repeated.c.first).select_from(later).where(repeated.c.first.is_not(None) | stored)
