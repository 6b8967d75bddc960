"""Watching sessions live and die: SESSION_EVENTS_LOG=1 logs the begin, commit,
rollback and removal of every session, with its thread and request id."""

import logging
import threading
from typing import Any

from flask import Flask
from sqlalchemy import event

from .. import db
from . import request_id

log = logging.getLogger("webapp.session")


def init_app(app: Flask) -> None:
    """Log `app`'s session events if SESSION_EVENTS_LOG says so (once per process)."""
    if not app.config["SESSION_EVENTS_LOG"]:
        return
    log.setLevel(logging.INFO)
    if not log.hasHandlers():  # under gunicorn, the "webapp" logger's handler serves
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        log.addHandler(handler)
    for event_name, listener in _EVENTS.items():
        if not event.contains(db.AppSession, event_name, listener):
            event.listen(db.AppSession, event_name, listener)
    if _removing not in db.session_removing:
        db.session_removing.append(_removing)


def _log(name: str, session: Any) -> None:
    # Kept on the session: teardown, which removes it, runs after the request context has gone.
    rid = session.info.setdefault("request_id", request_id.current())
    log.info("%-8s thread=%s request=%s", name, threading.current_thread().name, rid or "-")


def _began(session: Any, *args: Any) -> None:
    _log("begin", session)


def _committed(session: Any, *args: Any) -> None:
    _log("commit", session)


def _rolled_back(session: Any, *args: Any) -> None:
    _log("rollback", session)


def _removing(session: Any) -> None:
    _log("remove", session)


_EVENTS = {"after_begin": _began, "after_commit": _committed, "after_rollback": _rolled_back}
