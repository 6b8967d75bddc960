"""The session lifecycle, in one place: build, bind, remove.

* `init_app(app)` builds the app's engines (webapp/engine.py) and keeps them in
  `app.extensions`. Nothing is bound globally, so any number of apps live in one
  process (tests, a CLI beside a server, two tenants) without sharing a database.
* `Session()` returns the session of this thread for the current app, made on
  first use. It binds its statements to that app's engine (`get_bind`). Where no
  application context exists it fails, saying what to do.
* The application context that opened the session removes it when it ends:
  rolled back unless committed, its connection back in the pool, forgotten. For a
  served request that is the end of the request, streaming included. A context
  pushed inside it (`with app.app_context():` in a view) shares the session and
  leaves it alone.

Two choices of bind make a request cheaper without changing what it means:
requests with a safe method (GET, HEAD, OPTIONS) read on an autocommit
connection, no BEGIN and no ROLLBACK around their statements; and a request that
lost its connection before it sent a COMMIT, or whose transaction PostgreSQL
aborted to break a deadlock, is run once more (`_retry_once`), unless the link
went silent past the statement deadline (webapp/deadline.py).
README.md, "The session lifecycle", has the why.

With read replicas (webapp/replicas.py) such a request reads on one healthy
replica that has replayed what the client last wrote, the same one for the whole
request, and everything else (flushes, `SELECT ... FOR UPDATE`, unsafe methods,
CLI commands, migrations) goes to the primary: a unit of work never mixes the two.
"""

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, has_app_context, has_request_context, request
from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import scoped_session, sessionmaker
from sqlalchemy.util import ScopedRegistry

from . import replicas as replicas_
from .deadline import StatementDeadlinePassed
from .engine import autocommit_engine, create_engine_from_config
from .replicas import Replica, Replicas

log = logging.getLogger(__name__)

_EXTENSION = "webapp.db"
_OWNER = "_webapp_db_session"  # in g: the session this application context opened
_RETRIED = "_webapp_db_retried"
_COMMIT_SENT = "_webapp_db_commit_sent"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Bodies Flask parses and keeps, so a request can be run again after it read them;
# a stream read as it arrives (a CSV upload) cannot be read twice.
_REPLAYABLE_BODIES = frozenset({"", "application/json", "application/x-www-form-urlencoded"})

# Observers (webapp/ops) of sessions opened and about to be removed: plain lists of
# callables taking the session, since they run on every request.
session_opened: list[Callable[[OrmSession], None]] = []
session_removing: list[Callable[[OrmSession], None]] = []

NO_CONTEXT = (
    "Session() was called outside an application context, so there is no app to "
    "bind it to and no teardown to remove it. Wrap the code in `with app.app_context():` "
    "(CLI commands and requests already run inside one)."
)


class Binds:
    """What the sessions of one app connect to. `init_app` keeps one per app."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine  # transactions: everything that may write
        # Reads of read-only requests: the same pool, no BEGIN/ROLLBACK around them.
        self.reads = autocommit_engine(engine)
        self.replicas: Replicas | None = None  # no DATABASE_REPLICA_URLS: the primary reads too
        self.override: Connection | None = None  # tests: every session joins this connection's transaction

    @property
    def engines(self) -> list[tuple[Engine, str]]:
        """Every engine (pool) of the app, with its target: "primary" or "replica"."""
        replicas = self.replicas.all if self.replicas is not None else []
        return [(self.engine, "primary"), *((replica.engine, "replica") for replica in replicas)]


class AppSession(OrmSession):
    """A session bound to the app it was opened for, read-only in safe-method requests,
    which read on a replica when one is healthy and has caught up with the client."""

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        binds: Binds = (app or current_app).extensions[_EXTENSION]
        # Decided once, when the request opens its session: a GET never writes.
        self.read_only = has_request_context() and request.method in SAFE_METHODS
        self.replica: Replica | None = None
        self.primary_reads = binds.reads
        if binds.override is not None:
            options.setdefault("join_transaction_mode", "create_savepoint")
            self.bind_for_all: Engine | Connection = binds.override
        elif not self.read_only:
            self.bind_for_all = binds.engine
        else:
            # One replica for the whole request, so that its statements see one history;
            # none when the client's last write is not there yet (or it sent nonsense).
            if binds.replicas is not None and (after := replicas_.required_lsn(binds.replicas)) is not None:
                self.replica = binds.replicas.pick(after)
            self.bind_for_all = self.replica.reads if self.replica is not None else binds.reads
        super().__init__(**options)

    @property
    def target(self) -> str:
        """Where this session's statements go: "primary" or "replica"."""
        return "primary" if self.replica is None else "replica"

    def get_bind(self, mapper: Any = None, clause: Any = None, **kwargs: Any) -> Engine | Connection:
        if self.replica is not None and getattr(clause, "_for_update_arg", None) is not None:
            return self.primary_reads  # a replica cannot lock rows: only the primary has them
        return self.bind_for_all


