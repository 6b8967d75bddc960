"""Bulk import of users: one code path for the upload form, the API and the CLI.

Rows are validated by the same schema as single creates (see validation) and
staged in batches in a temporary table; once the whole file is read they are
moved into users, by one Core statement per batch that writes their audit rows
too (see inserts), not one ORM object per row. Staging first means a refused atomic
import takes no ids from the sequence, and concurrent imports lock what they
insert in one order, so they never deadlock (see staging). Input is read as a
stream and at most three batches are held in memory at a time (one being
staged, one waiting, one being read), so memory stays flat however big the
file: while the database stages a batch, a helper thread reads and validates
the next (see readahead). Only the caller's thread touches the session.

The whole import is one transaction. In `atomic` mode any rejected row rolls
all of it back; in `partial` mode the valid rows are committed and every
rejected one is reported. Duplicate emails are found by one statement over the
whole stage, and against what is already stored by NOT EXISTS, then once more
as they move (a concurrent writer's rows) by the unique index, through ON
CONFLICT DO NOTHING. Each batch moves in a savepoint: if the
database refuses a row for any other reason, the batch is split in halves, each
in a savepoint of its own, until that row is found and rejected alone."""

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import UnprocessableEntity

from ..db import Session
from ..domain.schemas import IMPORT_MODES as MODES
from ..domain.users import EMAIL_TAKEN
from . import inserts, staging, validation
from .readahead import read_ahead
from .validation import COLUMNS, BadRow, Rejection, Row

__all__ = ["BadRow", "ImportFileError", "ImportReport", "Rejection", "import_users", "read_csv", "read_json"]

# The export's other columns: accepted and ignored, so an export, edited in a
# spreadsheet, imports back. The database sets them for new users.
IGNORED = ("id", "created_at", "updated_at")
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


def read_csv(stream: IO[bytes]) -> Iterator[Row]:
    """(line number, {name, email}) per data row of a UTF-8 CSV file (BOM allowed).

    The header must name the columns name and email, in any order; the export's
    id, created_at and updated_at may be there too, and are ignored.
    Blank lines are skipped. Raises ImportFileError for an unreadable file.
    """
    text = io.TextIOWrapper(io.BufferedReader(_BlockReader(stream)), encoding="utf-8-sig", newline="")
    try:
        yield from _csv_rows(csv.reader(text))
    finally:
        text.detach()  # the wrappers are ours, the stream the caller's: it stays open


class _BlockReader(io.RawIOBase):
    """`stream`, read a megabyte at a time however little is asked for.

    The import reads in its read-ahead thread, and each read of the stream may let
    go of the GIL; getting it back from the thread that inserts can take a switch
    interval (5 ms). The 8 KiB reads of a plain TextIOWrapper cost the import a
    fifth of its speed. The text layer still decodes 8 KiB at a time, so an
    encoding error is reported near its line.
    """

    BLOCK = 1 << 20

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.block = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.block:
            self.block = memoryview(self.stream.read(self.BLOCK))
        size = min(len(buffer), len(self.block))
        buffer[:size] = self.block[:size]
        self.block = self.block[size:]
        return size


def _csv_rows(reader: Any) -> Iterator[Row]:
    header = _next_row(reader)
    if header is None:
        raise ImportFileError("The file is empty: expected a header row with name and email.")
    columns = [column.strip().lower() for column in header]
    kept = [column for column in columns if column not in IGNORED]
    if sorted(kept) != sorted(COLUMNS) or len(set(columns)) != len(columns):
        unexpected = [c for c in kept if c not in COLUMNS]
        missing = [c for c in COLUMNS if c not in columns]
        details = "; ".join(
            filter(
                None,
                [
                    f"missing {', '.join(missing)}" if missing else "",
                    f"unexpected {', '.join(repr(c) for c in unexpected)}" if unexpected else "",
                    "a column is repeated" if not missing and not unexpected else "",
                ],
            )
        )
        raise ImportFileError(
            "The header must be the columns name and email, in any order, and may have the export's id, "
            f"created_at and updated_at, which are ignored ({details})."
        )
    keep = [index for index, column in enumerate(columns) if column in COLUMNS]
    while True:
        line = reader.line_num + 1
        cells = _next_row(reader)
        if cells is None:
            return
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(columns):
            yield line, BadRow(f"Expected {len(columns)} columns ({', '.join(columns)}), found {len(cells)}.")
        else:
            yield line, {columns[index]: cells[index] for index in keep}


def _next_row(reader: Any) -> list[str] | None:
    try:
        row: list[str] = next(reader)
        return row
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
    return enumerate(map(_without_ignored, items), start=1)


def _without_ignored(item: Any) -> Any:
    # As in a CSV file: what GET /api/users answered may be sent back as it is.
    return {k: v for k, v in item.items() if k not in IGNORED} if isinstance(item, dict) else item


def import_users(
    rows: Iterable[Row],
    mode: str = "atomic",
    batch_size: int | None = None,
    on_batch: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    """Validate and insert `rows`, then commit or roll back as `mode` says.

    The next batch is read and validated in a helper thread (see readahead) while
    the calling thread, the only one that uses the session, stages the current one.
    Once the whole file is staged, the rows move into users (see staging).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    batch_size = batch_size or BATCH_SIZE
    session = Session()
    report = ImportReport(mode)
    try:
        staging.begin(session)
        with read_ahead(validation.batches(rows, batch_size), name="import-validation") as batches:
            for batch in batches:
                for rejection in batch.rejected:
                    report.reject(rejection.line, rejection.field, rejection.message)
                staging.stage(session, batch.rows)
                if on_batch:
                    on_batch(report)
        rejected = report.rejected_count
        for line, first in staging.rejections(session):
            report.reject(line, "email", EMAIL_TAKEN if first is None else f"Duplicate of line {first}.")
        if report.rejected_count > rejected:
            staging.remove_rejections(session)
        if not report.refused:
            staging.lock_emails(session)
            for lines in staging.batches(session, batch_size):
                _insert_or_split(lines, report)
                if on_batch:
                    on_batch(report)
            staging.end(session)
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


def _insert_or_split(lines: list[int], report: ImportReport) -> None:
    """Move the staged `lines` into users in a savepoint. If the database refuses one
    of them for a reason of its own (a constraint the schema does not know), try
    each half in a savepoint of its own, down to the refused rows, which are
    rejected alone: a dozen rounds for one bad row in a batch of 5,000."""
    try:
        with Session().begin_nested():
            taken = inserts.insert_staged(Session(), lines)
    except IntegrityError:
        if len(lines) == 1:
            report.reject(lines[0], "_row", REFUSED)
            return
        half = len(lines) // 2
        _insert_or_split(lines[:half], report)
        _insert_or_split(lines[half:], report)
        return
    report.created += len(lines) - len(taken)
    for line in taken:
        report.reject(line, "email", EMAIL_TAKEN)
