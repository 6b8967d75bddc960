"""Every request reports itself: X-Request-ID, Server-Timing, one log line, and
Prometheus metrics that add up every gunicorn worker."""

import logging
import os
import re
import threading

import pytest
from flask import jsonify
from prometheus_client import REGISTRY
from sqlalchemy import event, text

from webapp import db
from webapp.db import Session, get_engine
from webapp.ops.metrics import REFRESH_SECONDS

from server import wait_for

SERVER_TIMING = re.compile(r'db;dur=(\d+(?:\.\d+)?);desc="(\d+) queries"')
GENERATED_ID = re.compile(r"[0-9a-f]{16}-[0-9a-f]+")
LOG_LINE = re.compile(r"request_id=(\S+) method=(\S+) path=(\S+) status=(\d+) duration_ms=(\d+\.\d) queries=(\d+)")


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- headers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/api/users", 200),
        ("GET", "/api/users/999999", 404),
        ("POST", "/api/users", 415),
        ("GET", "/users", 200),
        ("POST", "/users", 400),  # no CSRF token
        ("GET", "/no/such/page", 404),
        ("GET", "/healthz", 200),
        ("GET", "/metrics", 200),
    ],
)
def test_every_response_carries_a_request_id_and_server_timing(client, method, path, status):
    response = client.open(path, method=method)

    assert response.status_code == status
    assert GENERATED_ID.fullmatch(response.headers["X-Request-ID"])
    assert SERVER_TIMING.fullmatch(response.headers["Server-Timing"])


def test_each_request_gets_a_request_id_of_its_own(client):
    ids = {client.get("/api/users").headers["X-Request-ID"] for _ in range(5)}

    assert len(ids) == 5


def test_the_callers_request_id_is_echoed(client):
    response = client.get("/api/users", headers={"X-Request-ID": "lb-7f3a:42"})

    assert response.headers["X-Request-ID"] == "lb-7f3a:42"


@pytest.mark.parametrize("sent", ["has a space", "x" * 65, 'quote"d', "naïve", "a/b"])
def test_an_unusable_request_id_is_replaced_by_a_new_one(client, sent):
    response = client.get("/api/users", headers={"X-Request-ID": sent})

    assert GENERATED_ID.fullmatch(response.headers["X-Request-ID"])


def statements_seen(app):
    """Count the statements the engine sends, independently of the app's own count."""
    seen = []
    event.listen(get_engine(app), "before_cursor_execute", lambda *args: seen.append(args[2]))
    return seen


def test_server_timing_counts_the_statements_the_request_sent(store, app, committing_client):
    (user_id,) = store.add_users(("Ada", "ada@example.com"))
    committing_client.get("/api/tokens")  # from here on the worker knows the client's token
    seen = statements_seen(app)

    response = committing_client.get(f"/api/users/{user_id}")

    duration, queries = SERVER_TIMING.fullmatch(response.headers["Server-Timing"]).groups()
    # A read-only request reads in autocommit: no BEGIN on either backend, just the SELECT.
    assert int(queries) == len(seen) == 1
    assert float(duration) >= 0


def test_server_timing_counts_a_statement_that_failed(app, committing_client):
    app.config["PROPAGATE_EXCEPTIONS"] = False  # PostgreSQL: a 500; SQLite: "no such table" is a 503

    @app.get("/bad-sql")
    def bad_sql():
        Session().execute(text("SELECT * FROM no_such_table"))
        return jsonify()

    seen = statements_seen(app)
    response = committing_client.get("/bad-sql")

    assert response.status_code >= 500
    assert SERVER_TIMING.fullmatch(response.headers["Server-Timing"]).group(2) == str(len(seen))
    assert any("no_such_table" in statement for statement in seen)


def test_every_kind_of_statement_is_counted_one_at_a_time_many_at_once_or_without_parameters(app):
    counted = lambda: sample("webapp_db_statements_total", target="primary")  # noqa: E731
    with app.app_context():
        connection = Session().connection()  # connected, and begun, before the count starts
        before = counted()
        connection.execution_options(no_parameters=True).exec_driver_sql("SELECT 1")
        connection.execute(text("SELECT :n"), {"n": 1})
        connection.execute(text("UPDATE users SET name = name WHERE id = :id"), [{"id": -1}, {"id": -2}])
        assert counted() == before + 3


