"""Read replicas: their engines, their health, and which one a read may use.

`DATABASE_REPLICA_URLS` names PostgreSQL streaming replicas of DATABASE_URL. Each
app builds one engine per replica, once per process, beside the primary's
(webapp/db.py keeps them in its Binds and routes each session in `get_bind`).

Health is checked in the background, one thread per worker, every
REPLICA_CHECK_SECONDS: a replica is usable while it answers, is in recovery, and is
less than REPLICA_MAX_LAG_SECONDS behind the primary. A request never waits for a
check; a replica whose connection fails under a request is left out at once, and
the request runs once more on the primary (db._retry_once).

Read-your-writes, as GitLab's load balancer does it: a write answers with the
primary's WAL position after its commit (`X-Read-After`, and a signed cookie for
the pages); a request that brings one back reads from a replica only if that
replica has replayed past it, else from the primary. What the replica has
replayed is the checker's last sample, which only ever lags the truth: a replica
is never thought further ahead than it is.
"""

import logging
import math
import os
import random
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, request
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import Engine, event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from .engine import autocommit_engine, create_engine_from_config

log = logging.getLogger(__name__)

HEADER = "X-Read-After"
COOKIE = "read_after"
CHECK = "webapp_replica_check"  # execution option: a health check, not a request's statement
# A replica error with one of these SQLSTATE classes, or none (the client's own:
# refused, reset, timed out), means the replica is gone, not that the query was bad.
_GONE = ("08", "57P")


