"""Ids are never handed out twice and never run out without a clear answer."""

import pytest
from sqlalchemy import text

from webapp import create_app, migrations
from webapp.db import get_engine

from helpers import add_admin, assert_problem, client_class, empty_database

MAX_ID = 2**63 - 1


def test_a_deleted_newest_users_id_is_not_given_to_the_next_user(committing_client):
    newest = committing_client.post("/api/users", json={"name": "Ada", "email": "ada@example.com"}).get_json()
    assert committing_client.delete(f"/api/users/{newest['id']}").status_code == 204

    created = committing_client.post("/api/users", json={"name": "Alan", "email": "alan@example.com"}).get_json()

    assert created["id"] > newest["id"]
    # The deleted user's history is its own: the new id has only its insert.
    history = committing_client.get(f"/api/users/{created['id']}/history").get_json()["items"]
    assert [entry["action"] for entry in history] == ["insert"]


@pytest.fixture
def exhausted_app(tmp_path):
    """An app on a database of its own whose users' ids are used up to the 64-bit limit."""
    with empty_database(tmp_path) as url:
        app = create_app({"DATABASE_URL": url})
        with app.app_context():
            migrations.upgrade("head")
        app.test_client_class = client_class(add_admin(app))
        with get_engine(app).begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text(f"SELECT setval(pg_get_serial_sequence('users', 'id'), {MAX_ID})"))
            else:
                connection.execute(text(f"UPDATE sqlite_sequence SET seq = {MAX_ID} WHERE name = 'users'"))
        yield app
        get_engine(app).dispose()


def count_users(app) -> int:
    with get_engine(app).connect() as connection:
        return connection.execute(text("SELECT count(*) FROM users")).scalar()


def test_an_exhausted_id_sequence_is_a_503_problem_and_writes_nothing(exhausted_app):
    client = exhausted_app.test_client()
    before = count_users(exhausted_app)

    response = client.post("/api/users", json={"name": "Ada", "email": "ada@example.com"})

    body = assert_problem(response, 503)
    assert int(response.headers["Retry-After"]) > 0
    assert "Try again" in body["detail"] or "run out of ids" in body["detail"]
    assert count_users(exhausted_app) == before


def test_an_import_into_an_exhausted_sequence_is_a_503_and_writes_nothing(exhausted_app):
    client = exhausted_app.test_client()
    before = count_users(exhausted_app)

    response = client.post("/api/users/import", json=[{"name": "Ada", "email": "ada@example.com"}])

    assert_problem(response, 503)
    assert count_users(exhausted_app) == before
