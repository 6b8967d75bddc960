"""A request id for every request: the caller's X-Request-ID if it sent a sane one,
else a fresh one. It is echoed in the response and stamped on audit rows and logs."""

import re
import uuid

from flask import Flask, Response, g, has_app_context, has_request_context, request

HEADER = "X-Request-ID"
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def init_app(app: Flask) -> None:
    app.before_request(_assign)
    app.after_request(_echo)


def current() -> str | None:
    """This request's id; None outside a request (CLI commands). Still known in
    teardown, after the request context itself has gone."""
    if not has_app_context():
        return None
    if "request_id" not in g and has_request_context():
        _assign()
    return g.get("request_id")


def _assign() -> None:
    # Kept in the WSGI environ too, so an app context pushed inside the request
    # (which has a g of its own) finds the same id.
    sent = request.headers.get(HEADER, "")
    g.request_id = request.environ.setdefault(
        "webapp.request_id", sent if _SANE.fullmatch(sent) else uuid.uuid4().hex)


def _echo(response: Response) -> Response:
    response.headers[HEADER] = current()
    return response
