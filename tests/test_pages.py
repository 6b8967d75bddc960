"""The HTML pages: list, search, create, show, edit and delete users with plain forms."""

import re
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest

from helpers import ADMIN_NAME, Forms

ADA = ("Ada Lovelace", "ada@example.com")
ALAN = ("Alan Turing", "alan@example.com")
USERS_25 = [(f"User {n:02d}", f"user{n}@example.com") for n in range(1, 26)]
XSS = [
    ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ('"><img src=x onerror=alert(1)>', "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"),
]


def names_listed(page) -> list[str]:
    """The user names in the rows of a list page, as the browser shows them, but for
    the admin the test acts as (the first user)."""
    names = [unescape(name) for name in re.findall(r'<td class="name"><a href="/users/\d+">(.*?)</a>', page.text)]
    return [name for name in names if name != ADMIN_NAME]


def link(page, rel: str):
    """(path, query) of the rel="prev"/"next" pagination link, or None."""
    match = re.search(rf'rel="{rel}" href="([^"]+)"', page.text)
    if match is None:
        return None
    url = urlsplit(unescape(match.group(1)))
    return url.path, parse_qs(url.query)


def input_tag(page, field: str) -> str:
    return re.search(rf'<input id="{field}"[^>]*>', page.text).group(0)


def location_path(response) -> str:
    return urlsplit(response.headers["Location"]).path


# -- list and search ----------------------------------------------------------------


def test_root_redirects_to_the_user_list(client):
    response = client.get("/")

    assert response.status_code == 302
    assert location_path(response) == "/users"


def test_list_shows_users_in_a_table_with_a_search_box_and_the_total(store, client):
    store.add_users(ADA, ALAN)

    page = client.get("/users")

    assert page.status_code == 200 and page.mimetype == "text/html"
    assert '<table class="users">' in page.text and '<input id="q" name="q" type="search"' in page.text
    assert names_listed(page) == ["Ada Lovelace", "Alan Turing"]
    assert "alan@example.com" in page.text and "3 users" in page.text  # and the admin


def test_list_shows_20_users_per_page_with_a_next_link_to_the_rest(store, client):
    store.add_users(*USERS_25)

    first = client.get("/users")
    second = client.get("/users?page=2")

    assert names_listed(first) == [name for name, _ in USERS_25[:19]]  # after the admin
    assert "26 users" in first.text
    assert link(first, "next") == ("/users", {"page": ["2"]}) and link(first, "prev") is None
    assert names_listed(second) == [name for name, _ in USERS_25[19:]]
    assert link(second, "prev") == ("/users", {"page": ["1"]}) and link(second, "next") is None


def test_pagination_links_keep_the_search(store, client):
    store.add_users(*USERS_25, ADA)

    first = client.get("/users?q=user")
    second = client.get("/users?q=user&page=2")

    assert "25 users" in first.text
    assert link(first, "next") == ("/users", {"q": ["user"], "page": ["2"]})
    assert link(second, "prev") == ("/users", {"q": ["user"], "page": ["1"]})
    assert names_listed(second) == [name for name, _ in USERS_25[20:]]


@pytest.mark.parametrize("q, expected", [("LOVE", ["Ada Lovelace"]), ("Bletchley", ["Alan Turing"]), ("nobody", [])])
def test_search_narrows_the_list_by_name_or_email_case_insensitively(store, client, q, expected):
    store.add_users(("Ada Lovelace", "countess@example.com"), ("Alan Turing", "alan@bletchley.org"))

    page = client.get("/users", query_string={"q": q})

    assert page.status_code == 200
    assert names_listed(page) == expected
    assert f'value="{q}"' in input_tag(page, "q")
    assert f"{len(expected)} user" in page.text


# -- create -------------------------------------------------------------------------


def test_new_user_form_has_a_csrf_token_and_labelled_inputs(client):
    page = client.get("/users/new")

    assert page.status_code == 200
    assert re.search(r'<form method="post" action="/users"', page.text)
    assert re.search(r'<input type="hidden" name="csrf_token" value="[^"]+">', page.text)
    for field in ("name", "email"):
        assert f'<label for="{field}">' in page.text
        assert f'name="{field}"' in input_tag(page, field)


