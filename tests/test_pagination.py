"""Keyset pagination and capped totals: lists that cost the same at any depth and size."""

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest

USERS_7 = [(f"User {n}", f"user{n}@example.com") for n in range(1, 8)]


def cursor_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["cursor"][0]


def token(payload) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()


# -- the next link ------------------------------------------------------------------


def test_a_page_with_more_after_it_links_to_the_next_by_cursor_in_body_and_link_header(store, client):
    store.add_users(*USERS_7)

    response = client.get("/api/users?per_page=3")

    body = response.get_json()
    next_url = urlsplit(body["next"])
    assert (next_url.scheme, next_url.netloc, next_url.path) == ("http", "localhost", "/api/users")
    assert parse_qs(next_url.query).keys() == {"cursor", "per_page"}
    assert parse_qs(next_url.query)["per_page"] == ["3"]
    assert response.headers["Link"] == f'<{body["next"]}>; rel="next"'


def test_following_next_links_visits_every_user_once_in_id_order(store, client, admin):
    ids = store.add_users(*USERS_7)

    seen, pages, url = [], [], "/api/users?per_page=3"
    while url:
        body = client.get(url).get_json()
        seen += [user["id"] for user in body["items"]]
        pages.append((body["page"], body["total"], body["total_capped"]))
        url = body["next"]

    assert seen == [admin.user_id, *sorted(ids)]  # the admin the test acts as is a user too
    assert pages == [(1, 8, False), (None, 8, False), (None, 8, False)]


def test_the_last_page_has_next_null_and_no_link_header(store, client):
    store.add_users(*USERS_7)

    response = client.get("/api/users?per_page=8")

    assert len(response.get_json()["items"]) == 8  # the admin and 7 users
    assert response.get_json()["next"] is None
    assert "Link" not in response.headers


def test_a_page_by_number_links_onwards_to_the_same_users_as_the_next_page_number(store, client):
    store.add_users(*USERS_7)

    by_number = client.get("/api/users?page=2&per_page=2").get_json()
    by_cursor = client.get(by_number["next"]).get_json()

    assert by_cursor["items"] == client.get("/api/users?page=3&per_page=2").get_json()["items"]


def test_next_links_keep_the_search(store, client):
    store.add_users(
        *USERS_7, ("Ada Lovelace", "ada@example.com"), *[(f"User {n}", f"user{n}@example.com") for n in range(8, 11)]
    )

    first = client.get("/api/users?q=user&per_page=5").get_json()
    second = client.get(first["next"]).get_json()

    assert parse_qs(urlsplit(first["next"]).query)["q"] == ["user"]
    assert [user["name"] for user in second["items"]] == [f"User {n}" for n in range(6, 11)]
    assert (second["total"], second["next"]) == (10, None)


def test_a_cursor_still_works_after_the_user_it_points_after_is_deleted(store, client):
    ids = store.add_users(*USERS_7)
    first = client.get("/api/users?per_page=3").get_json()

    assert client.delete(f"/api/users/{ids[2]}").status_code == 204
    second = client.get(first["next"]).get_json()

    assert [user["id"] for user in second["items"]] == ids[3:6]


def test_users_created_after_a_cursor_was_issued_appear_at_the_end(store, client):
    store.add_users(*USERS_7[:4])
    first = client.get("/api/users?per_page=3").get_json()

    store.add_users(("Late", "late@example.com"))
    second = client.get(first["next"]).get_json()

    assert [user["name"] for user in second["items"]] == ["User 3", "User 4", "Late"]  # after the admin, 1, 2


# -- a bad cursor -------------------------------------------------------------------


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not-a-cursor",
        "!!!!",
        "eyJhZnRlciI6",
        "x" * 65,
        token([1]),
        token({"after": "3"}),
        token({"after": True}),
        token({"after": -1}),
        token({"after": 2**63}),
        token({"after": 1.5}),
        token({"after": 3, "extra": 1}),
        token({}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_a_cursor_that_was_not_issued_by_the_server_is_422(client, cursor):
    response = client.get("/api/users", query_string={"cursor": cursor})

    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["errors"] == {"cursor": ["Not a valid cursor."]}


def test_page_and_cursor_together_are_422(client):
    response = client.get("/api/users", query_string={"page": 2, "cursor": token({"after": 3})})

    assert response.status_code == 422
    assert response.get_json()["errors"] == {"cursor": ["Give either page or cursor, not both."]}


def test_a_bad_cursor_on_the_html_list_is_a_422_page(client):
    response = client.get("/users?cursor=not-a-cursor")

    assert response.status_code == 422 and response.mimetype == "text/html"


# -- the capped total ---------------------------------------------------------------


def test_the_total_is_exact_and_not_capped_below_the_cap(store, client):
    store.add_users(*USERS_7)

    body = client.get("/api/users").get_json()

    assert (body["total"], body["total_capped"]) == (8, False)  # and the admin


def test_past_the_cap_of_10_000_the_total_is_the_cap_marked_capped(store, client):
    store.add_numbered_users(10_001)

    body = client.get("/api/users?per_page=1").get_json()
    page = client.get("/users")

    assert (body["total"], body["total_capped"]) == (10_000, True)
    assert "10,000+ users" in page.text
    assert "Page 1 of 500+" in page.text


def test_exactly_the_cap_is_still_an_exact_total(store, client, app):
    app.config["LIST_TOTAL_CAP"] = 5
    store.add_users(*USERS_7[:4])  # and the admin: 5

    body = client.get("/api/users").get_json()

    assert (body["total"], body["total_capped"]) == (5, False)
    assert "5 users" in client.get("/users").text


def test_a_search_total_is_capped_the_same_way(store, client, app):
    app.config["LIST_TOTAL_CAP"] = 5
    store.add_users(*USERS_7, ("Ada Lovelace", "ada@example.com"))

    users = client.get("/api/users?q=user").get_json()
    ada = client.get("/api/users?q=ada").get_json()

    assert (users["total"], users["total_capped"]) == (5, True)
    assert (ada["total"], ada["total_capped"]) == (1, False)


def test_the_next_link_goes_on_past_the_cap(store, client, app):
    app.config["LIST_TOTAL_CAP"] = 3
    store.add_users(*USERS_7)

    last = client.get("/api/users?page=3&per_page=2").get_json()

    assert [user["name"] for user in last["items"]] == ["User 4", "User 5"]  # the admin was first
    assert [user["name"] for user in client.get(last["next"]).get_json()["items"]] == ["User 6", "User 7"]


# -- the HTML list ------------------------------------------------------------------


def test_the_html_list_offers_next_past_the_capped_page_count(store, client, app):
    app.config["LIST_TOTAL_CAP"] = 30
    store.add_numbered_users(45)

    page = client.get("/users?page=2")

    assert "30+ users" in page.text and "Page 2 of 2+" in page.text
    assert 'rel="next" href="/users?page=3"' in page.text


def test_the_html_list_follows_an_api_cursor_without_a_page_number(store, client):
    store.add_numbered_users(45)
    cursor = cursor_of(client.get("/api/users?per_page=20").get_json()["next"])

    page = client.get("/users", query_string={"cursor": cursor})

    assert page.status_code == 200
    # The API's first page was the admin and Users 1 to 19.
    assert "User 20<" in page.text and "User 39<" in page.text
    assert "User 40<" not in page.text and "Page " not in page.text
    assert 'rel="next" href="/users?cursor=' in page.text
