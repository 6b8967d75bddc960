"""The two roles. An admin may do everything; a member may read the list, any user's
page, history and JSON, and change their own name and password (with the current
one), nothing else: 403, problem JSON on the API and an HTML page otherwise. The
password is write-only everywhere, and the last admin stays an admin."""

import logging

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from webapp.db import Session
from webapp.domain.models import User

from helpers import ADMIN_EMAIL, Forms, add_account, anonymous, assert_problem, client_class, page_text, race, sign_in

MEMBER_PASSWORD = "member-password"


def add(app, name: str, email: str, role: str, password: str = MEMBER_PASSWORD):
    with app.app_context():
        credentials = add_account(Session().connection(), name, email, password, role=role)
        Session().commit()
    return credentials


def client_of(app, credentials):
    """A test client acting as `credentials`: their token, signed in for the pages."""
    return client_class(credentials)(app, app.response_class, use_cookies=True)


@pytest.fixture
def member(app, client):
    return add(app, "Mia Member", "mia@example.com", "member")


@pytest.fixture
def as_member(app, member):
    return client_of(app, member)


@pytest.fixture
def other(store):
    """Another user, whom the member may only look at."""
    return store.add_users(("Olga Other", "olga@example.com"))[0]


# -- what a member may read -------------------------------------------------------------


def test_a_member_reads_the_list_a_user_their_history_and_json(as_member, other):
    for path in ("/users", f"/users/{other}", "/api/users", f"/api/users/{other}", f"/api/users/{other}/history"):
        assert as_member.get(path).status_code == 200, path


def test_the_json_user_has_its_role_and_never_a_password(client, admin):
    body = client.get(f"/api/users/{admin.user_id}").get_json()

    assert body["role"] == "admin"
    assert not {"password", "password_hash", "current_password"} & body.keys()


# -- what a member may not do -----------------------------------------------------------


def api_writes(other: int, own: int) -> list[tuple[str, str, dict]]:
    return [
        ("post", "/api/users", {"json": {"name": "New", "email": "new@example.com"}}),
        ("put", f"/api/users/{other}", {"json": {"name": "X", "email": "olga@example.com"}}),
        ("patch", f"/api/users/{other}", {"json": {"name": "X"}}),
        ("delete", f"/api/users/{other}", {}),
        ("delete", f"/api/users/{own}", {}),
        ("put", f"/api/users/{own}", {"json": {"name": "X", "email": "mia@example.com"}}),
        ("patch", f"/api/users/{own}", {"json": {"role": "admin"}}),
        ("patch", f"/api/users/{own}", {"json": {"email": "mia2@example.com"}}),
        ("get", "/api/users.csv", {}),
        ("post", "/api/users/import", {"json": [{"name": "New", "email": "new@example.com"}]}),
    ]


def test_a_member_gets_a_403_problem_for_every_api_write_but_their_own_name_and_password(
    as_member, member, other, store
):
    before = store.users()
    for method, path, kwargs in api_writes(other, member.user_id):
        response = getattr(as_member, method)(path, **kwargs)
        body = assert_problem(response, 403)
        assert "admin" in body["detail"] or "member" in body["detail"], (method, path)
    assert store.users() == before
    assert store.scalar(select(User.role).where(User.id == member.user_id)) == "member"


def page_writes(other: int, own: int) -> list[tuple[str, str]]:
    return [
        ("get", "/users/new"),
        ("post", "/users"),
        ("get", f"/users/{other}/edit"),
        ("post", f"/users/{other}/edit"),
        ("get", f"/users/{other}/delete"),
        ("post", f"/users/{other}/delete"),
        ("post", f"/users/{own}/delete"),
        ("post", f"/users/{other}/password"),
        ("post", f"/users/{other}/role"),
        ("post", f"/users/{own}/role"),
        ("get", "/users.csv"),
        ("get", "/users/import"),
        ("post", "/users/import"),
    ]


