"""The OpenAPI 3.1 description of the JSON API, and a page that reads it to people.

The document is built from the marshmallow schemas (apispec's marshmallow plugin),
so what is validated and what is documented cannot drift apart. Paths come from the
url_map, by endpoint; this module adds what a schema cannot say: which operations
exist, what they answer, and the headers that come with it. /api/docs renders the
same document with a template: no JavaScript, nothing from another host.
"""

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response, current_app, jsonify, render_template
from markupsafe import Markup, escape

from ..domain.schemas import (
    AuditPageSchema,
    ImportArgsSchema,
    ImportProblemSchema,
    ImportReportSchema,
    ListArgsSchema,
    PageArgsSchema,
    ProblemSchema,
    SearchArgsSchema,
    TokenSchema,
    UserPageSchema,
    UserSchema,
)
from ..errors import PROBLEM_JSON
from ..routing import MAX_ID

bp = Blueprint("openapi", __name__, url_prefix="/api")

_EXTENSION = "webapp.openapi"
OPENAPI_VERSION = "3.1.0"
DESCRIPTION = (
    "Users (name, email) as JSON. Every error is `application/problem+json` (RFC 9457); "
    "invalid or unknown fields are a 422 whose `errors` member lists messages per field."
)


@bp.app_template_filter("inline_code")
def inline_code(text: str) -> Markup:
    """Escaped text with its `backquoted` spans as <code>, as OpenAPI descriptions write them."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


@bp.get("/openapi.json")
def document() -> Response:
    """The OpenAPI document of this API."""
    return jsonify(spec(current_app))


@bp.get("/docs")
def docs() -> str:
    """The API reference, rendered on the server from the OpenAPI document."""
    return render_template("api/docs.html", spec=spec(current_app))


def spec(app: Flask) -> dict[str, Any]:
    """The app's OpenAPI document, built once per app."""
    document: dict[str, Any] | None = app.extensions.get(_EXTENSION)
    if document is None:
        document = app.extensions[_EXTENSION] = build_spec(app)
    return document


def build_spec(app: Flask) -> dict[str, Any]:
    """Build the document for every route of `app` that `operations()` describes."""
    spec = APISpec(
        title="webapp users API",
        version="1.0.0",
        openapi_version=OPENAPI_VERSION,
        plugins=[MarshmallowPlugin()],
        info={"description": DESCRIPTION},
    )
    # Registered first, so every use below becomes a $ref to these names.
    spec.components.schema("User", schema=UserSchema)
    spec.components.schema("UserPatch", schema=UserSchema(partial=True))
    spec.components.schema("UserPage", schema=UserPageSchema)
    spec.components.schema("Problem", schema=ProblemSchema)
    spec.components.schema("AuditPage", schema=AuditPageSchema)
    spec.components.schema("ImportReport", schema=ImportReportSchema)
    spec.components.schema("ImportProblem", schema=ImportProblemSchema)
    spec.components.schema("Token", schema=TokenSchema)
    spec.components.security_scheme(
        "bearerToken", {"type": "http", "scheme": "bearer", "description": "An API token: POST /api/tokens makes one."}
    )
    spec.components.security_scheme(
        "emailPassword", {"type": "http", "scheme": "basic", "description": "Email and password, to make a token."}
    )

    described = operations()
    paths: dict[str, dict[str, Any]] = {}
    for rule in app.url_map.iter_rules():  # in the order the blueprints declare them
        if rule.endpoint in described:
            method, operation = described[rule.endpoint]
            if rule.endpoint.startswith("api."):
                _needs_a_token(operation)
            paths.setdefault(openapi_path(rule.rule), {})[method] = operation
    for path, path_operations in paths.items():
        spec.path(path=path, operations=path_operations)
    document = spec.to_dict()
    return {"openapi": document.pop("openapi"), **document}


