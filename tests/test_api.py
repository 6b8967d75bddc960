"""The JSON API: CRUD, the user's shape, and one problem-JSON shape for every error."""

import json
from datetime import UTC, datetime

import pytest

from helpers import ADMIN_NAME, assert_problem

ADA = {"name": "Ada Lovelace", "email": "ada@example.com"}


def assert_utc_iso(value):
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0
    assert abs(datetime.now(UTC) - parsed).total_seconds() < 60


# -- create -------------------------------------------------------------------------


def test_create_returns_201_with_location_and_the_user(store, client):
    response = client.post("/api/users", json=ADA)

    assert response.status_code == 201
    user = response.get_json()
    assert list(user) == ["id", "name", "email", "role", "created_at", "updated_at"]
    assert response.headers["Location"] == f"/api/users/{user['id']}"
    assert (user["name"], user["email"]) == (ADA["name"], ADA["email"])
    assert_utc_iso(user["created_at"])
    assert_utc_iso(user["updated_at"])
    assert store.users() == [(ADA["name"], ADA["email"])]


def test_create_trims_the_name_and_lower_cases_the_email(store, client):
    response = client.post("/api/users", json={"name": "  Ada  ", "email": " ADA@Example.COM "})

    assert response.status_code == 201
    assert store.users() == [("Ada", "ada@example.com")]


def test_location_of_a_created_user_serves_it(client):
    created = client.post("/api/users", json=ADA)

    fetched = client.get(created.headers["Location"])

    assert fetched.status_code == 200
    assert fetched.get_json() == created.get_json()


# -- read ---------------------------------------------------------------------------


def test_get_unknown_id_is_404_problem(client):
    assert_problem(client.get("/api/users/999999"), 404)


@pytest.mark.parametrize(
    "path",
    [
        "/api/users/abc",
        "/api/users/0",
        "/api/users/-1",
        "/api/users/99999999999999999999999",
        "/api/nothing-here",
        "/api",
    ],
)
def test_unknown_routes_under_api_are_404_problem_not_html(client, path):
    assert_problem(client.get(path), 404)


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("user_id", ["0", "007", "9223372036854775808", "99999999999999999999999"])
def test_an_id_that_cannot_exist_is_404_whatever_the_method(store, client, method, user_id):
    response = client.open(f"/api/users/{user_id}", method=method, json=ADA)

    body = assert_problem(response, 404)
    assert "Allow" not in response.headers
    assert "no user with id" not in body["detail"]  # refused by routing, before any query
    assert store.users() == []


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_the_largest_possible_id_reaches_the_view(client, method):
    response = client.open("/api/users/9223372036854775807", method=method, json=ADA)

    body = assert_problem(response, 404)
    assert body["detail"] == "There is no user with id 9223372036854775807."


def test_list_has_items_page_per_page_and_total(store, client):
    store.add_users(("Ada", "ada@example.com"), ("Alan", "alan@example.com"))

    body = client.get("/api/users").get_json()

    # The admin the test acts as is a user too, the first one.
    assert body["page"] == 1 and body["per_page"] == 20 and body["total"] == 3
    assert [u["name"] for u in body["items"]] == [ADMIN_NAME, "Ada", "Alan"]


def test_list_pages_through_users_in_id_order(store, client):
    store.add_users(*[(f"User {n}", f"user{n}@example.com") for n in range(5)])

    body = client.get("/api/users?page=2&per_page=2").get_json()

    assert [u["name"] for u in body["items"]] == ["User 1", "User 2"]  # after the admin and User 0
    assert (body["page"], body["per_page"], body["total"]) == (2, 2, 6)


def test_list_past_the_last_page_is_empty(store, client):
    store.add_users(("Ada", "ada@example.com"))

    body = client.get("/api/users?page=3").get_json()

    assert body["items"] == [] and body["total"] == 2


def test_per_page_is_capped_at_100(client):
    assert client.get("/api/users?per_page=1000").get_json()["per_page"] == 100


