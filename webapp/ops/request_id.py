"""A request id for every request: the caller's X-Request-ID if it sent a sane one,
else a fresh one. It is echoed in the response and stamped on audit rows and logs."""

import itertools
import os
import re
import secrets

from flask import Flask, Response, g, has_app_context, has_request_context, request

HEADER = "X-Request-ID"
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class _Ids:
    """Fresh ids: a random prefix per process and a counter. Unique, as a uuid4 would
    be, at a fraction of its cost; a forked child draws a prefix of its own."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = secrets.token_hex(8)
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}-{next(self.counter):x}"


_ids = _Ids()


def init_app(app: Flask) -> None:
    app.after_request(_echo)


def current() -> str | None:
    """This request's id, made on first use; None outside a request (CLI commands).
    Still known in teardown, after the request context itself has gone."""
    if not has_app_context():
        return None
    rid = g.get("request_id")
    if rid is None and has_request_context():
        # Kept in the WSGI environ too, so that an app context pushed inside the
        # request (which has a g of its own) finds the same id.
        sent = request.headers.get(HEADER, "")
        rid = g.request_id = request.environ.setdefault(
            "webapp.request_id", sent if _SANE.fullmatch(sent) else _ids.next()
        )
    return rid


def _echo(response: Response) -> Response:
    response.headers[HEADER] = current()
    return response
