"""User operations shared by the JSON API and the HTML pages.

Each function is one unit of work: it uses the thread's session through
`Session()`, commits when it succeeds, and leaves a failed transaction for the
teardown hook to roll back. Input arrives already validated by the schema.
"""

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import Conflict, NotFound, PreconditionFailed

from .db import Session
from .models import User

EMAIL_TAKEN = "A user with this email address already exists."


class EmailTaken(Conflict):
    """The unique index on users.email refused a write."""

    description = EMAIL_TAKEN
    errors = {"email": [EMAIL_TAKEN]}


class VersionMismatch(PreconditionFailed):
    """The caller's copy of the user is not the current version."""

    description = "The user has changed since you read it. Fetch it again and reapply your change."

    def __init__(self, current: User) -> None:
        super().__init__()
        self.current = current


class ChangedConcurrently(Conflict):
    """Another transaction changed or deleted the row between our read and our write."""

    description = "The user was changed by another request at the same moment. Try again."


@dataclass(frozen=True)
class Page:
    items: list[User]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def list_users(page: int, per_page: int, q: str = "") -> Page:
    """One page of users in id order, optionally filtered by a name or email fragment."""
    query = matching(select(User), q)
    session = Session()
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    items = session.scalars(query.order_by(User.id).limit(per_page).offset((page - 1) * per_page)).all()
    return Page(items=list(items), page=page, per_page=per_page, total=total or 0)


def matching(query: Select, q: str) -> Select:
    """`query` narrowed to users whose name or email contains `q`, case-insensitively."""
    if not q:
        return query
    return query.where(or_(User.name.icontains(q, autoescape=True), User.email.icontains(q, autoescape=True)))


def get_user(user_id: int, for_update: bool = False) -> User:
    """The user with this id, or 404. `for_update` locks the row (on PostgreSQL) and
    re-reads it, so a version check that follows sees the latest committed version."""
    user = Session().get(User, user_id, with_for_update=for_update or None, populate_existing=for_update)
    if user is None:
        raise NotFound(f"There is no user with id {user_id}.")
    return user


def create_user(fields: dict[str, Any]) -> User:
    """Insert a user and commit."""
    user = User(**fields)
    Session().add(user)
    _commit()
    return user


def update_user(user_id: int, fields: dict[str, Any], versions: Collection[int] | None = None) -> User:
    """Change the given fields of a user and commit.

    `versions`, when given, are the versions the caller's change was based on;
    if the current version is not among them nothing is changed (VersionMismatch).
    """
    user = _current(user_id, versions)
    for name, value in fields.items():
        setattr(user, name, value)
    _commit()
    return user


def delete_user(user_id: int, versions: Collection[int] | None = None) -> None:
    """Delete a user and commit; `versions` as for update_user."""
    Session().delete(_current(user_id, versions))
    _commit()


def _current(user_id: int, versions: Collection[int] | None) -> User:
    # The row lock makes concurrent writers queue here on PostgreSQL (SQLite's
    # BEGIN IMMEDIATE already queued them): the second one reads the first one's
    # committed version, so a conditional write fails cleanly rather than racing.
    user = get_user(user_id, for_update=True)
    if versions is not None and user.version not in versions:
        raise VersionMismatch(user)
    return user


def _commit() -> None:
    session = Session()
    try:
        session.commit()
    except IntegrityError as error:
        session.rollback()
        if _is_email_conflict(error):
            raise EmailTaken() from error
        raise
    except StaleDataError as error:
        # Only reachable if a row changed without our lock (say, by hand in psql).
        session.rollback()
        raise ChangedConcurrently() from error


def _is_email_conflict(error: IntegrityError) -> bool:
    message = str(error.orig)
    # PostgreSQL names the index; SQLite names the column.
    return "uq_users_email" in message or "users.email" in message