def test_create_redirects_to_the_new_user_with_a_flash_message(store, client, forms):
    response = forms.post("/users", {"name": "  Ada Lovelace ", "email": " ADA@Example.COM"})

    assert response.status_code == 303
    assert re.fullmatch(r"/users/\d+", location_path(response))
    assert store.users() == [("Ada Lovelace", "ada@example.com")]
    shown = client.get(location_path(response))
    assert shown.status_code == 200
    assert "Created Ada Lovelace." in shown.text
    assert "<h1>Ada Lovelace</h1>" in shown.text and "ada@example.com" in shown.text


@pytest.mark.parametrize(
    "data, field",
    [
        ({"name": "", "email": "ada@example.com"}, "name"),
        ({"name": "   ", "email": "ada@example.com"}, "name"),
        ({"name": "x" * 101, "email": "ada@example.com"}, "name"),
        ({"name": "Ada", "email": "not-an-email"}, "email"),
        ({"name": "Ada"}, "email"),
        ({"email": "ada@example.com"}, "name"),
    ],
    ids=["empty-name", "blank-name", "long-name", "bad-email", "no-email", "no-name"],
)
def test_invalid_input_re_renders_the_form_with_errors_and_writes_nothing(store, client, forms, data, field):
    page = forms.post("/users", data)

    assert page.status_code == 422
    for name, value in data.items():
        assert f'value="{value}"' in input_tag(page, name)
    assert re.search(rf'<p class="error" id="{field}-error">\S', page.text)
    assert 'aria-invalid="true"' in input_tag(page, field)
    assert f'aria-describedby="{field}-error"' in input_tag(page, field)
    other = "email" if field == "name" else "name"
    assert "aria-invalid" not in input_tag(page, other) and f'id="{other}-error"' not in page.text
    assert store.count() == 0


def test_create_with_a_taken_email_is_409_with_an_error_under_email(store, client, forms):
    store.add_users(ADA)

    page = forms.post("/users", {"name": "Impostor", "email": "ADA@example.com"})

    assert page.status_code == 409
    assert 'id="email-error"' in page.text and "already exists" in page.text
    assert 'value="Impostor"' in input_tag(page, "name")
    assert store.users() == [ADA]


def test_an_unknown_form_field_is_refused_with_422(store, client, forms):
    page = forms.post("/users", {"name": "Ada", "email": "ada@example.com", "rank": "admin"})

    assert page.status_code == 422
    assert "Unknown field." in page.text
    assert store.count() == 0


# -- show ---------------------------------------------------------------------------


def test_show_displays_the_user(store, client):
    [user_id] = store.add_users(ADA)

    page = client.get(f"/users/{user_id}")

    assert page.status_code == 200
    assert "<h1>Ada Lovelace</h1>" in page.text and "ada@example.com" in page.text
    assert f'href="/users/{user_id}/edit"' in page.text and f'href="/users/{user_id}/delete"' in page.text


@pytest.mark.parametrize("path", ["/users/999999", "/users/999999/edit", "/users/999999/delete"])
def test_an_unknown_user_is_a_404_html_page(client, path):
    page = client.get(path)

    assert page.status_code == 404
    assert page.mimetype == "text/html"
    assert "<h1>Not Found</h1>" in page.text


@pytest.mark.parametrize("path", ["/users/0/edit", "/users/2147483648/edit", "/users/2147483648/delete"])
def test_posting_to_an_id_that_cannot_exist_is_a_404_page(store, client, forms, path):
    page = forms.post(path, {"name": "Ada", "email": "ada@example.com"})

    assert page.status_code == 404
    assert page.mimetype == "text/html" and "<h1>Not Found</h1>" in page.text
    assert store.count() == 0


# -- edit ---------------------------------------------------------------------------


def test_edit_form_is_prefilled_with_the_user(store, client):
    [user_id] = store.add_users(ADA)

    page = client.get(f"/users/{user_id}/edit")

    assert page.status_code == 200
    assert f'action="/users/{user_id}/edit"' in page.text
    assert 'value="Ada Lovelace"' in input_tag(page, "name")
    assert 'value="ada@example.com"' in input_tag(page, "email")


def test_edit_saves_and_redirects_to_the_user_with_a_flash_message(store, client, forms):
    [user_id] = store.add_users(ADA)

    response = forms.post(
        f"/users/{user_id}/edit", {"name": "Ada King", "email": "KING@example.com"}, page=f"/users/{user_id}/edit"
    )

    assert response.status_code == 303
    assert location_path(response) == f"/users/{user_id}"
    assert store.users() == [("Ada King", "king@example.com")]
    assert "Saved Ada King." in client.get(f"/users/{user_id}").text


