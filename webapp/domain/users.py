"""User operations shared by the JSON API and the HTML pages.

Each function is one unit of work: it uses the thread's session through
`Session()`, commits when it succeeds, and leaves a failed transaction for the
teardown hook to roll back. Input arrives already validated by the schema.
"""

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import Select, bindparam, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import Conflict, NotFound, PreconditionFailed

from ..db import Session
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
    """One page of a list. `page` is None for a page reached by cursor; `total` is
    exact unless `total_capped`, in which case there are more than `total`."""

    items: list[Any]
    page: int | None
    per_page: int
    total: int
    total_capped: bool = False
    next_after: int | None = None  # the id the next page starts after; None on the last page

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_next(self) -> bool:
        return self.next_after is not None


def list_users(per_page: int, q: str = "", page: int = 1, after: int | None = None) -> Page:
    """One page of users in id order, optionally filtered by a name or email fragment.

    The page is either the `page`-th (OFFSET: fine for shallow pages) or the one
    after the user with id `after` (keyset: the same cost at any depth). Either
    way it costs two statements: a capped count and the page itself.
    """
    query = matching(select(User), q)
    session = Session()
    total, capped = _capped_count(query)
    query = query.order_by(User.id).limit(per_page + 1)  # one more tells whether a next page exists
    if after is not None:
        query = query.where(User.id > after)
    else:
        query = query.offset((page - 1) * per_page)
    rows = session.scalars(query).all()
    items = list(rows[:per_page])
    next_after = items[-1].id if len(rows) > per_page else None
    return Page(
        items=items,
        page=page if after is None else None,
        per_page=per_page,
        total=total,
        total_capped=capped,
        next_after=next_after,
    )


def _capped_count(query) -> tuple[int, bool]:
    """How many rows `query` matches, counting no further than LIST_TOTAL_CAP + 1:
    (the count, False), or (the cap, True) when there are more. A COUNT(*) over a
    million rows on every page would make every page as slow as the table is big."""
    cap = current_app.config["LIST_TOTAL_CAP"]
    limited = query.with_only_columns(User.id).limit(cap + 1).subquery()
    count = Session().scalar(select(func.count()).select_from(limited)) or 0
    return (cap, True) if count > cap else (count, False)


# Built once: Session.get() builds and cache-keys a new SELECT on every call, a
# measurable share of a get-by-id request (make bench-profile).
_BY_ID = select(User).where(User.id == bindparam("user_id"))


def matching(query: Select, q: str) -> Select:
    """`query` narrowed to users whose name or email contains `q`, case-insensitively
    (ILIKE on PostgreSQL, which the trigram indexes on name and email serve)."""
    if not q:
        return query
    return query.where(or_(User.name.icontains(q, autoescape=True), User.email.icontains(q, autoescape=True)))


def get_user(user_id: int, for_update: bool = False) -> User:
    """The user with this id, or 404. `for_update` locks the row (on PostgreSQL) and
    re-reads it, so a version check that follows sees the latest committed version."""
    if for_update:
        user = Session().get(User, user_id, with_for_update=True, populate_existing=True)
    else:
        user = Session().scalars(_BY_ID, {"user_id": user_id}).one_or_none()
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


def delete_user(user_id: int, versions: Collection[int] | None = None) -> User:
    """Delete a user and commit; `versions` as for update_user. Returns the deleted user."""
    user = _current(user_id, versions)
    Session().delete(user)
    _commit()
    return user


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
