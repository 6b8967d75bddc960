"""Restoring a deleted user from the history: the API and the deleted user's page."""

import pytest

from webapp.db import Session
from webapp.domain import accounts

from helpers import add_account, client_class

ADA = {"name": "Ada Lovelace", "email": "ada@example.com"}
BEA = {"name": "Bea Bystander", "email": "bea@example.com"}


@pytest.fixture
def deleted(client):
    """Ada, created as an admin and deleted: what the API said at creation. Bea comes
    after her, so that SQLite (which reuses the highest id) gives Ada's id to nobody."""
    created = client.post("/api/users", json={**ADA, "role": "admin"}).get_json()
    client.post("/api/users", json=BEA)
    assert client.delete(f"/api/users/{created['id']}").status_code == 204
    return created


@pytest.fixture
def member(app, rolled_back):
    """A test client acting as a member."""
    with app.app_context():
        credentials = add_account(Session().connection(), "Mia Member", "mia@example.com", "member-pw-1", "member")
        Session().commit()
    return client_class(credentials)(app, app.response_class, use_cookies=True)


# -- the API ----------------------------------------------------------------------------


def test_restore_recreates_the_user_with_the_same_id_name_email_and_role(client, store, deleted):
    response = client.post(f"/api/users/{deleted['id']}/restore")

    assert response.status_code == 201
    assert response.headers["Location"] == f"/api/users/{deleted['id']}"
    body = response.get_json()
    assert {k: body[k] for k in ("id", "name", "email", "role")} == {
        "id": deleted["id"],
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "role": "admin",
    }
    assert body["created_at"] == deleted["created_at"]  # from the history's insert
    assert response.headers["ETag"]
    assert client.get(f"/api/users/{deleted['id']}").get_json()["email"] == "ada@example.com"
    assert store.users() == [("Ada Lovelace", "ada@example.com"), ("Bea Bystander", "bea@example.com")]


def test_restore_is_recorded_in_the_history_after_the_delete(client, store, deleted):
    client.post(f"/api/users/{deleted['id']}/restore")

    rows = store.audit_rows(deleted["id"])
    assert [action for _, action, _ in rows] == ["insert", "delete", "restore"]
    assert rows[-1][2] == {"name": [None, "Ada Lovelace"], "email": [None, "ada@example.com"], "role": [None, "admin"]}
    newest = client.get(f"/api/users/{deleted['id']}/history").get_json()["items"][0]
    assert newest["action"] == "restore"


def test_restore_takes_the_last_state_before_the_deletion(client, deleted):
    user_id = deleted["id"]
    client.post(f"/api/users/{user_id}/restore")
    client.patch(f"/api/users/{user_id}", json={"name": "Ada King"})
    client.delete(f"/api/users/{user_id}")

    body = client.post(f"/api/users/{user_id}/restore").get_json()

    assert body["name"] == "Ada King"


def test_no_tag_from_before_the_deletion_matches_the_restored_user(client):
    created = client.post("/api/users", json=ADA)
    user_id, created_tag = created.get_json()["id"], created.headers["ETag"]
    renamed_tag = client.patch(f"/api/users/{user_id}", json={"name": "Ada King"}).headers["ETag"]
    client.delete(f"/api/users/{user_id}")

    restored = client.post(f"/api/users/{user_id}/restore")

    assert restored.headers["ETag"] not in (created_tag, renamed_tag)
    for stale in (created_tag, renamed_tag):
        response = client.patch(f"/api/users/{user_id}", json={"name": "Lost Update"}, headers={"If-Match": stale})
        assert response.status_code == 412
    assert client.get(f"/api/users/{user_id}").get_json()["name"] == "Ada King"
    current = client.patch(
        f"/api/users/{user_id}", json={"name": "Ada"}, headers={"If-Match": restored.headers["ETag"]}
    )
    assert current.status_code == 200


def test_a_second_restore_still_takes_no_tag_of_an_earlier_life(client, deleted):
    user_id = deleted["id"]
    seen = {client.post(f"/api/users/{user_id}/restore").headers["ETag"]}
    client.delete(f"/api/users/{user_id}")

    again = client.post(f"/api/users/{user_id}/restore").headers["ETag"]

    assert again not in seen


