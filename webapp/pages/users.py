"""The HTML pages: server-rendered forms that work without JavaScript.

Writes follow post/redirect/get with a flash message. Invalid input re-renders the
form with what was typed and a message under each bad field, nothing written.
"""

from typing import Any

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from marshmallow import ValidationError
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response

from .. import auth
from ..bulk import exports, imports
from ..domain import accounts, audit, users
from ..domain.models import User
from ..domain.schemas import (
    encode_cursor,
    import_args_schema,
    list_args_schema,
    page_args_schema,
    search_args_schema,
    user_form_schema,
    user_schema,
)
from ..errors import error_response
from . import bp

# The upload form lists this many rejected rows; the rest are counted.
REJECTIONS_SHOWN = 50


@bp.get("/")
def index() -> Response:
    return redirect(url_for(".list_users"))


@bp.get("/users")
def list_users() -> str:
    args = list_args_schema.load(request.args)
    page = users.list_users(**args)
    next_cursor = encode_cursor(page.next_after) if page.next_after is not None else None
    return render_template("users/list.html", page=page, q=args["q"], next_cursor=next_cursor)


@bp.get("/users.csv")
def export_users() -> Response:
    auth.require_admin("export users")
    return exports.csv_response(**search_args_schema.load(request.args))


@bp.get("/users/import")
def import_form() -> str:
    auth.require_admin("import users")
    return render_template("users/import.html", mode="atomic", error=None)


@bp.post("/users/import")
def import_users() -> tuple[str, int]:
    auth.require_admin("import users")
    mode = import_args_schema.load(request.form)["mode"]
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return render_template("users/import.html", mode=mode, error="Choose a CSV file to import."), 422
    try:
        report = imports.import_users(imports.read_csv(upload.stream), mode)
    except imports.ImportFileError as error:
        return render_template("users/import.html", mode=mode, error=error.description), 422
    status = 201 if report.created else (422 if report.rejected_count else 200)
    return render_template(
        "users/import.html", mode=mode, error=None, report=report, shown=report.rejected[:REJECTIONS_SHOWN]
    ), status


@bp.errorhandler(RequestEntityTooLarge)
def too_large(error: RequestEntityTooLarge) -> Response | tuple[str, int]:
    """An oversized upload gets the form back with a message; anything else the error page."""
    if request.endpoint != "pages.import_users":
        return error_response(error)
    limit = f"{current_app.config['MAX_CONTENT_LENGTH'] / 1024 / 1024:g} MiB"
    message = f"The file is larger than {limit}. Import it with `flask --app wsgi import-users FILE`."
    return render_template("users/import.html", mode="atomic", error=message), 413


@bp.get("/users/new")
def new_user() -> tuple[str, int]:
    auth.require_admin("create users")
    return _form(values={}, errors={}, status=200)


@bp.post("/users")
def create_user() -> Response | tuple[str, int]:
    auth.require_admin("create users")
    values = _submitted()
    try:
        user = users.create_user(user_schema.load(values))
    except (ValidationError, users.EmailTaken) as error:
        return _form(values, _field_errors(error), status=_status(error))
    flash(f"Created {user.name}.", "success")
    return redirect(url_for(".show_user", user_id=user.id))


@bp.get("/users/<id:user_id>")
def show_user(user_id: int) -> str:
    return render_user(users.get_user(user_id))


def render_user(user: User, **errors: Any) -> str:
    """A user's page: the record, what the viewer may do with it, its history."""
    args = page_args_schema.load(request.args)
    return render_template(
        "users/show.html",
        user=user,
        history=audit.history(user.id, **args),
        **{"password_errors": {}, "role_errors": {}, **errors},
    )


@bp.get("/users/<id:user_id>/edit")
def edit_user(user_id: int) -> tuple[str, int]:
    _may_edit(user_id)
    user = users.get_user(user_id)
    values = {"name": user.name, "email": user.email, "version": user.version}
    return _form(values, errors={}, status=200, user=user)


@bp.post("/users/<id:user_id>/edit")
def update_user(user_id: int) -> Response | tuple[str, int]:
    _may_edit(user_id)
    values = _submitted()
    if not auth.account().is_admin:  # a member's own page: the name, nothing else
        values["email"] = users.get_user(user_id).email
    try:
        fields = user_form_schema.load(values)
        based_on = fields.pop("version")
        user = users.update_user(user_id, fields, versions={based_on})
    except (ValidationError, users.EmailTaken) as error:
        if isinstance(error, ValidationError) and "version" in values and "version" in error.messages:
            # The hidden version is the form's If-Match: sent but unreadable, it is
            # a 400 (no one can correct it in the form), never a save without it.
            abort(400, "The form's version is malformed: reload the page and edit again.")
        return _form(values, _field_errors(error), status=_status(error), user=users.get_user(user_id))
    except users.VersionMismatch as mismatch:
        # Someone saved in between. Show both versions; the form now carries the
        # current version, so submitting it again applies "yours" on top of "theirs".
        return render_template("users/conflict.html", current=mismatch.current, yours=fields), 409
    flash(f"Saved {user.name}.", "success")
    return redirect(url_for(".show_user", user_id=user.id))


@bp.get("/users/<id:user_id>/delete")
def confirm_delete(user_id: int) -> str:
    auth.require_admin("delete users")
    return render_template("users/delete.html", user=users.get_user(user_id))


@bp.post("/users/<id:user_id>/delete")
def delete_user(user_id: int) -> Response | tuple[str, int]:
    auth.require_admin("delete users")
    try:
        deleted = users.delete_user(user_id)
    except accounts.LastAdmin as error:
        return render_user(users.get_user(user_id), role_errors={"role": [error.description or ""]}), 409
    auth.forget_user(user_id)
    flash(f"Deleted {deleted.name}.", "success")
    return redirect(url_for(".list_users"))


def _may_edit(user_id: int) -> None:
    acting = auth.account()
    if not acting.is_admin and acting.id != user_id:
        abort(403, "A member may edit only their own name.")


def _submitted() -> dict[str, str]:
    """The posted fields, minus the CSRF token that CSRFProtect already checked."""
    return {key: value for key, value in request.form.items() if key != "csrf_token"}


def _field_errors(error: ValidationError | users.EmailTaken) -> dict[str, list[str]]:
    messages = error.messages if isinstance(error, ValidationError) else error.errors
    return messages if isinstance(messages, dict) else {"_schema": list(messages)}


def _status(error: Exception) -> int:
    return 409 if isinstance(error, users.EmailTaken) else 422


def _form(
    values: dict[str, Any], errors: dict[str, list[str]], status: int, user: User | None = None
) -> tuple[str, int]:
    return render_template("users/form.html", values=values, errors=errors, user=user), status