def test_edit_with_invalid_input_is_422_and_changes_nothing(store, client, forms):
    [user_id] = store.add_users(ADA)

    page = forms.post(f"/users/{user_id}/edit", {"name": "", "email": "not-an-email"}, page=f"/users/{user_id}/edit")

    assert page.status_code == 422
    assert 'id="name-error"' in page.text and 'id="email-error"' in page.text
    assert 'value="not-an-email"' in input_tag(page, "email")
    assert store.users() == [ADA]


def test_edit_to_another_users_email_is_409_and_changes_nothing(store, client, forms):
    ada_id, _ = store.add_users(ADA, ALAN)

    page = forms.post(
        f"/users/{ada_id}/edit", {"name": "Ada King", "email": "alan@example.com"}, page=f"/users/{ada_id}/edit"
    )

    assert page.status_code == 409
    assert 'id="email-error"' in page.text
    assert 'value="Ada King"' in input_tag(page, "name")
    assert store.users() == [ADA, ALAN]


# -- delete -------------------------------------------------------------------------


def test_delete_asks_for_confirmation_with_a_post_form(store, client):
    [user_id] = store.add_users(ADA)

    page = client.get(f"/users/{user_id}/delete")

    assert page.status_code == 200
    assert f'<form method="post" action="/users/{user_id}/delete">' in page.text
    assert re.search(r'<input type="hidden" name="csrf_token" value="[^"]+">', page.text)
    assert store.users() == [ADA]


def test_delete_removes_the_user_and_redirects_to_the_list_with_a_flash_message(store, client, forms):
    ada_id, _ = store.add_users(ADA, ALAN)

    response = forms.post(f"/users/{ada_id}/delete", {}, page=f"/users/{ada_id}/delete")

    assert response.status_code == 303
    assert location_path(response) == "/users"
    assert store.users() == [ALAN]
    listed = client.get("/users")
    assert "Deleted Ada Lovelace." in listed.text and names_listed(listed) == ["Alan Turing"]


# -- security -----------------------------------------------------------------------


@pytest.mark.parametrize("token", ["missing", "from-another-session"])
@pytest.mark.parametrize(
    "path, data",
    [
        ("/users", {"name": "Grace Hopper", "email": "grace@example.com"}),
        ("/users/{id}/edit", {"name": "Grace Hopper", "email": "grace@example.com"}),
        ("/users/{id}/delete", {}),
    ],
    ids=["create", "edit", "delete"],
)
def test_a_post_without_a_valid_csrf_token_is_400_and_changes_nothing(store, app, client, forms, path, data, token):
    [user_id] = store.add_users(ADA)
    forms.token()  # the victim's session holds a valid token of its own
    if token == "from-another-session":
        data = {**data, "csrf_token": Forms(app.test_client()).token()}

    response = client.post(path.format(id=user_id), data=data)

    assert response.status_code == 400
    assert response.mimetype == "text/html" and "CSRF" in response.text
    assert store.users() == [ADA]


@pytest.mark.parametrize("name, escaped", XSS, ids=["script", "attribute-breakout"])
@pytest.mark.parametrize("path", ["/users", "/users/{id}", "/users/{id}/edit", "/users/{id}/delete"])
def test_stored_markup_in_a_name_is_rendered_escaped(store, client, name, escaped, path):
    [user_id] = store.add_users((name, "mallory@example.com"))

    page = client.get(path.format(id=user_id))

    assert page.status_code == 200
    assert name not in page.text
    assert "<script>" not in page.text and "<img" not in page.text
    assert escaped in page.text


def test_the_stylesheet_is_served_as_css(client):
    with client.get("/static/style.css") as response:
        assert response.status_code == 200
        assert response.mimetype == "text/css"
        assert "http" not in response.text  # no @import or url() from another host


@pytest.mark.parametrize(
    "path", ["/users", "/users/new", "/users/{id}", "/users/{id}/edit", "/users/{id}/delete", "/users/999999"]
)
def test_pages_link_the_local_stylesheet_and_nothing_from_another_host(store, client, path):
    [user_id] = store.add_users(ADA)

    page = client.get(path.format(id=user_id))

    assert '<link rel="stylesheet" href="/static/style.css">' in page.text
    assert not re.search(r'<(script|link)\b[^>]*\b(src|href)="(https?:)?//', page.text, re.IGNORECASE)
