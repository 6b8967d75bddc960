"""What many tests share: assertions, a race, database locks, a statement log, forms.

The data in the test database is read and written through `Store` (the `store`
fixture), which goes through the app's own session in an app context, so a test
whose requests roll back (the `client` fixture) sees its own rows.

Every request of a test is made by someone: `add_admin` stores the admin the test
clients act as (ADMIN_EMAIL, left out of what Store reports), with an API token;
`client_class` makes `app.test_client()` send that token and sign in for the pages.
"""

import hashlib
import os
import re
import secrets
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings
from sqlalchemy import create_engine, func, insert, make_url, select
from werkzeug.security import generate_password_hash

from config import Config, TestingConfig
from webapp.db import Session, get_engine
from webapp.domain import accounts, models
from webapp.domain.models import AuditEntry, User
from webapp.engine import database_url as url_from_settings
from webapp.engine import engine_options, with_shipped_driver

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
SETTINGS = {k: getattr(Config, k) for k in dir(Config) if k.isupper()}  # the class defaults


ADMIN_NAME, ADMIN_EMAIL, ADMIN_PASSWORD = "Test Admin", "admin@tests.example.org", "admin-password"
NOT_THE_ADMIN = User.email != ADMIN_EMAIL


@dataclass(frozen=True)
class Credentials:
    user_id: int
    email: str
    password: str
    token: str

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def add_account(connection, name: str, email: str, password: str, role: str = "admin") -> Credentials:
    """A user who can sign in (the one with this email if there is one), and a new
    API token of theirs, written with Core (no audit row: history tests see only
    what they did) on `connection`."""
    now = datetime.now(UTC)
    users, tokens = models.users_table, models.tokens_table
    user_id = connection.execute(select(users.c.id).where(users.c.email == email)).scalar()
    if user_id is None:
        user_id = connection.execute(
            insert(users)
            .values(
                name=name,
                email=email,
                role=role,
                created_at=now,
                updated_at=now,
                password_hash=generate_password_hash(password, method=TestingConfig.PASSWORD_HASH_METHOD),
            )
            .returning(users.c.id)
        ).scalar_one()
    secret = secrets.token_urlsafe(32)
    token_id = connection.execute(
        insert(tokens)
        .values(
            user_id=user_id,
            name="tests",
            secret_hash=hashlib.sha256(secret.encode()).hexdigest(),
            created_at=now,
            expires_at=now + timedelta(days=1),
        )
        .returning(tokens.c.id)
    ).scalar_one()
    return Credentials(user_id, email, password, f"{token_id}.{secret}")


def add_admin(app: Flask) -> Credentials:
    """The admin the tests act as, stored through the app's session (so it is inside
    a rolled-back test's transaction), committed."""
    with app.app_context():
        credentials = add_account(Session().connection(), ADMIN_NAME, ADMIN_EMAIL, ADMIN_PASSWORD)
        Session().commit()
    return credentials


def add_admin_to(database_url: str) -> Credentials:
    """The same admin, in a database the test reaches directly (a real server's)."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            return add_account(connection, ADMIN_NAME, ADMIN_EMAIL, ADMIN_PASSWORD)
    finally:
        engine.dispose()


def client_class(credentials: Credentials) -> type[FlaskClient]:
    """A test client that acts as `credentials`: their bearer token on every request,
    and signed in for the pages. The sign-in writes Flask-Login's session directly,
    without a request, so a test may still add routes to its app afterwards; the
    login form itself is tested in test_accounts.py."""

    class SignedInClient(FlaskClient):
        acting_as = credentials

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {credentials.token}"
            with self.application.app_context():
                user = accounts.find_user(credentials.user_id)
                account = accounts.account_of(user)
            with self.session_transaction() as session:
                session["_user_id"], session["_fresh"] = account.get_id(), True

    return SignedInClient


def sign_in(client, email: str, password: str):
    """Sign in through the login form, as a browser does; returns the response."""
    token = Forms.HIDDEN.findall(client.get("/login").text)
    csrf = dict(token).get("csrf_token", "")
    response = client.post("/login", data={"email": email, "password": password, "csrf_token": csrf})
    assert response.status_code == 303, response.text
    return response


def signed_in(app: Flask) -> Flask:
    """`app`, whose test clients act as the admin (added to its database)."""
    app.test_client_class = client_class(add_admin(app))
    return app


def anonymous(app: Flask) -> FlaskClient:
    """A test client that is nobody: no token, not signed in."""
    return FlaskClient(app, app.response_class, use_cookies=True)


class Store:
    """The app's database, read and written directly, bypassing the HTTP layer.
    The admin the test acts as is not among the users it reports."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def users(self) -> list[tuple[str, str]]:
        """(name, email) of every stored user, in id order."""
        query = select(User.name, User.email).where(NOT_THE_ADMIN).order_by(User.id)
        with self.app.app_context():
            return [tuple(row) for row in Session().execute(query)]

    def count(self) -> int:
        with self.app.app_context():
            return Session().scalar(select(func.count()).select_from(User).where(NOT_THE_ADMIN))

    def audit_rows(self, user_id=None) -> list[tuple]:
        """(user_id, action, changes) of the stored audit rows, oldest first."""
        query = select(AuditEntry.user_id, AuditEntry.action, AuditEntry.changes).order_by(AuditEntry.id)
        if user_id is not None:
            query = query.where(AuditEntry.user_id == user_id)
        with self.app.app_context():
            return [tuple(row) for row in Session().execute(query)]

    def scalar(self, statement):
        """The first column of the first row of `statement`, run through the app."""
        with self.app.app_context():
            return Session().scalar(statement)

    def scalars(self, statement) -> list:
        with self.app.app_context():
            return list(Session().scalars(statement))

    def add_users(self, *pairs: tuple[str, str]) -> list[int]:
        """Store users with the ORM (their history too); returns their ids."""
        with self.app.app_context():
            users = [User(name=name, email=email) for name, email in pairs]
            Session().add_all(users)
            Session().commit()
            return [user.id for user in users]

    def add_numbered_users(self, count: int, name: str = "User") -> None:
        """Store `count` users named "<name> <n>" in one bulk insert (no audit rows)."""
        with self.app.app_context():
            Session().execute(
                insert(User),
                [{"name": f"{name} {n}", "email": f"{name.lower()}{n}@example.com"} for n in range(1, count + 1)],
            )
            Session().commit()


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


