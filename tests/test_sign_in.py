"""Signing in to the pages: the login form, where it leads afterwards, signing out,
and the count of failed sign-ins that turns a guesser away (form and HTTP Basic)."""

import base64
import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select, update

from webapp.db import Session
from webapp.domain import accounts
from webapp.domain.models import SignInFailures, failures_table, utcnow

from helpers import ADMIN_EMAIL, ADMIN_PASSWORD, Forms, add_account, anonymous, sign_in


@pytest.fixture
def visitor(app, client):
    """Nobody yet, on the rolled-back test database that holds the test admin."""
    return anonymous(app)


def login_form(client, path: str = "/login") -> dict[str, str]:
    return dict(Forms.HIDDEN.findall(client.get(path).text))


def post_login(client, email: str, password: str, **extra):
    return client.post("/login", data={**login_form(client), "email": email, "password": password, **extra})


def sign_in_target(response) -> str:
    """The `next` of a redirect to the login form (which it must be)."""
    parts = urlsplit(response.location)
    assert parts.path == "/login" and not parts.netloc
    return parse_qs(parts.query)["next"][0]


def basic(email: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()}


# -- who must sign in -----------------------------------------------------------------


PAGES = ["/", "/users", "/users/new", "/users/1", "/users/1/edit", "/users.csv", "/users/import"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_sends_a_visitor_to_the_login_form_with_next(visitor, path):
    response = visitor.get(path)

    assert response.status_code == 302
    assert sign_in_target(response) == path


def test_next_keeps_the_query_string(visitor):
    response = visitor.get("/users?q=ada&page=2")

    assert response.status_code == 302
    assert sign_in_target(response) == "/users?q=ada&page=2"


def test_a_page_post_without_sign_in_writes_nothing(visitor, store):
    response = visitor.post("/users", data={"name": "Eve", "email": "eve@example.com"})

    assert response.status_code in (303, 400)
    assert store.users() == []


@pytest.mark.parametrize("path", ["/login", "/static/style.css", "/static/favicon.svg"])
def test_the_login_form_and_static_files_are_open(visitor, path):
    with visitor.get(path) as response:
        assert response.status_code == 200


def test_setup_is_not_a_way_in_once_an_admin_exists(visitor):
    assert visitor.get("/setup").status_code == 404


# -- the form -------------------------------------------------------------------------


def test_the_login_form_has_email_password_and_a_csrf_token(visitor):
    page = visitor.get("/login")

    assert page.status_code == 200
    assert 'name="email"' in page.text and 'name="password"' in page.text
    assert login_form(visitor)["csrf_token"]


def test_signing_in_leads_to_the_user_list_and_into_the_pages(visitor):
    response = sign_in(visitor, ADMIN_EMAIL, ADMIN_PASSWORD)

    assert response.location == "/users"
    page = visitor.get("/users")
    assert page.status_code == 200
    assert "Signed in as" in page.text and "Test Admin" in page.text


def test_the_email_is_matched_whatever_its_case_and_spaces(visitor):
    response = post_login(visitor, "  ADMIN@Tests.Example.ORG ", ADMIN_PASSWORD)

    assert response.status_code == 303


def test_a_sign_in_without_the_csrf_token_is_refused(visitor):
    visitor.get("/login")
    response = visitor.post("/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})

    assert response.status_code == 400
    assert visitor.get("/users").status_code == 302


def test_a_sign_in_with_another_sessions_csrf_token_is_refused(app, visitor):
    token = login_form(anonymous(app))["csrf_token"]
    visitor.get("/login")
    response = visitor.post("/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": token})

    assert response.status_code == 400


@pytest.mark.parametrize("target", ["/users/1", "/users?q=ada", "/users/import"])
def test_signing_in_leads_to_next_when_it_is_a_path_here(visitor, target):
    response = post_login(visitor, ADMIN_EMAIL, ADMIN_PASSWORD, next=target)

    assert response.status_code == 303
    assert response.location == target


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "https://evil.example/users",
        "http:/evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "evil.example",
        "/users\r\nLocation: https://evil.example",
        "/\tevil.example",
        "",
    ],
)
def test_signing_in_never_leads_off_the_site(visitor, target):
    response = post_login(visitor, ADMIN_EMAIL, ADMIN_PASSWORD, next=target)

    assert response.status_code == 303
    assert response.location == "/users"


