"""URL converters shared by the blueprints."""

from werkzeug.routing import IntegerConverter

# The users.id column is a 32-bit integer on PostgreSQL (and SQLite refuses
# integers past 64 bits), so larger ids cannot exist: they are a 404 at routing
# time instead of a database error.
MAX_ID = 2**31 - 1


class IdConverter(IntegerConverter):
    """`<id:name>`: a positive database id."""

    def __init__(self, map, *args, **kwargs) -> None:
        super().__init__(map, min=1, max=MAX_ID)
