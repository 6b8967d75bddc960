"""Ids are never handed out twice and never run out without a clear answer."""

import pytest
from sqlalchemy import text

from webapp import create_app, migrations
from webapp.bulk import imports
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


# -- what a refusal costs ----------------------------------------------------------


def create(client, email: str):
    return client.post("/api/users", json={"name": "N", "email": email})


def csv_of(rows: list[str]) -> bytes:
    return ("name,email\n" + "".join(row + "\n" for row in rows)).encode()


def import_csv(client, rows: list[str], mode: str = "atomic"):
    return client.post(f"/api/users/import?mode={mode}", data=csv_of(rows), content_type="text/csv")


THOUSAND = [f"User {n},user{n}@example.com" for n in range(1000)]


@pytest.mark.parametrize(
    "refusal",
    [
        ["Bad,not-an-email"],  # a row the schema rejects, last in the file
        ["Dup,user0@example.com"],  # a duplicate of the file's first row, last in the file
        ["Stored,stored@example.com"],  # an email already stored, last in the file
    ],
    ids=["invalid", "duplicate", "stored"],
)
def test_a_refused_thousand_row_atomic_import_takes_no_id(client, refusal):
    before = create(client, "stored@example.com").get_json()["id"]

    response = import_csv(client, THOUSAND + refusal)

    assert_problem(response, 422)
    assert response.get_json()["rejected_count"] == 1
    assert create(client, "after@example.com").get_json()["id"] == before + 1


def test_a_refused_atomic_import_in_small_batches_takes_no_id(app, client):
    before = create(client, "stored@example.com").get_json()["id"]

    with app.test_request_context():
        rows = imports.read_json([{"name": "N", "email": f"u{n}@example.com"} for n in range(50)] + [{"name": ""}])
        report = imports.import_users(rows, "atomic", batch_size=7)

    assert report.refused and report.created == 0
    assert create(client, "after@example.com").get_json()["id"] == before + 1


def test_a_partial_import_of_stored_emails_takes_no_id_for_them(client):
    before = create(client, "stored@example.com").get_json()["id"]
    assert import_csv(client, ["Again,stored@example.com"] * 1 + THOUSAND[:1], mode="partial").status_code == 201
    first = before + 1  # the one new row

    response = import_csv(client, THOUSAND, mode="partial")  # all but 999 new, none of them taking an id

    assert response.get_json()["created"] == 999
    assert create(client, "after@example.com").get_json()["id"] == first + 999 + 1


def test_a_409_costs_at_most_one_id(client):
    before = create(client, "ada@example.com").get_json()["id"]

    for _ in range(5):
        assert create(client, "ada@example.com").status_code == 409

    assert create(client, "after@example.com").get_json()["id"] - before <= 1 + 5
