"""The PostgreSQL pool: a connection that sat idle is pinged before use, a busy one is not.

Connections are killed for real (pg_terminate_backend), as a server restart or an
idle cut-off would kill them. SQLite has no server to lose: these run on PostgreSQL.
"""

import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from conftest import TEST_DATABASE_URL
from webapp.db import get_engine

pytestmark = pytest.mark.skipif(not TEST_DATABASE_URL, reason="needs a PostgreSQL server")


def pooled_backend(app) -> int:
    """The server process behind the pool's one connection."""
    with get_engine(app).connect() as connection:
        return connection.execute(text("SELECT pg_backend_pid()")).scalar()


def kill(app, pid: int) -> None:
    """Terminate a server process, as a restart would, and wait until it is gone."""
    admin = create_engine(get_engine(app).url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            deadline = time.monotonic() + 5
            while connection.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                                     {"pid": pid}).scalar():
                assert time.monotonic() < deadline, "the backend did not exit"
                time.sleep(0.02)
    finally:
        admin.dispose()


def test_a_connection_killed_while_idle_is_replaced_before_a_request_uses_it(make_app, database_url):
    app = make_app(DATABASE_URL=database_url, DB_PING_AFTER_IDLE=0.2)
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    dead = pooled_backend(app)

    kill(app, dead)
    time.sleep(0.3)  # idle longer than DB_PING_AFTER_IDLE

    assert client.get("/healthz").status_code == 200
    assert pooled_backend(app) != dead


def test_with_ping_after_idle_0_every_checkout_is_pinged(make_app, database_url):
    app = make_app(DATABASE_URL=database_url, DB_PING_AFTER_IDLE=0)
    client = app.test_client()
    assert client.get("/healthz").status_code == 200

    kill(app, pooled_backend(app))

    assert client.get("/healthz").status_code == 200


def test_a_connection_killed_moments_after_use_fails_one_request_then_the_pool_is_renewed(make_app, database_url):
    app = make_app(DATABASE_URL=database_url, DB_PING_AFTER_IDLE=60)
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    dead = pooled_backend(app)

    kill(app, dead)  # and reuse it at once: not pinged, so the request finds it dead

    failed = client.get("/healthz")
    assert failed.status_code == 503 and failed.headers["Retry-After"]
    assert client.get("/healthz").status_code == 200
    assert pooled_backend(app) != dead
