"""What every request reports about itself.

* `Server-Timing: db;dur=<ms>;desc="<n> queries"`: the statements this request
  sent and the time spent in them, counted by an engine event;
* one log line, on the `webapp.requests` logger: request id (webapp/request_id.py,
  which also echoes it as X-Request-ID), method, path, status, duration and query
  count, so that a client's report can be found in the logs;
* the request counter and latency histogram of webapp/metrics.py.
"""

import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from flask import Flask, Response, g, has_app_context, request
from sqlalchemy import event

from .. import db
from . import metrics, request_id

log = logging.getLogger("webapp.requests")


@dataclass
class RequestStats:
    started: float
    queries: int = 0
    db_seconds: float = 0.0
    statement_started: float = 0.0


def init_app(app: Flask) -> None:
    """Time and count every request of `app` and the statements it sends."""
    engine = db.get_engine(app)
    event.listen(engine, "before_cursor_execute", _statement_started)
    event.listen(engine, "after_cursor_execute", _statement_ended)
    event.listen(engine, "handle_error", _statement_ended)  # a failed statement took time too
    app.before_request(_start_request)
    app.after_request(_report_request)


def _start_request() -> None:
    g.request_stats = RequestStats(started=time.perf_counter())


def _report_request(response: Response) -> Response:
    stats = _current_stats()
    if stats is None:  # a request stopped before our before_request ran
        _start_request()
        stats = g.request_stats
    seconds = time.perf_counter() - stats.started
    endpoint = request.endpoint or "unmatched"
    response.headers.add("Server-Timing", f'db;dur={stats.db_seconds * 1000:.1f};desc="{stats.queries} queries"')
    metrics.observe_request(endpoint, request.method, response.status_code, seconds)
    log.info(
        "request_id=%s method=%s path=%s status=%d duration_ms=%.1f queries=%d",
        request_id.current(),
        request.method,
        quote(request.path),
        response.status_code,
        seconds * 1000,
        stats.queries,
    )
    return response


def _current_stats() -> RequestStats | None:
    return g.get("request_stats") if has_app_context() else None


def _statement_started(*args: Any) -> None:
    stats = _current_stats()
    if stats is not None:
        stats.queries += 1
        stats.statement_started = time.perf_counter()


def _statement_ended(*args: Any) -> None:
    stats = _current_stats()
    if stats is not None and stats.statement_started:
        stats.db_seconds += time.perf_counter() - stats.statement_started
        stats.statement_started = 0.0
