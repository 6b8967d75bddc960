"""The history of every user: one audit row per insert, update and delete.

Rows are written in the same transaction as the change, so a rolled-back change
leaves no row and a committed one always has one: by a session event for changes
made through the unit of work (updates, deletes), and by the database itself for
inserts written as Core statements (`inserted`: a create, the bulk insert).
"""

from collections.abc import Iterable, Mapping
from datetime import datetime
from itertools import chain
from typing import Any

from flask import Flask
from sqlalchemy import (
    JSON,
    ColumnElement,
    Insert,
    Integer,
    Select,
    String,
    bindparam,
    event,
    func,
    insert,
    inspect,
    literal,
    null,
    select,
)
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from ..db import Session
from ..ops import request_id
from .accounts import acting_user_id
from .models import User, UTCDateTime, audit_table, users_table, utcnow
from .paging import Page

# The fields whose old and new values the history keeps. The password is not one:
# a change of it is recorded as {"password": [null, "changed"]}, never a hash.
AUDITED = ("name", "email", "role")


def init_app(app: Flask) -> None:
    """Listen to every flush of the session registry (once per process)."""
    if not event.contains(Session, "after_flush", _after_flush):
        event.listen(Session, "after_flush", _after_flush)


# Built once: a statement made per call costs a cache-key computation per request.
INSERT = insert(audit_table)


def record(
    session: OrmSession, action: str, entries: Iterable[tuple[int, dict[str, list[Any]]]], at: datetime | None = None
) -> None:
    """Write audit rows for (user id, {field: [old, new]}) pairs in the session's transaction,
    stamped `at` (now if not given)."""
    _write(session, [{"user_id": user_id, "action": action, "changes": changes} for user_id, changes in entries], at)


def _write(session: OrmSession, rows: list[dict[str, Any]], at: datetime | None = None) -> None:
    """Insert `rows` in one statement, each stamped with this request's id and actor,
    and with `at` (now if not given) unless it has a time of its own."""
    if rows:
        at, rid, actor = at or utcnow(), request_id.current(), acting_user_id()
        for row in rows:
            row.setdefault("at", at)
            row["request_id"], row["actor_id"] = rid, actor
        session.connection().execute(INSERT, rows)


def inserted(
    dialect: str,
    users: Mapping[str, ColumnElement[Any]] | ReadOnlyColumnCollection[str, Any],
    order_by: ColumnElement[Any] | None = None,
) -> Insert:
    """INSERT INTO audit_log ... SELECT: an insert's audit row for each user that
    `users` (its id and AUDITED columns, from any FROM) yields, in the order of
    `order_by` if given, with the same {field: [null, value]} as `record` writes;
    `at`, `request_id` and `actor_id` are bound later."""
    build_object, build_array = _json_builders(dialect)
    changes = build_object(*chain.from_iterable((literal(name), build_array(null(), users[name])) for name in AUDITED))
    rows = select(users["id"], literal("insert"), changes, *_STAMPS)
    return _insert_from(rows if order_by is None else rows.order_by(order_by))


def inserted_one(user_id: ColumnElement[Any]) -> Insert:
    """INSERT INTO audit_log ... SELECT: the insert's audit row of one user, its
    changes bound as the JSON parameter `changes`."""
    return _insert_from(select(user_id, literal("insert"), bindparam("changes", type_=JSON), *_STAMPS))


_STAMPS = (
    bindparam("at", type_=UTCDateTime),
    bindparam("request_id", type_=String),
    bindparam("actor_id", type_=Integer),
)


def _insert_from(rows: Select[Any]) -> Insert:
    return INSERT.from_select(["user_id", "action", "changes", "at", "request_id", "actor_id"], rows)


def stamps(at: datetime) -> dict[str, Any]:
    """The values of the bound stamps of `inserted`: when, which request, who."""
    return {"at": at, "request_id": request_id.current(), "actor_id": acting_user_id()}


def insert_changes(fields: Mapping[str, Any], password_set: bool) -> dict[str, list[Any]]:
    """{field: [null, value]} of a new user, as the history keeps them."""
    changes = {name: [None, fields[name]] for name in AUDITED}
    if password_set:
        changes["password"] = [None, "set"]
    return changes


def _json_builders(dialect: str) -> tuple[Any, Any]:
    """The SQL functions that build a JSON object and a JSON array, by their names there."""
    if dialect == "postgresql":
        return func.json_build_object, func.json_build_array
    return func.json_object, func.json_array


def _after_flush(session: OrmSession, flush_context: Any) -> None:
    # After the flush, ids exist; the new/dirty/deleted sets and attribute
    # history still describe what the flush just wrote. An insert's row is stamped
    # with the user's own created_at, as a create's is: a restore gives that back.
    _write(
        session,
        [
            {
                "user_id": u.id,
                "action": "insert",
                "changes": insert_changes({f: getattr(u, f) for f in AUDITED}, u.password_hash is not None),
                "at": u.created_at,
            }
            for u in session.new
            if isinstance(u, User)
        ],
    )
    record(
        session, "update", ((u.id, changes) for u in session.dirty if isinstance(u, User) and (changes := _changes(u)))
    )
    record(
        session,
        "delete",
        ((u.id, {f: [getattr(u, f), None] for f in AUDITED}) for u in session.deleted if isinstance(u, User)),
    )


def _changes(user: User) -> dict[str, list[Any]]:
    state = inspect(user)
    changes = {}
    for name in AUDITED:
        history = state.attrs[name].history
        if history.has_changes():
            old = history.deleted[0] if history.deleted else None
            new = history.added[0] if history.added else None
            if old != new:
                changes[name] = [old, new]
    if state.attrs.password_hash.history.has_changes():
        changes["password"] = [None, "changed"]
    return changes


def history(user_id: int, page: int, per_page: int) -> Page:
    """One page of a user's audit rows, newest first, each with its actor's name
    (None for system work, or an actor deleted since). Paged by number only: the
    page has no next_after, so ask `page < pages` rather than `has_next`."""
    session = Session()
    where = audit_table.c.user_id == user_id
    total = session.scalar(select(func.count()).select_from(audit_table).where(where)) or 0
    entries = session.execute(
        select(*audit_table.c, users_table.c.name.label("actor_name"))
        .outerjoin(users_table, users_table.c.id == audit_table.c.actor_id)
        .where(where)
        .order_by(audit_table.c.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    return Page(items=list(entries), page=page, per_page=per_page, total=total)
