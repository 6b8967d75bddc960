"""Bulk import of users: one code path for the upload form, the API and the CLI.

Rows are validated by the same schema as single creates and staged in batches
in a temporary table; once the whole file is read they are moved into users,
by one Core INSERT ... SELECT per batch plus one for their audit rows (see
inserts), not one ORM object per row. Staging first means a refused atomic
import takes no ids from the sequence, and concurrent imports lock what they
insert in one order, so they never deadlock (see staging). Input is read as a
stream and at most three batches are held in memory at a time (one being
staged, one waiting, one being read), so memory stays flat however big the
file: while the database stages a batch, a helper thread reads and validates
the next (see readahead). Only the caller's thread touches the session.

The whole import is one transaction. In `atomic` mode any rejected row rolls
all of it back; in `partial` mode the valid rows are committed and every
rejected one is reported. Duplicate emails are found inside a batch by the
batch's dict, across batches by the staging table's key, and against what is
already stored (users, a concurrent writer's rows) by NOT EXISTS and the unique
index, through ON CONFLICT DO NOTHING. Each batch moves in a savepoint: if the
database refuses a row for any other reason, the batch is split in halves, each
in a savepoint of its own, until that row is found and rejected alone."""

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from marshmallow import ValidationError
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import UnprocessableEntity

from ..db import Session
from ..domain.schemas import IMPORT_MODES as MODES
from ..domain.schemas import user_schema
from ..domain.users import EMAIL_TAKEN
from . import inserts, staging
from .readahead import read_ahead

COLUMNS = ("name", "email")
# The export's other columns: accepted and ignored, so an export, edited in a
# spreadsheet, imports back. The database sets them for new users.
IGNORED = ("id", "created_at", "updated_at")
# How a rejection's field reads to a person: "_row" is the line as a whole.
FIELD_LABELS = {"_row": "the whole row", "_schema": "the whole row"}
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

    @property
    def column(self) -> str:
        """The field as a person names it: "the whole row" for the line as a whole."""
        return FIELD_LABELS.get(self.field, self.field)


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
        with read_ahead(_batches(rows, batch_size), name="import-validation") as batches:
            for batch in batches:
                for rejection in batch.rejected:
                    report.reject(rejection.line, rejection.field, rejection.message)
                _stage(batch.rows, report)
                if on_batch:
                    on_batch(report)
        if not report.refused:
            staging.lock_emails(session)
            for staged_rows in staging.batches(session, batch_size):
                _insert(staged_rows, report)
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


@dataclass
class Batch:
    """Valid rows keyed by email (so none repeats another), and the rows rejected on the way."""

    rows: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)


def _batches(rows: Iterable[Row], batch_size: int) -> Iterator[Batch]:
    """Validate `rows` into batches of at most `batch_size` rows, valid and rejected
    together, so that a file of nothing but bad rows is held a batch at a time too.
    Pure Python: it runs in the read-ahead thread, which must not touch the session."""
    try:
        batch = Batch()
        for line, raw in rows:
            fields = _validated(line, raw, batch.rejected)
            if fields is not None:
                if fields["email"] in batch.rows:
                    batch.rejected.append(
                        Rejection(line, "email", f"Duplicate of line {batch.rows[fields['email']][0]}.")
                    )
                else:
                    batch.rows[fields["email"]] = (line, fields)
            if len(batch.rows) + len(batch.rejected) >= batch_size:
                yield batch
                batch = Batch()
        yield batch
    finally:
        # Close the reader here, in the helper thread, before the import returns and
        # the caller closes the stream under it.
        close = getattr(rows, "close", None)
        if close:
            close()


def _validated(line: int, raw: Any, rejected: list[Rejection]) -> dict[str, Any] | None:
    if isinstance(raw, BadRow):
        rejected.append(Rejection(line, "_row", raw.message))
        return None
    try:
        fields: dict[str, Any] = user_schema.load(raw)
        return fields
    except ValidationError as error:
        # A load of one item always reports by field (_schema for a non-object item).
        messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
        rejected.extend(Rejection(line, name, " ".join(map(str, problems))) for name, problems in messages.items())
        return None


def _stage(batch: dict[str, tuple[int, dict[str, Any]]], report: ImportReport) -> None:
    staged = staging.stage(Session(), batch)
    for email, (line, _) in batch.items():
        if email not in staged:
            report.reject(line, "email", EMAIL_TAKEN)


def _insert(batch: dict[str, tuple[int, dict[str, Any]]], report: ImportReport) -> None:
    refused: set[str] = set()
    stored = _insert_or_split(list(batch.values()), refused, report)
    report.created += len(stored)
    for email, (line, _) in batch.items():
        if email not in stored and email not in refused:
            report.reject(line, "email", EMAIL_TAKEN)


def _insert_or_split(rows: list[tuple[int, dict[str, Any]]], refused: set[str], report: ImportReport) -> set[str]:
    """Insert `rows` in a savepoint; the emails stored. If the database refuses one
    of them for a reason of its own (a constraint the schema does not know), try
    each half in a savepoint of its own, down to the refused rows, which are
    rejected alone: a dozen rounds for one bad row in a batch of 5,000."""
    if not rows:
        return set()
    try:
        with Session().begin_nested():
            return inserts.insert_users([fields for _, fields in rows])
    except IntegrityError:
        if len(rows) == 1:
            line, fields = rows[0]
            refused.add(fields["email"])
            report.reject(line, "_row", REFUSED)
            return set()
        half = len(rows) // 2
        return _insert_or_split(rows[:half], refused, report) | _insert_or_split(rows[half:], refused, report)
