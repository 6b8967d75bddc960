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
from sqlalchemy import ColumnElement, Insert, String, bindparam, event, func, insert, inspect, literal, null, select
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from ..db import Session
from ..ops import request_id
from .models import AuditEntry, User, UTCDateTime, audit_table, utcnow
from .paging import Page

AUDITED = ("name", "email")


def init_app(app: Flask) -> None:
    """Listen to every flush of the session registry (once per process)."""
    if not event.contains(Session, "after_flush", _after_flush):
        event.listen(Session, "after_flush", _after_flush)


# Built once: a statement made per call costs a cache-key computation per request.
INSERT = insert(audit_table)


def record(
    session: OrmSession, action: str, entries: Iterable[tuple[int, dict[str, list[Any]]]], at: datetime | None = None
) -> None:
    """Write audit rows for (user id, {field: [old, new]}) pairs in the session's transaction."""
    rows = [{"user_id": user_id, "action": action, "changes": changes} for user_id, changes in entries]
    if rows:
        at, rid = at or utcnow(), request_id.current()
        for row in rows:
            row["at"], row["request_id"] = at, rid
        session.connection().execute(INSERT, rows)


def inserted(dialect: str, users: Mapping[str, ColumnElement[Any]] | ReadOnlyColumnCollection[str, Any]) -> Insert:
    """INSERT INTO audit_log ... SELECT: an insert's audit row for each user that
    `users` (its id, name and email columns, from any FROM) yields, with the same
    {field: [null, value]} as `record` writes; `at` and `request_id` are bound later."""
    build_object, build_array = _json_builders(dialect)
    changes = build_object(*chain.from_iterable((literal(name), build_array(null(), users[name])) for name in AUDITED))
    rows = select(
        users["id"],
        literal("insert"),
        changes,
        bindparam("at", type_=UTCDateTime),
        bindparam("request_id", type_=String),
    )
    return INSERT.from_select(["user_id", "action", "changes", "at", "request_id"], rows)


def _json_builders(dialect: str) -> tuple[Any, Any]:
    """The SQL functions that build a JSON object and a JSON array, by their names there."""
    if dialect == "postgresql":
        return func.json_build_object, func.json_build_array
    return func.json_object, func.json_array


def _after_flush(session: OrmSession, flush_context: Any) -> None:
    # After the flush, ids exist; the new/dirty/deleted sets and attribute
    # history still describe what the flush just wrote.
    record(
        session,
        "insert",
        ((u.id, {f: [None, getattr(u, f)] for f in AUDITED}) for u in session.new if isinstance(u, User)),
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
    return changes


def history(user_id: int, page: int, per_page: int) -> Page:
    """One page of a user's audit rows, newest first. Paged by number only: the
    page has no next_after, so ask `page < pages` rather than `has_next`."""
    session = Session()
    where = AuditEntry.user_id == user_id
    total = session.scalar(select(func.count()).select_from(AuditEntry).where(where)) or 0
    entries = session.scalars(
        select(AuditEntry).where(where).order_by(AuditEntry.id.desc()).limit(per_page).offset((page - 1) * per_page)
    ).all()
    return Page(items=list(entries), page=page, per_page=per_page, total=total)