def test_sqlalchemys_first_connect_checks_are_not_counted_as_the_apps_statements(database_url):
    from webapp import create_app

    # A new engine, not yet connected: its first connection asks the server for its version and settings.
    app = create_app({"DATABASE_URL": database_url, "SECRET_KEY": "first-connect"})
    counted = lambda: sample("webapp_db_statements_total", target="primary")  # noqa: E731
    before = counted()
    with app.app_context():
        Session().connection()
    get_engine(app).dispose()

    assert counted() == before


def test_the_engines_listen_for_no_connection_event(app):
    # An engine with any Connection event listener makes each of its connections join
    # the engine's listeners and build a collection for every event it passes, about
    # 140 Python calls of a get-by-id: the statements are hooked on the dialect
    # instead (webapp/statements.py), the COMMIT on the dialect's do_commit (db.py).
    engines = [get_engine(app), db.binds(app).reads]
    assert [engine._has_events for engine in engines] == [False, False]


def test_a_request_without_the_database_reports_zero_queries(client):
    response = client.get("/metrics")

    assert response.headers["Server-Timing"] == 'db;dur=0.0;desc="0 queries"'


# -- the log line -------------------------------------------------------------------


def test_one_log_line_per_request_with_id_method_path_status_duration_and_queries(client, caplog):
    with caplog.at_level(logging.INFO, logger="webapp.requests"):
        response = client.get("/api/users?q=ada", headers={"X-Request-ID": "find-me"})

    lines = [record.getMessage() for record in caplog.records if record.name == "webapp.requests"]
    assert len(lines) == 1
    request_id, method, path, status, duration, queries = LOG_LINE.fullmatch(lines[0]).groups()
    assert (request_id, method, path, status) == ("find-me", "GET", "/api/users", "200")
    assert float(duration) >= 0
    assert queries == SERVER_TIMING.fullmatch(response.headers["Server-Timing"]).group(2)


def test_the_logged_path_cannot_break_the_line(client, caplog):
    with caplog.at_level(logging.INFO, logger="webapp.requests"):
        client.get("/users/x%0Afake=1 status=200")

    (line,) = [record.getMessage() for record in caplog.records if record.name == "webapp.requests"]
    assert "\n" not in line
    assert LOG_LINE.fullmatch(line).group(3) == "/users/x%0Afake%3D1%20status%3D200"


# -- metrics, in one process ----------------------------------------------------------


def test_metrics_count_requests_by_endpoint_method_and_status(client):
    labels = {"endpoint": "api.get_user", "method": "GET", "status": "404"}
    before = sample("webapp_http_requests_total", **labels)
    observed_before = sample("webapp_http_request_duration_seconds_count", endpoint="api.get_user", method="GET")

    for _ in range(3):
        client.get("/api/users/999999")

    assert sample("webapp_http_requests_total", **labels) == before + 3
    assert (
        sample("webapp_http_request_duration_seconds_count", endpoint="api.get_user", method="GET")
        == observed_before + 3
    )


def test_metrics_are_served_in_the_prometheus_text_format(client):
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    for name in (
        "webapp_http_requests_total",
        "webapp_http_request_duration_seconds_bucket",
        "webapp_db_pool_size",
        "webapp_db_pool_checked_out",
        "webapp_db_pool_overflow",
        "webapp_db_sessions_opened_total",
        "webapp_db_sessions_removed_total",
    ):
        assert re.search(rf"^{name}[{{ ]", response.text, re.M), name


def scraped(client, name) -> float:
    """A sample of /metrics as a scraper reads it (the scrape refreshes the pool gauges)."""
    match = re.search(rf"^{name} (\S+)$", client.get("/metrics").text, re.M)
    return float(match.group(1))


def test_a_scrape_shows_the_connection_a_request_holds_and_none_after(app, committing):
    holding, release = threading.Event(), threading.Event()

    @app.get("/hold")
    def hold():
        Session().execute(text("SELECT 1"))
        holding.set()
        release.wait(10)
        return jsonify()

    request = threading.Thread(target=lambda: app.test_client().get("/hold"))
    request.start()
    holding.wait(10)
    during = scraped(app.test_client(), "webapp_db_pool_checked_out")
    release.set()
    request.join(10)

    assert during == 1
    assert scraped(app.test_client(), "webapp_db_pool_checked_out") == 0
    assert scraped(app.test_client(), "webapp_db_pool_size") == app.config["GUNICORN_THREADS"]


