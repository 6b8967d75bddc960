"""URL converters shared by the blueprints, and the answer to OPTIONS."""

from typing import Any

from flask import Response
from flask.globals import request_ctx
from werkzeug.routing import IntegerConverter, Map

# Ids are 64-bit integers on both databases (migration 0005), so larger ids cannot
# exist: they are a 404 at routing time instead of a database error.
MAX_ID = 2**63 - 1


def decimal_range_regex(limit: int) -> str:
    """A regex for the decimal numbers 1..limit, without sign or leading zeros."""
    digits = str(limit)
    alternatives = [rf"[1-9]\d{{0,{len(digits) - 2}}}"] if len(digits) > 1 else []
    for i, digit in enumerate(digits):
        low, high = (1 if i == 0 else 0), int(digit) - 1
        if high >= low:
            rest = len(digits) - i - 1
            alternatives.append(f"{digits[:i]}[{low}-{high}]" + (rf"\d{{{rest}}}" if rest else ""))
    alternatives.append(digits)
    return "(?:" + "|".join(alternatives) + ")"


class IdConverter(IntegerConverter):
    """`<id:name>`: a positive database id.

    The range is in the regex, not only in to_python: werkzeug checks the method
    before converting, so PUT /users/0 would otherwise be a 405 (because GET
    /users/<id> exists) rather than the 404 that GET /users/0 gets.
    """

    regex = decimal_range_regex(MAX_ID)

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        super().__init__(map, min=1, max=MAX_ID)


def options_response() -> Response:
    """The answer to OPTIONS on any route: 204, and Allow listing its methods
    (Flask's default is a 200 with an empty HTML body)."""
    methods = request_ctx.url_adapter.allowed_methods()  # type: ignore[union-attr]  # a route matched
    response = no_content()
    response.headers["Allow"] = ", ".join(sorted(methods))
    return response


def no_content() -> Response:
    """A 204: no body, so no Content-Type (Flask would give an empty body text/html)."""
    response = Response(status=204)
    del response.headers["Content-Type"]
    return response