@pytest.mark.parametrize(
    "query", ["page=0", "page=x", "per_page=0", "per_page=-5", "per_page=ten", "q=" + "x" * 101, "q=a%00b"]
)
def test_invalid_list_arguments_are_422_with_field_errors(client, query):
    body = assert_problem(client.get(f"/api/users?{query}"), 422)

    assert query.split("=")[0] in body["errors"]


def test_search_matches_name_or_email_case_insensitively(store, client):
    store.add_users(
        ("Ada Lovelace", "countess@example.com"),
        ("Alan Turing", "alan@bletchley.org"),
        ("Grace Hopper", "grace@navy.mil"),
    )

    by_name = client.get("/api/users?q=LOVE").get_json()
    by_email = client.get("/api/users?q=Bletchley").get_json()

    assert [u["name"] for u in by_name["items"]] == ["Ada Lovelace"] and by_name["total"] == 1
    assert [u["name"] for u in by_email["items"]] == ["Alan Turing"] and by_email["total"] == 1


@pytest.mark.parametrize("wildcard", ["%", "_"])
def test_search_treats_sql_wildcards_literally(store, client, wildcard):
    store.add_users(("Ada", "ada@example.com"), (f"100{wildcard} Grace", "grace@example.com"))

    body = client.get("/api/users", query_string={"q": wildcard}).get_json()

    assert [u["name"] for u in body["items"]] == [f"100{wildcard} Grace"]


# -- update -------------------------------------------------------------------------


def test_put_replaces_every_field(store, client):
    [user_id] = store.add_users(("Ada", "ada@example.com"))

    response = client.put(f"/api/users/{user_id}", json={"name": "Ada King", "email": "KING@example.com"})

    assert response.status_code == 200
    assert response.get_json()["email"] == "king@example.com"
    assert store.users() == [("Ada King", "king@example.com")]


def test_put_without_every_field_is_422_and_changes_nothing(store, client):
    [user_id] = store.add_users(("Ada", "ada@example.com"))

    body = assert_problem(client.put(f"/api/users/{user_id}", json={"name": "Ada King"}), 422)

    assert body["errors"] == {"email": ["Missing data for required field."]}
    assert store.users() == [("Ada", "ada@example.com")]


def test_patch_changes_only_the_fields_given_and_moves_updated_at(client):
    created = client.post("/api/users", json=ADA).get_json()

    response = client.patch(f"/api/users/{created['id']}", json={"name": "Ada King"})

    user = response.get_json()
    assert response.status_code == 200
    assert (user["name"], user["email"]) == ("Ada King", ADA["email"])
    assert user["created_at"] == created["created_at"]
    assert user["updated_at"] > created["updated_at"]


def test_update_of_unknown_id_is_404(client):
    assert_problem(client.patch("/api/users/424242", json={"name": "Nobody"}), 404)


# -- delete -------------------------------------------------------------------------


def test_delete_is_204_and_the_user_is_gone(store, client):
    [user_id] = store.add_users(("Ada", "ada@example.com"))

    response = client.delete(f"/api/users/{user_id}")

    assert response.status_code == 204 and response.data == b""
    assert "Content-Type" not in response.headers  # no body, so no type
    assert store.users() == []
    assert_problem(client.get(f"/api/users/{user_id}"), 404)


def test_delete_of_unknown_id_is_404(client):
    assert_problem(client.delete("/api/users/424242"), 404)


# -- errors -------------------------------------------------------------------------


def test_malformed_json_is_400(store, client):
    response = client.post("/api/users", data='{"name": ', content_type="application/json")

    assert_problem(response, 400)
    assert store.users() == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_json_is_415(store, client, content_type):
    response = client.post("/api/users", data="name=Ada&email=ada@example.com", content_type=content_type)

    assert_problem(response, 415)
    assert store.users() == []


