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

import os
import secrets

import pytest
from sqlalchemy import delete, event

os.environ["APP_ENV"] = "testing"

from webapp import create_app, db, migrations  # noqa: E402
from webapp.db import get_engine  # noqa: E402
from webapp.domain.models import ApiToken, AuditEntry, SignInFailures, User  # noqa: E402

import pg_cluster as pg  # noqa: E402
from helpers import TEST_DATABASE_URL, Forms, Statements, Store, add_admin, add_admin_to, client_class, empty_database  # noqa: E402
from server import Server  # noqa: E402


def pytest_report_header(config):
    return f"database: {TEST_DATABASE_URL or 'SQLite, a temporary file'}"


def pytest_sessionfinish(session, exitstatus):
    """A PostgreSQL run must run everything: a skip there means PostgreSQL went untested."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if TEST_DATABASE_URL and skipped and session.exitstatus == 0:
        reporter.write_line(f"FAILED: {skipped} test(s) skipped on the PostgreSQL run", red=True)
        session.exitstatus = 1


# Two suites whose subject is not the run's database run in one of the two runs
# only, unless named on the command line: the browser tests in the SQLite run
# (make run's set-up), the production topology (which starts PostgreSQL clusters
# of its own) in the PostgreSQL run. It keeps .ci/run's two runs within bounds.
ONE_RUN_ONLY = {"tests/e2e/": "sqlite", "tests/test_cluster.py": "postgresql"}


def pytest_collection_modifyitems(config, items):
    backend = "postgresql" if TEST_DATABASE_URL else "sqlite"
    named = " ".join(config.args)
    elsewhere = {prefix for prefix, run in ONE_RUN_ONLY.items() if run != backend and prefix not in named}
    dropped = [item for item in items if item.nodeid.startswith(tuple(elsewhere))]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not item.nodeid.startswith(tuple(elsewhere))]


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
    for app in apps:
        get_engine(app).dispose()


@pytest.fixture
def rolled_back(app):
    """Every session of the test joins one outer transaction, rolled back at the end."""
    connection = get_engine(app).connect()
    outer = connection.begin()
    db.binds(app).override = connection
    app.test_client_class = client_class(add_admin(app))
    yield connection
    db.binds(app).override = None
    outer.rollback()
    connection.close()


@pytest.fixture
def committing(app):
    """Real commits, on an empty users table (but for the admin the test clients act
    as) that is emptied again afterwards."""
    _empty_users(app)
    app.test_client_class = client_class(add_admin(app))
    yield
    _empty_users(app)


def _empty_users(app):  # and their history, tokens and failed sign-ins
    with get_engine(app).begin() as connection:
        for table in (ApiToken, SignInFailures, User, AuditEntry):
            connection.execute(delete(table))


@pytest.fixture
def client(app, rolled_back):
    return app.test_client()


@pytest.fixture
def committing_client(app, committing):
    return app.test_client()


@pytest.fixture
def admin(app):
    """The credentials of the admin the test clients act as (client, committing)."""
    return app.test_client_class.acting_as


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def store(app):
    """The test database, read and written directly (see helpers.Store)."""
    return Store(app)


@pytest.fixture
def statements(app):
    """Counts the statements the app's engine runs, hooked on before_cursor_execute.
    Call `.clear()` after setting up, then make the request under test."""
    engine = get_engine(app)
    seen = Statements()
    if app.test_client_class is not None:  # the clients' token and the finished setup, known to the worker
        warm = app.test_client()
        warm.get("/api/tokens")
        warm.get("/login")
    event.listen(engine, "before_cursor_execute", seen.record)
    yield seen
    event.remove(engine, "before_cursor_execute", seen.record)


@pytest.fixture
def forms(client):
    return Forms(client)


# -- the real server and a database of our own ---------------------------------------


@pytest.fixture
def serve(tmp_path):
    """Start real gunicorns: `serve(database_url, **env)`, each sending the test admin's
    token unless `as_admin=False`. Each is stopped with SIGTERM after the test and must
    exit cleanly."""
    servers = []

    def start(database_url, as_admin=True, **env):
        server = Server(database_url, tmp_path, **env)
        servers.append(server)
        server.start()
        return server.authorize(add_admin_to(database_url).token) if as_admin else server

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
