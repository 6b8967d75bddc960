"""A client-side deadline for PostgreSQL statements: the twin of the server's statement_timeout.

The server cancels a statement after DB_STATEMENT_TIMEOUT and says so at once. A
statement still without an answer some time after that (DB_STATEMENT_DEADLINE,
by default 2 s later) will never get one: the link is gone, black-holed by a
partition, a dead NAT entry or a firewall. psycopg2 has no read timeout, and when
something on the way still acknowledges the packets neither TCP keepalives nor
libpq's tcp_user_timeout fire, so the thread would wait on the socket forever.

So a watchdog thread per process looks, a few times a second, at what each
PostgreSQL connection waits for, and shuts down the socket of one that waits past
its deadline: libpq's read returns at once, psycopg2 raises OperationalError,
SQLAlchemy invalidates the connection, and the request answers 503 with
Retry-After (webapp/errors.py). It is not run again (`StatementDeadlinePassed`,
webapp/db.py): that would double the wait. The server rolls back the
transaction of a connection that vanished, so nothing is half-written.

What is waited for, and who records it, at no cost beyond a dict entry:
* statements: the request report's own statement hooks (webapp/ops/observability.py,
  webapp/statements.py) record their start in `Watch.waiting` and take it out when
  they end; a statement that fails is taken out by `_on_error` here;
* COMMIT, ROLLBACK and the pool's ping: the dialect's do_commit, do_rollback and
  do_ping, wrapped here. A ping gets DB_CONNECT_TIMEOUT (a new connection would
  get no more), at most the deadline.

A statement ends under `lock`, and the watchdog shuts a connection down under it
only while that statement is still the one waiting: a connection whose statement
ended, went back to the pool and now runs someone else's is never touched.
"""

import logging
import os
import socket
import threading
import time
import weakref
from typing import Any

from psycopg2.extensions import STATUS_READY
from sqlalchemy import Engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)

MARGIN = 2.0  # seconds past DB_STATEMENT_TIMEOUT: the default deadline
TICK = 0.25  # seconds between the watchdog's looks: a deadline is met this late at most


class StatementDeadlinePassed(OperationalError):
    """An operation whose connection the watchdog shut down: a 503, never run again."""


