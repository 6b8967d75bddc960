"""The PostgreSQL pool: a connection that sat idle is pinged before use, a busy one is not,
and a request that meets a dead one anyway is run again.

Connections are killed for real (pg_terminate_backend), as a server restart or an
idle cut-off would kill them. SQLite has no server to lose: these run on PostgreSQL.
"""

import time

import pytest
from flask import jsonify
from sqlalchemy import create_engine, event, text
from sqlalchemy.pool import NullPool

from webapp import csrf
from webapp.db import Session, get_engine
from webapp.domain.models import User

from helpers import TEST_DATABASE_URL

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
            while connection.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            ).scalar():
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


def test_a_request_that_finds_its_connection_dead_is_run_again_on_a_fresh_one(make_app, database_url):
    app = make_app(DATABASE_URL=database_url, DB_PING_AFTER_IDLE=60)
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    dead = pooled_backend(app)

    kill(app, dead)  # and reuse it at once: not pinged, so the request finds it dead

    assert client.get("/healthz").status_code == 200
    assert pooled_backend(app) != dead


def backend_of_this_request() -> int:
    return Session().execute(text("SELECT pg_backend_pid()")).scalar()


def test_a_write_whose_connection_dies_before_its_commit_is_run_again_once(make_app, database_url, committing, store):
    app = make_app(DATABASE_URL=database_url, DB_PING_AFTER_IDLE=60)
    attempts = []

    @app.post("/dies-before-commit")
    @csrf.exempt
    def dies_before_commit():
        attempts.append(backend_of_this_request())
        Session().add(User(name="Once", email="once@example.com"))
        Session().flush()  # the INSERT is in the server's transaction...
        if len(attempts) == 1:
            kill(app, attempts[0])  # ...which the server rolls back as it dies
        Session().execute(text("SELECT 1"))  # the next statement finds the connection dead
        Session().commit()
        return jsonify(), 201

    assert app.test_client().post("/dies-before-commit").status_code == 201
    assert len(attempts) == 2 and attempts[0] != attempts[1]
    assert store.users() == [("Once", "once@example.com")]


def test_a_connection_lost_at_commit_is_a_503_and_never_run_twice(make_app, database_url, committing, store):
    app = make_app(DATABASE_URL=database_url, DB_PING_AFTER_IDLE=60)
    attempts = []

    @app.post("/dies-at-commit")
    @csrf.exempt
    def dies_at_commit():
        attempts.append(backend_of_this_request())
        Session().add(User(name="Maybe", email="maybe@example.com"))
        Session().commit()
        return jsonify(), 201

    @event.listens_for(get_engine(app), "commit")
    def kill_before_the_commit_arrives(connection):
        kill(app, attempts[-1])

    response = app.test_client().post("/dies-at-commit")

    assert response.status_code == 503 and response.headers["Retry-After"]
    assert len(attempts) == 1  # the outcome of a lost COMMIT is unknown: only the client may try again
    assert store.count() == 0
