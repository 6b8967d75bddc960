"""User operations shared by the JSON API and the HTML pages.

Each function is one unit of work: it uses the thread's session through
`Session()`, commits when it succeeds, and leaves a failed transaction for the
teardown hook to roll back. Input arrives already validated by the schema.
"""

from collections.abc import Collection
from functools import cache
from typing import Any

from flask import current_app
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Executable,
    Row,
    Select,
    bindparam,
    func,
    insert,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import Conflict, NotFound, PreconditionFailed

from ..db import Session
from . import accounts, audit
from .models import User, UTCDateTime, users_table, utcnow
from .paging import Page

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


# Statements built once: a statement built per call costs its cache key per request.
_users = users_table
_BY_ID = select(User).where(User.id == bindparam("user_id"))
# Table columns only, the WHERE clause included: one ORM attribute would send the
# statement through the ORM's execution layer, a third of the cost of the read.
_ROW_BY_ID = select(*_users.c).where(_users.c.id == bindparam("user_id"))


def list_users(
    per_page: int,
    q: str = "",
    page: int = 1,
    after: int | None = None,
    sort: str = "id",
    after_key: Any = None,
) -> Page:
    """One page of users in `sort` order (schemas.SORTS), optionally filtered by a
    name or email fragment.

    The page is either the `page`-th (OFFSET: fine for shallow pages) or the one
    after the user with sort key `after_key` and id `after` (keyset: the same cost
    at any depth, for every sort). Either way it is one statement: the page, with
    the capped count beside it as a scalar subquery (its last column), so the two
    agree (one snapshot) and cost one round trip. Only a page past the end, which
    has no row to carry the count, asks for the count alone. Items are rows of the
    user's columns, not ORM objects: a list only shows them.
    """
    count, rows = _list_statements(bool(q), after is not None, sort)
    params = {
        "pattern": search_pattern(q),
        "cap": current_app.config["LIST_TOTAL_CAP"] + 1,
        "limit": per_page + 1,
        "after": after,
        "key": after_key,
        "offset": (page - 1) * per_page,
    }  # one more: is there a next?
    session = Session()
    found = session.execute(rows, params).all()
    if found:
        total = found[0][-1]
    elif after is None and page == 1:
        total = 0  # the first page is empty: nothing matches
    else:
        total = session.scalar(count, params) or 0
    items = found[:per_page]
    cap = params["cap"] - 1
    last = items[-1] if len(found) > per_page else None
    return Page(
        items=list(items),
        page=page if after is None else None,
        per_page=per_page,
        total=min(total, cap),
        total_capped=total > cap,
        next_after=last.id if last is not None else None,
        next_key=last._mapping[sort.lstrip("-")] if last is not None else None,
        sort=sort,
    )


def search_pattern(q: str) -> str:
    """The LIKE pattern for "contains `q`", with %, _ and the escape character / literal."""
    return "%" + q.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"


def matching(q: str) -> ColumnElement[bool]:
    """Users whose name or email contains the `pattern` parameter (search_pattern),
    case-insensitively: ILIKE on PostgreSQL, which the trigram indexes serve."""
    if not q:
        return true()
    pattern: BindParameter[str] = bindparam("pattern")
    return or_(_users.c.name.ilike(pattern, escape="/"), _users.c.email.ilike(pattern, escape="/"))


@cache
def _list_statements(searching: bool, by_cursor: bool, sort: str = "id") -> tuple[Select[Any], Select[Any]]:
    # Built once per shape, all values bound: a statement built per request costs
    # its construction and its cache key every time.
    where = matching("searching" if searching else "")
    # Counting no further than LIST_TOTAL_CAP + 1 rows: a COUNT(*) over a million
    # rows on every page would make every page as slow as the table is big.
    count = select(func.count()).select_from(select(_users.c.id).where(where).limit(bindparam("cap")).subquery())
    # Uncorrelated: both databases run it once per statement, not once per row.
    total = count.scalar_subquery().label("total")
    rows = select(*_users.c, total).where(where).order_by(*_order(sort)).limit(bindparam("limit"))
    rows = rows.where(_after(sort)) if by_cursor else rows.offset(bindparam("offset"))
    return count, rows


def _order(sort: str) -> list[ColumnElement[Any]]:
    """ORDER BY of a sort: its column, then the id where the column has ties. The
    email is unique, so uq_users_email alone serves its order."""
    column = sort.lstrip("-")
    columns = [_users.c[column]] if column in ("id", "email") else [_users.c[column], _users.c.id]
    return [c.desc() for c in columns] if sort.startswith("-") else list(columns)


