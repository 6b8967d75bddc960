"""gunicorn settings: threaded workers, each thread serving one request at a time
with the thread-local session of webapp.db.

WEB_CONCURRENCY (workers), GUNICORN_THREADS (threads per worker), HOST, PORT,
GUNICORN_MAX_REQUESTS and GUNICORN_PRELOAD come from the environment. The app
sizes its connection pool from GUNICORN_THREADS too, so each thread can always
have a connection.

Metrics: every worker writes its Prometheus metrics to files in
PROMETHEUS_MULTIPROC_DIR, and /metrics adds up all of them (webapp/metrics.py).
"""

import gc
import logging.config
import os
import shutil
import tempfile
import threading
import time

worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
preload_app = os.environ.get("GUNICORN_PRELOAD", "").lower() in {"1", "true", "yes", "on"}
timeout = 30
# SIGTERM: stop accepting, let requests in flight finish (up to this long), exit.
graceful_timeout = 30
# Off by default: a restart costs a worker its imports, its app and its pool, about
# 0.7 s of CPU, which at a thousand requests was a third of all CPU under load.
# Set it to contain a leak you cannot fix; the jitter staggers the restarts.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = max(max_requests // 10, 1) if max_requests else 0

# -- slow and idle clients ------------------------------------------------------------
#
# gunicorn must sit behind a buffering proxy (nginx, a cloud load balancer) that
# reads each request whole before passing it on and takes the response as fast as
# gunicorn writes it: a gthread thread serves one request from its first byte to
# its last, so without a proxy a client that sends or reads slowly holds a thread,
# and a few dozen of them hold every thread. These settings bound the damage when
# there is none; they do not remove it.
#
# An idle kept-alive connection waits in the worker's poller, not in a thread, for
# this many seconds: short, because each is a socket a client keeps for free. A
# proxy in front that pools connections to gunicorn should idle out first.
keepalive = 2
# Connections a worker holds at once, kept-alive ones included (gunicorn's default
# is 1,000): beyond them it stops accepting, so a flood of idle sockets queues in
# the kernel's backlog instead of costing the worker memory and file descriptors.
worker_connections = 250
# gthread has no setting for how long a request's head may take to arrive. A
# thread waits at most 5 s (hard-coded in gunicorn 27) for a connection's first
# bytes before giving it back to the poller, but a client that trickles its head
# byte by byte keeps the thread until `timeout` kills the worker: the proxy's
# client_header_timeout is the header-read limit of this set-up.
# The size of a request's head, which gunicorn refuses before the app sees it
# (docs/api.md, "Errors before the app"): gunicorn's defaults, written down.
limit_request_line = 4094  # bytes of method, URL and version: 414 beyond
limit_request_fields = 100  # header fields: 431 beyond
limit_request_field_size = 8190  # bytes of one header field: 431 beyond

# No access log: the app logs one line per request itself (webapp/observability.py),
# with its request id and query count. Ours goes to stdout in gunicorn's format,
# gunicorn's to stderr. Applied in on_starting, not through logconfig_dict: gunicorn
# turns its access log back on whenever logconfig_dict is set, and would build every
# request's access-log fields only to drop them.
accesslog = None


