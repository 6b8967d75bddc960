"""An import's rows validated by ImportedUserSchema, which is UserSchema (as a
single create's body is validated) for members without a password, and gathered
into batches for the stage.

Pure Python: it runs in the import's read-ahead thread, which must not touch the
session (see readahead).
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from marshmallow import Schema, ValidationError, missing

from ..domain.schemas import imported_user_schema
from .staging import StagedRow

# How a rejection's field reads to a person: "_row" is the line as a whole.
FIELD_LABELS = {"_row": "the whole row", "_schema": "the whole row"}
COLUMNS = ("name", "email")


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


Row = tuple[int, "dict[str, Any] | BadRow | Any"]


@dataclass
class Batch:
    """Valid rows, as the stage takes them, and the rows rejected on the way."""

    rows: list[StagedRow] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def row_loader(schema: Schema, names: tuple[str, ...]) -> Callable[[Any], dict[str, Any]]:
    """`schema.load` of one item, quicker for the usual one: a dict of exactly the
    fields `names`, loaded by the schema's own fields, called one by one. Most of a
    load's time is marshmallow's machinery around the fields (a dict of five
    fields to walk, an error store, hooks to look for), which such an item does not
    need when the schema has no hooks and no other field with a default to fill
    in. Any other item, and any item a field refuses, goes through `load` itself,
    so what is loaded and every rejection's wording are load's."""
    loaded = [(name, schema.load_fields[name]) for name in names]
    others = [f for name, f in schema.load_fields.items() if name not in names]
    plain = (
        not any(getattr(schema, "_hooks", {"unknown": [True]}).values())
        and all(f.data_key in (None, name) and f.attribute in (None, name) for name, f in loaded)
        and all(f.load_default is missing for f in others)
    )
    keys = set(names)

    def load(item: Any) -> dict[str, Any]:
        if plain and type(item) is dict and item.keys() == keys:
            try:
                return {name: f.deserialize(item[name], name, item) for name, f in loaded}
            except ValidationError:
                pass  # load says it in its own words
        fields: dict[str, Any] = schema.load(item)
        return fields

    return load


load_user = row_loader(imported_user_schema, COLUMNS)


def batches(rows: Iterable[Row], batch_size: int) -> Iterator[Batch]:
    """Validate `rows` into batches of at most `batch_size` rows, valid and rejected
    together, so that a file of nothing but bad rows is held a batch at a time too.
    Duplicates are the stage's to find, across the whole file (see staging)."""
    try:
        batch = Batch()
        for line, raw in rows:
            if isinstance(raw, BadRow):
                batch.rejected.append(Rejection(line, "_row", raw.message))
            else:
                try:
                    fields = load_user(raw)
                except ValidationError as error:
                    # A load of one item always reports by field (_schema for a non-object item).
                    messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
                    batch.rejected.extend(
                        Rejection(line, name, " ".join(map(str, problems))) for name, problems in messages.items()
                    )
                else:
                    batch.rows.append((line, fields["name"], fields["email"]))
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
