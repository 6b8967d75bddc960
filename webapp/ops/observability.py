"""What every request reports about itself.

* `X-Request-ID`: the caller's or a fresh one (request_id.py), on every response;
* `Server-Timing: db;dur=<ms>;desc="<n> queries"`: the statements this request
  sent and the time spent in them, counted by a statement hook; with read replicas
  configured, `desc="<n> queries on replica"` (or `on primary`) names where they went;
* one log line, on the `webapp.requests` logger: request id, method, path, status,
  duration and query count, so that a client's report can be found in the logs;
* the request counter and latency histogram of metrics.py;
* and, on PostgreSQL, what each connection waits for, for the statement deadline
  (deadline.py): the same two hooks that time the statements record it.

All of it is one WSGI middleware around the Flask app rather than Flask hooks: it
sees every request, those Flask refuses before any hook runs included, and costs a
fraction of what a chain of before/after_request hooks does on every request. A
request is reported when its response is ready to send (a streamed body's
statements are not counted: its headers are gone by then).
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from flask import Flask, has_request_context, request
from sqlalchemy import event

from .. import db, deadline, replicas, statements
from . import metrics, request_id

log = logging.getLogger("webapp.requests")

StartResponse = Callable[..., Any]


@dataclass
class RequestStats:
    started: float
    queries: int = 0
    db_seconds: float = 0.0
    statement_started: float = 0.0
    status: int = 500  # until the app starts its response
    endpoint: str | None = None
    answered_queries: int = 0  # as Server-Timing told the client (teardown's savepoint release is not)
    targets: set[str] | None = None  # with replicas: where the statements went


# The request this thread is serving, for the statement hooks.
_current = threading.local()


def init_app(app: Flask) -> None:
    """Time and count every request of `app` and the statements it sends."""
    binds = db.binds(app)
    for engine, target in binds.engines:
        started, ended = _statement_hooks(target if binds.replicas is not None else None, deadline.of(engine))
        hooks = statements.of(engine)
        # First, so that a statement's time includes what other hooks do before it
        # (on SQLite, waiting for the write lock: webapp/engine.py).
        hooks.before.insert(0, started)
        hooks.after.append(ended)
        event.listen(engine, "handle_error", _statement_ended)  # a failed statement took time too
    app.wsgi_app = RequestReport(app.wsgi_app)  # type: ignore[method-assign]


class RequestReport:
    """The WSGI middleware: tags, times, counts and reports each request."""

    def __init__(self, wsgi_app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]]) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        stats = RequestStats(started=time.perf_counter())
        rid = request_id.assign(environ)
        outer = getattr(_current, "stats", None)  # a request made from inside a request (tests)
        _current.stats = stats

        def report_start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            stats.status, stats.answered_queries = int(status[:3]), stats.queries
            # Flask starts the response inside the request context, which ends before the report.
            stats.endpoint = request.endpoint if has_request_context() else None
            headers.append((request_id.HEADER, rid))
            desc = f"{stats.queries} queries"
            if stats.targets:
                desc += " on " + " and ".join(sorted(stats.targets))
            headers.append(("Server-Timing", f'db;dur={stats.db_seconds * 1000:.1f};desc="{desc}"'))
            return start_response(status, headers, exc_info)

        try:
            return self.wsgi_app(environ, report_start)
        finally:  # an exception let through (debug, tests) is reported as the 500 it becomes
            _current.stats = outer
            self.report(environ, stats, rid)

    @staticmethod
    def report(environ: dict[str, Any], stats: RequestStats, rid: str) -> None:
        seconds = time.perf_counter() - stats.started
        method = environ.get("REQUEST_METHOD", "")
        metrics.observe_request(stats.endpoint or "unmatched", method, stats.status, seconds)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "request_id=%s method=%s path=%s status=%d duration_ms=%.1f queries=%d",
                rid,
                quote(method),
                quote(environ.get("PATH_INFO", "").encode("latin-1")),
                stats.status,
                seconds * 1000,
                stats.answered_queries,
            )


def _statement_hooks(target: str | None, watched: deadline.Watch | None) -> tuple[statements.Hook, statements.Hook]:
    """The before and after hooks of one engine's statements (webapp/statements.py):
    each statement counted and timed for its request; with replicas, `target` says
    where it went; on PostgreSQL, `watched` is told what the connection waits for
    (the deadline's watchdog reads it)."""
    waiting = watched.waiting if watched is not None else None
    acquire, release = deadline.lock.acquire, deadline.lock.release  # half the cost of `with`, per statement

    def started(cursor: Any, context: Any) -> None:
        now = time.perf_counter()
        if waiting is not None:
            waiting[cursor.connection] = now
        if (target is not None and context.execution_options.get(replicas.CHECK)) or statements.is_setup(context):
            return  # the replica checker's and SQLAlchemy's own first-connect checks belong to no request
        stats = getattr(_current, "stats", None)
        if stats is not None:
            stats.queries += 1
            stats.statement_started = now
            if target is not None:
                if stats.targets is None:
                    stats.targets = set()
                stats.targets.add(target)

    def ended(cursor: Any, context: Any) -> None:
        if waiting is not None:
            acquire()  # after this the connection may go back to the pool: see deadline.py
            try:
                waiting.pop(cursor.connection, None)
            finally:
                release()
        _statement_ended()

    return started, ended


def _statement_ended(*args: Any) -> None:
    stats = getattr(_current, "stats", None)
    if stats is not None and stats.statement_started:
        stats.db_seconds += time.perf_counter() - stats.statement_started
        stats.statement_started = 0.0
