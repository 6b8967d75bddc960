"""Fixtures: an app on the test database, and two ways to keep tests apart.

SQLite (a temporary file) by default; PostgreSQL when TEST_DATABASE_URL is set.

* `client` joins every session of the test into one outer transaction that is
  rolled back afterwards (SQLAlchemy's "join_transaction_mode" recipe): fast, and
  the right tool for testing what endpoints do.
* `committing_client` lets requests really commit, on a table emptied before and
  after: the tool for testing transactions, races and the session lifecycle.

The real server (gunicorn, see server.py) is `serve`/`live_server`; `pg_cluster` is
a throwaway PostgreSQL of the tests' own, for stopping and starting under load.
"""

import contextlib
import os
import re
import secrets
import sqlite3
import threading
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, delete, event, func, insert, make_url, select

os.environ["APP_ENV"] = "testing"

import pg_cluster as pg  # noqa: E402
from config import Config  # noqa: E402
from server import Server  # noqa: E402
from webapp import create_app, migrations  # noqa: E402
from webapp.db import Session, get_engine  # noqa: E402
from webapp.engine import database_url as url_from_settings  # noqa: E402
from webapp.engine import engine_options, with_shipped_driver  # noqa: E402
from webapp.models import AuditEntry, User  # noqa: E402

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
SETTINGS = {k: getattr(Config, k) for k in dir(Config) if k.isupper()}  # the class defaults


def pytest_report_header(config):
    return f"database: {TEST_DATABASE_URL or 'SQLite, a temporary file'}"


def pytest_sessionfinish(session, exitstatus):
    """A PostgreSQL run must run everything: a skip there means PostgreSQL went untested."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if TEST_DATABASE_URL and skipped and session.exitstatus == 0:
        reporter.write_line(f"FAILED: {skipped} test(s) skipped on the PostgreSQL run", red=True)
        session.exitstatus = 1


@contextmanager
def scratch_postgresql_database():
    """A new, empty database on TEST_DATABASE_URL's server, dropped afterwards."""
    server = create_engine(with_shipped_driver(TEST_DATABASE_URL), isolation_level="AUTOCOMMIT")
    scratch = f"{server.url.database}_{secrets.token_hex(4)}"
    with server.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{scratch}"')
    try:
        yield server.url.set(database=scratch).render_as_string(hide_password=False)
    finally:
        with server.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
        server.dispose()


@contextmanager
def empty_database(tmp_path):
    """A new, empty database on the backend under test."""
    if TEST_DATABASE_URL:
        with scratch_postgresql_database() as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path / f'empty-{secrets.token_hex(4)}.sqlite3'}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    """A database of this test run's own.

    On PostgreSQL, a scratch database is created next to TEST_DATABASE_URL's and
    dropped afterwards (as Django's test runner does), so two runs against one
    server, or a run and a developer's app, never drop each other's tables.
    """
    with empty_database(tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture(scope="session")
def backend(database_url) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


@pytest.fixture(scope="session")
def _schema(database_url):
    """The schema, built by the real migrations on the run's own database."""
    app = create_app({"DATABASE_URL": database_url})
    with app.app_context():
        migrations.upgrade("head")
    get_engine(app).dispose()


@pytest.fixture
def app(database_url, _schema):
    app = create_app({"DATABASE_URL": database_url})
    yield app
    Session.remove()
    get_engine(app).dispose()


@pytest.fixture
def make_app(tmp_path):
    """create_app(**overrides), as often as a test likes: on a throwaway SQLite file
    unless DATABASE_URL is among the overrides. Engines are disposed afterwards."""
    apps = []

    def make(**overrides):
        app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'app.sqlite3'}", **overrides})
        apps.append(app)
        return app

    yield make
    Session.remove()
    for app in apps:
        get_engine(app).dispose()


@pytest.fixture
def rolled_back(app):
    """Every session of the test joins one outer transaction, rolled back at the end."""
    engine = get_engine(app)
    connection = engine.connect()
    outer = connection.begin()
    Session.remove()
    Session.configure(bind=connection, join_transaction_mode="create_savepoint")
    yield connection
    Session.remove()
    outer.rollback()
    connection.close()
    Session.configure(bind=engine, join_transaction_mode="conditional_savepoint")


@pytest.fixture
def committing(app):
    """Real commits, on an empty users table that is emptied again afterwards."""
    _empty_users(app)
    yield
    Session.remove()
    _empty_users(app)


def _empty_users(app):  # and their history
    with get_engine(app).begin() as connection:
        connection.execute(delete(User))
        connection.execute(delete(AuditEntry))


@pytest.fixture
def client(app, rolled_back):
    return app.test_client()


@pytest.fixture
def committing_client(app, committing):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


# -- the real server and a database of our own ---------------------------------------


@pytest.fixture
def serve(tmp_path):
    """Start real gunicorns: `serve(database_url, **env)`. Each is stopped with SIGTERM
    after the test and must exit cleanly."""
    servers = []

    def start(database_url, **env):
        server = Server(database_url, tmp_path, **env)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def live_server(serve, database_url, committing):
    """The real server on the test database, with an empty users table."""
    return serve(database_url)


