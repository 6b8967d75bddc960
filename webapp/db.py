"""The one owner of the database session lifecycle.

Request code calls `Session()` wherever it needs the database and gets the session
of the current thread; nothing is passed around. `init_app` wires the rest:

* the engine is built once per process from the app's config;
* the session is removed (closed: its transaction rolled back unless committed, its
  connection returned to the pool) when the thread's outermost application context
  ends, which for a served request is the end of the request, streaming included.

Read README.md, "The session lifecycle", for the why.
"""

import logging
import threading
from typing import Any

from blinker import Namespace
from flask import Flask, appcontext_popped, appcontext_pushed, current_app
from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import scoped_session, sessionmaker

from . import request_id
from .engine import create_engine_from_config

log = logging.getLogger(__name__)

# Observers (webapp/metrics.py) hear of each session opened and removed.
_signals = Namespace()
session_opened = _signals.signal("session-opened")
session_removed = _signals.signal("session-removed")


class _AnnouncedSession(OrmSession):
    """A Session that announces its creation, so sessions opened can be counted."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        session_opened.send(self)


# The thread-local registry. Calling Session() returns this thread's session,
# creating it on first use; Session.remove() closes it and forgets it.
# expire_on_commit=False lets a view serialize what it just committed without
# opening a second transaction to reload it.
Session = scoped_session(sessionmaker(class_=_AnnouncedSession, expire_on_commit=False))

_EXTENSION = "webapp.db"


def init_app(app: Flask) -> None:
    """Build the engine for `app`, bind the session registry to it, and own its removal."""
    engine = create_engine_from_config(app.config, app.instance_path)
    app.extensions[_EXTENSION] = engine
    Session.remove()  # a session made for an earlier app in this thread must not outlive it
    Session.configure(bind=engine)
    appcontext_pushed.connect(_enter_context, app)
    appcontext_popped.connect(_leave_context, app)
    app.teardown_appcontext(remove_session)
    if app.config["SESSION_EVENTS_LOG"]:
        _log_session_events()


def get_engine(app: Flask | None = None) -> Engine:
    """The engine of `app` (the current app by default)."""
    return (app or current_app).extensions[_EXTENSION]


# -- removal ----------------------------------------------------------------------
#
# Flask runs teardown_appcontext whenever *an* application context ends, and code
# inside a request may push a second one (`with app.app_context(): ...`). Removing
# on every teardown would close the request's session under its feet. So we count
# the application contexts open on this thread and remove only when the outermost
# one ends. Teardown runs before the popped signal, so that context still counts.

_depth = threading.local()


def _enter_context(sender: Flask, **extra: Any) -> None:
    _depth.value = getattr(_depth, "value", 0) + 1


def _leave_context(sender: Flask, **extra: Any) -> None:
    _depth.value -= 1


def remove_session(exc: BaseException | None = None) -> None:
    """Teardown hook: close this thread's session once its outermost context ends."""
    if getattr(_depth, "value", 0) > 1:
        return
    if Session.registry.has():
        _event("remove")
        session_removed.send(Session())
    try:
        Session.remove()
    except DBAPIError as error:
        # Closing rolls back, which fails when the database went away after the
        # request's last statement (a restart). The session must be forgotten all
        # the same, or the thread's next request would inherit it broken.
        Session.registry.clear()
        if not error.connection_invalidated:
            raise
        log.warning("session closed on a lost connection: %s", error)


# -- watching it happen (SESSION_EVENTS_LOG=1) ------------------------------------

events_log = logging.getLogger("webapp.session")
_events_on = False  # a logging config that enables webapp.* must not turn these on by itself


def _event(name: str) -> None:
    if _events_on and events_log.isEnabledFor(logging.INFO):
        events_log.info("%-8s thread=%s request=%s", name, threading.current_thread().name,
                        request_id.current() or "-")


def _log_session_events() -> None:
    """Log the life of every session: begin, commit, rollback, remove."""
    global _events_on
    _events_on = True
    events_log.setLevel(logging.INFO)
    if not events_log.hasHandlers():  # under gunicorn, the "webapp" logger's handler serves
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        events_log.addHandler(handler)
    for event_name, listener in _SESSION_EVENTS.items():
        if not event.contains(Session, event_name, listener):
            event.listen(Session, event_name, listener)


def _began(*args: Any) -> None:
    _event("begin")


def _committed(*args: Any) -> None:
    _event("commit")


def _rolled_back(*args: Any) -> None:
    _event("rollback")


_SESSION_EVENTS = {"after_begin": _began, "after_commit": _committed, "after_rollback": _rolled_back}