@pytest.mark.parametrize(
    "body, field",
    [
        ({"email": "ada@example.com"}, "name"),
        ({"name": "Ada"}, "email"),
        ({"name": "   ", "email": "ada@example.com"}, "name"),
        ({"name": "x" * 101, "email": "ada@example.com"}, "name"),
        ({"name": None, "email": "ada@example.com"}, "name"),
        ({"name": 42, "email": "ada@example.com"}, "name"),
        ({"name": "a\x00b", "email": "ada@example.com"}, "name"),
        ({"name": "Ada\nLovelace", "email": "ada@example.com"}, "name"),
        ({"name": "Ada", "email": "ada\x00@example.com"}, "email"),
        ({"name": "a\ud800b", "email": "ada@example.com"}, "name"),
        ({"name": "Ada", "email": "ada\udfff@example.com"}, "email"),
        ({"name": "Ada", "email": "not-an-email"}, "email"),
        ({"name": "Ada", "email": "a" * 243 + "@example.com"}, "email"),
        ({"name": "Ada", "email": "ada@example.com", "rank": "admin"}, "rank"),
        ({"name": "Ada", "email": "ada@example.com", "id": 7}, "id"),
        ({"name": "Ada", "email": "ada@example.com", "created_at": "2020-01-01T00:00:00Z"}, "created_at"),
        (["Ada", "ada@example.com"], "_schema"),
        ("Ada", "_schema"),
        (None, "_schema"),
    ],
)
def test_invalid_or_unknown_fields_are_422_with_errors_per_field(store, client, body, field):
    response = client.post("/api/users", data=json.dumps(body), content_type="application/json")

    problem = assert_problem(response, 422)
    assert field in problem["errors"] and all(problem["errors"][field])
    assert store.users() == []


def test_an_email_of_exactly_254_characters_is_accepted(client):
    # RFC 5321: a local part of at most 64 octets, so the length is in the domain.
    email = "a" * 64 + "@" + ".".join(["b" * 62] * 2 + ["c" * 51]) + ".example.com"
    assert len(email) == 254

    assert client.post("/api/users", json={"name": "Long", "email": email}).status_code == 201


def test_an_email_already_taken_is_409_whatever_its_case(store, client):
    store.add_users(("Ada", "ada@example.com"))

    body = assert_problem(client.post("/api/users", json={"name": "Other", "email": "ADA@example.com"}), 409)

    assert "email" in body["errors"]
    assert store.users() == [("Ada", "ada@example.com")]


def test_changing_email_to_a_taken_one_is_409_and_changes_nothing(store, client):
    ada, alan = store.add_users(("Ada", "ada@example.com"), ("Alan", "alan@example.com"))

    assert_problem(client.put(f"/api/users/{alan}", json={"name": "Alan T", "email": "ada@example.com"}), 409)

    assert store.users() == [("Ada", "ada@example.com"), ("Alan", "alan@example.com")]


def test_wrong_method_is_405_problem_with_allow_header(client):
    response = client.delete("/api/users")

    assert_problem(response, 405)
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS, POST"  # sorted, as OPTIONS lists them


def test_a_body_over_the_size_limit_is_413_problem(store, client, app):
    oversized = "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)

    response = client.post("/api/users", json={"name": oversized, "email": "big@example.com"})

    assert_problem(response, 413)
    assert store.users() == []


def test_an_unexpected_error_is_500_problem_without_a_traceback(app, rolled_back):
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/api/explode")
    def explode():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/api/explode")

    body = assert_problem(response, 500)
    assert "secret internals" not in response.text and "Traceback" not in response.text
    assert body["title"] == "Internal Server Error"


# -- error texts written for this API ----------------------------------------------------


def test_an_unknown_endpoint_is_a_404_that_points_to_the_docs(client):
    response = client.get("/api/nothing-here")

    assert response.status_code == 404 and response.mimetype == "application/problem+json"
    assert response.get_json()["detail"] == "There is no such endpoint in this API: /api/docs lists them."


def test_a_body_that_is_not_json_is_a_400_that_says_what_to_send(client, store):
    response = client.post("/api/users", data="{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.get_json()["detail"].startswith("The body is not valid JSON: Expecting property name")
    assert store.count() == 0


def test_a_404_of_the_api_with_a_text_of_its_own_keeps_it(client):
    assert client.get("/api/users/987654").get_json()["detail"] == "There is no user with id 987654."
