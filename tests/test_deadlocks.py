"""Concurrent imports of the same new emails in opposite orders: no deadlock, in one
batch or across many, and each email stored once."""

import time

import pytest
from sqlalchemy import create_engine, func, select

from webapp.bulk import imports
from webapp.domain.models import User
from webapp.domain.users import EMAIL_TAKEN

from helpers import race

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