def test_restore_gives_back_the_created_at_of_an_admin_made_at_setup(app, client, rolled_back):
    with app.app_context():
        admin, _ = accounts.make_admin("ann@example.com", "Ann Admin", "admin-pw-123")
        user_id = admin.id
    created_at = client.get(f"/api/users/{user_id}").get_json()["created_at"]
    assert client.delete(f"/api/users/{user_id}").status_code == 204

    body = client.post(f"/api/users/{user_id}/restore").get_json()

    assert body["created_at"] == created_at


def test_restore_refuses_when_the_email_was_taken_since(client, store, deleted):
    taker = client.post("/api/users", json={"name": "Ada Byron", "email": "ADA@example.com"}).get_json()

    response = client.post(f"/api/users/{deleted['id']}/restore")

    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"
    detail = response.get_json()["detail"]
    assert detail == (
        f"The email ada@example.com was taken since the deletion: it belongs to Ada Byron (user {taker['id']}) now. "
        "Change theirs first, then restore."
    )
    assert response.get_json()["errors"] == {"email": [detail]}
    assert store.users() == [("Bea Bystander", "bea@example.com"), ("Ada Byron", "ada@example.com")]
    assert [action for _, action, _ in store.audit_rows(deleted["id"])] == ["insert", "delete"]


def test_restoring_a_user_who_exists_is_a_409(client, deleted):
    client.post(f"/api/users/{deleted['id']}/restore")

    response = client.post(f"/api/users/{deleted['id']}/restore")

    assert response.status_code == 409
    assert response.get_json()["detail"] == f"User {deleted['id']} exists: only a deleted user can be restored."


def test_restoring_a_user_who_never_existed_is_a_404(client):
    response = client.post("/api/users/987654/restore")

    assert response.status_code == 404
    assert response.get_json()["detail"] == "There is no deleted user with id 987654 to restore."


def test_a_member_may_not_restore(member, client, store, deleted):
    response = member.post(f"/api/users/{deleted['id']}/restore")

    assert response.status_code == 403
    assert store.users() == [("Mia Member", "mia@example.com"), ("Bea Bystander", "bea@example.com")]


# -- the pages --------------------------------------------------------------------------


def test_a_deleted_users_page_keeps_the_history_and_offers_restore(client, deleted):
    page = client.get(f"/users/{deleted['id']}")

    assert page.status_code == 404
    assert "Ada Lovelace" in page.text and "deleted" in page.text
    assert f'action="/users/{deleted["id"]}/restore"' in page.text
    assert ">Restore</button>" in page.text
    assert "Deleted" in page.text and "Created" in page.text  # the history's entries


def test_a_member_sees_the_history_of_a_deleted_user_but_no_restore(member, deleted):
    page = member.get(f"/users/{deleted['id']}")

    assert page.status_code == 404
    assert "Ada Lovelace" in page.text
    assert "/restore" not in page.text


def test_a_page_for_an_id_with_no_history_is_the_plain_404(client):
    page = client.get("/users/987654")

    assert page.status_code == 404
    assert "restore" not in page.text.lower()


def test_the_restore_button_restores_and_redirects_to_the_user_with_303(client, forms, store, deleted):
    user_id = deleted["id"]

    response = forms.post(f"/users/{user_id}/restore", {}, page=f"/users/{user_id}")

    assert response.status_code == 303
    assert response.headers["Location"] == f"/users/{user_id}"
    shown = client.get(f"/users/{user_id}")
    assert shown.status_code == 200
    assert "Restored Ada Lovelace." in shown.text
    assert store.users() == [("Ada Lovelace", "ada@example.com"), ("Bea Bystander", "bea@example.com")]


def test_the_restore_button_explains_a_taken_email(client, forms, store, deleted):
    client.post("/api/users", json={"name": "Ada Byron", "email": "ada@example.com"})

    response = forms.post(f"/users/{deleted['id']}/restore", {}, page=f"/users/{deleted['id']}")

    assert response.status_code == 409
    assert "The email ada@example.com was taken since the deletion" in response.text
    assert store.users() == [("Bea Bystander", "bea@example.com"), ("Ada Byron", "ada@example.com")]
