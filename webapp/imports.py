"""Bulk import of users: one code path for the upload form, the API and the CLI.

Rows are validated by the same schema as single creates, then inserted in
batches by a Core INSERT ... SELECT that reads the batch from one JSON parameter
(see jsonrows), not one ORM object per row. Input is read as a stream and at
most three batches are held at a time (one being inserted, one waiting, one
being read), so memory stays flat however big the file: while the database
inserts a batch, a helper thread reads and validates the next (see readahead).
Only the caller's thread touches the session.

The whole import is one transaction. In `atomic` mode any rejected row rolls
all of it back; in `partial` mode the valid rows are committed and every
rejected one is reported. Duplicate emails are found inside a batch by the
batch's dict, and against everything already stored (users, earlier batches of
this file, a concurrent writer's rows) by the unique index, through ON CONFLICT
DO NOTHING. Each batch is inserted in a savepoint: a row the database refuses
for any other reason is found row by row and rejected alone."""

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import IO, Any

from marshmallow import ValidationError
from sqlalchemy import Executable, func, select, true
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import UnprocessableEntity

from . import audit
from .db import Session
from .jsonrows import json_rows
from .models import User
from .readahead import read_ahead
from .schemas import IMPORT_MODES as MODES
from .schemas import user_schema
from .users import EMAIL_TAKEN

COLUMNS = ("name", "email")
BATCH_SIZE = 5000
# A report lists at most this many rejected rows (it always counts them all), so
# that a huge file of bad rows cannot grow the report without bound.
MAX_REPORTED = 10_000
REFUSED = "The database refused this row."


class ImportFileError(UnprocessableEntity):
    """The file as a whole cannot be read: nothing was written."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.errors = {"file": [message]}


@dataclass(frozen=True)
class BadRow:
    """A row the reader could not turn into fields (say, too many columns)."""

    message: str


@dataclass
class Rejection:
    line: int
    field: str
    message: str


@dataclass
class ImportReport:
    mode: str
    created: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    rejected_count: int = 0

    @property
    def refused(self) -> bool:
        """An atomic import that wrote nothing because some row was rejected."""
        return self.mode == "atomic" and self.rejected_count > 0

    def reject(self, line: int, field_name: str, message: str) -> None:
        self.rejected_count += 1
        if len(self.rejected) < MAX_REPORTED:
            self.rejected.append(Rejection(line, field_name, message))


Row = tuple[int, "dict[str, Any] | BadRow | Any"]


def read_csv(stream: IO[bytes]) -> Iterator[Row]:
    """(line number, {name, email}) per data row of a UTF-8 CSV file (BOM allowed).

    The header must name exactly the columns name and email, in any order.
    Blank lines are skipped. Raises ImportFileError for an unreadable file.
    """
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    # Read a megabyte at a time, not 8 KiB. This runs in the import's read-ahead
    # thread: each read lets go of the GIL, and getting it back from the thread
    # that inserts can take a switch interval (5 ms). 8 KiB reads cost a fifth of
    # the import's speed.
    text._CHUNK_SIZE = 1 << 20
    try:
        yield from _csv_rows(csv.reader(text))
    finally:
        text.detach()  # the caller owns the stream: do not close it with the wrapper


def _csv_rows(reader: Any) -> Iterator[Row]:
    header = _next_row(reader)
    if header is None:
        raise ImportFileError("The file is empty: expected a header row with name and email.")
    columns = [column.strip().lower() for column in header]
    if sorted(columns) != sorted(COLUMNS):
        unexpected = [c for c in columns if c not in COLUMNS]
        missing = [c for c in COLUMNS if c not in columns]
        details = "; ".join(filter(None, [
            f"missing {', '.join(missing)}" if missing else "",
            f"unexpected {', '.join(repr(c) for c in unexpected)}" if unexpected else "",
            "a column is repeated" if not missing and not unexpected else "",
        ]))
        raise ImportFileError(f"The header must be the columns name and email, in any order ({details}).")
    while True:
        line = reader.line_num + 1
        cells = _next_row(reader)
        if cells is None:
            return
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(columns):
            yield line, BadRow(f"Expected {len(columns)} columns (name, email), found {len(cells)}.")
        else:
            yield line, dict(zip(columns, cells))


def _next_row(reader: Any) -> list[str] | None:
    try:
        return next(reader)
    except StopIteration:
        return None
    except UnicodeDecodeError:
        raise ImportFileError(f"The file is not UTF-8 text (near line {reader.line_num + 1}).") from None
    except csv.Error as error:
        raise ImportFileError(f"Line {reader.line_num}: {error}.") from None


def read_json(items: Any) -> Iterator[Row]:
    """(position, item) for a JSON array of users; positions count from 1."""
    if not isinstance(items, list):
        raise ImportFileError("Expected a JSON array of users.")
    return enumerate(items, start=1)


def import_users(rows: Iterable[Row], mode: str = "atomic", batch_size: int = BATCH_SIZE,
                 on_batch: Callable[[ImportReport], None] | None = None) -> ImportReport:
    """Validate and insert `rows`, then commit or roll back as `mode` says.

    The next batch is read and validated in a helper thread (see readahead) while
    the calling thread, the only one that uses the session, inserts the current one.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    session = Session()
    report = ImportReport(mode)
    try:
        with read_ahead(_batches(rows, batch_size), name="import-validation") as batches:
            for batch in batches:
                for rejection in batch.rejected:
                    report.reject(rejection.line, rejection.field, rejection.message)
                _insert(batch.rows, report)
                if on_batch:
                    on_batch(report)
    except BaseException:
        session.rollback()
        raise
    if report.refused:
        session.rollback()
        report.created = 0
    else:
        session.commit()
    report.rejected.sort(key=lambda rejection: rejection.line)
    return report


