"""Who did it: every audit row names the acting user (actor_id; null for the CLI and
other system work), the JSON history carries it, and the History section names them."""

from sqlalchemy import select

from webapp.db import Session
from webapp.domain.models import AuditEntry

from helpers import add_account, client_class, page_text


def test_an_api_change_records_the_token_owner_as_the_actor(client, admin, store):
    user_id = client.post("/api/users", json={"name": "Ada", "email": "ada@example.com"}).get_json()["id"]
    client.patch(f"/api/users/{user_id}", json={"name": "Ada King"})
    client.delete(f"/api/users/{user_id}")

    actors = store.scalars(select(AuditEntry.actor_id).where(AuditEntry.user_id == user_id).order_by(AuditEntry.id))
    assert actors == [admin.user_id] * 3


def test_a_page_change_records_the_signed_in_user(client, forms, admin, store):
    forms.post("/users", {"name": "Ada", "email": "ada@example.com"})

    assert store.scalars(select(AuditEntry.actor_id)) == [admin.user_id]


def test_a_members_own_change_records_the_member(app, client, store):
    with app.app_context():
        member = add_account(Session().connection(), "Mia Member", "mia@example.com", "member-password", "member")
        Session().commit()
    as_member = client_class(member)(app, app.response_class, use_cookies=True)

    as_member.patch(f"/api/users/{member.user_id}", json={"name": "Mia Renamed"})

    assert store.scalars(select(AuditEntry.actor_id).where(AuditEntry.user_id == member.user_id)) == [member.user_id]
    history = client.get(f"/api/users/{member.user_id}/history").get_json()["items"]
    assert history[0]["actor_id"] == member.user_id
    assert "Changed by Mia Renamed" in page_text(client.get(f"/users/{member.user_id}"))


def test_cli_and_system_work_records_no_actor(store, runner, committing):
    assert runner.invoke(args=["seed-users", "3"]).exit_code == 0
    store.add_users(("Ada", "ada@example.com"))

    assert set(store.scalars(select(AuditEntry.actor_id))) == {None}


def test_history_items_include_the_actor_id(client, admin, store):
    [by_system] = store.add_users(("Ada", "ada@example.com"))
    client.patch(f"/api/users/{by_system}", json={"name": "Ada King"})

    items = client.get(f"/api/users/{by_system}/history").get_json()["items"]

    assert [(item["action"], item["actor_id"]) for item in items] == [("update", admin.user_id), ("insert", None)]


def test_the_history_section_names_the_actor_or_the_system(client, store):
    [user_id] = store.add_users(("Ada", "ada@example.com"))
    client.patch(f"/api/users/{user_id}", json={"name": "Ada King"})

    page = page_text(client.get(f"/users/{user_id}"))

    assert "Changed by Test Admin" in page
    assert "Created by the system" in page


def test_an_actor_deleted_since_is_named_by_number(app, client, store):
    with app.app_context():
        other = add_account(Session().connection(), "Gone Admin", "gone@example.com", "gone-password")
        Session().commit()
    as_other = client_class(other)(app, app.response_class, use_cookies=True)
    [user_id] = store.add_users(("Ada", "ada@example.com"))
    as_other.patch(f"/api/users/{user_id}", json={"name": "Ada King"})
    client.delete(f"/api/users/{other.user_id}")

    page = page_text(client.get(f"/users/{user_id}"))

    assert f"by user #{other.user_id} (deleted)" in page


def test_an_import_records_the_importer_as_the_actor(client, admin, store):
    rows = [{"name": "Ada", "email": "ada@example.com"}, {"name": "Alan", "email": "alan@example.com"}]

    assert client.post("/api/users/import", json=rows).status_code == 201

    assert store.scalars(select(AuditEntry.actor_id)) == [admin.user_id] * 2


def test_a_csv_import_records_the_importer_as_the_actor(client, admin, store):
    body = "name,email\nAda,ada@example.com\nAlan,alan@example.com\n"

    assert client.post("/api/users/import", data=body, content_type="text/csv").status_code == 201

    assert store.scalars(select(AuditEntry.actor_id)) == [admin.user_id] * 2
