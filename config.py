"""Configuration, in one place: class defaults, then the environment, then the
caller's overrides (`load`, called by create_app).

`APP_ENV` picks the class (development by default). Every setting the environment
can override is listed in ENVIRONMENT, with the type it is parsed as, so README and
code cannot drift apart silently: tests compare the two.
"""

import os
import secrets
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask


def _flag(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return number


def _host_list(value: str) -> list[str]:
    hosts = [host.strip().lower() for host in value.split(",") if host.strip()]
    if not hosts:
        raise ValueError("expected host names separated by commas")
    return hosts


def _non_negative_seconds(value: str) -> float:
    number = float(value)
    if number < 0:
        raise ValueError(f"expected a number of seconds, 0 or more, got {value!r}")
    return number


def _urls(value: str) -> tuple[str, ...]:
    return tuple(url.strip() for url in value.split(",") if url.strip())


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"expected an integer, 0 or more, got {value!r}")
    return number


def _seconds(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(f"expected a positive number of seconds, got {value!r}")
    return number


class Config:
    """Defaults shared by every environment."""

    APP_NAME = "Roster"  # in the header and every page title

    # None means the embedded SQLite default, a file under the instance folder.
    DATABASE_URL: str | None = None
    # Read replicas of DATABASE_URL (PostgreSQL streaming replicas); none: every
    # statement goes to DATABASE_URL (webapp/replicas.py).
    DATABASE_REPLICA_URLS: tuple[str, ...] = ()
    REPLICA_MAX_LAG_SECONDS = 10.0  # a replica further behind than this is left out
    REPLICA_CHECK_SECONDS = 1.0  # how often each worker checks its replicas, in the background
    # Proxies in front of the app whose X-Forwarded-* headers it trusts (ProxyFix);
    # 0: none, the headers are ignored.
    TRUSTED_PROXIES = 0
    SQL_ECHO = False
    SESSION_EVENTS_LOG = False  # log begin/commit/rollback/remove of each thread's session
    # None means generated once and kept in the instance folder (see instance_secret_key).
    SECRET_KEY: str | None = None
    # Threads per gunicorn worker; the pool is sized from it (one connection per thread).
    GUNICORN_THREADS = 4
    DB_POOL_SIZE: int | None = None  # None: GUNICORN_THREADS
    DB_MAX_OVERFLOW = 2
    DB_POOL_TIMEOUT = 5.0  # seconds a request waits for a pooled connection
    DB_POOL_RECYCLE = 1800  # seconds before a PostgreSQL connection is replaced
    DB_CONNECT_TIMEOUT = 5  # seconds to establish a PostgreSQL connection
    # PostgreSQL ends stuck work on its side: a statement running longer than this
    # is cancelled (a 503), well inside gunicorn's 30 s worker timeout...
    DB_STATEMENT_TIMEOUT = 15.0
    # ...and a session idle inside a transaction this long is closed.
    DB_IDLE_IN_TRANSACTION_TIMEOUT = 30.0
    # A statement with no answer a little past DB_STATEMENT_TIMEOUT will never get
    # one (the server would have cancelled it): the link has gone silent, and the
    # app gives the connection up (webapp/deadline.py). None: DB_STATEMENT_TIMEOUT
    # + 2 s. Behind PgBouncer, add its query_wait_timeout.
    DB_STATEMENT_DEADLINE: float | None = None
    # A PostgreSQL connection idle in the pool this long is pinged before use; under
    # load none is, which saves a round trip per request. 0: ping every checkout
    # (pool_pre_ping). A connection that dies under a request anyway costs that
    # request one more try, not an error (webapp.db).
    DB_PING_AFTER_IDLE = 1.0
    SQLITE_BUSY_TIMEOUT_MS = 5000  # how long a SQLite writer waits, in its worker's line and for the lock
    MAX_CONTENT_LENGTH = 8 * 1024 * 1024  # largest request body, CSV uploads included
    # The Host names (any port) this app answers for; any other is a 400 (Flask 3.1),
    # so no URL the app builds (`next`, `Link`) can name a host an attacker sent. The
    # default is what `make run` and the tests serve; behind a proxy, list its names.
    TRUSTED_HOSTS = ["127.0.0.1", "localhost"]
    # Exports each worker streams at once; more are a 503 with Retry-After. A slow
    # reader holds a thread (never a connection), so the cap must stay below
    # GUNICORN_THREADS for threads to be left for everything else. None: half of
    # GUNICORN_THREADS (at least 1), or no cap behind a proxy (TRUSTED_PROXIES > 0),
    # which takes the whole file as fast as the app writes it (deploy/nginx.conf).
    EXPORT_MAX_CONCURRENT: int | None = None
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = False
    HSTS_SECONDS = 0  # Strict-Transport-Security max-age; 0 sends none
    # Accounts (webapp/auth.py, webapp/domain/accounts.py).
    API_TOKEN_DAYS = 30  # lifetime of a new API token
    API_TOKEN_CACHE_SECONDS = 5.0  # how long a worker trusts a token it checked; a revocation takes this long
    PASSWORD_HASH_METHOD = "scrypt"  # werkzeug's: scrypt, n=2**15, r=8, p=1 (memory-hard)
    SIGN_IN_MAX_FAILURES = 5  # failed sign-ins for one email before it is refused for...
    SIGN_IN_WINDOW_SECONDS = 15 * 60  # ...the rest of this window
    FIRST_RUN_SETUP = True  # while no admin exists, every page leads to /setup (never in production)
    DEFAULT_PER_PAGE = 20
    MAX_PER_PAGE = 100
    # A list's total is counted exactly up to this many rows, then reported as
    # capped: counting a whole large table on every page would cost O(table size).
    LIST_TOTAL_CAP = 10_000


class DevelopmentConfig(Config):
    """`make run` on a laptop: SQLite, a generated secret key, plain-HTTP cookies."""


class ProductionConfig(Config):
    """Behind TLS; SECRET_KEY must come from the environment."""

    # Never debug in production, whatever FLASK_DEBUG says: a debug app lets
    # exceptions through to the server instead of answering a generic 500.
    DEBUG = False
    FIRST_RUN_SETUP = False  # the first admin comes from `flask --app wsgi create-admin`
    SESSION_COOKIE_SECURE = True
    HSTS_SECONDS = 365 * 24 * 3600


class TestingConfig(Config):
    TESTING = True
    # A cheap scrypt: the tests sign in hundreds of times. Hashes say their own
    # parameters, so production hashes still check.
    PASSWORD_HASH_METHOD = "scrypt:1024:8:1"
    # Counting statements needs the token known across a test; the tests of the
    # cache set their own.
    API_TOKEN_CACHE_SECONDS = 60.0


CONFIGS: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "production": ProductionConfig,
    "testing": TestingConfig,
}

