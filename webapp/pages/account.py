"""Signing in and out, the first admin (/setup), and the account forms of a user's
page: a new password, a new role."""

from typing import Any

from flask import abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from marshmallow import ValidationError
from werkzeug.wrappers import Response

from .. import auth
from ..domain import accounts, users
from ..domain.schemas import new_password_schema, role_schema, setup_schema, sign_in_schema
from . import bp
from .users import render_user

Page = Response | tuple[str, int] | tuple[str, int, dict[str, str]]


@bp.get("/login")
def login() -> Response | str:
    if current_user.is_authenticated:
        return redirect(auth.safe_next(request.args.get("next")), 302)
    return render_template("account/login.html", email="", next=request.args.get("next", ""), error=None)


@bp.post("/login")
def sign_in() -> Page:
    form = request.form
    target = form.get("next", "")
    try:
        fields = sign_in_schema.load(form)
        account = accounts.authenticate(fields["email"], fields["password"])
    except ValidationError:
        account = None
    except accounts.TooManyFailures as refused:
        page = render_template(
            "account/login.html", email=form.get("email", ""), next=target, error=refused.description
        )
        return page, 429, {"Retry-After": str(refused.retry_after)}
    if account is None:
        page = render_template(
            "account/login.html", email=form.get("email", ""), next=target, error="Unknown email or wrong password."
        )
        return page, 422
    _start_session(account)
    return redirect(auth.safe_next(target), 303)


def _start_session(account: accounts.Account) -> None:
    # A new session at sign-in: nothing of the anonymous one (its CSRF token
    # included) carries over, and the cookie's value changes.
    session.clear()
    login_user(account)


@bp.post("/logout")
def logout() -> Response:
    logout_user()
    session.clear()
    flash("Signed out.", "success")
    return redirect(url_for(".login"), 303)


@bp.route("/setup", methods=["GET", "POST"])
def setup() -> Page:
    """The first admin, in development while there is none; a 404 otherwise."""
    if not auth.setup_pending():
        abort(404)
    values: dict[str, Any] = {k: v for k, v in request.form.items() if k not in ("csrf_token",)}
    if request.method == "GET":
        return render_template("account/setup.html", values={}, errors={}), 200
    try:
        fields = setup_schema.load(values)
    except ValidationError as error:
        return render_template("account/setup.html", values=values, errors=_messages(error)), 422
    user, _ = accounts.make_admin(fields["email"], fields["name"], fields["password"])
    _start_session(accounts.account_of(user))
    flash(f"Welcome, {user.name}: you are the first admin.", "success")
    return redirect(url_for(".list_users"), 303)


@bp.post("/users/<id:user_id>/password")
def set_password(user_id: int) -> Page:
    """A new password: an admin's for anyone, a member's for themselves with the current one."""
    acting = auth.account()
    if not acting.is_admin and acting.id != user_id:
        abort(403, "A member may change only their own password.")
    values = {k: v for k, v in request.form.items() if k != "csrf_token"}
    user = users.get_user(user_id)
    try:
        fields = new_password_schema.load(values)
        if not acting.is_admin and (refused := accounts.current_password_refused(user_id, fields["current_password"])):
            raise ValidationError({"current_password": [refused]})
    except ValidationError as error:
        return render_user(user, password_errors=_messages(error)), 422
    users.update_user(user_id, {"password": fields["password"]})
    if acting.id == user_id:  # the cookie named the old password: sign in again with the new one
        _start_session(accounts.account_of(users.get_user(user_id)))
    flash("Password changed.", "success")
    return redirect(url_for(".show_user", user_id=user_id), 303)


@bp.post("/users/<id:user_id>/role")
def set_role(user_id: int) -> Page:
    auth.require_admin("change roles")
    user = users.get_user(user_id)
    try:
        fields = role_schema.load({"role": request.form.get("role", "")})
    except ValidationError as error:
        return render_user(user, role_errors=_messages(error)), 422
    try:
        users.update_user(user_id, fields)
    except accounts.LastAdmin as error:
        return render_user(user, role_errors={"role": [error.description or ""]}), 409
    auth.forget_user(user_id)
    flash(f"{user.name} is now {'an admin' if fields['role'] == 'admin' else 'a member'}.", "success")
    return redirect(url_for(".show_user", user_id=user_id), 303)


def _messages(error: ValidationError) -> dict[str, list[str]]:
    return error.messages if isinstance(error.messages, dict) else {"_schema": list(error.messages)}
