"""gunicorn settings: threaded workers, each thread serving one request at a time
with the thread-local session of webapp.db.

WEB_CONCURRENCY (workers), GUNICORN_THREADS (threads per worker), HOST and PORT
come from the environment. The app sizes its connection pool from GUNICORN_THREADS
too, so each thread can always have a connection.
"""

import os

worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
preload_app = os.environ.get("GUNICORN_PRELOAD", "").lower() in {"1", "true", "yes", "on"}
timeout = 30
graceful_timeout = 30
accesslog = "-"
# gunicorn 25+ opens a control socket under $HOME by default; several instances
# (tests, a second checkout) would fight over it, and we do not use gunicornc.
control_socket_disable = True


def post_fork(server, worker):
    """A preloaded app built its engine in the master. Pooled connections must not be
    shared across processes: each worker forgets the inherited ones (close=False
    leaves the parent's sockets alone) and opens its own."""
    if not server.cfg.preload_app:
        return
    from webapp.db import get_engine

    get_engine(server.app.wsgi()).dispose(close=False)
