"""Sorted lists: ?sort= on the API and the page, keyset cursors that keep the order."""

import base64
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import insert

from webapp.db import Session
from webapp.domain.models import User
from webapp.domain.schemas import SORTS, encode_cursor

from helpers import outer_plan, plan

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
# Ties in name and in created_at, so the id has to break them. One case and plain
# letters: every collation orders these names the same.
PEOPLE = [
    ("Carol", "carol@example.com", T0),
    ("Alice", "alice2@example.com", T0 + timedelta(minutes=2)),
    ("Bob", "bob@example.com", T0),
    ("Alice", "alice1@example.com", T0 + timedelta(minutes=1)),
    ("Dave", "dave@example.com", T0 + timedelta(minutes=1)),
    ("Bob", "bob2@example.com", T0 + timedelta(minutes=3)),
    ("Eve", "eve@example.com", T0),
]


@pytest.fixture
def people(store):
    """The PEOPLE stored in this order, as dicts with their ids."""
    with store.app.app_context():
        rows = Session().execute(
            insert(User).returning(User.id, User.name, User.email, User.created_at),
            [{"name": n, "email": e, "created_at": at, "updated_at": at} for n, e, at in PEOPLE],
        )
        stored = [row._asdict() for row in rows]
        Session().commit()
    return stored


def expected(people, sort):
    column, descending = sort.lstrip("-"), sort.startswith("-")
    return [p["email"] for p in sorted(people, key=lambda p: (p[column], p["id"]), reverse=descending)]


def walk(client, url):
    """Every email of every page, following next links; and the next links."""
    emails, links = [], []
    while url:
        body = client.get(url).get_json()
        emails += [user["email"] for user in body["items"]]
        url = body["next"]
        links.append(url)
    return emails, links[:-1]


@pytest.mark.parametrize("sort", SORTS)
def test_each_sort_orders_the_list_with_the_id_breaking_ties(client, people, sort):
    body = client.get(f"/api/users?q=example.com&sort={sort}&per_page=100").get_json()

    assert [user["email"] for user in body["items"]] == expected(people, sort)


@pytest.mark.parametrize("sort", SORTS)
def test_next_links_walk_every_sort_visiting_each_user_once_in_order(client, people, sort):
    emails, links = walk(client, f"/api/users?q=example.com&sort={sort}&per_page=2")

    assert emails == expected(people, sort)
    assert len(links) == 3
    for link in links:
        query = parse_qs(urlsplit(link).query)
        assert query["q"] == ["example.com"]
        assert query.get("sort", ["id"]) == [sort]


def test_the_default_order_is_by_id_and_includes_everyone(client, people, admin):
    body = client.get("/api/users").get_json()

    assert [user["id"] for user in body["items"]] == [admin.user_id, *[p["id"] for p in people]]


def test_a_sorted_page_by_number_is_the_offset_into_the_same_order(client, people):
    body = client.get("/api/users?q=example.com&sort=-name&per_page=3&page=2").get_json()

    assert [user["email"] for user in body["items"]] == expected(people, "-name")[3:6]


def test_a_cursor_followed_without_its_sort_continues_in_its_own_order(client, people):
    first = client.get("/api/users?q=example.com&sort=-created_at&per_page=3").get_json()
    cursor = parse_qs(urlsplit(first["next"]).query)["cursor"][0]

    second = client.get(f"/api/users?q=example.com&per_page=3&cursor={cursor}").get_json()

    assert [user["email"] for user in second["items"]] == expected(people, "-created_at")[3:6]


def test_an_unknown_sort_is_a_422_problem_naming_the_choices(client):
    response = client.get("/api/users?sort=password_hash")

    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["errors"]["sort"] == [
        "Must be one of: id, -id, name, -name, email, -email, created_at, -created_at."
    ]


def test_a_cursor_sent_with_another_sort_is_a_422(client, people):
    cursor = encode_cursor(people[0]["id"], "name", "Carol")

    response = client.get(f"/api/users?sort=email&cursor={cursor}")

    assert response.status_code == 422
    assert response.get_json()["errors"]["cursor"] == [
        "This cursor continues a list sorted by name: send it with sort=name."
    ]


@pytest.mark.parametrize(
    "payload",
    [
        ("name", 5),  # a key of the wrong type
        ("created_at", "yesterday"),
        ("created_at", "2024-05-01T12:00:00"),  # no time zone
        ("sideways", "x"),
        ("name", "\ud800"),  # a lone surrogate: no driver can send it
        ("email", "a\u0000"),  # NUL: PostgreSQL's text cannot hold it
    ],
)
def test_a_cursor_with_a_key_that_does_not_fit_its_sort_is_a_422(client, payload):
    sort, key = payload
    cursor = _raw(sort, key)

    response = client.get(f"/api/users?cursor={cursor}")

    assert response.status_code == 422
    assert response.get_json()["errors"]["cursor"] == ["Not a valid cursor."]


