"""Per-row actions on the list, and "delete selected": confirm, then one transaction."""

import re

import pytest
from sqlalchemy import select

from webapp.db import Session
from webapp.domain.models import audit_table

from helpers import Forms, add_account, client_class

PEOPLE = [
    ("Ada Lovelace", "ada@example.com"),
    ("Alan Turing", "alan@example.com"),
    ("Grace Hopper", "grace@example.com"),
]


@pytest.fixture
def member(app, rolled_back):
    with app.app_context():
        credentials = add_account(Session().connection(), "Mia Member", "mia@example.com", "member-pw-1", "member")
        Session().commit()
    client = client_class(credentials)(app, app.response_class, use_cookies=True)
    client.user_id = credentials.user_id
    return client


def query(ids):
    return "&".join(f"id={user_id}" for user_id in ids)


def test_an_admin_sees_a_checkbox_and_edit_and_delete_on_every_row(client, store):
    ids = store.add_users(*PEOPLE)

    html = client.get("/users").text

    for user_id, (name, _) in zip(ids, PEOPLE, strict=True):
        assert (
            f'<input type="checkbox" name="id" value="{user_id}" id="select-{user_id}" aria-label="Select {name}">'
            in html
        )
        assert f'<a href="/users/{user_id}/edit" aria-label="Edit {name}">Edit</a>' in html
        assert f'<a class="delete" href="/users/{user_id}/delete" aria-label="Delete {name}">Delete</a>' in html
    assert '<form class="selection" method="get" action="/users/delete">' in html
    assert ">Delete selected…</button>" in html


def test_a_member_sees_only_the_edit_of_their_own_row(member, store):
    ids = store.add_users(*PEOPLE)

    html = member.get("/users").text

    assert 'type="checkbox"' not in html and "Delete selected" not in html and "/delete" not in html
    assert re.findall(r'href="/users/(\d+)/edit"', html) == [str(member.user_id)]
    assert all(f"/users/{user_id}/edit" not in html for user_id in ids)


def test_delete_selected_asks_first_listing_who(client, store):
    ids = store.add_users(*PEOPLE)

    page = client.get(f"/users/delete?{query(ids[:2])}")

    assert page.status_code == 200
    assert "<h1>Delete 2 users?</h1>" in page.text
    assert "Ada Lovelace" in page.text and "alan@example.com" in page.text and "Grace" not in page.text
    assert re.findall(r'<input type="hidden" name="id" value="(\d+)">', page.text) == [str(i) for i in ids[:2]]
    assert store.count() == 3


def test_delete_selected_with_nothing_ticked_goes_back_to_the_list_saying_so(client):
    response = client.get("/users/delete")

    assert response.status_code == 302
    assert response.headers["Location"] == "/users"
    assert "Choose the users to delete first" in client.get("/users").text


@pytest.mark.parametrize(
    "spell",
    [
        lambda digits: "".join(chr(0x660 + int(d)) for d in digits),  # Arabic-Indic, which int() reads
        lambda digits: f"+{digits}",
        lambda digits: f" {digits}",
        lambda digits: f"0{digits}",
    ],
    ids=["arabic-indic", "sign", "space", "zero"],
)
def test_an_id_is_read_only_as_an_ascii_decimal(client, store, spell):
    [user_id] = store.add_users(PEOPLE[0])

    response = client.get("/users/delete", query_string={"id": spell(str(user_id))})

    assert response.status_code == 302 and response.headers["Location"] == "/users"


def test_confirming_deletes_them_all_each_in_its_history_and_redirects_with_303(client, forms, store):
    ids = store.add_users(*PEOPLE)

    response = forms.post("/users/delete", {"id": ids[:2]}, page=f"/users/delete?{query(ids[:2])}")

    assert response.status_code == 303
    assert response.headers["Location"] == "/users"
    assert store.users() == [("Grace Hopper", "grace@example.com")]
    deletes = [(user_id, action) for user_id, action, _ in store.audit_rows() if action == "delete"]
    assert deletes == [(ids[0], "delete"), (ids[1], "delete")]
    assert "Deleted 2 users: Ada Lovelace, Alan Turing." in client.get("/users").text


def test_the_deletions_are_one_transaction(client, forms, store, admin):
    ids = store.add_users(*PEOPLE)
    chosen = [*ids, admin.user_id]  # the last admin among them: the whole deletion is refused

    response = forms.post("/users/delete", {"id": chosen}, page=f"/users/delete?{query(chosen)}")

    assert response.status_code == 409
    assert "This is the last admin" in response.text
    assert store.count() == 3
    assert store.scalar(select(audit_table.c.id).where(audit_table.c.action == "delete")) is None


def test_users_deleted_meanwhile_are_skipped(client, forms, store):
    ids = store.add_users(*PEOPLE)
    token = forms.token(f"/users/delete?{query(ids)}")
    client.delete(f"/api/users/{ids[0]}")

    response = client.post("/users/delete", data={"csrf_token": token, "id": ids})

    assert response.status_code == 303
    assert store.count() == 0
    assert "Deleted 2 users: Alan Turing, Grace Hopper." in client.get("/users").text


def test_a_member_may_neither_confirm_nor_delete_selected(member, store):
    ids = store.add_users(*PEOPLE)
    token = Forms(member).token("/users")  # the sign-out form's

    asked = member.get(f"/users/delete?{query(ids)}")
    posted = member.post("/users/delete", data={"csrf_token": token, "id": ids})

    assert (asked.status_code, posted.status_code) == (403, 403)
    assert store.count() == 3 + 1  # and Mia
