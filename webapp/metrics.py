"""Prometheus metrics and GET /metrics.

Under gunicorn every worker is a process of its own, so prometheus_client runs in
multiprocess mode: gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before anything
imports it, each worker writes its values to files there, and /metrics, whichever
worker answers it, adds up the files of all of them. Without that variable (tests,
`flask shell`) the metrics are this process's own.

The pool gauges are per worker (a `pid` label): each worker has its own pool.
"""

import os
import threading
from typing import Any

from flask import Blueprint, Flask, Response, appcontext_popped, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Engine, event

from . import db

# prometheus_client chose its storage when it was imported, by the same variable.
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ

REQUESTS = Counter("webapp_http_requests", "HTTP requests answered, by endpoint, method and status.",
                   ["endpoint", "method", "status"])
LATENCY = Histogram("webapp_http_request_duration_seconds", "Time to answer a request, by endpoint.",
                    ["endpoint", "method"])
POOL_SIZE = Gauge("webapp_db_pool_size", "Connections the pool keeps (pool_size).",
                  multiprocess_mode="liveall")
POOL_CHECKED_OUT = Gauge("webapp_db_pool_checked_out", "Connections in use by a request.",
                         multiprocess_mode="liveall")
POOL_OVERFLOW = Gauge("webapp_db_pool_overflow", "Connections open beyond pool_size (max_overflow).",
                      multiprocess_mode="liveall")
SESSIONS_OPENED = Counter("webapp_db_sessions_opened", "Sessions created by the Session() registry.")
SESSIONS_REMOVED = Counter("webapp_db_sessions_removed", "Sessions removed at the end of a request.")

bp = Blueprint("metrics", __name__)


def init_app(app: Flask) -> None:
    """Keep the pool gauges of `app`'s engine current, count sessions, serve /metrics."""
    gauges = PoolGauges(db.get_engine(app))
    # A checkout changes the pool before its event; a checkin only after its event,
    # so returns are read once the request's session has been removed.
    event.listen(gauges.engine, "checkout", gauges.refresh)
    event.listen(gauges.engine, "engine_disposed", gauges.refresh)  # post_fork, preloaded app
    appcontext_popped.connect(gauges.refresh, app, weak=False)
    db.session_opened.connect(_count_opened, weak=False)
    db.session_removed.connect(_count_removed, weak=False)
    app.register_blueprint(bp)


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    """Count one answered request and its duration."""
    REQUESTS.labels(endpoint, method, str(status)).inc()
    LATENCY.labels(endpoint, method).observe(seconds)


@bp.get("/metrics")
def metrics() -> Response:
    """Every worker's metrics, in the text format the scraper asks for."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encoder(registry), content_type=content_type)


class PoolGauges:
    """Sets the pool gauges from the engine's pool as it is now."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.lock = threading.Lock()  # read and write as one step, or a stale value may win
        self.refresh()

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        pool = self.engine.pool
        with self.lock:
            POOL_SIZE.set(pool.size())
            POOL_CHECKED_OUT.set(pool.checkedout())
            POOL_OVERFLOW.set(max(pool.overflow(), 0))


def _count_opened(sender: Any, **extra: Any) -> None:
    SESSIONS_OPENED.inc()


def _count_removed(sender: Any, **extra: Any) -> None:
    SESSIONS_REMOVED.inc()