# Environment variable -> parser. The variable's name is also its config key.
ENVIRONMENT: dict[str, Callable[[str], Any]] = {
    "DATABASE_URL": str,
    "DATABASE_REPLICA_URLS": _urls,
    "REPLICA_MAX_LAG_SECONDS": _seconds,
    "REPLICA_CHECK_SECONDS": _seconds,
    "TRUSTED_PROXIES": _non_negative_int,
    "SECRET_KEY": str,
    "SQL_ECHO": _flag,
    "SESSION_EVENTS_LOG": _flag,
    "GUNICORN_THREADS": _positive_int,
    "DB_POOL_SIZE": _positive_int,
    "DB_MAX_OVERFLOW": int,
    "DB_POOL_TIMEOUT": _seconds,
    "DB_POOL_RECYCLE": _positive_int,
    "DB_CONNECT_TIMEOUT": _positive_int,
    "DB_STATEMENT_TIMEOUT": _seconds,
    "DB_STATEMENT_DEADLINE": _seconds,
    "DB_IDLE_IN_TRANSACTION_TIMEOUT": _seconds,
    "DB_PING_AFTER_IDLE": _non_negative_seconds,
    "MAX_CONTENT_LENGTH": _positive_int,
    "TRUSTED_HOSTS": _host_list,
    "EXPORT_MAX_CONCURRENT": _positive_int,
    "API_TOKEN_DAYS": _positive_int,
    "API_TOKEN_CACHE_SECONDS": _non_negative_seconds,
}


def config_class(environ: Mapping[str, str] = os.environ) -> type[Config]:
    """The Config class named by APP_ENV (development when unset)."""
    name = environ.get("APP_ENV", "development").strip().lower()
    try:
        return CONFIGS[name]
    except KeyError:
        raise RuntimeError(f"APP_ENV={name!r} is not one of {', '.join(sorted(CONFIGS))}") from None


def from_environment(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The settings the environment overrides, parsed; a bad value fails start-up loudly."""
    settings = {}
    for name, parse in ENVIRONMENT.items():
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        try:
            settings[name] = parse(raw)
        except ValueError as error:
            raise RuntimeError(f"{name}={raw!r} is invalid: {error}") from None
    return settings


def load(app: Flask, overrides: dict[str, Any] | None = None) -> None:
    """Class defaults (by APP_ENV), then the environment, then `overrides` (tests)."""
    cls = config_class()
    app.config.from_object(cls)
    app.config.update(from_environment())
    app.config.update(overrides or {})
    if not app.config["SECRET_KEY"]:
        if issubclass(cls, ProductionConfig):
            raise RuntimeError("SECRET_KEY must be set in production (APP_ENV=production).")
        app.config["SECRET_KEY"] = instance_secret_key(app.instance_path)


def instance_secret_key(instance_path: str) -> str:
    """A random key made once per instance folder and kept there, so sessions and
    CSRF tokens survive restarts and are shared by every worker."""
    path = os.path.join(instance_path, "secret_key")
    os.makedirs(instance_path, exist_ok=True)
    if not os.path.exists(path):
        # Write aside, then link into place: link fails if the name exists, so when
        # several workers start at once exactly one key wins, and nobody reads a
        # half-written file.
        fd, draft = tempfile.mkstemp(dir=instance_path)
        try:
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_hex(32))
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(draft)
    with open(path) as file:
        return file.read().strip()