def test_next_from_the_redirect_survives_the_form(visitor):
    visitor.get("/users/1")
    form = login_form(visitor, "/login?next=%2Fusers%2F1")

    assert form["next"] == "/users/1"
    response = visitor.post("/login", data={**form, "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert response.location == "/users/1"


def test_a_signed_in_user_opening_the_login_form_goes_on_to_next(client):
    response = client.get("/login?next=%2Fusers%2Fnew")

    assert response.status_code == 302
    assert response.location == "/users/new"


def test_the_session_cookie_changes_at_sign_in_and_the_old_one_stays_signed_out(app, visitor):
    visitor.get("/login")
    before = visitor.get_cookie("session").value
    before_token = login_form(visitor)["csrf_token"]

    sign_in(visitor, ADMIN_EMAIL, ADMIN_PASSWORD)

    after = visitor.get_cookie("session").value
    assert after != before
    # Nothing of the anonymous session carried over: its CSRF token no longer counts.
    assert visitor.post("/logout", data={"csrf_token": before_token}).status_code == 400
    assert visitor.get("/users").status_code == 200
    # An attacker who planted the anonymous cookie before the sign-in has nothing.
    planted = anonymous(app)
    planted.set_cookie("session", before)
    assert planted.get("/users").status_code == 302


def test_signing_out_ends_the_session(visitor):
    sign_in(visitor, ADMIN_EMAIL, ADMIN_PASSWORD)
    token = login_form(visitor, "/users")["csrf_token"]

    response = visitor.post("/logout", data={"csrf_token": token})

    assert response.status_code == 303
    assert response.location == "/login"
    assert visitor.get("/users").status_code == 302


def test_signing_out_needs_the_csrf_token(visitor):
    sign_in(visitor, ADMIN_EMAIL, ADMIN_PASSWORD)

    assert visitor.post("/logout").status_code == 400
    assert visitor.get("/users").status_code == 200


def test_signing_out_is_a_post_only(visitor):
    sign_in(visitor, ADMIN_EMAIL, ADMIN_PASSWORD)

    assert visitor.get("/logout").status_code == 405
    assert visitor.get("/users").status_code == 200


def test_a_password_change_elsewhere_signs_this_browser_out(app, visitor, client, admin):
    sign_in(visitor, ADMIN_EMAIL, ADMIN_PASSWORD)

    response = client.patch(f"/api/users/{admin.user_id}", json={"password": "a-brand-new-password"})

    assert response.status_code == 200
    assert visitor.get("/users").status_code == 302


# -- wrong answers --------------------------------------------------------------------


def test_a_wrong_password_re_shows_the_form_with_the_email_and_no_session(visitor):
    response = post_login(visitor, ADMIN_EMAIL, "not-the-password")

    assert response.status_code == 422
    assert "Unknown email or wrong password." in response.text
    assert f'value="{ADMIN_EMAIL}"' in response.text
    assert "not-the-password" not in response.text
    assert visitor.get("/users").status_code == 302


def answer(response) -> tuple:
    text = response.text.replace("nobody@tests.example.org", "EMAIL").replace(ADMIN_EMAIL, "EMAIL")
    return response.status_code, _without_csrf(text)


def _without_csrf(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "csrf_token" not in line)


def test_an_unknown_email_and_a_wrong_password_get_the_same_answer(visitor, app):
    wrong = post_login(visitor, ADMIN_EMAIL, "not-the-password")
    unknown = post_login(anonymous(app), "nobody@tests.example.org", "not-the-password")

    assert answer(wrong) == answer(unknown)


def test_a_user_without_a_password_cannot_sign_in_and_gets_the_same_answer(visitor, store):
    store.add_users(("Imported", "imported@example.com"))

    response = post_login(visitor, "imported@example.com", "")
    assert response.status_code == 422
    response = post_login(visitor, "imported@example.com", "any-password")
    assert response.status_code == 422
    assert "Unknown email or wrong password." in response.text


def test_basic_with_an_unknown_email_and_a_wrong_password_get_the_same_answer(visitor):
    wrong = visitor.post("/api/tokens", headers=basic(ADMIN_EMAIL, "not-the-password"))
    unknown = visitor.post("/api/tokens", headers=basic("nobody@tests.example.org", "not-the-password"))

    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_json() == unknown.get_json()
    assert wrong.headers["WWW-Authenticate"] == unknown.headers["WWW-Authenticate"] == 'Basic realm="api"'


def test_an_unknown_email_costs_what_a_wrong_password_costs(make_app, database_url, _schema, committing):
    """With a real-cost scrypt, an unknown email must hash too: skipping the hash
    would answer in a small fraction of the time."""
    app = make_app(DATABASE_URL=database_url, PASSWORD_HASH_METHOD="scrypt:16384:8:1")
    with app.app_context():  # hashed with the app's method, at its real cost
        accounts.make_admin("slow@tests.example.org", "Slow", "a-real-password")
    visitor = anonymous(app)

    def seconds(email: str) -> float:
        form = login_form(visitor)
        started = time.perf_counter()
        response = visitor.post("/login", data={**form, "email": email, "password": "not-the-password"})
        assert response.status_code == 422
        return time.perf_counter() - started

    # Taken in turns, three of each (under the throttle's five), so a busy machine
    # slows both alike; the fastest of each is the least disturbed.
    times = [(seconds("slow@tests.example.org"), seconds("nobody@tests.example.org")) for _ in range(3)]
    wrong, unknown = min(t[0] for t in times), min(t[1] for t in times)

    # Without the dummy hash an unknown email answers in a few percent of the time.
    assert unknown > 0.3 * wrong, times


# -- the throttle ---------------------------------------------------------------------


def fail(client, times: int, email: str = ADMIN_EMAIL) -> list[int]:
    return [post_login(client, email, "not-the-password").status_code for _ in range(times)]


def test_five_failures_refuse_the_email_with_429_and_retry_after(visitor):
    assert fail(visitor, 5) == [422] * 5

    refused = post_login(visitor, ADMIN_EMAIL, ADMIN_PASSWORD)

    assert refused.status_code == 429
    assert 14 * 60 < int(refused.headers["Retry-After"]) <= 15 * 60
    assert "Try again in 15 minutes." in refused.text
    assert visitor.get("/users").status_code == 302


def test_the_refusal_is_per_email(visitor, store, app):
    with app.app_context():
        add_account(Session().connection(), "Other", "other@tests.example.org", "other-password")
        Session().commit()
    fail(visitor, 5)

    assert post_login(visitor, "other@tests.example.org", "other-password").status_code == 303


def test_an_unknown_email_is_refused_after_five_failures_too(visitor):
    assert fail(visitor, 6, "nobody@tests.example.org") == [422] * 5 + [429]


def test_a_success_resets_the_count(visitor, app):
    assert fail(visitor, 4) == [422] * 4
    assert post_login(visitor, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 303

    assert fail(anonymous(app), 4) == [422] * 4
    assert post_login(anonymous(app), ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 303


def test_form_and_basic_failures_count_together(visitor):
    fail(visitor, 3)
    for _ in range(2):
        assert visitor.post("/api/tokens", headers=basic(ADMIN_EMAIL, "wrong")).status_code == 401

    refused = visitor.post("/api/tokens", headers=basic(ADMIN_EMAIL, ADMIN_PASSWORD))

    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 14 * 60
    assert refused.mimetype == "application/problem+json"
    assert post_login(visitor, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 429


def test_the_refusal_ends_when_the_window_passes(visitor, app):
    fail(visitor, 5)
    with app.app_context():  # fifteen minutes later, as far as the database knows
        Session().execute(update(failures_table).values(window_start=utcnow() - timedelta(minutes=15, seconds=1)))
        Session().commit()

    assert post_login(visitor, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 303


def test_failures_older_than_the_window_start_counting_again(visitor, app, store):
    fail(visitor, 4)
    with app.app_context():
        Session().execute(update(failures_table).values(window_start=utcnow() - timedelta(minutes=16)))
        Session().commit()

    assert fail(visitor, 1) == [422]
    assert store.scalar(select(SignInFailures.failures)) == 1
    assert fail(visitor, 4) == [422] * 4
    assert fail(visitor, 1) == [429]


def test_the_count_is_in_the_database_so_two_app_objects_agree(make_app, database_url, _schema, committing):
    first, second = make_app(DATABASE_URL=database_url), make_app(DATABASE_URL=database_url)
    assert fail(anonymous(first), 3) == [422] * 3
    assert fail(anonymous(second), 2) == [422] * 2

    assert post_login(anonymous(first), ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 429
    assert post_login(anonymous(second), ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 429


def test_a_failed_sign_in_stores_no_password(visitor, store):
    fail(visitor, 1)

    rows = store.scalars(select(SignInFailures))
    assert [(row.email, row.failures) for row in rows] == [(ADMIN_EMAIL, 1)]


@pytest.mark.parametrize("email", ["x" * 300 + "@example.com", "a\x00b@example.com", "a\x1bb@example.com"])
def test_an_email_no_account_can_have_is_a_plain_wrong_answer_by_form_and_basic(visitor, email):
    form = post_login(visitor, email, "any-password")
    api = visitor.post("/api/tokens", headers=basic(email, "any-password"))

    assert form.status_code == 422 and "Unknown email or wrong password." in form.text
    assert api.status_code == 401 and api.headers["WWW-Authenticate"] == 'Basic realm="api"'