def test_a_member_gets_a_403_page_for_every_page_they_may_not_use(as_member, member, other, store):
    token = Forms(as_member).token(f"/users/{member.user_id}")
    before = store.users()
    for method, path in page_writes(other, member.user_id):
        kwargs = {"data": {"csrf_token": token, "name": "X", "email": "x@example.com", "role": "admin"}}
        response = getattr(as_member, method)(path, **(kwargs if method == "post" else {}))
        assert response.status_code == 403, (method, path)
        assert response.mimetype == "text/html", (method, path)
        assert "Forbidden" in response.text
    assert store.users() == before
    assert store.scalar(select(User.role).where(User.id == member.user_id)) == "member"


def test_a_member_changes_their_own_name_through_the_api(as_member, member, store):
    response = as_member.patch(f"/api/users/{member.user_id}", json={"name": "Mia Renamed"})

    assert response.status_code == 200
    assert response.get_json()["name"] == "Mia Renamed"


def test_a_member_changes_their_own_name_through_the_page(as_member, member, store):
    forms = Forms(as_member)
    page = f"/users/{member.user_id}/edit"

    response = forms.post(page, {"name": "Mia Renamed", "email": "ignored@example.com"}, page=page)

    assert response.status_code == 303
    row = store.scalars(select(User).where(User.id == member.user_id))[0]
    assert (row.name, row.email) == ("Mia Renamed", "mia@example.com")


def test_a_member_changes_their_password_with_the_current_one_through_the_api(app, as_member, member):
    response = as_member.patch(
        f"/api/users/{member.user_id}", json={"password": "a-new-password", "current_password": MEMBER_PASSWORD}
    )

    assert response.status_code == 200
    sign_in(anonymous(app), "mia@example.com", "a-new-password")


@pytest.mark.parametrize("current", [None, "", "wrong-password"])
def test_a_member_needs_the_current_password_to_set_a_new_one_through_the_api(as_member, member, current, store):
    body = {"password": "a-new-password"} | ({"current_password": current} if current is not None else {})
    before = store.scalar(select(User.password_hash).where(User.id == member.user_id))

    response = as_member.patch(f"/api/users/{member.user_id}", json=body)

    problem = assert_problem(response, 422)
    assert "current_password" in problem["errors"]
    assert store.scalar(select(User.password_hash).where(User.id == member.user_id)) == before


@pytest.mark.parametrize(
    "current, message",
    [
        (None, "Give your current password to set a new one."),
        ("", "Give your current password to set a new one."),
        ("wrong-password", "This is not your current password."),
    ],
    ids=["missing", "empty", "wrong"],
)
def test_the_api_says_whether_the_current_password_was_missing_or_wrong(as_member, member, current, message):
    body = {"password": "a-new-password"} | ({"current_password": current} if current is not None else {})

    problem = assert_problem(as_member.patch(f"/api/users/{member.user_id}", json=body), 422)

    assert problem["errors"] == {"current_password": [message]}


def test_wrong_current_passwords_count_as_failed_sign_ins(app, as_member, member, store):
    # Whoever holds a member's token must not get unlimited guesses at their password.
    before = store.scalar(select(User.password_hash).where(User.id == member.user_id))
    wrong = {"password": "a-new-password", "current_password": "wrong-password"}
    statuses = [as_member.patch(f"/api/users/{member.user_id}", json=wrong).status_code for _ in range(5)]

    right = {"password": "a-new-password", "current_password": MEMBER_PASSWORD}
    refused = as_member.patch(f"/api/users/{member.user_id}", json=right)

    assert statuses == [422] * 5
    assert_problem(refused, 429)
    assert int(refused.headers["Retry-After"]) > 0
    assert store.scalar(select(User.password_hash).where(User.id == member.user_id)) == before
    basic = anonymous(app).post("/api/tokens", json={"name": "t"}, auth=("mia@example.com", MEMBER_PASSWORD))
    assert basic.status_code == 429  # signing in is refused for the email too