def test_every_session_opened_by_a_request_is_counted_removed(committing_client):
    opened, removed = sample("webapp_db_sessions_opened_total"), sample("webapp_db_sessions_removed_total")

    committing_client.post("/api/users", json={"name": "Ada", "email": "ada@example.com"})
    committing_client.get("/api/users")
    committing_client.get("/metrics")  # no session at all

    assert sample("webapp_db_sessions_opened_total") == opened + 2
    assert sample("webapp_db_sessions_removed_total") == removed + 2


# -- under the real server ------------------------------------------------------------


def test_real_responses_carry_the_callers_request_id_and_server_timing(live_server):
    reply = live_server.get("/api/users", headers={"X-Request-ID": "from-the-lb-1"})

    assert reply.status == 200
    assert reply.headers["X-Request-ID"] == "from-the-lb-1"
    assert SERVER_TIMING.fullmatch(reply.headers["Server-Timing"])


def test_the_real_server_logs_exactly_one_line_per_request(live_server):
    reply = live_server.post(
        "/api/users", {"name": "Ada", "email": "ada@example.com"}, headers={"X-Request-ID": "log-me-once"}
    )

    wait_for(lambda: "log-me-once" in live_server.output())  # request lines are written in batches
    lines = [line for line in live_server.output().splitlines() if "log-me-once" in line]
    assert reply.status == 201
    assert len(lines) == 1
    request_id, method, path, status, _, queries = LOG_LINE.search(lines[0]).groups()
    assert (request_id, method, path, status) == ("log-me-once", "POST", "/api/users", "201")
    assert queries == SERVER_TIMING.fullmatch(reply.headers["Server-Timing"]).group(2)
    assert not [line for line in live_server.output().splitlines() if '"POST /api/users' in line]


def worker_of(output: str, request_id: str) -> str:
    """The pid of the worker that logged `request_id` (gunicorn's log format: [pid])."""
    (line,) = [line for line in output.splitlines() if f"request_id={request_id} " in line]
    return re.search(r"\] \[(\d+)\] \[INFO\]", line).group(1)


def test_metrics_add_up_the_requests_of_every_worker(live_server):
    sent = 0
    pids = set()
    while len(pids) < 2 and sent < 400:  # until both workers have answered some
        batch = [f"count-{sent + n}" for n in range(8)]
        threads = [
            threading.Thread(target=live_server.get, args=("/api/users",), kwargs={"headers": {"X-Request-ID": rid}})
            for rid in batch
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sent += len(batch)
        wait_for(lambda batch=batch: all(f"request_id={rid} " in live_server.output() for rid in batch))
        output = live_server.output()
        pids |= {worker_of(output, rid) for rid in batch}

    metrics = live_server.metrics()

    assert len(pids) == 2
    assert metrics.value("webapp_http_requests_total", endpoint="api.list_users", status="200") == sent
    assert metrics.value("webapp_http_request_duration_seconds_count", endpoint="api.list_users") == sent


def test_every_worker_reports_its_own_pool_all_returned_when_idle(live_server):
    for n in range(10):
        live_server.post("/api/users", {"name": "P", "email": f"p{n}@example.com"})

    wait_for(
        lambda: set(live_server.metrics().per_worker("webapp_db_pool_checked_out").values()) == {0},
        seconds=2 * REFRESH_SECONDS + 1,
    )  # a worker that does not answer the scrape refreshes on its own
    metrics = live_server.metrics()

    sizes = metrics.per_worker("webapp_db_pool_size")
    assert len(sizes) == 2 and set(sizes.values()) == {4}
    assert metrics.per_worker("webapp_db_pool_checked_out") == dict.fromkeys(sizes, 0)
    assert metrics.per_worker("webapp_db_pool_overflow") == dict.fromkeys(sizes, 0)
    assert metrics.value("webapp_db_sessions_opened_total") == metrics.value("webapp_db_sessions_removed_total")
    assert metrics.value("webapp_db_sessions_opened_total") >= 10


def test_gunicorn_makes_its_own_metrics_directory_and_removes_it_on_exit(serve, database_url, committing):
    server = serve(database_url, PROMETHEUS_MULTIPROC_DIR=None)
    directory = re.search(r"Prometheus multiprocess directory: (\S+)", server.output()).group(1)

    assert server.get("/api/users").status == 200
    assert server.metrics().value("webapp_http_requests_total", endpoint="api.list_users") == 1
    assert any(name.endswith(".db") for name in os.listdir(directory))
    server.stop()
    assert not os.path.exists(directory)
