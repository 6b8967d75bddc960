"""The Alembic migrations build exactly the models' schema, and go back down cleanly."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from webapp import create_app, migrations
from webapp.db import get_engine
from webapp.domain.models import Base

from helpers import empty_database


@pytest.fixture
def fresh_app(tmp_path):
    """An app on a new, empty database of the backend under test."""
    with empty_database(tmp_path) as url:
        app = create_app({"DATABASE_URL": url})
        with app.app_context():
            yield app
        get_engine(app).dispose()


def schema_differences(app) -> list:
    with get_engine(app).connect() as connection:
        # The same filter env.py gives autogenerate: PostgreSQL-only indexes are
        # compared on PostgreSQL and left out on SQLite.
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "include_object": migrations.include_object(connection.dialect.name)},
        )
        return compare_metadata(context, Base.metadata)


def test_upgrading_an_empty_database_to_head_gives_exactly_the_models_schema(fresh_app):
    migrations.upgrade("head")

    assert migrations.current() == migrations.head()
    assert schema_differences(fresh_app) == []


def test_downgrade_to_base_then_upgrade_round_trips(fresh_app):
    migrations.upgrade("head")

    migrations.downgrade("base")
    assert set(inspect(get_engine(fresh_app)).get_table_names()) == {"alembic_version"}
    assert migrations.current() is None

    migrations.upgrade("head")
    assert schema_differences(fresh_app) == []


def test_every_step_upgrades_and_downgrades_one_revision_at_a_time(fresh_app):
    revisions = ["0001", "0002", "0003", "0004", "0005", "0006"]
    assert revisions[-1] == migrations.head()

    for revision in revisions:
        migrations.upgrade(revision)
        assert migrations.current() == revision
    for previous in reversed([None, *revisions[:-1]]):
        migrations.downgrade(previous or "base")
        assert migrations.current() == previous


def test_the_version_column_starts_existing_users_at_1(fresh_app):
    migrations.upgrade("0001")
    with get_engine(fresh_app).begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO users (name, email, created_at, updated_at) "
            "VALUES ('Old', 'old@example.com', '2020-01-01 00:00:00', '2020-01-01 00:00:00')"
        )

    migrations.upgrade("0002")

    with get_engine(fresh_app).connect() as connection:
        assert connection.exec_driver_sql("SELECT version FROM users").scalar() == 1


def test_0004_adds_accounts_to_existing_users_and_goes_back_down_keeping_them(fresh_app):
    migrations.upgrade("0003")
    engine = get_engine(fresh_app)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO users (name, email, created_at, updated_at, version) "
            "VALUES ('Old', 'old@example.com', '2020-01-01 00:00:00', '2020-01-01 00:00:00', 3)"
        )
        connection.exec_driver_sql(
            "INSERT INTO audit_log (user_id, action, changes, at, request_id) "
            """VALUES (1, 'insert', '{"name": [null, "Old"]}', '2020-01-01 00:00:00', 'r-1')"""
        )

    migrations.upgrade("0004")

    with engine.begin() as connection:
        user = connection.exec_driver_sql("SELECT name, email, version, role, password_hash FROM users").one()
        assert tuple(user) == ("Old", "old@example.com", 3, "member", None)
        assert connection.exec_driver_sql("SELECT request_id, actor_id FROM audit_log").one() == ("r-1", None)
        connection.exec_driver_sql("UPDATE users SET role = 'admin', password_hash = 'scrypt:x'")
        connection.exec_driver_sql(
            "INSERT INTO api_tokens (user_id, name, secret_hash, created_at, expires_at) "
            "VALUES (1, 't', 'h', '2020-01-01 00:00:00', '2020-01-31 00:00:00')"
        )
        connection.exec_driver_sql(
            "INSERT INTO sign_in_failures (email, failures, window_start) VALUES ('old@example.com', 2, '2020-01-01')"
        )
        connection.exec_driver_sql(
            "INSERT INTO audit_log (user_id, action, changes, at, request_id, actor_id) "
            """VALUES (1, 'update', '{"role": ["member", "admin"]}', '2020-01-02 00:00:00', 'r-2', 1)"""
        )
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.exec_driver_sql("UPDATE users SET role = 'owner'")

    migrations.downgrade("0003")

    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT name, email, version FROM users").all() == [
            ("Old", "old@example.com", 3)
        ]
        assert connection.exec_driver_sql("SELECT request_id FROM audit_log ORDER BY id").scalars().all() == [
            "r-1",
            "r-2",
        ]
    tables = set(inspect(engine).get_table_names())
    assert not {"api_tokens", "sign_in_failures"} & tables
    assert {"role", "password_hash"}.isdisjoint(c["name"] for c in inspect(engine).get_columns("users"))

    migrations.upgrade("head")

    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT role, password_hash FROM users").one() == ("member", None)
    assert schema_differences(fresh_app) == []


def _add_history(connection) -> None:
    # Three users, the newest (3) deleted; 4 is named by the history only (deleted before
    # 0005 on SQLite, where nothing else remembers it); a token of user 2.
    for n in (1, 2, 3):
        connection.exec_driver_sql(
            "INSERT INTO users (name, email, created_at, updated_at) "
            f"VALUES ('U{n}', 'u{n}@example.com', '2020-01-01 00:00:00', '2020-01-01 00:00:00')"
        )
    connection.exec_driver_sql("DELETE FROM users WHERE id = 3")
    connection.exec_driver_sql(
        "INSERT INTO audit_log (user_id, action, changes, at, actor_id) "
        "VALUES (4, 'delete', '{}', '2020-01-01 00:00:00', 1)"
    )
    connection.exec_driver_sql(
        "INSERT INTO api_tokens (user_id, name, secret_hash, created_at, expires_at) "
        "VALUES (2, 't', 'h', '2020-01-01 00:00:00', '2030-01-01 00:00:00')"
    )


def _new_user_id(connection) -> int:
    return connection.exec_driver_sql(
        "INSERT INTO users (name, email, created_at, updated_at) "
        "VALUES ('New', 'new@example.com', '2020-01-01 00:00:00', '2020-01-01 00:00:00') RETURNING id"
    ).scalar()


def test_0005_keeps_every_row_and_starts_new_ids_after_every_id_ever_used(fresh_app):
    migrations.upgrade("0004")
    with get_engine(fresh_app).begin() as connection:
        _add_history(connection)

    migrations.upgrade("0005")

    with get_engine(fresh_app).begin() as connection:
        assert connection.exec_driver_sql("SELECT id, email FROM users ORDER BY id").all() == [
            (1, "u1@example.com"),
            (2, "u2@example.com"),
        ]
        # The token survived the copy of users on SQLite (no cascade from the old table's drop).
        assert connection.exec_driver_sql("SELECT user_id FROM api_tokens").all() == [(2,)]
        assert connection.exec_driver_sql("SELECT user_id, actor_id FROM audit_log").all() == [(4, 1)]
        assert _new_user_id(connection) == 5


def test_0005_downgrades_with_the_data_and_upgrades_again(fresh_app):
    migrations.upgrade("0004")
    with get_engine(fresh_app).begin() as connection:
        _add_history(connection)
    migrations.upgrade("0005")

    migrations.downgrade("0004")
    with get_engine(fresh_app).connect() as connection:
        assert connection.exec_driver_sql("SELECT id FROM users ORDER BY id").all() == [(1,), (2,)]
        assert connection.exec_driver_sql("SELECT user_id FROM api_tokens").all() == [(2,)]
    migrations.upgrade("head")

    assert schema_differences(fresh_app) == []
    with get_engine(fresh_app).begin() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM api_tokens").scalar() == 1
        assert _new_user_id(connection) == 5


def test_the_newest_users_id_is_not_given_again_after_it_is_deleted(fresh_app):
    migrations.upgrade("head")
    with get_engine(fresh_app).begin() as connection:
        newest = _new_user_id(connection)
        connection.exec_driver_sql(f"DELETE FROM users WHERE id = {newest}")
    with get_engine(fresh_app).begin() as connection:
        connection.exec_driver_sql("DELETE FROM users")
        assert _new_user_id(connection) == newest + 1


def test_ids_are_64_bit(fresh_app):
    migrations.upgrade("head")
    with get_engine(fresh_app).begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO users (id, name, email, created_at, updated_at) "
            f"VALUES ({2**63 - 1}, 'Max', 'max@example.com', '2020-01-01 00:00:00', '2020-01-01 00:00:00')"
        )
        connection.exec_driver_sql(
            "INSERT INTO api_tokens (user_id, name, secret_hash, created_at, expires_at) "
            f"VALUES ({2**63 - 1}, 't', 'h', '2020-01-01 00:00:00', '2030-01-01 00:00:00')"
        )
        assert connection.exec_driver_sql("SELECT max(user_id) FROM api_tokens").scalar() == 2**63 - 1