class _PerThreadPerApp(ScopedRegistry[AppSession]):
    """scoped_session's registry: one session per thread and per app.

    A thread-local like scoped_session's default, holding a session per app, so a
    context of app B pushed inside one of app A never gets A's session. Called
    outside an application context, it raises NO_CONTEXT instead of making a
    session that no teardown would ever remove.
    """

    def __init__(self, createfunc: Callable[[], AppSession]) -> None:
        self.createfunc = createfunc
        self.local = threading.local()

    def _sessions(self) -> dict[Flask, AppSession]:
        try:
            sessions: dict[Flask, AppSession] = self.local.sessions
        except AttributeError:
            sessions = self.local.sessions = {}
        return sessions

    def __call__(self) -> AppSession:
        app = _current_app()
        sessions = self._sessions()
        session = sessions.get(app)
        if session is None:
            session = sessions[app] = self.createfunc(app=app)  # type: ignore[call-arg]
            setattr(g, _OWNER, session)  # this context opened it: its teardown removes it
            for observer in session_opened:
                observer(session)
        return session

    def has(self) -> bool:
        return has_app_context() and _current_app() in self._sessions()

    def set(self, obj: AppSession) -> None:
        self._sessions()[_current_app()] = obj
        setattr(g, _OWNER, obj)

    def clear(self) -> None:
        if has_app_context():
            self._sessions().pop(_current_app(), None)


def _current_app() -> Flask:
    try:
        return current_app._get_current_object()  # type: ignore[attr-defined,no-any-return]
    except RuntimeError:  # no application context
        raise RuntimeError(NO_CONTEXT) from None


# The registry. Session() returns this thread's session for the current app;
# Session.remove() closes it and forgets it. expire_on_commit=False lets a view
# serialize what it just committed without a second round trip to reload it.
Session: scoped_session[AppSession] = scoped_session(sessionmaker(class_=AppSession, expire_on_commit=False))
Session.registry = _PerThreadPerApp(Session.session_factory)


@event.listens_for(AppSession, "before_flush")
def _refuse_writes_when_read_only(session: AppSession, flush_context: Any, instances: Any) -> None:
    # Its statements autocommit one by one: a write here would not be one unit of work.
    if session.read_only:
        raise RuntimeError(f"A {request.method} request only reads: write in a POST, PUT, PATCH or DELETE.")


def init_app(app: Flask) -> None:
    """Build `app`'s engine, and remove each session when the context that opened it ends."""
    engine = create_engine_from_config(app.config, app.instance_path)
    app_binds = app.extensions[_EXTENSION] = Binds(engine)
    app_binds.replicas = replicas_.from_config(app, app_binds.reads)
    _note_commits(engine)
    if app_binds.replicas is not None:
        app.after_request(_stamp_writes)
    app.teardown_appcontext(remove_session)
    app.preprocess_request = _retry_once(app.preprocess_request)  # type: ignore[method-assign]
    app.dispatch_request = _retry_once(app.dispatch_request)  # type: ignore[method-assign]