@dataclass
class Batch:
    """Valid rows keyed by email (so none repeats another), and the rows rejected on the way."""

    rows: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)


def _batches(rows: Iterable[Row], batch_size: int) -> Iterator[Batch]:
    """Validate `rows` into batches of at most `batch_size` rows, valid and rejected
    together, so that a file of nothing but bad rows is held a batch at a time too.
    Pure Python: it runs in the read-ahead thread, which must not touch the session."""
    batch = Batch()
    for line, raw in rows:
        fields = _validated(line, raw, batch.rejected)
        if fields is not None:
            if fields["email"] in batch.rows:
                batch.rejected.append(Rejection(line, "email", f"Duplicate of line {batch.rows[fields['email']][0]}."))
            else:
                batch.rows[fields["email"]] = (line, fields)
        if len(batch.rows) + len(batch.rejected) >= batch_size:
            yield batch
            batch = Batch()
    yield batch


def _validated(line: int, raw: Any, rejected: list[Rejection]) -> dict[str, Any] | None:
    if isinstance(raw, BadRow):
        rejected.append(Rejection(line, "_row", raw.message))
        return None
    try:
        return user_schema.load(raw)
    except ValidationError as error:
        messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
        rejected.extend(Rejection(line, name, " ".join(map(str, problems))) for name, problems in messages.items())
        return None


def _insert(batch: dict[str, tuple[int, dict[str, Any]]], report: ImportReport) -> None:
    if not batch:
        return
    session = Session()
    refused: set[str] = set()
    try:
        with session.begin_nested():
            stored = insert_users([fields for _, fields in batch.values()])
    except IntegrityError:
        # The database refused a row for a reason of its own (a constraint the schema
        # does not know): find it row by row, each in a savepoint of its own, so that
        # it takes only itself out of the import.
        stored = set()
        for email, (line, fields) in batch.items():
            try:
                with session.begin_nested():
                    stored |= insert_users([fields])
            except IntegrityError:
                refused.add(email)
                report.reject(line, "_row", REFUSED)
    report.created += len(stored)
    for email, (line, _) in batch.items():
        if email not in stored and email not in refused:
            report.reject(line, "email", EMAIL_TAKEN)


def insert_users(rows: list[dict[str, Any]]) -> set[str]:
    """Insert the users of `rows` ({name, email}, valid) whose email is new, and their
    history; return the emails stored.

    One INSERT ... SELECT ... ON CONFLICT (email) DO NOTHING RETURNING per batch, the
    batch sent as one JSON parameter (see jsonrows). The unique index itself skips
    emails already taken, by stored users, earlier batches or a concurrent writer:
    no SELECT beforehand, no race after it. The rows it skipped are the ones
    missing from RETURNING.
    """
    session = Session()
    inserted = session.connection().execute(_insert_new(session.get_bind().dialect.name), {"users": rows})
    users = [dict(user) for user in inserted.mappings()]
    audit.record_bulk_inserts(session, users)
    return {user["email"] for user in users}


@cache
def _insert_new(dialect: str) -> Executable:
    users = User.__table__  # the table, not the mapped class: no ORM on this path
    fields = json_rows(dialect, "users", [users.c.name, users.c.email])
    # The database stamps the rows: its now(), the start of the import's transaction
    # on PostgreSQL. WHERE true: SQLite needs a WHERE before ON CONFLICT in an
    # INSERT ... SELECT, to tell it from a join's ON.
    rows = select(fields["name"], fields["email"], func.now(), func.now()).where(true())
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert  # each spells its ON CONFLICT
    return (insert(users).from_select(["name", "email", "created_at", "updated_at"], rows)
            .on_conflict_do_nothing(index_elements=[users.c.email])
            .returning(users.c.id, users.c.name, users.c.email))
