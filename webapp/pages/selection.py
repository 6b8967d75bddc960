"""Bulk actions on the users picked on the list: delete selected, after a
confirmation page that lists who. The list's checkboxes submit by GET (picking is
not a change); the deletion itself is a POST, one transaction for all."""

from flask import flash, redirect, render_template, request, url_for
from marshmallow import ValidationError
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from .. import auth
from ..domain import accounts, users
from ..domain.schemas import selection_schema
from . import bp


def _selected(values: MultiDict[str, str]) -> list[int] | None:
    try:
        return list(selection_schema.load({"id": values.getlist("id")})["id"])
    except ValidationError:
        return None


@bp.get("/users/delete")
def confirm_delete_selected() -> Response | str:
    auth.require_admin("delete users")
    ids = _selected(request.args)
    chosen = users.read_users(ids) if ids else []
    if not chosen:
        flash("Choose the users to delete first: tick their boxes in the list.", "error")
        return redirect(url_for(".list_users"), 302)
    return render_template("users/delete_selected.html", chosen=chosen, error=None)


@bp.post("/users/delete")
def delete_selected() -> Response | tuple[str, int]:
    auth.require_admin("delete users")
    ids = _selected(request.form)
    if ids is None:
        flash("Choose the users to delete first: tick their boxes in the list.", "error")
        return redirect(url_for(".list_users"), 303)
    try:
        deleted = users.delete_users(ids)
    except accounts.LastAdmin as error:
        return render_template("users/delete_selected.html", chosen=users.read_users(ids), error=error.description), 409
    for user in deleted:
        auth.forget_user(user.id)
    if deleted:
        names = ", ".join(user.name for user in deleted)
        flash(f"Deleted {len(deleted)} user{'' if len(deleted) == 1 else 's'}: {names}.", "success")
    else:
        flash("Nobody was deleted: the users chosen were deleted already.", "error")
    return redirect(url_for(".list_users"), 303)