class BatchingStreamHandler(logging.StreamHandler):
    """Our stdout handler: writes its lines in batches.

    logging.StreamHandler writes and flushes every record while holding its lock: with
    a line per request, a write(2) per request, and every other thread that came to log
    waited on that lock, then on the GIL; the p99 of a get-by-id was higher for it
    (docs/benchmarks.md). This one keeps the formatted lines and writes them in one go:
    at most `flush_seconds` after the first, at once for a record of WARNING or above
    (after the lines before it, so the order holds), when MAX_LINES are waiting, and
    when logging shuts down at exit. A worker killed outright (SIGKILL, the OOM killer)
    loses at most its last half second of request lines; warnings are never held back.
    (logging.handlers.MemoryHandler holds records too, but hands them to its target
    one by one, a write each, and has no timer.) Defined here, not in webapp/, so that
    the master does not import the app for it.
    """

    MAX_LINES = 256

    def __init__(self, stream=None, flush_seconds=0.5):
        super().__init__(stream)
        self.flush_seconds = flush_seconds
        self._lines = []
        self._pid = os.getpid()  # whose lines these are: a forked child starts with none
        self._flusher_pid = None
        self._closed = False

    def emit(self, record):  # with the handler's lock held (Handler.handle)
        try:
            lines = self._own_lines()
            lines.append(self.format(record) + self.terminator)
            if record.levelno >= logging.WARNING or len(lines) >= self.MAX_LINES:
                self._write()
            elif self._flusher_pid != self._pid:
                self._flusher_pid = self._pid
                threading.Thread(target=self._flush_every_while, name="log-flusher", daemon=True).start()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self):
        with self.lock:
            self._write()

    def close(self):
        self.flush()
        self._closed = True
        super().close()

    def _own_lines(self):
        if self._pid != os.getpid():  # forked: what was waiting is the parent's to write
            self._pid, self._lines = os.getpid(), []
        return self._lines

    def _write(self):
        lines = self._own_lines()
        if lines:
            self.stream.write("".join(lines))
            lines.clear()
        self.stream.flush()

    def _flush_every_while(self):
        while not self._closed:
            time.sleep(self.flush_seconds)
            if self._lines:
                self.flush()


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "generic": {
            "format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
            "datefmt": "[%Y-%m-%d %H:%M:%S %z]",
        }
    },
    "handlers": {"console": {"()": BatchingStreamHandler, "formatter": "generic", "stream": "ext://sys.stdout"}},
    "loggers": {
        "webapp": {"level": "INFO", "handlers": ["console"], "propagate": False},
        # Alembic is imported by the app's CLI commands, and says at INFO which of its
        # plugins it set up: seven lines per worker that tell an operator nothing.
        "alembic": {"level": "WARNING"},
    },
    "root": {"level": "INFO", "handlers": ["console"]},
}
# gunicorn 25+ opens a control socket under $HOME by default; several instances
# (tests, a second checkout) would fight over it, and we do not use gunicornc.
control_socket_disable = True


def post_fork(server, worker):
    """A preloaded app built its engine in the master. Pooled connections must not be
    shared across processes: each worker forgets the inherited ones (close=False
    leaves the parent's sockets alone) and opens its own, and its pool gauges say so
    at once, before its first request."""
    if not server.cfg.preload_app:
        return
    from webapp.db import binds
    from webapp.ops import metrics

    app = server.app.wsgi()
    for engine, _ in binds(app).engines:
        engine.dispose(close=False)
    metrics.refresh(app)


def post_worker_init(worker):
    """In the worker, once the app is loaded (so the master imports no more of the app
    than it did):

    * a response's head leaves with the start of its body, in one send: an instance
      killed between the two would leave nginx a head it has passed on and cannot
      retry (webapp/serving.py);
    * what exists by now (modules, the app, SQLAlchemy's mappers and caches) lives as
      long as the worker, so it leaves the garbage collector's generations: a full
      collection no longer walks those 100,000 objects while every thread waits, a
      pause of 66 to 101 ms about every ten seconds of load (docs/benchmarks.md).
      What loading left as garbage is collected first, or it would stay for good.
    """
    from webapp import serving

    serving.install()
    gc.collect()
    gc.freeze()


# -- Prometheus multiprocess mode ---------------------------------------------------
#
# prometheus_client picks its storage when it is imported, so the directory is in
# the environment before the app is loaded (in the master, with preload_app). Our
# own temporary directory unless one is given; either way it is emptied when the
# server starts, since files an earlier run left would be added in.

_own_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="webapp-metrics-")
metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
os.makedirs(metrics_dir, exist_ok=True)


def on_starting(server):
    """Set up logging (LOGGING above); start counting metrics from zero."""
    logging.config.dictConfig(LOGGING)
    # Our format has no thread, file or line: do not look them up for every record
    # (the logging HOWTO's "Optimization"); walking the stack for the caller's file
    # and line was most of the cost of the one line each request logs.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    for name in os.listdir(metrics_dir):
        if name.endswith(".db"):
            os.remove(os.path.join(metrics_dir, name))
    server.log.info("Prometheus multiprocess directory: %s", metrics_dir)


def when_ready(server):
    """One line, once, that says what this server is: where, how many, which database."""
    from sqlalchemy import make_url

    raw = os.environ.get("DATABASE_URL", "").strip()
    database = make_url(raw).render_as_string(hide_password=True) if raw else "SQLite in the instance folder"
    server.log.info(
        "Serving %s with %d workers x %d threads (%s); database %s",
        server.cfg.bind[0] if server.cfg.bind else bind,
        server.cfg.workers,
        server.cfg.threads,
        server.cfg.worker_class_str,
        database,
    )


def child_exit(server, worker):
    """A dead worker's pool gauges must not be reported as if it were alive."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, metrics_dir)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