def _raw(sort, key):
    payload = json.dumps({"sort": sort, "key": key, "after": 1}).encode()
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


def test_an_old_id_cursor_still_works(client, people):
    response = client.get(f"/api/users?per_page=2&cursor={encode_cursor(people[1]['id'])}")

    assert [user["id"] for user in response.get_json()["items"]] == [people[2]["id"], people[3]["id"]]


def test_a_cursor_for_a_long_name_fits(client, store):
    long_name = "é" * 100
    store.add_users(*[(long_name, f"long{n}@example.com") for n in range(3)])

    emails, links = walk(client, "/api/users?q=long&sort=name&per_page=1")

    assert emails == ["long0@example.com", "long1@example.com", "long2@example.com"]


# -- the page ---------------------------------------------------------------------------


def test_the_page_lists_in_the_sort_asked_for(client, people):
    html = client.get("/users?q=example.com&sort=-email").get_data(as_text=True)

    positions = [html.index(email) for email in expected(people, "-email")]
    assert positions == sorted(positions)


def test_column_headers_link_to_their_sort_and_say_which_one_is_on(client, people):
    html = client.get("/users?q=example.com&sort=name").get_data(as_text=True)

    assert 'aria-sort="ascending"' in html
    assert html.count('aria-sort="none"') == 2
    assert 'href="/users?q=example.com&amp;sort=-name"' in html  # the sorted column reverses
    assert 'href="/users?q=example.com&amp;sort=email"' in html
    assert 'href="/users?q=example.com&amp;sort=-created_at"' in html  # newest first, first


def test_the_search_form_keeps_the_sort_and_the_page_size(client):
    html = client.get("/users?sort=-created_at&per_page=50").get_data(as_text=True)

    assert '<input type="hidden" name="sort" value="-created_at">' in html
    assert '<input type="hidden" name="per_page" value="50">' in html


def test_the_page_offers_page_sizes_keeping_search_and_sort(client, people):
    html = client.get("/users?q=example.com&sort=email&per_page=50").get_data(as_text=True)

    assert 'href="/users?q=example.com&amp;sort=email&amp;per_page=20"' in html
    assert 'href="/users?q=example.com&amp;sort=email&amp;per_page=100"' in html
    assert '<a aria-current="true" href="/users?q=example.com&amp;sort=email&amp;per_page=50">50</a>' in html


def test_the_page_next_link_keeps_sort_and_size(client, people):
    html = client.get("/users?q=example.com&sort=name&per_page=2&page=2").get_data(as_text=True)

    assert 'href="/users?q=example.com&amp;sort=name&amp;per_page=2&amp;page=3"' in html
    assert 'href="/users?q=example.com&amp;sort=name&amp;per_page=2&amp;page=1"' in html


def test_an_empty_search_says_so_and_offers_to_clear_it(client, people):
    html = client.get("/users?q=nobody-by-this-name&sort=name").get_data(as_text=True)

    assert "No users match “nobody-by-this-name”." in html
    assert '<a class="button" href="/users?sort=name">Clear the search</a>' in html


def test_an_unknown_sort_on_the_page_is_a_422_page(client):
    response = client.get("/users?sort=rank")

    assert response.status_code == 422
    assert response.mimetype == "text/html"


# -- the indexes ------------------------------------------------------------------------

INDEX_OF = {
    "name": "ix_users_name_id",
    "-name": "ix_users_name_id",
    "email": "uq_users_email",
    "-created_at": "ix_users_created_at_id",
    "created_at": "ix_users_created_at_id",
}


@pytest.mark.parametrize("sort", list(INDEX_OF))
def test_a_sorted_page_at_depth_reads_its_index_and_no_more(store, client, statements, rolled_back, backend, sort):
    store.add_numbered_users(5_000)
    rolled_back.exec_driver_sql("ANALYZE users")
    first = client.get(f"/api/users?sort={sort}&per_page=20&page=100").get_json()

    statements.clear()
    deep = client.get(first["next"]).get_json()

    assert len(deep["items"]) == 20
    [(page_statement, parameters)] = statements
    explained = plan(rolled_back, backend, page_statement, parameters)
    if backend == "postgresql":
        explained = outer_plan(explained)  # the capped count beside the page is not what this is about
        assert f"Index Scan Backward using {INDEX_OF[sort]}" in explained or (
            f"Index Scan using {INDEX_OF[sort]}" in explained
        ), explained
        assert "Sort" not in explained and "Seq Scan" not in explained, explained
    else:
        assert f"USING INDEX {INDEX_OF[sort]}" in explained, explained
        assert "TEMP B-TREE" not in explained, explained
