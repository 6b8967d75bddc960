"""Stuck work is bounded: PostgreSQL itself cancels a statement that runs too long and
closes a session left idle inside a transaction, and the app gives up a connection
whose statement has had no answer past its deadline (webapp/deadline.py), so no
worker thread waits forever.

These run on the throwaway cluster (pg_cluster), in the SQLite and PostgreSQL runs alike.
"""

import time

import pytest
from flask import jsonify
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from webapp import deadline
from webapp.db import Session, get_engine

from helpers import SLACK, app_backends, assert_problem, pg_engine_options, signed_in, users_table_held


def test_postgresql_connections_are_given_both_timeouts_from_the_config():
    options = pg_engine_options(DB_STATEMENT_TIMEOUT=2.5, DB_IDLE_IN_TRANSACTION_TIMEOUT=60)

    assert options["connect_args"]["options"] == (
        "-c statement_timeout=2500 -c idle_in_transaction_session_timeout=60000"
    )


def test_the_server_reports_the_configured_timeouts_on_the_apps_connections(make_app, cluster_database):
    app = make_app(DATABASE_URL=cluster_database, DB_STATEMENT_TIMEOUT=2.5, DB_IDLE_IN_TRANSACTION_TIMEOUT=7)

    with get_engine(app).connect() as connection:
        statement = connection.exec_driver_sql("SHOW statement_timeout").scalar()
        idle = connection.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar()

    assert (statement, idle) == ("2500ms", "7s")


def test_a_transaction_left_idle_too_long_is_closed_by_the_server(make_app, cluster_database):
    app = make_app(DATABASE_URL=cluster_database, DB_IDLE_IN_TRANSACTION_TIMEOUT=0.3)
    engine = get_engine(app)

    with engine.connect() as connection:
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()  # the transaction begins
        time.sleep(1.5)  # ...and idles past the limit
        with pytest.raises(OperationalError):
            connection.execute(text("SELECT 1"))

    assert pid not in [backend["pid"] for backend in app_backends(cluster_database)]
    with engine.connect() as connection:  # the pool replaces the closed connection
        assert connection.execute(text("SELECT 1")).scalar() == 1


# -- under the real server ---------------------------------------------------------------


def test_a_statement_over_the_limit_is_a_503_and_the_worker_is_free_again(serve, cluster_database):
    server = serve(cluster_database, DB_STATEMENT_TIMEOUT="1")

    with users_table_held(cluster_database):  # the list query now waits on the lock...
        reply = server.get("/api/users")
        # ...until PostgreSQL cancels it; its connection is back in the pool, idle
        after = app_backends(cluster_database)

    assert reply.status == 503
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert reply.json()["status"] == 503
    assert int(reply.headers["Retry-After"]) > 0
    assert 1 <= reply.seconds < 5  # cancelled at the limit, not when the lock went away
    assert [b for b in after if b["wait_event_type"] == "Lock" or b["state"] != "idle"] == []
    assert server.get("/api/users").status == 200


# -- the client's own deadline (webapp/deadline.py) ---------------------------------------


def test_the_statement_deadline_is_a_margin_past_the_servers_timeout_unless_set(make_app, cluster_database):
    by_default = deadline.of(get_engine(make_app(DATABASE_URL=cluster_database, DB_STATEMENT_TIMEOUT=5)))
    configured = deadline.of(get_engine(make_app(DATABASE_URL=cluster_database, DB_STATEMENT_DEADLINE=27)))

    assert by_default is not None and by_default.seconds == 5 + deadline.MARGIN
    assert configured is not None and configured.seconds == 27
    assert deadline.of(get_engine(make_app())) is None  # SQLite runs in the process: nothing to wait for


def test_a_statement_past_its_deadline_is_cut_off_as_a_503_and_not_run_again(make_app, cluster_database):
    # A deadline inside the server's own limit: the server would still answer, but
    # from the app's side this is exactly a link that went silent.
    app = signed_in(make_app(DATABASE_URL=cluster_database, DB_STATEMENT_TIMEOUT=30, DB_STATEMENT_DEADLINE=1))
    runs = []

    @app.get("/api/slow")
    def slow():
        runs.append(1)
        Session().execute(text("SELECT pg_sleep(10)"))
        return jsonify(done=True)

    client = app.test_client()
    started = time.monotonic()
    response = client.get("/api/slow")
    seconds = time.monotonic() - started

    assert_problem(response, 503)
    assert int(response.headers["Retry-After"]) > 0
    assert 1 <= seconds < 1 + deadline.TICK + SLACK  # at the deadline, not when the sleep ends
    assert runs == [1]  # not run again: that would double the wait
    assert get_engine(app).pool.checkedout() == 0
    assert client.get("/api/users").status_code == 200  # on a new connection


def test_statements_under_the_deadline_are_left_alone_however_long_the_request(make_app, cluster_database):
    app = signed_in(make_app(DATABASE_URL=cluster_database, DB_STATEMENT_TIMEOUT=30, DB_STATEMENT_DEADLINE=1))

    @app.post("/api/three-slow-statements")
    def three_slow_statements():
        session = Session()
        pids = [session.execute(text("SELECT pg_backend_pid() FROM pg_sleep(0.6)")).scalar() for _ in range(3)]
        session.commit()
        return jsonify(pids=pids)

    started = time.monotonic()
    response = app.test_client().post("/api/three-slow-statements")

    assert response.status_code == 200
    assert time.monotonic() - started >= 1.8  # the request outlived the deadline; no statement did
    assert len(set(response.get_json()["pids"])) == 1  # one connection throughout, never cut


def test_the_watchdog_shuts_down_only_a_connection_still_waiting_for_the_same_statement(make_app, cluster_database):
    engine = get_engine(make_app(DATABASE_URL=cluster_database))
    watched = deadline.Watch(seconds=1, ping_seconds=1)
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        long_ago = time.perf_counter() - 5  # a statement sent long ago, answered since...
        watched.waiting[raw] = just_now = time.perf_counter()  # ...and the connection's next one

        assert watched.overdue(just_now + 0.5) == []
        assert not watched.shut_down(raw, long_ago)  # what was overdue has ended: hands off
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1
        assert watched.overdue(just_now + 1.5) == [(raw, just_now)]
        assert watched.shut_down(raw, just_now)
        with pytest.raises(OperationalError):
            connection.exec_driver_sql("SELECT 1")