def test_an_empty_current_password_is_no_guess_and_the_right_one_resets_the_count(app, as_member, member):
    empty = {"password": "a-new-password", "current_password": ""}
    wrong = {"password": "a-new-password", "current_password": "wrong-password"}
    right = {"password": "a-new-password", "current_password": MEMBER_PASSWORD}

    def patch(body):
        return as_member.patch(f"/api/users/{member.user_id}", json=body).status_code

    def basic(password):
        return anonymous(app).post("/api/tokens", json={"name": "t"}, auth=("mia@example.com", password)).status_code

    statuses = [patch(empty) for _ in range(6)] + [patch(wrong) for _ in range(4)] + [patch(right)]

    assert statuses == [422] * 10 + [200]
    # Four wrong sign-ins after the right password are not yet too many: the count started again.
    assert [basic("wrong-password") for _ in range(4)] + [basic("a-new-password")] == [401] * 4 + [201]


def test_wrong_current_passwords_on_the_page_count_as_failed_sign_ins(as_member, member):
    forms = Forms(as_member)
    page = f"/users/{member.user_id}"
    wrong = {"current_password": "wrong-password", "password": "a-new-password", "password_again": "a-new-password"}

    statuses = [forms.post(f"{page}/password", wrong, page=page).status_code for _ in range(6)]

    assert statuses == [422] * 5 + [429]


def test_a_member_changes_their_password_through_their_page(app, as_member, member):
    forms = Forms(as_member)
    page = f"/users/{member.user_id}"
    fields = {"current_password": MEMBER_PASSWORD, "password": "a-new-password", "password_again": "a-new-password"}

    response = forms.post(f"/users/{member.user_id}/password", fields, page=page)

    assert response.status_code == 303
    assert as_member.get("/users").status_code == 200  # still signed in, on the new password
    sign_in(anonymous(app), "mia@example.com", "a-new-password")


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"current_password": "wrong-password"}, "current_password"),
        ({"current_password": ""}, "current_password"),
        ({"password_again": "a-different-one"}, "password_again"),
        ({"password": "short", "password_again": "short"}, "password"),
    ],
)
def test_a_member_password_form_with_bad_input_changes_nothing(as_member, member, store, fields, field):
    before = store.scalar(select(User.password_hash).where(User.id == member.user_id))
    values = {"current_password": MEMBER_PASSWORD, "password": "a-new-password", "password_again": "a-new-password"}
    page = f"/users/{member.user_id}"

    response = Forms(as_member).post(f"/users/{member.user_id}/password", {**values, **fields}, page=page)

    assert response.status_code == 422
    assert f'id="{field}"' in response.text and 'aria-invalid="true"' in response.text
    assert store.scalar(select(User.password_hash).where(User.id == member.user_id)) == before


# -- what a member sees ---------------------------------------------------------------


ADMIN_ONLY = ["New user", "Download CSV", "Import CSV", "Delete", "Change the role", "Set a password"]


def test_a_member_sees_no_admin_buttons_on_the_list(as_member, other):
    page = as_member.get("/users").text

    for label in ADMIN_ONLY:
        assert label not in page, label
    assert "Sign out" in page and "Mia Member" in page


def test_a_member_sees_no_buttons_on_another_users_page(as_member, other):
    page = as_member.get(f"/users/{other}").text

    for label in [*ADMIN_ONLY, ">Edit<", "Change your password", "Save the password"]:
        assert label not in page, label


def test_a_members_own_page_offers_their_name_and_password_only(as_member, member):
    page = as_member.get(f"/users/{member.user_id}").text

    assert ">Edit<" in page and "Change your password" in page and 'name="current_password"' in page
    for label in ADMIN_ONLY:
        assert label not in page, label


def test_a_members_edit_form_has_no_email_field(as_member, member):
    page = as_member.get(f"/users/{member.user_id}/edit").text

    assert 'name="name"' in page
    assert 'name="email"' not in page


def test_a_members_edit_conflict_offers_their_name_only(as_member, member, client, store):
    page = f"/users/{member.user_id}/edit"
    stale = Forms(as_member).hidden(page)
    assert client.patch(f"/api/users/{member.user_id}", json={"name": "Renamed By Admin"}).status_code == 200

    response = as_member.post(page, data={**stale, "name": "Mia Mine"})

    assert response.status_code == 409
    assert 'name="name"' in response.text
    assert 'name="email"' not in response.text