def pg_engine_options(**overrides) -> dict:
    """The engine options for a PostgreSQL URL, from the default settings plus `overrides`."""
    settings = {**SETTINGS, **overrides}
    return engine_options(settings, url_from_settings({**settings, "DATABASE_URL": "postgresql://db/app"}, ""))


def page_text(response) -> str:
    """What a reader sees of an HTML response: its text without tags, spaces collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", response.text).split())


def assert_problem(response, status):
    """The response is problem+json with `status`; returns its body."""
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    return body


def assert_session_gone(app):
    """The thread's registry holds no session for `app` and every pooled connection is back."""
    with app.app_context():
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


@contextmanager
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
            rows = (
                connection.exec_driver_sql(
                    "SELECT pid, state, wait_event_type, query FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = 'webapp' "
                    "AND pid <> pg_backend_pid()"
                )
                .mappings()
                .all()
            )
    finally:
        engine.dispose()
    return [dict(row) for row in rows]


class Statements(list):
    """The SQL statements an engine ran, as (statement, parameters), in order.

    Only statements that read or write data are kept: transaction control (BEGIN,
    SAVEPOINT, RELEASE) differs between backends and between the test fixtures, and
    is not what "a page costs one statement" is about.
    """

    DATA = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")

    def record(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith(self.DATA):
            self.append((statement, parameters))

    def sql(self) -> list[str]:
        return [statement for statement, _ in self]


def plan(connection, backend: str, statement: str, parameters) -> str:
    """The database's plan for `statement`, as text: EXPLAIN, or SQLite's EXPLAIN QUERY PLAN."""
    explain = "EXPLAIN " if backend == "postgresql" else "EXPLAIN QUERY PLAN "
    rows = connection.exec_driver_sql(explain + statement, parameters).all()
    return "\n".join(str(row[-1]) for row in rows)


def outer_plan(explained: str) -> str:
    """A PostgreSQL plan without its InitPlans: a list page's capped count runs as
    one, and how it counts is not how the page reads."""
    kept, inside = [], None
    for line in explained.splitlines():
        depth = len(line) - len(line.lstrip())
        if inside is not None and depth > inside:
            continue
        inside = depth if line.lstrip().startswith("InitPlan") else None
        if inside is None:
            kept.append(line)
    return "\n".join(kept)


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


# Hypothesis in the suite: the same examples on every run and no example database
# (a failure reproduces from the code alone), no deadline (a loaded CI machine is
# slow), and function-scoped fixtures shared by the examples on purpose. Each test
# adds its own max_examples.
SLACK = 1.5  # seconds: a loaded machine's scheduling, and a request's own work, in timing bounds

BOUNDED = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@contextmanager
def replay_paused(replica_url: str):
    """A streaming replica that stops replaying the primary's WAL while the block runs."""
    engine = create_engine(replica_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT pg_wal_replay_pause()")
        try:
            yield
        finally:
            connection.exec_driver_sql("SELECT pg_wal_replay_resume()")
    engine.dispose()
