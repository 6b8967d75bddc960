"""Engines: built from config, with the options their backend needs.

PostgreSQL URLs are pinned to psycopg2; PostgreSQL connections carry server-side
timeouts and the client-side deadline that backs them (webapp/deadline.py), and a
connection that sat idle in the pool is pinged before use; SQLite
gets WAL, a busy timeout, foreign keys and transactions we begin ourselves (BEGIN
IMMEDIATE). `autocommit_engine` gives the same pool without transactions, for
requests that only read. webapp.db builds them in init_app and owns everything
that happens to sessions on top of them.
"""

import json
import os
import sqlite3
import threading
import time
from functools import partial
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError

from . import deadline, statements

# An execution option of ours: begin no transaction (autocommit_engine).
_NO_BEGIN = "webapp_no_begin"


def database_url(config: dict[str, Any], instance_path: str) -> URL:
    """The configured URL, with PostgreSQL pinned to psycopg2, or the SQLite default."""
    raw = config.get("DATABASE_URL")
    if not raw:
        os.makedirs(instance_path, exist_ok=True)
        return make_url("sqlite:///" + os.path.join(instance_path, "webapp.sqlite3"))
    return with_shipped_driver(make_url(raw))


def with_shipped_driver(url: URL | str) -> URL:
    """`url` with a bare postgresql:// or postgres:// pinned to psycopg2.

    SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which we do not ship,
    and no longer knows the postgres:// spelling some hosts hand out.
    """
    url = make_url(url)
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg2")
    return url


def engine_options(config: dict[str, Any], url: URL) -> dict[str, Any]:
    """create_engine() keyword arguments for the URL's backend."""
    threads = config["GUNICORN_THREADS"]
    options: dict[str, Any] = {
        "echo": config["SQL_ECHO"],
        # Every thread holds at most one connection (its session's), so a pool of
        # one per thread never makes a request wait for another one to finish.
        "pool_size": config["DB_POOL_SIZE"] or threads,
        "max_overflow": config["DB_MAX_OVERFLOW"],
        "pool_timeout": config["DB_POOL_TIMEOUT"],
        # JSON parameters (audit changes, the import's batches) go as UTF-8 text, not
        # \u escapes: non-Latin text is a sixth of the size, and it reaches the
        # database exactly as a plain string parameter would.
        "json_serializer": partial(json.dumps, ensure_ascii=False),
    }
    if url.get_backend_name() == "sqlite":
        options["connect_args"] = {
            # A pooled connection is used by one thread at a time, but not always the
            # thread that opened it.
            "check_same_thread": False,
            "factory": QueuingConnection,
            # SQLite's busy timeout, and the longest a writer waits for the others of
            # its process and then for the lock, the two waits together (QueuingConnection).
            "timeout": config["SQLITE_BUSY_TIMEOUT_MS"] / 1000,
        }
    elif url.get_backend_name() == "postgresql":
        # Connections killed by a server restart or an idle cut-off are replaced
        # before a request sees them: with DB_PING_AFTER_IDLE > 0 (the default),
        # those that sat idle in the pool that long are pinged (_configure_postgresql);
        # with 0, pool_pre_ping pings every checkout, a round trip per request.
        options["pool_pre_ping"] = not config["DB_PING_AFTER_IDLE"]
        options["pool_recycle"] = config["DB_POOL_RECYCLE"]
        options["connect_args"] = {
            "connect_timeout": config["DB_CONNECT_TIMEOUT"],
            "application_name": "webapp",
            # Stuck work ends on the server's side, whatever the client does.
            "options": " ".join(
                [
                    f"-c statement_timeout={_milliseconds(config['DB_STATEMENT_TIMEOUT'])}",
                    f"-c idle_in_transaction_session_timeout={_milliseconds(config['DB_IDLE_IN_TRANSACTION_TIMEOUT'])}",
                ]
            ),
        }
    return options


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def create_engine_from_config(config: dict[str, Any], instance_path: str) -> Engine:
    """The process's engine, configured for its backend."""
    url = database_url(config, instance_path)
    engine = create_engine(url, **engine_options(config, url))
    if url.get_backend_name() == "sqlite":
        _configure_sqlite(engine)
    elif url.get_backend_name() == "postgresql":
        _configure_postgresql(engine, config["DB_PING_AFTER_IDLE"])
        # A link gone silent under a statement would hold its thread forever.
        deadline.watch(engine, deadline.deadline_seconds(config), ping_seconds=config["DB_CONNECT_TIMEOUT"])
    return engine


