"""A batch of rows sent as one JSON parameter and unpacked into a table by the database.

A multi-row INSERT ... VALUES binds every value of every row: SQLAlchemy renders
a placeholder for each, the driver quotes each, the database parses each. Sent
as one JSON array, a batch is one parameter whatever its size, the SQL text
never changes (so it is compiled and cached once), and the database turns the
array back into rows with json_to_recordset (PostgreSQL) or json_each (SQLite),
for an INSERT ... SELECT to read from.
"""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, Column, ColumnElement, bindparam, column, func


def json_rows(dialect: str, parameter: str, columns: Sequence[Column[Any]]) -> dict[str, ColumnElement[Any]]:
    """The fields of a JSON array of objects, bound later as `parameter`, as columns to
    select from: one per column of `columns`, by name and of the same type."""
    document = bindparam(parameter, type_=JSON)
    if dialect == "postgresql":
        rows = (
            func.json_to_recordset(document)
            .table_valued(*(column(c.name, c.type) for c in columns))
            .render_derived(name="batch", with_types=True)
        )
        return {c.name: rows.c[c.name] for c in columns}
    rows = func.json_each(document).table_valued("value")
    return {c.name: func.json_extract(rows.c.value, f"$.{c.name}", type_=c.type) for c in columns}