def parse_lsn(text: str) -> int:
    """'16/B374D848' -> an integer that orders as the WAL does; ValueError otherwise."""
    high, sep, low = text.strip().partition("/")
    if not sep or not 0 < len(high) <= 8 or not 0 < len(low) <= 8:
        raise ValueError(f"not an LSN: {text!r}")
    return int(high, 16) << 32 | int(low, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


@dataclass
class Replica:
    """One replica as this worker last saw it."""

    name: str  # host:port/database, no credentials: a metrics label
    engine: Engine
    reads: Engine  # the same pool, autocommit: a replica only ever reads
    healthy: bool = False  # unknown until the first check
    lag: float = math.inf  # seconds behind the primary
    replay_lsn: int = 0  # WAL position replayed, at the last check

    def usable(self, after: int) -> bool:
        return self.healthy and self.replay_lsn >= after


class Replicas:
    """An app's replicas, checked in the background by a thread per process."""

    def __init__(
        self, primary: Engine, engines: list[Engine], max_lag: float, interval: float, secret_key: str
    ) -> None:
        self.primary = primary  # autocommit (Binds.reads): it is only asked where its WAL is
        self.signer = URLSafeSerializer(secret_key, salt="read-after")  # the pages' read_after cookie
        self.max_lag = max_lag
        self.interval = interval
        self.all = []
        for engine in engines:
            url = engine.url
            replica = Replica(f"{url.host}:{url.port or 5432}/{url.database}", engine, autocommit_engine(engine))
            event.listen(engine, "handle_error", self._on_error(replica))
            self.all.append(replica)
        self._thread_pid: int | None = None  # the process whose checker thread runs
        self.closed = threading.Event()

    def pick(self, after: int) -> Replica | None:
        """A usable replica that has replayed up to `after`, or None: read on the primary."""
        self.start_once()
        usable = [replica for replica in self.all if replica.usable(after)]
        return random.choice(usable) if usable else None

    def primary_lsn(self, check: bool = False) -> int:
        """The primary's WAL position now: after a commit, at or past that commit."""
        with self.primary.connect() as connection:
            if check:
                connection = connection.execution_options(**{CHECK: True})
            return parse_lsn(connection.exec_driver_sql("SELECT pg_current_wal_lsn()::text").scalar_one())

    # -- health -------------------------------------------------------------------

    def check(self) -> None:
        """One round: the primary's position, then each replica's state and lag."""
        try:
            primary_lsn: int | None = self.primary_lsn(check=True)
        except SQLAlchemyError:
            primary_lsn = None  # lag unknown: judged by the replay timestamp alone
        for replica in self.all:
            self._check(replica, primary_lsn)

    def _check(self, replica: Replica, primary_lsn: int | None) -> None:
        try:
            with replica.reads.connect() as connection:
                row = (
                    connection.execution_options(**{CHECK: True})
                    .exec_driver_sql(
                        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,"
                        " extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8"
                    )
                    .one()
                )
        except SQLAlchemyError as error:
            self._set(replica, False, math.inf, replica.replay_lsn, f"down: {error}")
            return
        in_recovery, replay, behind = row
        if not in_recovery or replay is None:
            self._set(replica, False, math.inf, replica.replay_lsn, "not a streaming replica (not in recovery)")
            return
        replay_lsn = parse_lsn(replay)
        # Caught up with the primary's position at the start of this round: no lag,
        # however long ago the last transaction was (an idle primary writes none).
        if primary_lsn is not None and replay_lsn >= primary_lsn:
            lag = 0.0
        else:
            lag = math.inf if behind is None else max(float(behind), 0.0)
        healthy = lag <= self.max_lag
        self._set(replica, healthy, lag, replay_lsn, "" if healthy else f"lags {lag:.1f} s")

    def _set(self, replica: Replica, healthy: bool, lag: float, replay_lsn: int, why: str) -> None:
        if healthy != replica.healthy:
            if healthy:
                log.info("replica %s is usable", replica.name)
            else:
                log.warning("replica %s left out: %s", replica.name, why)
        # As found, even if lower than before: a replica restarted after a crash replays again
        # from an older point, and must not be trusted with positions it has not reached yet.
        replica.replay_lsn = replay_lsn
        replica.lag = lag
        replica.healthy = healthy

    def _on_error(self, replica: Replica) -> Any:
        def on_error(context: ExceptionContext) -> None:
            if context.execution_context is not None and context.execution_context.execution_options.get(CHECK):
                return  # the checker judges its own failures
            code = getattr(context.original_exception, "pgcode", None)
            if isinstance(context.sqlalchemy_exception, DBAPIError) and (code is None or code.startswith(_GONE)):
                # Gone: leave it out now, not at the next check, and mark the
                # connection lost so that the request runs again, on the primary.
                why = f"failed a request: {context.original_exception}"
                self._set(replica, False, math.inf, replica.replay_lsn, why)
                context.is_disconnect = True

        return on_error

    def start_once(self) -> None:
        """The checker thread of this process (a forked worker starts its own)."""
        pid = os.getpid()
        if self._thread_pid == pid:
            return
        with _starting:
            if self._thread_pid != pid and not self.closed.is_set():
                threading.Thread(target=_check_forever, args=(weakref.ref(self),), name="replicas", daemon=True).start()
                self._thread_pid = pid

    def close(self) -> None:
        """Stop checking and close the replicas' connections (an app thrown away)."""
        self.closed.set()
        for replica in self.all:
            replica.engine.dispose()


# Threads do not survive a fork, and neither may a lock one of them held.
_starting = threading.Lock()


def _new_lock() -> None:
    global _starting
    _starting = threading.Lock()


os.register_at_fork(after_in_child=_new_lock)


def _check_forever(ref: "weakref.ref[Replicas]") -> None:
    while (replicas := ref()) is not None and not replicas.closed.is_set():  # until the app is gone
        interval, closed = replicas.interval, replicas.closed
        try:
            replicas.check()
        except Exception:  # the checker must outlive any surprise
            log.exception("replica check failed")
        del replicas
        if closed.wait(interval):
            return


def from_config(app: Flask, primary: Engine) -> Replicas | None:
    """The replicas DATABASE_REPLICA_URLS names, or None when it names none. `primary`
    is the primary's autocommit engine (Binds.reads)."""
    urls = app.config["DATABASE_REPLICA_URLS"]
    if not urls:
        return None
    if primary.dialect.name != "postgresql":
        raise RuntimeError("DATABASE_REPLICA_URLS needs DATABASE_URL to be PostgreSQL (streaming replicas).")
    engines = []
    for url in urls:
        parsed = make_url(url)
        if parsed.get_backend_name() != "postgresql":
            raise RuntimeError(f"DATABASE_REPLICA_URLS: {parsed!r} is not a PostgreSQL URL")
        engines.append(create_engine_from_config({**app.config, "DATABASE_URL": url}, app.instance_path))
    config = app.config
    return Replicas(
        primary, engines, config["REPLICA_MAX_LAG_SECONDS"], config["REPLICA_CHECK_SECONDS"], config["SECRET_KEY"]
    )


# -- read-your-writes ---------------------------------------------------------------


def required_lsn(replicas: Replicas) -> int | None:
    """The WAL position this request must read at or past: 0 when it brought none;
    None when what it brought does not parse (read on the primary)."""
    after = 0
    sent = request.headers.get(HEADER)
    if sent is not None:
        try:
            after = parse_lsn(sent)
        except ValueError:
            return None
    cookie = request.cookies.get(COOKIE)
    if cookie is not None:
        try:
            after = max(after, parse_lsn(replicas.signer.loads(cookie)))
        except (BadSignature, ValueError, TypeError, AttributeError):
            return None
    return after


def stamp(response: Response, replicas: Replicas, pages: bool) -> None:
    """Tell the client where its write is: the header, and for the pages the cookie."""
    try:
        lsn = format_lsn(replicas.primary_lsn())
    except SQLAlchemyError as error:  # committed already: the write stands, unstamped
        log.warning("no %s for a committed write: %s", HEADER, error)
        return
    response.headers[HEADER] = lsn
    if pages:
        # Past a couple of lag limits every usable replica has replayed it anyway.
        seconds = max(60, math.ceil(3 * replicas.max_lag))
        response.set_cookie(
            COOKIE,
            replicas.signer.dumps(lsn),
            max_age=seconds,
            httponly=True,
            samesite="Lax",
            secure=current_app.config["SESSION_COOKIE_SECURE"],
        )
