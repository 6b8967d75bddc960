"""The users resource of the JSON API: list, create, read, replace, update, delete,
history, restore, export and import. Errors are answered by webapp/errors.py as problem JSON.

Every user response carries an ETag made of the user's id and version; writes
honour If-Match (412 when stale), reads If-None-Match (304): see conditional.py.
"""

from typing import Any

from flask import Response, jsonify, request, url_for
from werkzeug.exceptions import Forbidden, NotFound, UnsupportedMediaType

from .. import auth
from ..bulk import exports, imports
from ..domain import accounts, audit, restore, users
from ..domain.dumping import Dumper
from ..domain.schemas import (
    audit_page_schema,
    encode_cursor,
    import_args_schema,
    import_report_schema,
    list_args_schema,
    page_args_schema,
    search_args_schema,
    user_page_schema,
    user_schema,
)
from ..errors import InvalidInput, problem
from ..routing import no_content
from . import bp
from .conditional import etag, expected_versions, not_modified

# The schemas' dumps with their per-field decisions taken once (webapp/domain/dumping.py): a page's
# 20 rows were a third of the request. A User object, not a mapping, still goes to schema.dump.
user_one = Dumper(user_schema)
user_page = Dumper(user_page_schema)


def user_response(user: Any, status: int = 200) -> Response:
    """The user (a User, or a row of its columns) as JSON, with its ETag."""
    response = jsonify(user_one.one(getattr(user, "_mapping", user)))
    response.status_code = status
    response.set_etag(etag(user.id, user.version))
    return response


@bp.get("/users")
def list_users() -> Response:
    """A page of users. `next` (also a Link header) is the URL of the following page,
    by cursor, so walking a list of any size costs the same per page."""
    args = list_args_schema.load(request.args)
    page = users.list_users(**args)
    next_url = None
    if page.has_next:
        next_url = url_for(
            ".list_users",
            q=args["q"] or None,
            sort=None if page.sort == "id" else page.sort,
            per_page=page.per_page,
            cursor=encode_cursor(page.next_after, page.sort, page.next_key),  # type: ignore[arg-type]  # has_next
            _external=True,
        )
    response = jsonify(
        user_page.one(
            {
                "items": page.items,
                "page": page.page,
                "per_page": page.per_page,
                "total": page.total,
                "total_capped": page.total_capped,
                "next": next_url,
            }
        )
    )
    if next_url:
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    return response


@bp.post("/users")
def create_user() -> Response:
    auth.require_admin("create users")
    user = users.create_user(user_schema.load(request.get_json()))
    response = user_response(user, 201)
    response.headers["Location"] = url_for(".get_user", user_id=user.id)
    return response


@bp.get("/users/<id:user_id>")
def get_user(user_id: int) -> Response:
    user = users.read_user(user_id)
    return not_modified(etag(user.id, user.version)) or user_response(user)


@bp.put("/users/<id:user_id>")
def replace_user(user_id: int) -> Response:
    """Every field at once (role and password stay as they are unless given): an admin's."""
    auth.require_admin("replace a user")
    fields = user_schema.load(request.get_json())
    user = users.update_user(user_id, fields, expected_versions(user_id))
    auth.forget_user(user_id)
    return user_response(user)


@bp.patch("/users/<id:user_id>")
def update_user(user_id: int) -> Response:
    """Some fields. A member may change their own name, and their own password
    with `current_password`; an admin anything of anyone."""
    acting = auth.account()
    if not acting.is_admin and acting.id != user_id:
        raise Forbidden("A member may change only their own name and password.")
    fields = user_schema.load(request.get_json(), partial=True)
    if not acting.is_admin:
        if fields.keys() - MEMBER_MAY_CHANGE:
            raise Forbidden("A member may change only their own name and password.")
        if "password" in fields:
            refused = accounts.current_password_refused(user_id, fields.get("current_password"))
            if refused:
                raise InvalidInput({"current_password": [refused]})
    user = users.update_user(user_id, fields, expected_versions(user_id))
    if "role" in fields:
        auth.forget_user(user_id)
    return user_response(user)


MEMBER_MAY_CHANGE = frozenset({"name", "password", "current_password"})


@bp.delete("/users/<id:user_id>")
def delete_user(user_id: int) -> Response:
    auth.require_admin("delete users")
    users.delete_user(user_id, expected_versions(user_id))
    auth.forget_user(user_id)
    return no_content()


@bp.post("/users/<id:user_id>/restore")
def restore_user(user_id: int) -> Response:
    """A deleted user again, with the same id, name, email and role (no password): an admin's."""
    auth.require_admin("restore users")
    user = restore.restore_user(user_id)
    response = user_response(user, 201)
    response.headers["Location"] = url_for(".get_user", user_id=user.id)
    return response


@bp.get("/users/<id:user_id>/history")
def user_history(user_id: int) -> Response:
    """A user's changes, newest first; still readable after the user is deleted."""
    args = page_args_schema.load(request.args)
    history = audit.history(user_id, **args)
    if history.total == 0:
        raise NotFound(f"There is no history for a user with id {user_id}.")
    return jsonify(audit_page_schema.dump({**vars(history), "items": [entry._mapping for entry in history.items]}))


@bp.get("/users.csv")
def export_users() -> Response:
    """Every user matching `q`, as a streamed CSV file: an admin's."""
    auth.require_admin("export users")
    return exports.csv_response(**search_args_schema.load(request.args))


@bp.post("/users/import")
def import_users() -> Response:
    """Bulk create from a text/csv body or a JSON array; ?mode=atomic (default) or partial."""
    auth.require_admin("import users")
    mode = import_args_schema.load(request.args)["mode"]
    if request.mimetype == "text/csv":
        rows = imports.read_csv(request.stream)
    elif request.is_json:
        rows = imports.read_json(request.get_json())
    else:
        raise UnsupportedMediaType("Send a CSV file as text/csv, or a JSON array as application/json.")
    report = imports.import_users(rows, mode)
    body = import_report_schema.dump(report)
    if report.created == 0 and report.rejected_count:
        detail = (
            "Nothing was imported: every row must be valid and new in an atomic import."
            if report.refused
            else "Nothing was imported: every row was rejected."
        )
        return problem(422, detail, **body)
    response = jsonify(body)
    response.status_code = 201 if report.created else 200
    return response