def autocommit_engine(engine: Engine) -> Engine:
    """`engine` without transactions: each statement commits on its own, with no
    BEGIN before it nor ROLLBACK after. The same pool, the same connections."""
    return engine.execution_options(**{_NO_BEGIN: True})


def _configure_postgresql(engine: Engine, ping_after_idle: float) -> None:
    """Autocommit for autocommit_engine's transactions, and a ping before use for
    a connection that sat idle in the pool (DB_PING_AFTER_IDLE seconds or more).

    psycopg2 sends BEGIN before a connection's first statement unless it is in
    autocommit mode, a client-side flag: we set it just before such a transaction's
    first statement and clear it when the connection goes back to the pool.
    (SQLAlchemy's own isolation_level="AUTOCOMMIT" does the same, but resets the
    level by a call that can fail on a connection the server closed, and then never
    returns the connection to the pool.)

    A restart or an idle cut-off kills connections while they wait in the pool; a
    dead one found by the ping is replaced before the request sees it. A connection
    back in the pool for less than that was alive a moment ago, and under load that
    is every connection: pinging it would add a round trip to every request. One
    that dies anyway under a request costs that request one more try (webapp.db).
    """

    def no_begin_for_reads(cursor: Any, context: Any) -> None:
        if context.root_connection.get_execution_options().get(_NO_BEGIN) and not cursor.connection.autocommit:
            cursor.connection.autocommit = True

    statements.of(engine).before.append(no_begin_for_reads)

    @event.listens_for(engine, "reset")
    def on_return(dbapi_connection: Any, record: Any, reset_state: Any) -> None:
        if dbapi_connection.autocommit:
            dbapi_connection.autocommit = False
        record.info["idle_since"] = time.monotonic()

    if not ping_after_idle:
        return  # pool_pre_ping pings every checkout

    @event.listens_for(engine, "checkout")
    def on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < ping_after_idle:
            return  # new, or back in the pool a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise DisconnectionError(f"pooled connection is dead: {error}") from error  # the pool replaces it


def _configure_sqlite(engine: Engine) -> None:
    """WAL, foreign keys, and transactions we begin ourselves (the busy timeout is a
    connect argument: engine_options).

    pysqlite's own transaction handling starts transactions lazily with a plain
    BEGIN, which lets two writers both read and then collide on upgrading to a
    write lock ("database is locked", no waiting). We switch it off and emit BEGIN
    IMMEDIATE ourselves, so writers wait for the lock (QueuingConnection); reads of a
    read-only request (autocommit_engine) begin nothing.

    The BEGIN goes out just before the transaction's first statement, once
    SQLAlchemy has prepared that statement, rather than when the transaction
    begins: SQLite has one write lock, and every microsecond it is held is one that
    all other writers wait (a create held it 1.7x as long as Flask-SQLAlchemy's
    before this, docs/benchmarks.md).

    Writers of one process queue before they ask for the lock (QueuingConnection).
    """

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: "QueuingConnection", record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "checkin")
    def end_what_was_left_open(dbapi_connection: "QueuingConnection | None", record: Any) -> None:
        # SQLAlchemy does not roll back a transaction whose COMMIT failed: SQLite keeps
        # one that failed on a deferred constraint open, with the write lock, and so
        # would every later user of this pooled connection.
        if dbapi_connection is not None and (dbapi_connection.in_transaction or dbapi_connection.queued):
            dbapi_connection.rollback()

    def begin_at_first_statement(cursor: Any, context: Any) -> None:
        # Begun on SQLAlchemy's side, not yet on SQLite's: a transaction's first statement.
        # (SQLAlchemy runs its first-connect checks with autobegin off: they begin nothing.)
        if (
            not cursor.connection.in_transaction
            and context.root_connection.in_transaction()
            and not context.root_connection.get_execution_options().get(_NO_BEGIN)
        ):
            cursor.connection.begin_immediate(cursor)

    statements.of(engine).before.append(begin_at_first_statement)