def test_an_admin_sees_every_button(client, other):
    listing, user = client.get("/users").text, client.get(f"/users/{other}").text

    for label in ["New user", "Download CSV", "Import CSV"]:
        assert label in listing, label
    for label in [">Edit<", "Delete", "Change the role", "Set a password"]:
        assert label in user, label
    assert 'name="current_password"' not in user


# -- role and password, set by an admin -------------------------------------------------


def test_a_new_user_is_a_member_by_default(client):
    assert client.post("/api/users", json={"name": "New", "email": "new@example.com"}).get_json()["role"] == "member"


def test_an_admin_sets_the_role_through_the_api(client, other, store):
    response = client.patch(f"/api/users/{other}", json={"role": "admin"})

    assert response.status_code == 200 and response.get_json()["role"] == "admin"
    assert store.scalar(select(User.role).where(User.id == other)) == "admin"


def test_an_admin_sets_the_role_through_the_page(client, forms, other, store):
    response = forms.post(f"/users/{other}/role", {"role": "admin"}, page=f"/users/{other}")

    assert response.status_code == 303
    assert store.scalar(select(User.role).where(User.id == other)) == "admin"


def test_an_unknown_role_is_refused(client, forms, other):
    assert assert_problem(client.patch(f"/api/users/{other}", json={"role": "owner"}), 422)["errors"]["role"]
    assert forms.post(f"/users/{other}/role", {"role": "owner"}, page=f"/users/{other}").status_code == 422


def test_a_promoted_member_may_then_do_admin_work_with_the_same_token(client, as_member, member):
    assert as_member.post("/api/users", json={"name": "N", "email": "n@example.com"}).status_code == 403

    assert client.patch(f"/api/users/{member.user_id}", json={"role": "admin"}).status_code == 200

    assert as_member.post("/api/users", json={"name": "N", "email": "n@example.com"}).status_code == 201


def test_a_demoted_admin_loses_admin_work_at_once_on_this_worker(app, client, store):
    second = add(app, "Second Admin", "second@example.com", "admin")
    as_second = client_of(app, second)
    assert as_second.get("/api/users.csv").status_code == 200

    assert client.patch(f"/api/users/{second.user_id}", json={"role": "member"}).status_code == 200

    assert as_second.get("/api/users.csv").status_code == 403
    assert as_second.get("/users.csv").status_code == 403


@pytest.mark.parametrize("method", ["post", "put", "patch"])
def test_an_admin_sets_a_password_through_the_api_and_it_is_write_only(app, client, store, method, caplog):
    secret = f"a-{method}-password"
    body = {"name": "Pat", "email": "pat@example.com", "password": secret}
    caplog.set_level(logging.DEBUG)
    if method == "post":
        response = client.post("/api/users", json=body)
    else:
        user_id = store.add_users(("Pat", "pat@example.com"))[0]
        response = getattr(client, method)(
            f"/api/users/{user_id}", json=body if method == "put" else {"password": secret}
        )

    assert response.status_code in (200, 201)
    user_id = response.get_json()["id"]
    assert "password" not in response.get_json()
    stored = store.scalar(select(User.password_hash).where(User.id == user_id))
    assert stored and secret not in stored
    for text in (response.text, caplog.text, str(store.audit_rows(user_id))):
        assert secret not in text and stored not in text
    changes = [changes for _, _, changes in store.audit_rows(user_id)]
    assert changes[-1]["password"] == [None, "set" if method == "post" else "changed"]
    sign_in(anonymous(app), "pat@example.com", secret)


def test_history_says_password_changed_and_nothing_more(client, forms, other, store):
    forms.post(
        f"/users/{other}/password",
        {"password": "a-new-password", "password_again": "a-new-password"},
        page=f"/users/{other}",
    )

    history = client.get(f"/api/users/{other}/history").get_json()["items"]
    assert history[0]["changes"] == {"password": [None, "changed"]}
    page = client.get(f"/users/{other}")
    assert "Changed by Test Admin" in page_text(page) and "Password changed" in page_text(page)
    assert "a-new-password" not in page.text


@pytest.mark.parametrize("length, status", [(7, 422), (8, 201), (128, 201), (129, 422)])
def test_a_password_is_8_to_128_characters(client, length, status):
    response = client.post("/api/users", json={"name": "P", "email": "p@example.com", "password": "p" * length})

    assert response.status_code == status
    if status == 422:
        assert "password" in response.get_json()["errors"]


