"""A request is one unit of work: all of it commits, or none of it does,
also when requests race each other on separate threads."""

import pytest

from helpers import race

ROUNDS = 5


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_requests_racing_to_create_one_email_get_one_201_and_one_409(store, app, committing, round_):
    def create(client):
        return client.post("/api/users", json={"name": "Racer", "email": "racer@example.com"})

    statuses = sorted(r.status_code for r in race(app, [create, create]))

    assert statuses == [201, 409]
    assert store.users() == [("Racer", "racer@example.com")]


def test_racing_updates_to_one_free_email_leave_exactly_one_owner(store, app, committing):
    first, second = store.add_users(("First", "first@example.com"), ("Second", "second@example.com"))

    def claim(user_id):
        return lambda client: client.patch(f"/api/users/{user_id}", json={"email": "wanted@example.com"})

    statuses = sorted(r.status_code for r in race(app, [claim(first), claim(second)]))

    assert statuses == [200, 409]
    emails = [email for _, email in store.users()]
    assert emails.count("wanted@example.com") == 1
    assert len(emails) == 2


def test_concurrent_creates_of_different_emails_all_succeed(store, app, committing):
    def create(n):
        return lambda client: client.post("/api/users", json={"name": f"U{n}", "email": f"u{n}@example.com"})

    statuses = [r.status_code for r in race(app, [create(n) for n in range(8)])]

    assert statuses == [201] * 8
    assert store.count() == 8


def test_a_conflicting_update_rolls_back_every_field_it_changed(store, client):
    ada, alan = store.add_users(("Ada", "ada@example.com"), ("Alan", "alan@example.com"))

    response = client.put(f"/api/users/{alan}", json={"name": "Renamed", "email": "ada@example.com"})

    assert response.status_code == 409
    assert store.users() == [("Ada", "ada@example.com"), ("Alan", "alan@example.com")]


def test_after_a_conflict_the_same_thread_serves_the_next_request_normally(store, app, committing):
    client = app.test_client()
    store.add_users(("Ada", "ada@example.com"))

    assert client.post("/api/users", json={"name": "Dup", "email": "ada@example.com"}).status_code == 409
    response = client.post("/api/users", json={"name": "Alan", "email": "alan@example.com"})

    assert response.status_code == 201
    assert store.users() == [("Ada", "ada@example.com"), ("Alan", "alan@example.com")]
