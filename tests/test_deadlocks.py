"""Concurrent imports of the same new emails in opposite orders: no deadlock, in one
batch or across many, and each email stored once."""

import time

import pytest
from sqlalchemy import create_engine, func, select

from webapp import create_app
from webapp.bulk import imports
from webapp.db import get_engine
from webapp.domain.models import User
from webapp.domain.users import EMAIL_TAKEN

from helpers import add_admin, client_class, race

ROWS = 300


def rows(round_: int) -> list[dict[str, str]]:
    return [{"name": f"R{round_} {n}", "email": f"r{round_}-{n}@example.com"} for n in range(ROWS)]


def deadlocks(database_url: str) -> int | None:
    """PostgreSQL's count of deadlocks it broke in this database (None on SQLite)."""
    if not database_url.startswith("postgresql"):
        return None
    time.sleep(1.0)  # the count is flushed by each backend when it goes idle
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.exec_driver_sql(
                "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
            ).scalar()
    finally:
        engine.dispose()


def import_both_ways(app, round_: int):
    forward = rows(round_)
    return race(
        app,
        [
            lambda client: client.post("/api/users/import?mode=partial", json=forward),
            lambda client: client.post("/api/users/import?mode=partial", json=forward[::-1]),
        ],
    )


def assert_each_email_stored_once(store, round_: int, responses) -> None:
    for response in responses:
        # 201, or a 422 for the import that came second and found every email taken.
        report = response.get_json()
        assert response.status_code in (201, 422), report
        assert {rejection["message"] for rejection in report["rejected"]} <= {EMAIL_TAKEN}
    assert sum(r.get_json()["created"] for r in responses) == ROWS
    stored = store.scalar(select(func.count(func.distinct(User.email))).where(User.email.like(f"r{round_}-%")))
    assert stored == ROWS


@pytest.mark.parametrize("batch_size", [None, 37], ids=["one batch", "many batches"])
def test_imports_of_the_same_emails_in_opposite_orders_never_deadlock(
    app, store, committing, database_url, monkeypatch, batch_size
):
    if batch_size:
        monkeypatch.setattr(imports, "BATCH_SIZE", batch_size)
    before = deadlocks(database_url)

    for round_ in range(5):
        assert_each_email_stored_once(store, round_, import_both_ways(app, round_))

    assert deadlocks(database_url) == before  # none broken by PostgreSQL, none retried


# -- the one retry -----------------------------------------------------------------------


@pytest.fixture
def flaky_app(cluster_database):
    """An app on a PostgreSQL database whose inserts into users fail as a serialization
    failure (SQLSTATE 40001) the first `failures` times: a sequence counts, since a
    rollback does not undo it."""
    engine = create_engine(cluster_database)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE flaky_failures (n int)")
        connection.exec_driver_sql("CREATE SEQUENCE flaky_attempts")
        connection.exec_driver_sql(
            "CREATE FUNCTION flaky() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF nextval('flaky_attempts') <= (SELECT n FROM flaky_failures) THEN "
            "RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001'; END IF; RETURN NEW; END $$"
        )
        connection.exec_driver_sql("CREATE TRIGGER flaky BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION flaky()")
    app = create_app({"DATABASE_URL": cluster_database})
    app.test_client_class = client_class(add_admin(app))  # before any failure is set

    def fail(times: int):
        with engine.begin() as connection:
            connection.exec_driver_sql(f"INSERT INTO flaky_failures VALUES ({times})")
            connection.exec_driver_sql("ALTER SEQUENCE flaky_attempts RESTART")
        return app

    yield fail
    get_engine(app).dispose()
    engine.dispose()


def count_named(app, name: str) -> int:
    with get_engine(app).connect() as connection:
        return connection.execute(select(func.count()).select_from(User).where(User.name == name)).scalar()


def test_a_transaction_aborted_as_a_serialization_failure_is_run_once_more(flaky_app):
    app = flaky_app(1)

    response = app.test_client().post("/api/users", json={"name": "Once", "email": "once@example.com"})

    assert response.status_code == 201
    assert count_named(app, "Once") == 1


def test_a_second_serialization_failure_is_a_503_and_writes_nothing(flaky_app):
    app = flaky_app(2)

    response = app.test_client().post("/api/users", json={"name": "Twice", "email": "twice@example.com"})

    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    assert count_named(app, "Twice") == 0
