"""Every error becomes a response here, in the caller's language.

/api/... and /healthz answer RFC 9457 problem JSON; everything else an HTML page.
Domain errors are werkzeug HTTPExceptions (users.EmailTaken is a Conflict), so one
handler serves them all; marshmallow and database errors are translated first.
"""

import logging
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from flask.globals import request_ctx
from marshmallow import ValidationError
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, ServiceUnavailable, UnprocessableEntity
from werkzeug.http import HTTP_STATUS_CODES

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = 2


class InvalidInput(UnprocessableEntity):
    """A body or query that failed schema validation, with messages per field."""

    description = "The request has invalid or unknown fields."

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__()
        self.errors = errors


class DatabaseUnavailable(ServiceUnavailable):
    description = "The database is unavailable. Try again shortly."


class IdsExhausted(ServiceUnavailable):
    """A sequence reached its maximum: nothing more can be created until an operator acts.
    (SQLite says SQLITE_FULL, an OperationalError, a plain DatabaseUnavailable.)"""

    description = "The database has run out of ids for new records. Nothing was written."


# PostgreSQL's SQLSTATE for nextval() past a sequence's maximum.
SEQUENCE_LIMIT_EXCEEDED = "2200H"


def init_app(app: Flask) -> None:
    app.register_error_handler(ValidationError, _invalid_input)
    app.register_error_handler(OperationalError, _database_unavailable)
    app.register_error_handler(PoolTimeout, _database_unavailable)
    app.register_error_handler(DataError, _data_error)
    app.register_error_handler(HTTPException, error_response)


def wants_json() -> bool:
    """Whether this request is answered in problem JSON rather than HTML."""
    path = request.path
    return path == "/api" or path.startswith("/api/") or path == "/healthz"


def problem(status: int, detail: str, **members: object) -> Response:
    """An RFC 9457 problem response."""
    body = {
        "type": "about:blank",
        "title": HTTP_STATUS_CODES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **members,
    }
    response = jsonify(body)
    response.status_code = status
    response.mimetype = PROBLEM_JSON
    return response


# Werkzeug's texts speak of servers and browsers in general; an error raised with
# no text of its own gets one that speaks of this API.
API_TEXTS = {
    400: "The request could not be read: a JSON body must be valid JSON, sent as application/json.",
    404: "There is no such endpoint in this API: /api/docs lists them.",
    405: "This endpoint does not take that method: the Allow header says which it takes.",
    413: "The body is too large for this API (MAX_CONTENT_LENGTH).",
    415: "Send the body as JSON, with Content-Type: application/json.",
}


def _detail(error: HTTPException) -> str:
    if error.description == type(error).description and error.code in API_TEXTS:
        return API_TEXTS[error.code]
    return error.description or ""


def error_response(error: HTTPException) -> Response:
    """The response for any HTTP error, in the caller's language."""
    status = error.code or 500
    errors = getattr(error, "errors", None)
    if wants_json():
        members = {"errors": errors} if errors else {}
        response = problem(status, _detail(error), **members)
    else:
        # A request refused before routing (an untrusted Host) has no URL adapter, and
        # the full page links to the app: it gets the page without links.
        page = "errors/error.html" if request_ctx.url_adapter is not None else "errors/bare.html"
        response = Response(
            render_template(
                page,
                status=status,
                title=HTTP_STATUS_CODES.get(status, "Error"),
                description=error.description,
                errors=errors,
            ),
            status=status,
        )
    # Headers an error brings along (WWW-Authenticate on a 401, Retry-After on a 429);
    # 405 must say what is allowed; 503 when to come back.
    response.headers.update(getattr(error, "response_headers", {}))
    valid_methods = getattr(error, "valid_methods", None)  # a MethodNotAllowed's
    if valid_methods:
        response.headers["Allow"] = ", ".join(sorted(valid_methods))  # as OPTIONS lists them
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _invalid_input(error: ValidationError) -> Response:
    messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
    return error_response(InvalidInput(messages))


def _database_unavailable(error: Exception) -> Response:
    # The driver's message, not SQLAlchemy's: that one carries the statement's
    # parameters, a password hash among them when a write was in flight.
    log.warning("database unavailable: %s", getattr(error, "orig", None) or error)
    return error_response(DatabaseUnavailable())


def _data_error(error: DataError) -> Response:
    if getattr(error.orig, "pgcode", None) == SEQUENCE_LIMIT_EXCEEDED:
        log.error("a sequence is exhausted: %s", error.orig)
        return error_response(IdsExhausted())
    raise error  # any other is a bug: Flask's unhandled-error path, a logged 500