def openapi_path(rule: str) -> str:
    """A werkzeug rule as an OpenAPI path: /api/users/<id:user_id> -> /api/users/{user_id}."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _needs_a_token(operation: dict[str, Any]) -> None:
    """Every operation of the API blueprint: a bearer token, 401 without a good one,
    403 where the role does not allow it."""
    operation.setdefault("security", [{"bearerToken": []}])
    challenge = {
        "WWW-Authenticate": {"description": 'How to authenticate: `Bearer realm="api"`.', "schema": {"type": "string"}}
    }
    operation["responses"].setdefault(
        "401", _problem("No token, or one that is unknown, expired or revoked.", headers=challenge)
    )
    operation["responses"].setdefault("403", _problem("Your role does not allow this (members read, admins write)."))
    if any(p.get("in") == "header" and p.get("name", "").startswith("If-") for p in operation.get("parameters", [])):
        operation["responses"].setdefault("400", _problem("A conditional header is not a list of entity-tags."))


# -- what each endpoint does ----------------------------------------------------------


def _problem(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_JSON: {"schema": ProblemSchema}}, **extra}


def _json(description: str, schema: Any, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}, **extra}


def operations() -> dict[str, tuple[str, dict[str, Any]]]:
    """endpoint -> (method, OpenAPI operation). Fresh dicts: apispec resolves them in place."""
    user_id = {
        "in": "path",
        "name": "user_id",
        "required": True,
        "description": "The user's id.",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    }
    unavailable = _problem(
        "The database is unavailable; try again after Retry-After seconds.",
        headers={"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer", "minimum": 1}}},
    )
    not_found = _problem("There is no user with this id.")
    body_errors = {
        "400": _problem("The body is not well-formed JSON."),
        "409": _problem(
            "Another user has this email address (`errors.email` says so), or the change would leave no admin."
        ),
        "413": _problem("The body is larger than MAX_CONTENT_LENGTH."),
        "415": _problem("The body is not `application/json`."),
        "422": _problem("Invalid or unknown fields; `errors` has the messages per field."),
    }

    def body(schema: Any) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    etag = {
        "ETag": {
            "description": 'The user\'s id and version, `"<id>.<version>"`: send it back in If-Match.',
            "schema": {"type": "string"},
        }
    }
    if_match = {
        "in": "header",
        "name": "If-Match",
        "required": False,
        "schema": {"type": "string"},
        "description": "Write only if the user is still at this ETag (or `*`); without it, write anyway.",
    }
    stale = _problem("If-Match names a version that is no longer current; nothing was changed.")

    return {
        "api.list_users": (
            "get",
            {
                "operationId": "listUsers",
                "tags": ["users"],
                "summary": "List users, a page at a time",
                "description": "In `sort` order (id unless given), optionally narrowed by `q`. "
                "A page past the end is empty. "
                "Shallow pages by `page`; any depth by following `next` (a `cursor`).",
                "parameters": [{"in": "query", "schema": ListArgsSchema}],
                "responses": {
                    "200": _json(
                        "One page of users.",
                        UserPageSchema,
                        headers={
                            "Link": {
                                "description": 'The next page, `<URL>; rel="next"`, when there is one.',
                                "schema": {"type": "string"},
                            }
                        },
                    ),
                    "422": _problem("A query argument is invalid."),
                    "503": unavailable,
                },
            },
        ),
        "api.create_user": (
            "post",
            {
                "operationId": "createUser",
                "tags": ["users"],
                "summary": "Create a user",
                "requestBody": body(UserSchema),
                "responses": {
                    "201": _json(
                        "Created.",
                        UserSchema,
                        headers={
                            **etag,
                            "Location": {
                                "description": "The new user's URL.",
                                "schema": {"type": "string", "format": "uri-reference"},
                            },
                        },
                    ),
                    **body_errors,
                    "503": unavailable,
                },
            },
        ),
        "api.get_user": (
            "get",
            {
                "operationId": "getUser",
                "tags": ["users"],
                "summary": "One user",
                "parameters": [
                    user_id,
                    {
                        "in": "header",
                        "name": "If-None-Match",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "An ETag you hold: 304 if it is still current.",
                    },
                ],
                "responses": {
                    "200": _json("The user.", UserSchema, headers=etag),
                    "304": {"description": "Not modified: the If-None-Match tag is current."},
                    "404": not_found,
                    "503": unavailable,
                },
            },
        ),
        "api.replace_user": (
            "put",
            {
                "operationId": "replaceUser",
                "tags": ["users"],
                "summary": "Replace every field of a user",
                "parameters": [user_id, if_match],
                "requestBody": body(UserSchema),
                "responses": {
                    "200": _json("The user, changed.", UserSchema, headers=etag),
                    "404": not_found,
                    "412": stale,
                    **body_errors,
                    "503": unavailable,
                },
            },
        ),
        "api.update_user": (
            "patch",
            {
                "operationId": "updateUser",
                "tags": ["users"],
                "summary": "Change some fields of a user",
                "parameters": [user_id, if_match],
                "requestBody": body(UserSchema(partial=True)),
                "responses": {
                    "200": _json("The user, changed.", UserSchema, headers=etag),
                    "404": not_found,
                    "412": stale,
                    **body_errors,
                    "429": _problem(
                        "A member's current password was wrong too many times: the sign-in throttle.",
                        headers={"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
                    ),
                    "503": unavailable,
                },
            },
        ),
        "api.delete_user": (
            "delete",
            {
                "operationId": "deleteUser",
                "tags": ["users"],
                "summary": "Delete a user",
                "parameters": [user_id, if_match],
                "responses": {
                    "204": {"description": "Deleted; no body."},
                    "404": not_found,
                    "409": _problem("This is the last admin."),
                    "412": stale,
                    "503": unavailable,
                },
            },
        ),
        "api.restore_user": (
            "post",
            {
                "operationId": "restoreUser",
                "tags": ["users"],
                "summary": "Restore a deleted user",
                "description": "The same id, name, email and role as the last deletion recorded; no password "
                "(set one to let them sign in) and no tokens. Recorded in the history as a restore.",
                "parameters": [user_id],
                "responses": {
                    "201": _json(
                        "Restored.",
                        UserSchema,
                        headers={
                            **etag,
                            "Location": {
                                "description": "The user's URL.",
                                "schema": {"type": "string", "format": "uri-reference"},
                            },
                        },
                    ),
                    "404": _problem("No user with this id was ever deleted."),
                    "409": _problem("The user exists, or their email belongs to another user now (`errors.email`)."),
                    "503": unavailable,
                },
            },
        ),
        "api.user_history": (
            "get",
            {
                "operationId": "getUserHistory",
                "tags": ["users"],
                "summary": "A user's changes, newest first",
                "description": "Every insert, update, delete and restore, with old and new values; "
                "kept after deletion.",
                "parameters": [user_id, {"in": "query", "schema": PageArgsSchema}],
                "responses": {
                    "200": _json("One page of the history.", AuditPageSchema),
                    "404": _problem("No user with this id ever existed."),
                    "422": _problem("A query argument is invalid."),
                    "503": unavailable,
                },
            },
        ),
        "api.export_users": (
            "get",
            {
                "operationId": "exportUsers",
                "tags": ["users"],
                "summary": "Every matching user as CSV",
                "description": "Streamed. Cells a spreadsheet would run as formulas start with `'`.",
                "parameters": [{"in": "query", "schema": SearchArgsSchema}],
                "responses": {
                    "200": {
                        "description": "id,name,email,created_at,updated_at, one user per line.",
                        "content": {"text/csv": {"schema": {"type": "string"}}},
                    },
                    "422": _problem("A query argument is invalid."),
                    "503": unavailable,
                },
            },
        ),
        "api.import_users": (
            "post",
            {
                "operationId": "importUsers",
                "tags": ["users"],
                "summary": "Create users in bulk",
                "description": "A CSV file (header `name,email`, any order) or a JSON array of users. "
                "An import makes members without a password: an item with another `role` or a "
                "`password` is rejected by line. "
                "`atomic` writes nothing unless every row is valid and new; `partial` writes "
                "the valid rows and reports the others by line.",
                "parameters": [{"in": "query", "schema": ImportArgsSchema}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "text/csv": {"schema": {"type": "string"}},
                        "application/json": {"schema": {"type": "array", "items": {}}},
                    },
                },
                "responses": {
                    "200": _json("There was nothing to import.", ImportReportSchema),
                    "201": _json("Users were created; rejected rows, if any, are listed.", ImportReportSchema),
                    "400": _problem("The body is not well-formed JSON."),
                    "413": _problem("The body is larger than MAX_CONTENT_LENGTH."),
                    "415": _problem("The body is neither `text/csv` nor `application/json`."),
                    "422": {
                        "description": "Nothing was imported: the file is unreadable (`errors.file`), or "
                        "rows were rejected (`rejected`).",
                        "content": {PROBLEM_JSON: {"schema": ImportProblemSchema}},
                    },
                    "503": unavailable,
                },
            },
        ),
        "api.create_token": (
            "post",
            {
                "operationId": "createToken",
                "tags": ["tokens"],
                "summary": "Make an API token",
                "description": "With your email and password (HTTP Basic) or a token you have. The secret, "
                "`token`, is in this answer only. After 5 failed sign-ins for an email within 15 minutes, "
                "further attempts for it get 429 until the window passes.",
                "security": [{"emailPassword": []}, {"bearerToken": []}],
                "requestBody": {"required": False, "content": {"application/json": {"schema": TokenSchema}}},
                "responses": {
                    "201": _json("The new token, its secret included.", TokenSchema),
                    "400": _problem("The body is not well-formed JSON."),
                    "415": _problem("The body is not `application/json`."),
                    "422": _problem("Invalid or unknown fields."),
                    "429": _problem(
                        "Too many failed sign-ins for this email.",
                        headers={"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
                    ),
                    "503": unavailable,
                },
            },
        ),
        "api.list_tokens": (
            "get",
            {
                "operationId": "listTokens",
                "tags": ["tokens"],
                "summary": "Your tokens, without their secrets",
                "responses": {
                    "200": _json(
                        "Newest first; revoked ones left out.",
                        {
                            "type": "object",
                            "properties": {"items": {"type": "array", "items": TokenSchema}},
                            "required": ["items"],
                        },
                    ),
                    "503": unavailable,
                },
            },
        ),
        "api.revoke_token": (
            "delete",
            {
                "operationId": "revokeToken",
                "tags": ["tokens"],
                "summary": "Revoke a token (an admin: anyone's)",
                "parameters": [{**user_id, "name": "token_id", "description": "The token's id."}],
                "responses": {
                    "204": {"description": "Revoked."},
                    "404": _problem("You have no such token."),
                    "503": unavailable,
                },
            },
        ),
        "openapi.document": (
            "get",
            {
                "operationId": "getOpenAPI",
                "tags": ["reference"],
                "summary": "This document",
                "responses": {"200": _json("OpenAPI 3.1.", {"type": "object"})},
            },
        ),
        "openapi.docs": (
            "get",
            {
                "operationId": "getDocs",
                "tags": ["reference"],
                "summary": "This document as an HTML page",
                "responses": {
                    "200": {
                        "description": "The API reference.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            },
        ),
    }