def _after(sort: str) -> ColumnElement[bool]:
    """The keyset condition "after (key, id)" in `sort` order, as a row-value
    comparison, which both databases answer from an index on (column, id)."""
    column = sort.lstrip("-")
    descending = sort.startswith("-")
    if column == "id":
        after: BindParameter[int] = bindparam("after")
        return _users.c.id < after if descending else _users.c.id > after
    key = bindparam("key", type_=_users.c[column].type)
    if column == "email":
        return _users.c.email < key if descending else _users.c.email > key
    keyset = tuple_(_users.c[column], _users.c.id)
    position = tuple_(key, bindparam("after"))
    return keyset < position if descending else keyset > position


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


def read_user(user_id: int) -> Row[Any]:
    """The user with this id as a row of its columns, or 404: for answering a read,
    where an ORM object would be built, tracked and thrown away unused."""
    row = Session().execute(_ROW_BY_ID, {"user_id": user_id}).one_or_none()
    if row is None:
        raise NotFound(f"There is no user with id {user_id}.")
    return row


def read_users(user_ids: Collection[int]) -> list[Row[Any]]:
    """The users with these ids that exist, in id order, as rows."""
    return list(Session().execute(_ROWS_BY_IDS, {"user_ids": list(user_ids)}))


_ROWS_BY_IDS = select(*_users.c).where(_users.c.id.in_(bindparam("user_ids", expanding=True))).order_by(_users.c.id)


def create_user(fields: dict[str, Any]) -> Row[Any]:
    """Insert a user with its audit row, commit, and return the new row.

    On PostgreSQL the user and its history are one statement (a data-modifying
    CTE), so a create is a single round trip between BEGIN and COMMIT; SQLite has
    no INSERT inside WITH and gets two. Either way no ORM object is built.
    """
    session = Session()
    dialect = session.get_bind().dialect.name
    password = fields.get("password")
    values = {"name": fields["name"], "email": fields["email"], "role": fields.get("role", "member")}
    changes = audit.insert_changes(values, password_set=password is not None)
    now = utcnow()
    params = {f"new_{name}": value for name, value in values.items()}
    params["new_password_hash"] = accounts.hash_password(password) if password is not None else None
    try:
        user = session.execute(
            _insert_one(dialect), {**params, "now": now, "changes": changes, **audit.stamps(now)}
        ).one()
        if dialect != "postgresql":
            audit.record(session, "insert", [(user.id, changes)], at=now)
        session.commit()
    except IntegrityError as error:
        session.rollback()
        if _is_email_conflict(error):
            raise EmailTaken() from error
        raise
    return user


@cache
def _insert_one(dialect: str) -> Executable:
    users = users_table
    now = bindparam("now", type_=UTCDateTime)
    new = (
        insert(users)
        .values(
            name=bindparam("new_name"),
            email=bindparam("new_email"),
            role=bindparam("new_role"),
            password_hash=bindparam("new_password_hash"),
            created_at=now,
            updated_at=now,
        )
        .returning(*users.c)
    )
    if dialect != "postgresql":
        return new
    created = new.cte("created")
    return select(*created.c).add_cte(audit.inserted_one(created.c.id).cte("logged"))


def update_user(user_id: int, fields: dict[str, Any], versions: Collection[int] | None = None) -> User:
    """Change the given fields of a user and commit; `password` is stored hashed.

    `versions`, when given, are the versions the caller's change was based on;
    if the current version is not among them nothing is changed (VersionMismatch).
    The last admin cannot become a member (LastAdmin, a 409).
    """
    user = _current(user_id, versions)
    fields = dict(fields)
    password = fields.pop("password", None)
    fields.pop("current_password", None)
    if user.role == "admin" and fields.get("role", "admin") != "admin":
        accounts.ensure_another_admin(user_id)
    for name, value in fields.items():
        setattr(user, name, value)
    if password is not None:
        user.password_hash = accounts.hash_password(password)
    _commit()
    return user


def delete_user(user_id: int, versions: Collection[int] | None = None) -> User:
    """Delete a user and commit; `versions` as for update_user. Returns the deleted
    user. The last admin cannot be deleted (LastAdmin, a 409)."""
    user = _current(user_id, versions)
    if user.role == "admin":
        accounts.ensure_another_admin(user_id)
    Session().delete(user)
    _commit()
    return user


def delete_users(user_ids: Collection[int]) -> list[User]:
    """Delete several users in one transaction and commit; each deletion is in the
    history. Ids that are not (or no longer) there are skipped; returns the users
    deleted. If that would leave no admin, nothing is deleted (LastAdmin)."""
    session = Session()
    # Locked in id order: two bulk deletes that overlap queue instead of deadlocking.
    found = list(session.scalars(_SELECTED, {"user_ids": list(user_ids)}))
    if any(user.role == "admin" for user in found):
        accounts.ensure_another_admin([user.id for user in found])
    for user in found:
        session.delete(user)
    _commit()
    return found


_SELECTED = (
    select(User)
    .where(User.id.in_(bindparam("user_ids", expanding=True)))
    .order_by(User.id)
    .with_for_update()
    .execution_options(populate_existing=True)
)


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