@pytest.fixture(scope="session")
def pg_cluster():
    """A running PostgreSQL cluster of this test run's own (initdb, pg_ctl)."""
    bindir = pg.bindir()
    if bindir is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed (pg_config --bindir)")
    cluster = pg.Cluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def cluster_database(pg_cluster):
    """A fresh database with the schema, in the throwaway cluster, started if a test stopped it."""
    if not pg_cluster.is_running():
        pg_cluster.start()
    url = pg_cluster.create_database(f"app_{secrets.token_hex(4)}")
    app = create_app({"DATABASE_URL": url})
    with app.app_context():
        migrations.upgrade("head")
    get_engine(app).dispose()
    return url


# -- helpers for tests ------------------------------------------------------------


def pg_engine_options(**overrides) -> dict:
    """The engine options for a PostgreSQL URL, from the default settings plus `overrides`."""
    settings = {**SETTINGS, **overrides}
    return engine_options(settings, url_from_settings({**settings, "DATABASE_URL": "postgresql://db/app"}, ""))


def assert_problem(response, status):
    """The response is problem+json with `status`; returns its body."""
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    return body


def assert_session_gone(app):
    """The thread's registry is empty and every pooled connection is back."""
    assert not Session.registry.has()
    assert get_engine(app).pool.checkedout() == 0


def race(app, requests):
    """Run each request function on its own thread with its own client, released
    together by a barrier, and return their responses in order."""
    barrier = threading.Barrier(len(requests))
    responses = [None] * len(requests)

    def run(index, request):
        client = app.test_client()
        barrier.wait()
        responses[index] = request(client)

    threads = [threading.Thread(target=run, args=(i, r)) for i, r in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return responses


def stored_users() -> list[tuple[str, str]]:
    """(name, email) of every stored user, read through a session of its own."""
    try:
        return [tuple(row) for row in Session().execute(select(User.name, User.email).order_by(User.id))]
    finally:
        Session.remove()


def audit_rows(user_id=None) -> list[tuple]:
    """(user_id, action, changes) of the stored audit rows, oldest first."""
    query = select(AuditEntry.user_id, AuditEntry.action, AuditEntry.changes).order_by(AuditEntry.id)
    if user_id is not None:
        query = query.where(AuditEntry.user_id == user_id)
    try:
        return [tuple(row) for row in Session().execute(query)]
    finally:
        Session.remove()


def user_count() -> int:
    try:
        return Session().scalar(select(func.count()).select_from(User))
    finally:
        Session.remove()


def add_users(*pairs: tuple[str, str]) -> list[int]:
    """Store users directly, bypassing the HTTP layer; returns their ids."""
    session = Session()
    users = [User(name=name, email=email) for name, email in pairs]
    session.add_all(users)
    session.commit()
    ids = [user.id for user in users]
    Session.remove()
    return ids


@contextlib.contextmanager
def users_table_held(database_url: str):
    """Hold a lock on the users table from a connection of our own, so that requests
    touching it wait: on PostgreSQL every request (ACCESS EXCLUSIVE), on SQLite
    every writer (the write lock; WAL readers go on reading)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        connection = sqlite3.connect(url.database, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
        return
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
            try:
                yield
            finally:
                connection.rollback()
    finally:
        engine.dispose()


def app_backends(database_url: str) -> list[dict]:
    """The app's connections to this PostgreSQL database, as pg_stat_activity sees them."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT pid, state, wait_event_type FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'webapp' "
                "AND pid <> pg_backend_pid()").mappings().all()
    finally:
        engine.dispose()
    return [dict(row) for row in rows]


def add_numbered_users(count: int, name: str = "User") -> None:
    """Store `count` users named "<name> <n>" in one bulk insert (no audit rows)."""
    session = Session()
    session.execute(insert(User), [{"name": f"{name} {n}", "email": f"{name.lower()}{n}@example.com"}
                                   for n in range(1, count + 1)])
    session.commit()
    Session.remove()


class Statements(list):
    """The SQL statements an engine ran, as (statement, parameters), in order.

    Only statements that read or write data are kept: transaction control (BEGIN,
    SAVEPOINT, RELEASE) differs between backends and between the test fixtures, and
    is not what "a page costs two statements" is about.
    """

    DATA = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")

    def record(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith(self.DATA):
            self.append((statement, parameters))

    def sql(self) -> list[str]:
        return [statement for statement, _ in self]


@pytest.fixture
def statements(app):
    """Counts the statements the app's engine runs, hooked on before_cursor_execute.
    Call `.clear()` after setting up, then make the request under test."""
    engine = get_engine(app)
    seen = Statements()
    event.listen(engine, "before_cursor_execute", seen.record)
    yield seen
    event.remove(engine, "before_cursor_execute", seen.record)


class Forms:
    """Posts forms as a browser does: fetch the page, keep its hidden inputs (the
    CSRF token, the edit form's version), fill in the rest, submit."""

    HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')

    def __init__(self, client):
        self.client = client

    def hidden(self, page: str = "/users/new") -> dict[str, str]:
        return dict(self.HIDDEN.findall(self.client.get(page).text))

    def token(self, page: str = "/users/new") -> str:
        return self.hidden(page)["csrf_token"]

    def post(self, path: str, data: dict, page: str = "/users/new", **kwargs):
        return self.client.post(path, data={**self.hidden(page), **data}, **kwargs)


@pytest.fixture
def forms(client):
    return Forms(client)
