"""CSV export of users, streamed.

Rows are read in keyset chunks (id > the last one sent, a thousand at a time),
each chunk its own short statement, and the session gives its connection back
to the pool between chunks: a client that reads slowly holds no transaction and
no connection, only its thread, and memory stays flat. The response wraps the
generator in stream_with_context, so the request context and the thread's
session live until the stream ends or the client goes away; teardown removes it.

A slow reader still holds its thread, so each worker runs at most
EXPORT_MAX_CONCURRENT exports at a time (half its threads by default) and answers any beyond that 503 with
Retry-After (ExportsBusy): half-read exports can never take every thread.
"""

import csv
import io
import re
import threading
from collections.abc import Iterable, Iterator
from functools import cache
from typing import Any

from flask import Flask, Response, current_app, stream_with_context
from sqlalchemy import Select, bindparam, select
from werkzeug.exceptions import ServiceUnavailable

from ..db import Session
from ..domain.models import users_table
from ..domain.users import matching, search_pattern

COLUMNS = ("id", "name", "email", "created_at", "updated_at")
CHUNK = 1000
# A spreadsheet treats a cell starting with one of these as a formula (the
# fullwidth forms too, in some locales).
FORMULA_STARTS = "=+-@\t\r\uff1d\uff0b\uff0d\uff20"
# Where a spreadsheet may start a cell: the start of ours, or after a separator it
# may be set to split on (comma, semicolon, tab, a line break) or a quote. OWASP's
# CSV-injection guidance: a file opened with `;` as the separator splits
# "Ada;=HYPERLINK(...)" into two cells, and the second is a formula.
_FORMULA = re.compile(f'(?:^|(?<=[,;\t\r\n"]))(?=[ ]*[{re.escape(FORMULA_STARTS)}])')


_SLOTS = "webapp.exports"


class ExportsBusy(ServiceUnavailable):
    description = "This server is running as many exports as it allows. Try again shortly."


def init_app(app: Flask) -> None:
    """The worker's export slots, shared by its threads."""
    slots = app.config["EXPORT_MAX_CONCURRENT"] or max(1, app.config["GUNICORN_THREADS"] // 2)
    app.extensions[_SLOTS] = threading.BoundedSemaphore(slots)


def safe_cell(value: object) -> str:
    """The value as text, defused against spreadsheet formula injection: an apostrophe
    before every place a formula could start makes it plain text (OWASP's advice)."""
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return _FORMULA.sub("'", text)


def csv_lines(q: str = "") -> Iterator[str]:
    """The header, then one CSV line per matching user in id order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(cells: Iterable[object]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(cells)
        return buffer.getvalue()

    # What the request read before the stream began (the token check) lets go of its
    # connection too: the client may be slow from the first byte.
    Session().close()
    yield line(COLUMNS)
    chunk = _chunk(bool(q))
    params = {"pattern": search_pattern(q), "after": 0, "limit": CHUNK}
    while True:
        rows = Session().execute(chunk, params).all()
        Session().close()  # the connection goes back to the pool while the client reads
        for row in rows:
            yield line(map(safe_cell, row))
        if len(rows) < CHUNK:
            return
        params["after"] = rows[-1].id


@cache
def _chunk(searching: bool) -> Select[Any]:
    # Plain rows of the five columns: an ORM object per row would be built only to be read once.
    users = users_table
    return (
        select(*(users.c[column] for column in COLUMNS))
        .where(matching("searching" if searching else ""))
        .where(users.c.id > bindparam("after"))
        .order_by(users.c.id)
        .limit(bindparam("limit"))
    )


def csv_response(q: str = "") -> Response:
    """A streamed users.csv download of the users matching `q`, if a slot is free.

    The slot is taken before the stream starts and given back when the server
    closes the response: the stream finished, or the client went away.
    """
    slots: threading.BoundedSemaphore = current_app.extensions[_SLOTS]
    if not slots.acquire(blocking=False):
        raise ExportsBusy()
    try:
        response = Response(
            stream_with_context(csv_lines(q)),
            mimetype="text/csv",
            headers={"Content-Disposition": 'attachment; filename="users.csv"'},
        )
    except BaseException:
        slots.release()
        raise
    response.call_on_close(slots.release)
    return response
