"""Hooks around every statement an engine sends, for the app's own bookkeeping.

SQLAlchemy's before_cursor_execute and after_cursor_execute are Connection events,
and a Connection event listened for on an engine costs every connection the
engine hands out, not only its statements: each connection joins the engine's
listeners to its own and builds a listener collection for every event it passes
(connect, begin, execute, cursor execute, rollback), about 140 Python calls of a
get-by-id here, whichever events are listened for (docs/benchmarks.md). Dialect
events belong to the engine's dialect and are looked up on it directly: one
`do_execute` listener (and its executemany and no-parameters twins) runs the hooks
registered for the engine around the driver's call. So the app listens for no
Connection event at all; the COMMIT it needs to know about is the dialect's
do_commit, wrapped (webapp/db.py).

A hook is called with the DBAPI cursor and SQLAlchemy's execution context:
`before` hooks in order just before the statement goes to the driver, `after`
hooks once it returned. A statement that fails is reported by the dialect's
handle_error event, as before. Returning True from a do_execute listener ends
SQLAlchemy's loop over them, so these must stay the engine's only ones.

Unlike Connection events, dialect events also see the checks SQLAlchemy runs on
an engine's first connection (the server's version and settings): `is_setup`
tells them apart, for the hooks that count a request's statements.
"""

import threading
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event

Hook = Callable[[Any, Any], None]


class Hooks:
    """What runs around each statement of one engine (and of its execution_options copies)."""

    def __init__(self) -> None:
        self.before: list[Hook] = []
        self.after: list[Hook] = []


_lock = threading.Lock()
_by_dialect: "weakref.WeakKeyDictionary[Any, Hooks]" = weakref.WeakKeyDictionary()


def is_setup(context: Any) -> bool:
    """Whether the statement is one of SQLAlchemy's first-connect checks, which run
    on a connection of its own with autobegin off (a private flag: no public one says so)."""
    return context.root_connection._allow_autobegin is False


def of(engine: Engine) -> Hooks:
    """The hooks of `engine`, listened for on its dialect the first time they are asked for."""
    with _lock:
        hooks = _by_dialect.get(engine.dialect)
        if hooks is None:
            hooks = _by_dialect[engine.dialect] = Hooks()
            _listen(engine, hooks)
    return hooks


def _listen(engine: Engine, hooks: Hooks) -> None:
    dialect, before, after = engine.dialect, hooks.before, hooks.after

    def sending(method: str) -> Callable[..., bool]:
        # The listener of the dialect event of the same name: (cursor, statement,
        # [parameters,] context), the statement sent by the dialect's own method.
        def send(cursor: Any, *rest: Any) -> bool:
            context = rest[-1]
            for hook in before:
                hook(cursor, context)
            getattr(dialect, method)(cursor, *rest)
            for hook in after:
                hook(cursor, context)
            return True  # sent: SQLAlchemy sends nothing more

        return send

    for method in ("do_execute", "do_executemany", "do_execute_no_params"):
        event.listen(engine, method, sending(method))