class Watch:
    """What one engine's connections wait for, and since when (time.perf_counter)."""

    def __init__(self, seconds: float, ping_seconds: float) -> None:
        self.seconds = seconds
        self.ping_seconds = min(ping_seconds, seconds)
        # A ping is recorded as if it had started this much earlier, so that the one
        # deadline falls ping_seconds after it began.
        self.ping_head_start = seconds - self.ping_seconds
        self.waiting: dict[Any, float] = {}  # psycopg2 connection -> when its wait began
        self.killed: weakref.WeakSet[Any] = weakref.WeakSet()

    def overdue(self, now: float) -> list[tuple[Any, float]]:
        late = now - self.seconds
        return [(c, since) for c, since in self.waiting.copy().items() if since < late and c not in self.killed]

    def shut_down(self, connection: Any, since: float) -> bool:
        """Shut `connection`'s socket down if it still waits for what began at `since`."""
        with lock:
            if self.waiting.get(connection) is not since:
                return False  # answered meanwhile: it may already serve someone else
            self.killed.add(connection)
            try:
                # A duplicate of libpq's descriptor: shutting it down ends the connection
                # for both (one socket), closing it leaves libpq's own to libpq.
                with socket.fromfd(connection.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
            except Exception as error:  # closed already, or not a socket any more: nothing to end
                log.warning("could not shut down a connection past its deadline: %s", error)
                return False
        return True


lock = threading.Lock()
_registry = threading.Lock()  # for the one below, and the watchdog's start
_by_engine: "weakref.WeakKeyDictionary[Engine, Watch]" = weakref.WeakKeyDictionary()


def deadline_seconds(config: dict[str, Any]) -> float:
    """DB_STATEMENT_DEADLINE, or by default MARGIN past DB_STATEMENT_TIMEOUT."""
    seconds = config.get("DB_STATEMENT_DEADLINE")
    return float(seconds) if seconds else float(config["DB_STATEMENT_TIMEOUT"]) + MARGIN


def watch(engine: Engine, seconds: float, ping_seconds: float) -> Watch:
    """Put `engine`'s connections under the watchdog (PostgreSQL engines only)."""
    watched = Watch(seconds, ping_seconds)
    dialect = engine.dialect
    dialect.do_commit = _waiting_on(dialect.do_commit, watched)  # type: ignore[method-assign]
    dialect.do_rollback = _waiting_on(dialect.do_rollback, watched, only_in_transaction=True)  # type: ignore[method-assign]
    dialect.do_ping = _waiting_on(dialect.do_ping, watched, head_start=watched.ping_head_start)  # type: ignore[method-assign]
    event.listen(engine, "handle_error", _on_error(watched))
    event.listen(engine, "connect", _start_once)
    with _registry:
        _by_engine[engine] = watched
    return watched


def of(engine: Engine) -> Watch | None:
    """The Watch of `engine`, None when it has none (SQLite)."""
    with _registry:
        return _by_engine.get(engine)


def _waiting_on(operation: Any, watched: Watch, head_start: float = 0.0, only_in_transaction: bool = False) -> Any:
    waiting = watched.waiting

    def timed(connection: Any) -> Any:
        raw = getattr(connection, "dbapi_connection", connection)  # the pool's proxy, or psycopg2's own
        if only_in_transaction and raw.status == STATUS_READY:  # no transaction: psycopg2 sends nothing
            return operation(connection)
        waiting[raw] = time.perf_counter() - head_start
        try:
            return operation(connection)
        finally:
            with lock:
                waiting.pop(raw, None)

    return timed


def _on_error(watched: Watch) -> Any:
    def on_error(context: ExceptionContext) -> Any:
        raw = _driver_connection(context)
        if raw is None:
            return None
        with lock:
            watched.waiting.pop(raw, None)
        if raw not in watched.killed:
            return None
        context.is_disconnect = True  # the pool replaces it
        return StatementDeadlinePassed(
            context.statement,
            context.parameters,
            context.original_exception,
            connection_invalidated=True,
        )

    return on_error


def _driver_connection(context: ExceptionContext) -> Any:
    """psycopg2's connection under the failed operation; None when it failed to connect."""
    connection = context.connection
    if connection is None or connection.closed or connection.invalidated:
        return None  # asking it for its connection would reconnect
    return connection.connection.dbapi_connection


# -- the watchdog: one thread per process, started with its first connection ---------

_thread_pid: int | None = None


def _start_once(*args: Any) -> None:
    global _thread_pid
    pid = os.getpid()
    if _thread_pid == pid:
        return
    with _registry:
        if _thread_pid != pid:
            threading.Thread(target=_watch_forever, name="statement-deadline", daemon=True).start()
            _thread_pid = pid


def _watch_forever() -> None:
    while True:
        time.sleep(TICK)
        try:
            now = time.perf_counter()
            with _registry:
                watches = list(_by_engine.values())
            for watched in watches:
                for connection, since in watched.overdue(now):
                    if watched.shut_down(connection, since):
                        log.warning(
                            "no answer from PostgreSQL past the deadline (%.1f s; a ping's: %.1f s): "
                            "the link is taken for gone, the connection shut down",
                            watched.seconds,
                            watched.ping_seconds,
                        )
        except Exception:  # the watchdog must outlive any surprise
            log.exception("statement deadline check failed")


# A fork must not copy the lock while the watchdog holds it, nor the parent's waits.
def _before_fork() -> None:
    _registry.acquire()
    lock.acquire()


def _after_fork_in_parent() -> None:
    lock.release()
    _registry.release()


def _after_fork_in_child() -> None:
    for watched in list(_by_engine.values()):
        watched.waiting.clear()
    _after_fork_in_parent()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
