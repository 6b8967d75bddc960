"""The CLI: `flask --app wsgi init-db` and `flask --app wsgi seed-users N`."""

import re
import subprocess
import sys
import unicodedata

import pytest
from sqlalchemy import func, inspect, select

from webapp import migrations
from webapp.db import get_engine
from webapp.domain.models import AuditEntry

from server import ROOT


def test_init_db_upgrades_an_empty_database_to_the_latest_migration(make_app):
    app = make_app()  # a new, empty SQLite file
    result = app.test_cli_runner().invoke(args=["init-db"])

    assert result.exit_code == 0, result.output
    inspector = inspect(get_engine(app))
    assert set(inspector.get_table_names()) == {
        "users",
        "audit_log",
        "api_tokens",
        "sign_in_failures",
        "import_reports",
        "alembic_version",
    }
    assert {c["name"] for c in inspector.get_columns("users")} == {
        "id",
        "name",
        "email",
        "created_at",
        "updated_at",
        "version",
        "role",
        "password_hash",
    }
    indexes = {index["name"]: (index["unique"], index["column_names"]) for index in inspector.get_indexes("users")}
    assert indexes == {
        "uq_users_email": (True, ["email"]),
        "ix_users_name_id": (False, ["name", "id"]),
        "ix_users_created_at_id": (False, ["created_at", "id"]),
    }
    with app.app_context():
        assert migrations.current() == migrations.head()


def test_db_upgrade_downgrade_and_current_commands(make_app):
    app = make_app()  # a new, empty SQLite file
    runner = app.test_cli_runner()
    assert runner.invoke(args=["db", "current"]).output.strip() == "base"
    assert runner.invoke(args=["db", "upgrade", "0001"]).exit_code == 0
    assert runner.invoke(args=["db", "current"]).output.strip() == "0001"
    assert runner.invoke(args=["db", "upgrade"]).exit_code == 0
    assert runner.invoke(args=["db", "current"]).output.strip() == migrations_head(app)
    assert runner.invoke(args=["db", "downgrade", "base"]).exit_code == 0
    assert inspect(get_engine(app)).get_table_names() == ["alembic_version"]


def migrations_head(app):
    with app.app_context():
        return migrations.head()


def test_init_db_is_safe_to_run_twice(runner, committing):
    assert runner.invoke(args=["init-db"]).exit_code == 0
    assert runner.invoke(args=["init-db"]).exit_code == 0


def test_seed_users_adds_that_many_distinct_users(store, runner, committing):
    result = runner.invoke(args=["seed-users", "1500"])

    assert result.exit_code == 0, result.output
    assert "Added 1500 users" in result.output
    assert store.count() == 1500


def test_seed_users_in_batches_adds_every_user_with_its_history(store, runner, committing):
    result = runner.invoke(args=["seed-users", "2500", "--batch", "1000"])  # the last batch is partial

    assert result.exit_code == 0, result.output
    assert store.count() == 2500
    assert len({email for _, email in store.users()}) == 2500
    assert store.scalar(select(func.count()).select_from(AuditEntry)) == 2500


def test_seed_users_makes_people_with_their_names_in_their_emails_numbered_only_when_taken(store, runner, committing):
    runner.invoke(args=["seed-users", "300"])
    second = runner.invoke(args=["seed-users", "300"])  # on the same database: its emails are taken

    users = store.users()
    assert "Added 300 users." in second.output
    assert len({email for _, email in users}) == 600
    assert len({name for name, _ in users}) > 250
    for name, email in users:
        local, _, domain = email.partition("@")
        assert domain in ("example.com", "example.org", "example.net")
        last = unicodedata.normalize("NFKD", name.split()[-1]).encode("ascii", "ignore").decode().lower()
        assert last in local, (name, email)
        assert not re.search(r"[0-9a-f]{8}", local), email  # no random hex
    first_run = [email for _, email in users[:300]]
    assert sum(bool(re.search(r"\d", email)) for email in first_run) < 60  # a number only for a repeat


@pytest.mark.parametrize("batch", ["0", "50001"])
def test_seed_users_refuses_a_batch_size_out_of_bounds(store, runner, committing, batch):
    result = runner.invoke(args=["seed-users", "10", "--batch", batch])

    assert result.exit_code != 0
    assert store.count() == 0


def test_seed_users_refuses_a_count_below_one(store, runner, committing):
    result = runner.invoke(args=["seed-users", "0"])

    assert result.exit_code != 0
    assert store.count() == 0


def test_the_flask_command_finds_the_app_through_wsgi(tmp_path):
    env = {"PATH": "", "APP_ENV": "testing", "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}"}

    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "init-db"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cli.sqlite3").exists()
