"""`flask --app wsgi create-admin EMAIL [--name NAME]` and `flask --app wsgi
create-token EMAIL [--name LABEL] [--days N]`, run for real as subprocesses against
a database of their own (a SQLite file, or a scratch PostgreSQL database)."""

import os
import pty
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from select import select as select_fds

import pytest
from sqlalchemy import create_engine, select

from webapp import create_app
from webapp.db import Session, get_engine
from webapp.domain.models import ApiToken, AuditEntry, User
from webapp.engine import with_shipped_driver

from helpers import add_account, anonymous, empty_database, sign_in

ROOT = Path(__file__).parents[1]
FLASK = str(Path(sys.executable).with_name("flask"))


@pytest.fixture(scope="module")
def cli_database(tmp_path_factory):
    """A database of this module's own, migrated to head by `flask db upgrade`."""
    with empty_database(tmp_path_factory.mktemp("cli")) as url:
        assert flask(url, "db", "upgrade").returncode == 0
        yield url


@pytest.fixture
def database(cli_database):
    yield cli_database
    engine = create_engine(with_shipped_driver(cli_database))
    with engine.begin() as connection:
        for model in (ApiToken, User, AuditEntry):
            connection.execute(model.__table__.delete())
    engine.dispose()


def flask(database_url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "APP_ENV": "testing", "DATABASE_URL": database_url}
    return subprocess.run(
        [FLASK, "--app", "wsgi", *args], cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


def rows(database_url: str, statement) -> list:
    engine = create_engine(with_shipped_driver(database_url))
    try:
        with engine.connect() as connection:
            return list(connection.execute(statement))
    finally:
        engine.dispose()


@pytest.fixture
def app_on(database):
    apps = []

    def make():
        apps.append(create_app({"DATABASE_URL": database}))
        return apps[-1]

    yield make
    for app in apps:
        get_engine(app).dispose()


def test_create_admin_creates_an_admin_with_the_password_from_stdin(database, app_on):
    result = flask(database, "create-admin", "Root@Example.com", "--name", "Root Admin", stdin="root-password\n")

    assert result.returncode == 0, result.stderr
    assert "Created root@example.com" in result.stdout and "admin" in result.stdout
    assert "root-password" not in result.stdout + result.stderr
    [(name, role, password_hash)] = rows(database, select(User.name, User.role, User.password_hash))
    assert (name, role) == ("Root Admin", "admin")
    assert password_hash.startswith("scrypt:") and "root-password" not in password_hash
    sign_in(anonymous(app_on()), "root@example.com", "root-password")
    assert rows(database, select(AuditEntry.action, AuditEntry.actor_id)) == [("insert", None)]  # the CLI: nobody
    [(changes,)] = rows(database, select(AuditEntry.changes))
    assert changes["password"] == [None, "set"] and "root-password" not in str(changes)


def test_create_admin_defaults_the_name_to_the_part_before_the_at(database):
    assert flask(database, "create-admin", "root@example.com", stdin="root-password\n").returncode == 0

    assert rows(database, select(User.name)) == [("root",)]


def test_create_admin_promotes_an_existing_user_and_sets_the_password(database, app_on):
    app = app_on()
    with app.app_context():
        Session().add(User(name="Mia Member", email="mia@example.com"))
        Session().commit()

    result = flask(database, "create-admin", "mia@example.com", stdin="mia-new-password\n")

    assert result.returncode == 0, result.stderr
    assert "Promoted mia@example.com" in result.stdout
    assert rows(database, select(User.name, User.role)) == [("Mia Member", "admin")]
    sign_in(anonymous(app), "mia@example.com", "mia-new-password")


@pytest.mark.parametrize("password", ["short-7", "x" * 129])
def test_create_admin_refuses_a_password_out_of_bounds(database, password):
    result = flask(database, "create-admin", "root@example.com", stdin=password + "\n")

    assert result.returncode != 0
    assert "password" in result.stderr and "8 and 128" in result.stderr
    assert rows(database, select(User.id)) == []


def test_create_admin_refuses_a_bad_email(database):
    result = flask(database, "create-admin", "not-an-email", stdin="root-password\n")

    assert result.returncode != 0
    assert "email" in result.stderr
    assert rows(database, select(User.id)) == []


def add_root(app) -> None:
    """The admin the token commands are for, stored in process (create-admin has its own tests)."""
    with app.app_context():
        add_account(Session().connection(), "Root", "root@example.com", "root-password")
        Session().execute(ApiToken.__table__.delete())
        Session().commit()


def test_create_token_prints_a_working_token_alone_on_the_last_line(database, app_on):
    app = app_on()
    add_root(app)

    result = flask(database, "create-token", "root@example.com", "--name", "deploy", "--days", "3")

    assert result.returncode == 0, result.stderr
    token = result.stdout.splitlines()[-1]
    assert token == token.strip() and " " not in token and "." in token
    [(name, created, expires)] = rows(database, select(ApiToken.name, ApiToken.created_at, ApiToken.expires_at))
    assert name == "deploy"
    assert abs((expires - created) - timedelta(days=3)) < timedelta(seconds=1)
    client = anonymous(app)
    assert client.get("/api/users", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/api/users", headers={"Authorization": f"Bearer {token}x"}).status_code == 401


def test_create_token_lasts_api_token_days_by_default(database, app_on):
    add_root(app_on())

    assert flask(database, "create-token", "ROOT@example.com").returncode == 0

    [(name, created, expires)] = rows(database, select(ApiToken.name, ApiToken.created_at, ApiToken.expires_at))
    assert name == "API token"
    assert abs((expires - created) - timedelta(days=30)) < timedelta(seconds=1)


def test_create_token_for_an_unknown_email_fails_and_prints_no_token(database):
    result = flask(database, "create-token", "nobody@example.com")

    assert result.returncode != 0
    assert "no user" in result.stderr
    assert result.stdout == ""
    assert rows(database, select(ApiToken.id)) == []


def test_create_token_refuses_days_out_of_bounds(database, app_on):
    add_root(app_on())

    assert flask(database, "create-token", "root@example.com", "--days", "0").returncode != 0
    assert rows(database, select(ApiToken.id)) == []


def test_create_admin_on_a_terminal_asks_for_the_password_twice(database, app_on):
    """On a terminal (a pseudo-terminal here) the password is prompted for, and
    confirmed, instead of read from the first line."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "APP_ENV": "testing", "DATABASE_URL": database}
    process = subprocess.Popen(
        [FLASK, "--app", "wsgi", "create-admin", "tty@example.com"],
        cwd=ROOT,
        env=env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    output = b""
    try:
        for answer in (b"tty-password\n", b"tty-password\n"):
            output += read_until(controller, b": ")
            os.write(controller, answer)
        process.wait(timeout=60)
        output += read_until(controller, b"admin.")
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0, output
    assert output.count(b"Password") == 1 and b"Repeat for confirmation" in output
    assert b"Created tty@example.com" in output
    sign_in(anonymous(app_on()), "tty@example.com", "tty-password")


def read_until(fd: int, end: bytes, timeout: float = 60) -> bytes:
    seen, deadline = b"", time.monotonic() + timeout
    while not seen.rstrip().endswith(end.rstrip()) and time.monotonic() < deadline:
        ready, _, _ = select_fds([fd], [], [], 1)
        if ready:
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            seen += chunk
    return seen
