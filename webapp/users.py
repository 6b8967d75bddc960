"""User operations shared by the JSON API and the HTML pages.

Each function is one unit of work: it uses the thread's session through
`Session()`, commits when it succeeds, and leaves a failed transaction for the
teardown hook to roll back. Input arrives already validated by the schema.
"""

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import Conflict, NotFound

from .db import Session
from .models import User

EMAIL_TAKEN = "A user with this email address already exists."


class EmailTaken(Conflict):
    """The unique index on users.email refused a write."""

    description = EMAIL_TAKEN
    errors = {"email": [EMAIL_TAKEN]}


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
    query = select(User)
    if q:
        query = query.where(or_(User.name.icontains(q, autoescape=True), User.email.icontains(q, autoescape=True)))
    session = Session()
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    items = session.scalars(query.order_by(User.id).limit(per_page).offset((page - 1) * per_page)).all()
    return Page(items=list(items), page=page, per_page=per_page, total=total or 0)


def get_user(user_id: int) -> User:
    """The user with this id, or 404."""
    user = Session().get(User, user_id)
    if user is None:
        raise NotFound(f"There is no user with id {user_id}.")
    return user


def create_user(fields: dict[str, Any]) -> User:
    """Insert a user and commit."""
    user = User(**fields)
    Session().add(user)
    _commit()
    return user


def update_user(user_id: int, fields: dict[str, Any]) -> User:
    """Change the given fields of a user and commit."""
    user = get_user(user_id)
    for name, value in fields.items():
        setattr(user, name, value)
    _commit()
    return user


def delete_user(user_id: int) -> None:
    """Delete a user and commit."""
    session = Session()
    session.delete(get_user(user_id))
    _commit()


def _commit() -> None:
    session = Session()
    try:
        session.commit()
    except IntegrityError as error:
        session.rollback()
        if _is_email_conflict(error):
            raise EmailTaken() from error
        raise


def _is_email_conflict(error: IntegrityError) -> bool:
    message = str(error.orig)
    # PostgreSQL names the index; SQLite names the column.
    return "uq_users_email" in message or "users.email" in message