class QueuingConnection(sqlite3.Connection):
    """A SQLite connection whose writers wait for the others of their process first.

    SQLite's busy handler retries a locked database after sleeps that grow to 100 ms,
    so a writer that meets a busy lock sleeps through most of the moments it is free,
    while writers arriving later take it first: under 32 connections the slowest
    creates waited over a second. Writers of one process instead take a lock of the
    process first, one per database file, given back the moment a transaction ends
    and taken at once by a writer waiting for it (not strictly first come, first
    served). Only the writer holding it asks SQLite for the write lock, and while
    another process's writers have that, it asks again every POLL_SECONDS, without
    the busy handler's sleeps. The busy timeout bounds the two waits together, and
    running out of it is the same "database is locked" (a 503) as before.
    """

    def __init__(self, database: str, timeout: float = 5.0, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, timeout, *args, **kwargs)  # sqlite3.connect's busy timeout, in seconds
        self._timeout = timeout
        (busy_ms,) = self.execute("PRAGMA busy_timeout").fetchone()  # as sqlite3 set it (truncated)
        self._restore_busy_timeout = f"PRAGMA busy_timeout = {busy_ms}"
        self._queue = _writers_queue(database)
        self._queued = False  # this connection's transaction holds the queue

    def begin_immediate(self, cursor: sqlite3.Cursor) -> None:
        """Wait for this process's other writers, then for SQLite's write lock."""
        deadline = time.monotonic() + self._timeout
        if not self._queued:
            if not self._queue.acquire(timeout=self._timeout):
                raise sqlite3.OperationalError("database is locked")
            self._queued = True
        try:
            self._take_write_lock(cursor, deadline)
        except BaseException:
            if self.in_transaction:  # begun, and then the busy timeout could not be set back
                self.rollback()
            self._leave_queue()
            raise

    def _take_write_lock(self, cursor: sqlite3.Cursor, deadline: float) -> None:
        # Asked for without SQLite's busy handler, which sleeps up to 100 ms between
        # tries, and a create holds the lock for about a third of a millisecond: so the
        # one writer of this process that waits for it (the others of another process
        # hold it) asks again every POLL_SECONDS instead, and less often once it has
        # waited PATIENT_SECONDS (an import, a migration: a long hold).
        started = time.monotonic()
        try:
            cursor.execute("PRAGMA busy_timeout = 0")
            while True:
                try:
                    cursor.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as error:
                    busy = getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY  # or BUSY_*
                    now = time.monotonic()
                    if not busy or now >= deadline:
                        raise
                time.sleep(POLL_SECONDS if now - started < PATIENT_SECONDS else LONG_POLL_SECONDS)
        finally:
            cursor.execute(self._restore_busy_timeout)

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            # A COMMIT that failed on a full disk or an I/O error was rolled back by
            # SQLite itself; one that failed on a deferred constraint is left open, and
            # handed back to the pool it is rolled back (_configure_sqlite).
            if self._queued and not self.in_transaction:
                self._leave_queue()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._leave_queue()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._leave_queue()

    @property
    def queued(self) -> bool:
        """Whether this connection's transaction holds its process's writer lock."""
        return self._queued

    def _leave_queue(self) -> None:
        if self._queued:
            self._queued = False
            self._queue.release()


# A try costs about 3 µs, and only one writer per process makes them.
POLL_SECONDS = 0.0005
PATIENT_SECONDS = 0.05
LONG_POLL_SECONDS = 0.005
_queues: dict[str, threading.Lock] = {}
_queues_lock = threading.Lock()


def _writers_queue(database: str) -> threading.Lock:
    """The lock of the writers to the database file `database`, shared by every engine
    of the process; one of its own for a database in memory (which no other
    connection shares) or named by a `file:` URI (not worth parsing to find out)."""
    if database in ("", ":memory:") or database.startswith("file:"):
        return threading.Lock()
    path = os.path.realpath(database)
    with _queues_lock:
        return _queues.setdefault(path, threading.Lock())
