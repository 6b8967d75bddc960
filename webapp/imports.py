"""Bulk import of users: one code path for the upload form, the API and the CLI.

Rows are validated by the same schema as single creates, then inserted in
batches with a Core INSERT ... RETURNING executemany (SQLAlchemy's
insertmanyvalues), not one ORM object per row. Input is read as a stream and
only one batch is held at a time, so memory stays flat however big the file.

The whole import is one transaction. In `atomic` mode any rejected row rolls
all of it back; in `partial` mode the valid rows are committed and every
rejected one is reported. Duplicates are found per batch: inside the batch by
email, against stored users (and earlier batches of this file) by one SELECT,
and, for rows a concurrent writer takes in between, by the unique index itself,
retried row by row in savepoints.
"""

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from marshmallow import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import UnprocessableEntity

from . import audit
from .db import Session
from .models import User
from .schemas import IMPORT_MODES as MODES
from .schemas import user_schema
from .users import EMAIL_TAKEN

COLUMNS = ("name", "email")
BATCH_SIZE = 1000
# A report lists at most this many rejected rows (it always counts them all), so
# that a huge file of bad rows cannot grow the report without bound.
MAX_REPORTED = 10_000


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
    """Validate and insert `rows`, then commit or roll back as `mode` says."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    session = Session()
    report = ImportReport(mode)
    batch: dict[str, tuple[int, dict[str, Any]]] = {}
    try:
        for line, raw in rows:
            fields = _validated(line, raw, report)
            if fields is None:
                continue
            if fields["email"] in batch:
                report.reject(line, "email", f"Duplicate of line {batch[fields['email']][0]}.")
                continue
            batch[fields["email"]] = (line, fields)
            if len(batch) >= batch_size:
                _insert(batch, report)
                batch = {}
                if on_batch:
                    on_batch(report)
        _insert(batch, report)
    except BaseException:
        session.rollback()
        raise
    if report.refused:
        session.rollback()
        report.created = 0
    else:
        session.commit()
    report.rejected.sort(key=lambda rejection: rejection.line)
    if on_batch:
        on_batch(report)
    return report


def _validated(line: int, raw: Any, report: ImportReport) -> dict[str, Any] | None:
    if isinstance(raw, BadRow):
        report.reject(line, "_row", raw.message)
        return None
    try:
        return user_schema.load(raw)
    except ValidationError as error:
        messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
        for name, problems in messages.items():
            report.reject(line, name, " ".join(map(str, problems)))
        return None


def _insert(batch: dict[str, tuple[int, dict[str, Any]]], report: ImportReport) -> None:
    if not batch:
        return
    session = Session()
    for email in session.scalars(select(User.email).where(User.email.in_(list(batch)))):
        line, _ = batch.pop(email)
        report.reject(line, "email", EMAIL_TAKEN)
    if not batch:
        return
    try:
        with session.begin_nested():
            _insert_rows([fields for _, fields in batch.values()])
        report.created += len(batch)
    except IntegrityError:
        # Someone stored one of these emails after our SELECT: find it row by row.
        for line, fields in batch.values():
            try:
                with session.begin_nested():
                    _insert_rows([fields])
                report.created += 1
            except IntegrityError:
                report.reject(line, "email", EMAIL_TAKEN)


def _insert_rows(rows: list[dict[str, Any]]) -> None:
    """One multi-row INSERT ... RETURNING, and the audit rows the unit of work would
    have written (a Core insert bypasses its flush listener)."""
    session = Session()
    # The table, not the mapped class: a plain Core executemany, without the ORM's
    # bulk-insert bookkeeping, which this path does not need.
    users = User.__table__
    inserted = session.connection().execute(insert(users).returning(users.c.id, users.c.name, users.c.email), rows)
    audit.record_inserts(session, inserted.mappings().all())
