"""A schema's dump of many rows, with the per-field decisions taken once.

marshmallow's `Schema.dump` decides again, for every field of every object, how
to read the value and what `_serialize` does with it: four Python calls a field.
On a page of 20 users that was a third of the whole request. A `Dumper` reads
those decisions off the schema once, when it is built: which key each field
writes, which attribute it reads, and the function its `_serialize` applies to a
value that is not None (`int` for an Integer, `datetime.isoformat` for an ISO
DateTime, nothing for a Boolean). Then a row is one dict comprehension.

The schema stays the one source: a field whose serialization is anything else
(a custom `_serialize`, `as_string`, a method field), a schema with dump hooks
or its own `get_attribute`, or rows that lack a field's attribute, are dumped by
`schema.dump` itself. tests/test_dumping.py holds the two to the same output.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from marshmallow import Schema, fields
from marshmallow.decorators import POST_DUMP, PRE_DUMP
from marshmallow.utils import ensure_text_type

from .schemas import RecordSchema


class _Never:
    """A type no value has: the converter always runs."""


def _same(value: Any) -> Any:
    return value


# (the key written, the attribute read, the type that passes as it is, the converter)
Step = tuple[str, str, type, Callable[[Any], Any]]


class Dumper:
    """`schema.dump(obj)` and `schema.dump(rows, many=True)`, faster, same output."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.steps = _plan(schema)
        self._positions: dict[tuple[str, ...], list[tuple[str, int, type, Callable[[Any], Any]]] | None] = {}

    def one(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """The dump of one mapping (a dict, a row's `_mapping`)."""
        if self.steps is None or not isinstance(obj, Mapping) or any(attr not in obj for _, attr, _, _ in self.steps):
            return self.schema.dump(obj, many=False)  # type: ignore[no-any-return]
        return {
            key: None if (value := obj[attr]) is None else value if type(value) is kind else convert(value)
            for key, attr, kind, convert in self.steps
        }

    def rows(self, rows: Iterable[Any]) -> list[dict[str, Any]]:
        """The dump of the rows of one result (SQLAlchemy Rows, named tuples: sequences with `_fields`)."""
        if not isinstance(rows, Sequence):
            rows = list(rows)
        if not rows:
            return []
        names = getattr(rows[0], "_fields", None)
        steps = self._by_position(tuple(names)) if names is not None else None
        if steps is None:
            return self.schema.dump([getattr(row, "_mapping", row) for row in rows], many=True)  # type: ignore[no-any-return]
        return [
            {
                key: None if (value := row[index]) is None else value if type(value) is kind else convert(value)
                for key, index, kind, convert in steps
            }
            for row in rows
        ]

    def _by_position(self, names: tuple[str, ...]) -> list[tuple[str, int, type, Callable[[Any], Any]]] | None:
        try:
            return self._positions[names]
        except KeyError:
            pass
        steps = None
        if self.steps is not None and all(attr in names for _, attr, _, _ in self.steps):
            steps = [(key, names.index(attr), kind, convert) for key, attr, kind, convert in self.steps]
        self._positions[names] = steps
        return steps


def _plan(schema: Schema) -> list[Step] | None:
    """The steps of a dump by `schema`, or None where only schema.dump can do it."""
    if schema._hooks[PRE_DUMP] or schema._hooks[POST_DUMP] or schema.dict_class is not dict:
        return None
    # Both read a mapping's key; anything else may read values in its own way.
    if type(schema).get_attribute not in (Schema.get_attribute, RecordSchema.get_attribute):
        return None
    steps = []
    for name, field in schema.dump_fields.items():
        conversion = _conversion(field)
        if conversion is None:
            return None
        key = field.data_key if field.data_key is not None else name
        attr = field.attribute if field.attribute is not None else name
        steps.append((key, attr, *conversion))
    return steps


def _conversion(field: fields.Field[Any]) -> tuple[type, Callable[[Any], Any]] | None:
    """What `field.serialize` does to a value that is present and not None, as a
    type whose values pass unchanged and a function for the rest; None if it does
    anything else (a default to fill in is the caller's check: the key is there)."""
    kind = type(field)
    if kind.serialize is not fields.Field.serialize or not field._CHECK_ATTRIBUTE:
        return None
    serialize: Any = kind._serialize
    if serialize is fields.Field._serialize:
        return _Never, _same
    if serialize is fields.String._serialize:
        return str, ensure_text_type
    if isinstance(field, fields.Number) and serialize is fields.Number._serialize:
        if field.as_string or type(field)._format_num is not fields.Number._format_num:
            return None
        return field.num_type, field.num_type
    if isinstance(field, fields.DateTime) and serialize is fields.DateTime._serialize:
        data_format = field.format or field.DEFAULT_FORMAT
        function = field.SERIALIZATION_FUNCS.get(data_format)
        return (_Never, function) if function is not None else None
    if isinstance(field, fields.Nested) and serialize is fields.Nested._serialize:
        nested = Dumper(field.schema)  # the schema as the field would dump with: only, exclude and all
        return (_Never, nested.rows) if field.schema.many or field.many else (_Never, nested.one)
    return None
