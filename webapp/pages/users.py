"""The HTML pages: server-rendered forms that work without JavaScript.

Writes follow post/redirect/get with a flash message. Invalid input re-renders the
form with what was typed and a message under each bad field, nothing written.
"""

from typing import Any

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from marshmallow import ValidationError
from werkzeug.exceptions import NotFound, RequestEntityTooLarge
from werkzeug.wrappers import Response

from .. import auth
from ..bulk import exports, imports, reports
from ..domain import accounts, audit, restore, users
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
# The page sizes the list offers (the API takes any size up to MAX_PER_PAGE).
PER_PAGE_CHOICES = (20, 50, 100)
# The list's sortable columns: (column, heading, the sort a first click asks for).
SORTABLE_COLUMNS = (("name", "Name", "name"), ("email", "Email", "email"), ("created_at", "Created", "-created_at"))


@bp.get("/")
def index() -> Response:
    return redirect(url_for(".list_users"), 302)


@bp.get("/users")
def list_users() -> str:
    args = list_args_schema.load(request.args)
    page = users.list_users(**args)
    next_cursor = encode_cursor(page.next_after, page.sort, page.next_key) if page.next_after is not None else None
    # The list's state, defaults left out of its links: a link changes one thing.
    state = {
        "q": args["q"] or None,
        "sort": None if page.sort == "id" else page.sort,
        "per_page": None if page.per_page == current_app.config["DEFAULT_PER_PAGE"] else page.per_page,
    }

    def list_url(**changes: Any) -> str:
        return url_for(".list_users", **{**state, **changes})

    return render_template(
        "users/list.html",
        page=page,
        q=args["q"],
        next_cursor=next_cursor,
        list_url=list_url,
        per_page_choices=PER_PAGE_CHOICES,
        columns=SORTABLE_COLUMNS,
    )


@bp.get("/users.csv")
def export_users() -> Response:
    auth.require_admin("export users")
    return exports.csv_response(**search_args_schema.load(request.args))


@bp.get("/users/import")
def import_form() -> tuple[str, int]:
    """The upload form, and the report of the upload that redirected here, if any."""
    auth.require_admin("import users")
    token = request.args.get("report", "")
    report = reports.load(token) if reports.well_formed(token) else None
    if token and report is None:
        flash("That import report is gone: reports are kept for an hour, for who imported.", "error")
    mode = report["mode"] if report else "atomic"
    return render_template("users/import.html", mode=mode, error=None, report=report), 200


@bp.post("/users/import")
def import_users() -> Response | tuple[str, int]:
    """Import, keep the report, and redirect to the page that shows it (303): a
    reload shows the report again instead of importing the file again. A file that
    cannot be read at all imported nothing and gets the form back at once."""
    auth.require_admin("import users")
    mode = import_args_schema.load(request.form)["mode"]
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return render_template("users/import.html", mode=mode, error="Choose a CSV file to import."), 422
    try:
        report = imports.import_users(imports.read_csv(upload.stream), mode)
    except imports.ImportFileError as error:
        return render_template("users/import.html", mode=mode, error=error.description), 422
    if report.created:
        flash(f"Imported {report.created:,} user{'' if report.created == 1 else 's'}.", "success")
    elif report.rejected_count:
        flash("Nothing was imported: see the rows below.", "error")
    else:
        flash("The file has no rows to import.", "error")
    return redirect(url_for(".import_form", report=reports.save(report, REJECTIONS_SHOWN)), 303)


@bp.errorhandler(RequestEntityTooLarge)
def too_large(error: RequestEntityTooLarge) -> Response | tuple[str, int]:
    """An oversized upload gets the form back with a message; anything else the error page."""
    if request.endpoint != "pages.import_users":
        return error_response(error)
    limit = f"{current_app.config['MAX_CONTENT_LENGTH'] / 1024 / 1024:g} MiB"
    message = f"The file is larger than {limit}. Import it with: flask --app wsgi import-users FILE"
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
    return redirect(url_for(".show_user", user_id=user.id), 303)


@bp.get("/users/<id:user_id>")
def show_user(user_id: int) -> str | tuple[str, int]:
    try:
        user = users.get_user(user_id)
    except NotFound:
        return render_deleted(user_id)
    return render_user(user)


def render_deleted(user_id: int, error: str | None = None, status: int = 404) -> tuple[str, int]:
    """A deleted user's page: their history stays readable, and an admin may restore them."""
    page = page_args_schema.load(request.args)
    state = restore.last_state(user_id)  # None: never deleted, so no history either
    if state is None:
        raise NotFound(f"There is no user with id {user_id}.")
    history = audit.history(user_id, **page)
    return render_template("users/deleted.html", user_id=user_id, state=state, history=history, error=error), status


@bp.post("/users/<id:user_id>/restore")
def restore_user(user_id: int) -> Response | tuple[str, int]:
    auth.require_admin("restore users")
    try:
        user = restore.restore_user(user_id)
    except restore.EmailTakenSince as error:
        return render_deleted(user_id, error=error.description, status=409)
    except restore.UserExists:
        flash("This user exists already: nothing to restore.", "error")
        return redirect(url_for(".show_user", user_id=user_id), 303)
    flash(f"Restored {user.name}. They sign in once a password is set for them.", "success")
    return redirect(url_for(".show_user", user_id=user.id), 303)


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
    return redirect(url_for(".show_user", user_id=user.id), 303)


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
    return redirect(url_for(".list_users"), 303)


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
