"""Prometheus metrics and GET /metrics.

Under gunicorn every worker is a process of its own, so prometheus_client runs in
multiprocess mode: gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before anything
imports it, each worker writes its values to files there, and /metrics, whichever
worker answers it, adds up the files of all of them. Without that variable (tests,
`flask shell`) the metrics are this process's own.

Labels come from fixed sets (the app's endpoints, the standard methods), so no
client can grow the number of series. The pool gauges are per worker (a `pid`
label) and are read from the pool once a second, and by the worker that answers
/metrics right before it does: a request pays nothing for them.
"""

import os
import struct
import threading
import time
import weakref
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Engine
from werkzeug.exceptions import ServiceUnavailable

from .. import db, replicas, statements

# prometheus_client chose its storage when it was imported, by the same variable.
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ


class _Pid:
    """This process's id, asked of the kernel at start and after a fork only:
    prometheus_client otherwise calls getpid() on every update of every value."""

    def __init__(self) -> None:
        self.value = os.getpid()
        os.register_at_fork(after_in_child=self.refresh)

    def refresh(self) -> None:
        self.value = os.getpid()

    def __call__(self) -> int:
        return self.value


if MULTIPROCESS:  # before the metrics below are made, so that they use it
    values.ValueClass = values.MultiProcessValue(_Pid())  # type: ignore[no-untyped-call]
REFRESH_SECONDS = 1.0
READ_ATTEMPTS = 5  # /metrics reads the workers' files this often before a 503
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

REQUESTS = Counter(
    "webapp_http_requests", "HTTP requests answered, by endpoint, method and status.", ["endpoint", "method", "status"]
)
LATENCY = Histogram(
    "webapp_http_request_duration_seconds", "Time to answer a request, by endpoint.", ["endpoint", "method"]
)
POOL_SIZE = Gauge("webapp_db_pool_size", "Connections the pool keeps (pool_size).", multiprocess_mode="liveall")
POOL_CHECKED_OUT = Gauge("webapp_db_pool_checked_out", "Connections in use by a request.", multiprocess_mode="liveall")
POOL_OVERFLOW = Gauge(
    "webapp_db_pool_overflow", "Connections open beyond pool_size (max_overflow).", multiprocess_mode="liveall"
)
STATEMENTS = Counter("webapp_db_statements", "SQL statements sent, by target: primary or replica.", ["target"])
REPLICA_UP = Gauge(
    "webapp_db_replica_up",
    "1 while this worker reads on the replica, 0 while it leaves it out (down or lagging).",
    ["replica"],
    multiprocess_mode="liveall",
)
REPLICA_LAG = Gauge(
    "webapp_db_replica_lag_seconds",
    "How far the replica was behind the primary at this worker's last check (+Inf: unknown, down).",
    ["replica"],
    multiprocess_mode="liveall",
)
SESSIONS_OPENED = Counter("webapp_db_sessions_opened", "Sessions created by the Session() registry.")
SESSIONS_REMOVED = Counter("webapp_db_sessions_removed", "Sessions removed at the end of a request.")

bp = Blueprint("metrics", __name__)
_EXTENSION = "webapp.metrics"


def init_app(app: Flask) -> None:
    """Report `app`'s pool and sessions, and serve /metrics."""
    binds = db.binds(app)
    gauges = app.extensions[_EXTENSION] = PoolGauges(binds.engine, binds.replicas)
    for engine, target in binds.engines:
        _count_statements(engine, target)
    _refresher.watch(gauges)
    for observers, count in ((db.session_opened, _count_opened), (db.session_removing, _count_removed)):
        if count not in observers:
            observers.append(count)
    app.register_blueprint(bp)


# (endpoint, method, status) -> (counter, histogram): a labels() lookup takes a lock
# and builds a key; the set is bounded (endpoints x METHODS x statuses).
_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    """Count one answered request and its duration."""
    _refresher.start_once()
    key = (endpoint, method if method in METHODS else "other", status)
    children = _children.get(key)
    if children is None:
        children = _children[key] = (REQUESTS.labels(key[0], key[1], str(status)), LATENCY.labels(key[0], key[1]))
    children[0].inc()
    children[1].observe(seconds)


@bp.get("/metrics")
def metrics() -> Response:
    """Every worker's metrics, in the text format the scraper asks for."""
    current_app.extensions[_EXTENSION].refresh()
    if MULTIPROCESS:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    for _ in range(READ_ATTEMPTS):
        try:
            return Response(encoder(registry), content_type=content_type)
        except struct.error:
            # A worker that is starting has created its file but not yet sized it
            # (prometheus_client reads it as a truncated header): a moment later it is.
            time.sleep(0.05)
    raise ServiceUnavailable("A worker's metrics file is being created; scrape again.")


def refresh(app: Flask) -> None:
    """Set `app`'s pool gauges from its pools as they are now: a worker does, once it
    has replaced the pools it inherited from a preloading master (gunicorn.conf.py)."""
    app.extensions[_EXTENSION].refresh()


def _count_statements(engine: Engine, target: str) -> None:
    counter = STATEMENTS.labels(target)

    def count(cursor: Any, context: Any) -> None:
        # The replica health checks and SQLAlchemy's first-connect checks are not the app's work.
        if not context.execution_options.get(replicas.CHECK) and not statements.is_setup(context):
            counter.inc()

    # Before the backend's own hooks: a statement whose BEGIN IMMEDIATE timed out was sent too.
    statements.of(engine).before.insert(0, count)


class PoolGauges:
    """Sets the pool gauges from the engine's pool as it is now, and the replicas' state."""

    def __init__(self, engine: Engine, watched: replicas.Replicas | None = None) -> None:
        self.engine = engine
        self.replicas = watched
        self.lock = threading.Lock()  # read and write as one step, or a stale value may win
        self.refresh()

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        pool: Any = self.engine.pool
        with self.lock:
            POOL_SIZE.set(pool.size())
            POOL_CHECKED_OUT.set(pool.checkedout())
            POOL_OVERFLOW.set(max(pool.overflow(), 0))
            for replica in self.replicas.all if self.replicas is not None else []:
                REPLICA_UP.labels(replica.name).set(1 if replica.healthy else 0)
                REPLICA_LAG.labels(replica.name).set(replica.lag)


class _Refresher:
    """Refreshes the process's pool gauges once a second, in a daemon thread.

    Started by the first request a process answers: the gunicorn master of a
    preloaded app serves none, and a thread running in it would not survive the
    fork anyway (so a forked child starts its own). A process serves one app; where
    several are built (tests), the gauges follow the one built last.
    """

    def __init__(self) -> None:
        self.gauges: weakref.ref[PoolGauges] | None = None
        self.started = False
        self.lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget_thread)

    def watch(self, gauges: PoolGauges) -> None:
        self.gauges = weakref.ref(gauges)  # an app thrown away is not kept alive for its gauges

    def start_once(self) -> None:
        if self.started:
            return
        with self.lock:
            if not self.started:
                threading.Thread(target=self._run, name="pool-gauges", daemon=True).start()
                self.started = True

    def _run(self) -> None:
        while True:
            time.sleep(REFRESH_SECONDS)
            gauges = self.gauges() if self.gauges else None
            if gauges is not None:
                gauges.refresh()

    def _forget_thread(self) -> None:
        self.started = False
        self.lock = threading.Lock()


_refresher = _Refresher()


def _count_opened(session: Any) -> None:
    SESSIONS_OPENED.inc()


def _count_removed(session: Any) -> None:
    SESSIONS_REMOVED.inc()
