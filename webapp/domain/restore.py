"""Restoring a deleted user from their history.

A delete's audit row keeps the user's last state ({field: [old, null]}), so the
user can be written again under the same id, and the history goes on where it
stopped: the restore is a row of its own. The version, which ETags are made of,
goes on too rather than starting again at 1: a tag handed out before the
deletion must not match the restored user. What the history never holds stays
lost: the password (the restored user signs in once an admin sets one) and the
API tokens, which went with the user.
"""

from typing import Any

from sqlalchemy import Row, bindparam, case, func, insert, select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import Conflict, NotFound

from ..db import Session
from . import audit
from .models import audit_table, users_table, utcnow

_users, _audit = users_table, audit_table
# Built once, values bound (see users._list_statements).
_EXISTS = select(_users.c.id).where(_users.c.id == bindparam("user_id"))
_LAST_DELETE = (
    select(_audit.c.changes)
    .where(_audit.c.user_id == bindparam("user_id"), _audit.c.action == "delete")
    .order_by(_audit.c.id.desc())
    .limit(1)
)
# The id's first creation and how many rows its history holds, in one read.
# Every write that bumps a version leaves an audit row (audit.py), and so does
# the deletion, so by the time a user can be restored their id's history holds
# at least as many rows as the highest version it ever had (users from before
# migration 0002 began at version 1 with no row, and their deletion makes up for
# it): one more than the count names no version of this id in any of its lives.
_HISTORY = select(
    func.min(case((_audit.c.action == "insert", _audit.c.at))).label("first_created"),
    func.count().label("rows"),
).where(_audit.c.user_id == bindparam("user_id"))
_HOLDER = select(_users.c.id, _users.c.name).where(_users.c.email == bindparam("email"))
_INSERT = insert(_users).returning(*_users.c)


class UserExists(Conflict):
    def __init__(self, user_id: int) -> None:
        super().__init__(f"User {user_id} exists: only a deleted user can be restored.")


class EmailTakenSince(Conflict):
    """The deleted user's email belongs to another user now."""

    def __init__(self, email: str, holder: Row[Any, Any] | None) -> None:
        whom = f"{holder.name} (user {holder.id})" if holder is not None else "another user"
        message = (
            f"The email {email} was taken since the deletion: it belongs to {whom} now. "
            "Change theirs first, then restore."
        )
        super().__init__(message)
        self.errors = {"email": [message]}


def last_state(user_id: int) -> dict[str, Any] | None:
    """The fields of a deleted user as their last deletion recorded them, or None
    if the history has no deletion of this id."""
    changes = Session().scalar(_LAST_DELETE, {"user_id": user_id})
    if changes is None:
        return None
    return {field: old for field, (old, _new) in changes.items() if field in audit.AUDITED}


def restore_user(user_id: int) -> Row[Any]:
    """Write the deleted user `user_id` again, as last recorded, with a "restore" row
    in the history; commit and return the new row. UserExists (409) if the user
    is there, NotFound if never deleted, EmailTakenSince (409) if the email is
    another user's now."""
    session = Session()
    if session.scalar(_EXISTS, {"user_id": user_id}) is not None:
        raise UserExists(user_id)
    state = last_state(user_id)
    if state is None:
        raise NotFound(f"There is no deleted user with id {user_id} to restore.")
    values = {"name": state["name"], "email": state["email"], "role": state.get("role") or "member"}
    holder = session.execute(_HOLDER, {"email": values["email"]}).one_or_none()
    if holder is not None:
        raise EmailTakenSince(values["email"], holder)
    now = utcnow()
    history = session.execute(_HISTORY, {"user_id": user_id}).one()
    row = {
        "id": user_id,
        **values,
        "created_at": history.first_created or now,
        "updated_at": now,
        "version": history.rows + 1,
        "password_hash": None,
    }
    try:
        user = session.execute(_INSERT, row).one()
        audit.record(session, "restore", [(user_id, {name: [None, values[name]] for name in audit.AUDITED})], at=now)
        session.commit()
    except IntegrityError as error:  # a concurrent restore, or a create that took the email
        session.rollback()
        if "email" in str(error.orig):
            raise EmailTakenSince(values["email"], None) from error
        raise UserExists(user_id) from error
    return user