def test_a_member_cannot_set_a_role_even_alongside_allowed_fields(as_member, member, store):
    response = as_member.patch(f"/api/users/{member.user_id}", json={"name": "Mia", "role": "admin"})

    assert_problem(response, 403)
    assert store.scalar(select(User.role).where(User.id == member.user_id)) == "member"


# -- the last admin -------------------------------------------------------------------


def admins(store) -> int:
    return store.scalar(select(func.count()).select_from(User).where(User.role == "admin"))


def test_the_last_admin_cannot_be_demoted_through_the_api(client, admin, store):
    for method, body in (
        ("patch", {"role": "member"}),
        ("put", {"name": "A", "email": ADMIN_EMAIL, "role": "member"}),
    ):
        response = getattr(client, method)(f"/api/users/{admin.user_id}", json=body)
        assert "last admin" in assert_problem(response, 409)["detail"]
    assert admins(store) == 1


def test_the_last_admin_cannot_be_deleted_through_the_api(client, admin, store):
    assert "last admin" in assert_problem(client.delete(f"/api/users/{admin.user_id}"), 409)["detail"]
    assert admins(store) == 1


def test_the_last_admin_cannot_be_demoted_or_deleted_through_the_pages(client, forms, admin, store):
    page = f"/users/{admin.user_id}"

    demoted = forms.post(f"{page}/role", {"role": "member"}, page=page)
    deleted = forms.post(f"{page}/delete", {}, page=page)

    assert demoted.status_code == deleted.status_code == 409
    assert "last admin" in demoted.text and "last admin" in deleted.text
    assert admins(store) == 1


def test_with_a_second_admin_either_may_go(app, client, admin, store):
    second = add(app, "Second Admin", "second@example.com", "admin")

    assert client.patch(f"/api/users/{second.user_id}", json={"role": "member"}).status_code == 200
    assert client.delete(f"/api/users/{admin.user_id}").status_code == 409
    assert client.patch(f"/api/users/{second.user_id}", json={"role": "admin"}).status_code == 200
    assert client.delete(f"/api/users/{second.user_id}").status_code == 204
    assert admins(store) == 1


@pytest.mark.parametrize("round", range(3))
def test_two_admins_demoting_themselves_at_once_leave_one_admin(app, committing, admin, store, round):
    second = add(app, "Second Admin", "second@example.com", "admin")
    first_client, second_client = app.test_client(), client_of(app, second)

    responses = race(
        app,
        [
            lambda _: first_client.patch(f"/api/users/{admin.user_id}", json={"role": "member"}),
            lambda _: second_client.patch(f"/api/users/{second.user_id}", json={"role": "member"}),
        ],
    )

    assert sorted(response.status_code for response in responses) == [200, 409]
    assert admins(store) == 1


@pytest.mark.parametrize("round", range(3))
def test_an_admin_deleting_themselves_while_the_other_steps_down_leave_one_admin(app, committing, admin, store, round):
    second = add(app, "Second Admin", "second@example.com", "admin")
    first_client, second_client = app.test_client(), client_of(app, second)

    responses = race(
        app,
        [
            lambda _: first_client.delete(f"/api/users/{admin.user_id}"),
            lambda _: second_client.patch(f"/api/users/{second.user_id}", json={"role": "member"}),
        ],
    )

    assert sorted(response.status_code for response in responses) in ([200, 409], [204, 409])
    assert admins(store) == 1


def test_a_database_error_during_a_write_logs_no_parameters(app, client, caplog):
    """A lost connection under an INSERT is logged without its parameters, which
    would carry the password hash."""

    @app.post("/explode-with-a-hash")
    def explode():
        raise OperationalError(
            "INSERT INTO users ...", {"new_password_hash": "scrypt:32768:8:1$salt$hash"}, OSError("gone")
        )

    with caplog.at_level(logging.WARNING):
        response = client.post("/explode-with-a-hash")

    assert response.status_code == 503
    assert "database unavailable: gone" in caplog.text
    assert "scrypt:" not in caplog.text
