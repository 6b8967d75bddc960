"""The first run: while no admin exists (development and testing), every page leads
to /setup, which makes the first admin; once one exists /setup is a 404, and in
production it never exists (the first admin comes from the CLI)."""

import pytest
from sqlalchemy import delete, select

from webapp.db import get_engine
from webapp.domain.models import ApiToken, User

from helpers import Forms, anonymous

FIRST = {"name": "First Admin", "email": "First@Example.com", "password": "first-password"}


@pytest.fixture
def fresh(app, committing):
    """The app on a database with no users at all (emptied again afterwards)."""
    with get_engine(app).begin() as connection:
        connection.execute(delete(ApiToken))
        connection.execute(delete(User))
    return anonymous(app)


def setup_form(client) -> dict[str, str]:
    return dict(Forms.HIDDEN.findall(client.get("/setup").text))


def post_setup(client, **fields):
    values = {**FIRST, "password_again": FIRST["password"], **fields}
    return client.post("/setup", data={**setup_form(client), **values})


@pytest.mark.parametrize("path", ["/", "/users", "/users/new", "/login", "/users/1"])
def test_every_page_leads_to_setup_while_no_admin_exists(fresh, path):
    response = fresh.get(path)

    assert response.status_code == 302
    assert response.location == "/setup"


def test_a_member_alone_does_not_end_the_first_run(fresh, store):
    store.add_users(("Imported", "imported@example.com"))

    assert fresh.get("/users").location == "/setup"


def test_the_setup_form_asks_for_name_email_and_the_password_twice(fresh):
    page = fresh.get("/setup")

    assert page.status_code == 200
    for name in ("name", "email", "password", "password_again", "csrf_token"):
        assert f'name="{name}"' in page.text


def test_setup_makes_the_first_admin_and_signs_them_in(fresh, store):
    response = post_setup(fresh)

    assert response.status_code == 303
    assert response.location == "/users"
    admin = store.scalars(select(User))[0]
    assert (admin.name, admin.email, admin.role) == ("First Admin", "first@example.com", "admin")
    assert admin.password_hash and "first-password" not in admin.password_hash
    page = fresh.get("/users")
    assert page.status_code == 200
    assert "Signed in as" in page.text and "First Admin" in page.text


def test_once_an_admin_exists_setup_is_404_and_pages_want_a_sign_in(app, fresh):
    post_setup(fresh)
    visitor = anonymous(app)

    assert visitor.get("/setup").status_code == 404
    assert visitor.post("/setup", data=FIRST).status_code in (400, 404)
    assert visitor.get("/users").location.startswith("/login?next=")


def test_setup_is_404_for_a_second_app_on_the_same_database(make_app, database_url, fresh):
    post_setup(fresh)

    assert anonymous(make_app(DATABASE_URL=database_url)).get("/setup").status_code == 404


def test_the_first_admin_can_sign_in_with_their_password(app, fresh):
    post_setup(fresh)
    visitor = anonymous(app)
    form = dict(Forms.HIDDEN.findall(visitor.get("/login").text))

    response = visitor.post("/login", data={**form, "email": "first@example.com", "password": "first-password"})

    assert response.status_code == 303


def test_setup_without_the_csrf_token_is_refused(fresh, store):
    fresh.get("/setup")
    response = fresh.post("/setup", data={**FIRST, "password_again": FIRST["password"]})

    assert response.status_code == 400
    assert store.scalars(select(User)) == []


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"password_again": "first-passwore"}, "password_again"),
        ({"password": "short", "password_again": "short"}, "password"),
        ({"password": "x" * 129, "password_again": "x" * 129}, "password"),
        ({"email": "not-an-email"}, "email"),
        ({"name": " "}, "name"),
    ],
)
def test_setup_with_bad_input_re_shows_the_form_and_writes_nothing(fresh, store, fields, field):
    response = post_setup(fresh, **fields)

    assert response.status_code == 422
    assert 'aria-invalid="true"' in response.text and f'id="{field}"' in response.text
    assert store.scalars(select(User)) == []
    assert fresh.get("/users").location == "/setup"


def test_the_password_typed_twice_must_match(fresh):
    response = post_setup(fresh, password_again="something-else")

    assert "The two passwords differ." in response.text


def test_setup_is_off_when_first_run_setup_is(make_app, database_url, fresh):
    visitor = anonymous(make_app(DATABASE_URL=database_url, FIRST_RUN_SETUP=False))

    assert visitor.get("/setup").status_code == 404
    assert visitor.get("/users").location.startswith("/login?next=")


def test_production_never_has_setup(make_app, database_url, fresh, monkeypatch):
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "a-production-key-for-tests-only")
    app = make_app(DATABASE_URL=database_url)
    visitor = anonymous(app)

    assert app.config["FIRST_RUN_SETUP"] is False
    assert visitor.get("/setup").status_code == 404
    assert visitor.post("/setup", data={**FIRST, "password_again": FIRST["password"]}).status_code in (400, 404)
    assert visitor.get("/users").location.startswith("/login?next=")


def test_development_has_setup(monkeypatch):
    monkeypatch.setenv("APP_ENV", "development")
    import config

    assert config.config_class().FIRST_RUN_SETUP is True