def _stamp_writes(response: Response) -> Response:
    """A request that committed tells its client where its write is (read-your-writes)."""
    if _COMMIT_SENT in g and request.method not in SAFE_METHODS:
        replicas_.stamp(response, binds().replicas, pages=request.blueprint == "pages")  # type: ignore[arg-type]
    return response


def get_engine(app: Flask | None = None) -> Engine:
    """The engine of `app` (the current app by default)."""
    return binds(app).engine


def binds(app: Flask | None = None) -> Binds:
    return (app or current_app).extensions[_EXTENSION]  # type: ignore[no-any-return]


def remove_session(exc: BaseException | None = None) -> None:
    """Teardown: close this thread's session if this context is the one that opened it."""
    owned = g.pop(_OWNER, None)
    if owned is not None and Session.registry.has() and Session.registry() is owned:
        _discard()


def _discard() -> None:
    session = Session.registry()
    for observer in session_removing:
        observer(session)
    try:
        session.close()
    except DBAPIError as error:
        # Closing rolls back, which fails when the database went away after the
        # last statement (a restart): nothing is left to roll back.
        if not error.connection_invalidated:
            raise
        log.warning("session closed on a lost connection: %s", error)
    finally:
        # Forgotten in any case, or the thread's next request would inherit it.
        Session.registry.clear()


# -- one more try after a lost connection or a deadlock ---------------------------
#
# A connection can die in the pool (a database restart, an idle cut-off) or under
# a request. If no COMMIT was sent, the server rolled the request's transaction
# back and nothing of it remains, so running the request again is safe whatever
# its method. It gets a fresh session, on a fresh connection, once. The same holds
# for a transaction the server aborted as a deadlock's or a serialization
# conflict's victim; a second one in the same request is a 503.

Step = TypeVar("Step", bound=Callable[..., Any])


def _retry_once(step: Step) -> Step:
    @functools.wraps(step)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return step(*args, **kwargs)
        except DBAPIError as error:
            if not _may_run_again(error):
                raise
            log.warning(
                "lost the database connection or a deadlock before any commit, running %s %s again: %s",
                request.method,
                request.path,
                error.orig,
            )
        g.setdefault(_RETRIED, True)
        if Session.registry.has():
            _discard()
        return step(*args, **kwargs)

    return run  # type: ignore[return-value]


def _note_commits(engine: Engine) -> None:
    """Mark the request whose COMMIT is about to be sent: from there on, a lost
    connection leaves the outcome unknown, and it gets no second try. The dialect's
    do_commit is wrapped, as SQLAlchemy's "commit" event would make every connection
    of the engine pay for Connection events (webapp/statements.py)."""
    commit = engine.dialect.do_commit

    def do_commit(dbapi_connection: Any) -> None:
        if has_app_context():
            g.setdefault(_COMMIT_SENT, True)
        commit(dbapi_connection)

    engine.dialect.do_commit = do_commit  # type: ignore[method-assign]


# SQLSTATEs of a transaction PostgreSQL aborted to break a deadlock or a
# serialization conflict: rolled back whole, like one on a lost connection, and
# the same request run again most likely gets through.
_LOST_A_RACE = frozenset({"40P01", "40001"})


def _may_run_again(error: DBAPIError) -> bool:
    return (
        (error.connection_invalidated or getattr(error.orig, "pgcode", None) in _LOST_A_RACE)
        # A link that stayed silent past the deadline would most likely stay silent
        # again, and the client has waited long enough: a 503 now.
        and not isinstance(error, StatementDeadlinePassed)
        and _RETRIED not in g
        and _COMMIT_SENT not in g
        and request.mimetype in _REPLAYABLE_BODIES
    )
