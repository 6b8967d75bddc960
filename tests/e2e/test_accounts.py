"""End to end, in Chromium against the real gunicorn: signing in (and being sent back
where you were going), the first-run setup, a member's limited pages, signing out."""

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from e2e.conftest import DESKTOP, screenshot, sign_in
from webapp import create_app, migrations
from webapp.db import Session, get_engine
from webapp.domain.models import User

from helpers import ADMIN_EMAIL, ADMIN_PASSWORD, add_account, empty_database
from server import Server


@pytest.fixture
def visitor(browser, site, backend, request):
    """A page in a browser that nobody has signed in to."""
    context = browser.new_context(base_url=site, viewport=DESKTOP)
    page = context.new_page()
    yield page
    screenshot(page, backend, request.node.name)
    context.close()


@pytest.fixture
def member(app):
    with app.app_context():
        credentials = add_account(Session().connection(), "Mia Member", "mia@example.com", "member-password", "member")
        Session().commit()
    return credentials


def test_sign_in_from_a_deep_link_and_land_there(store, visitor):
    [user_id] = store.add_users(("Ada Lovelace", "ada@example.com"))

    visitor.goto(f"/users/{user_id}")
    expect(visitor).to_have_url(re.compile(rf"/login\?next=/users/{user_id}$"))
    visitor.get_by_label("Email").fill(ADMIN_EMAIL)
    visitor.get_by_label("Password").fill("not-the-password")
    visitor.get_by_role("button", name="Sign in").click()
    expect(visitor.get_by_role("alert")).to_have_text("Unknown email or wrong password.")
    expect(visitor.get_by_label("Email")).to_have_value(ADMIN_EMAIL)

    visitor.get_by_label("Password").fill(ADMIN_PASSWORD)
    visitor.get_by_role("button", name="Sign in").click()

    expect(visitor).to_have_url(re.compile(rf"/users/{user_id}$"))
    expect(visitor.get_by_role("heading", level=1)).to_have_text("Ada Lovelace")
    expect(visitor.get_by_text("Signed in as")).to_contain_text("Test Admin")


def test_sign_out_and_the_pages_want_a_sign_in_again(context):
    page = context.new_page()
    page.goto("/users")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    page.get_by_role("button", name="Sign out").click()

    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.get_by_role("status")).to_have_text("Signed out.")
    page.goto("/users")
    expect(page).to_have_url(re.compile(r"/login\?next=/users$"))
    page.close()


def test_a_member_sees_their_limited_pages_and_changes_their_own_name(browser, site, member, store, backend):
    [other] = store.add_users(("Olga Other", "olga@example.com"))
    context = browser.new_context(base_url=site, viewport=DESKTOP)
    sign_in(context, member.email, member.password)
    page = context.new_page()
    try:
        page.goto("/users")
        expect(page.get_by_text("Signed in as")).to_contain_text("Mia Member")
        for name in ("New user", "Download CSV", "Import CSV"):
            expect(page.get_by_role("link", name=name)).to_have_count(0)

        page.get_by_role("link", name="Olga Other").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Olga Other")
        expect(page.get_by_role("link", name="Edit")).to_have_count(0)
        expect(page.get_by_role("link", name="Delete…")).to_have_count(0)
        expect(page.get_by_role("button")).to_have_text(["Sign out"])  # nothing to press but that

        page.goto(f"/users/{member.user_id}")
        expect(page.get_by_label("Current password")).to_be_visible()
        expect(page.get_by_role("button", name="Change the role")).to_have_count(0)
        expect(page.get_by_role("link", name="Delete…")).to_have_count(0)
        page.get_by_role("link", name="Edit").click()
        expect(page.get_by_label("Email")).to_have_count(0)
        page.get_by_label("Name").fill("Mia Renamed")
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_role("status")).to_have_text("Saved Mia Renamed.")

        page.goto(f"/users/{other}/edit")
        expect(page.get_by_role("heading", level=1)).to_contain_text("Forbidden")
        screenshot(page, backend, "member_forbidden")
    finally:
        context.close()
    assert store.scalar(select(User.name).where(User.id == member.user_id)) == "Mia Renamed"


@pytest.fixture
def first_run(tmp_path):
    """A gunicorn of its own on an empty database: no admin yet."""
    with empty_database(tmp_path) as url:
        app = create_app({"DATABASE_URL": url})
        with app.app_context():
            migrations.upgrade("head")
        get_engine(app).dispose()
        server = Server(url, tmp_path, SECRET_KEY="browser-tests-only", WEB_CONCURRENCY="1", GUNICORN_THREADS="2")
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


def test_the_first_run_leads_to_setup_which_makes_the_first_admin(browser, first_run, backend):
    context = browser.new_context(base_url=first_run, viewport=DESKTOP)
    page = context.new_page()
    try:
        page.goto("/users")
        expect(page).to_have_url(re.compile(r"/setup$"))
        expect(page.get_by_role("heading", level=1)).to_have_text("Create the first admin")
        page.get_by_label("Name").fill("First Admin")
        page.get_by_label("Email").fill("first@example.com")
        page.get_by_label("Password (8 to 128 characters)").fill("first-password")
        page.get_by_label("The password again").fill("first-passwore")
        page.get_by_role("button", name="Create and sign in").click()
        expect(page.get_by_text("The two passwords differ.")).to_be_visible()

        page.get_by_label("Password (8 to 128 characters)").fill("first-password")
        page.get_by_label("The password again").fill("first-password")
        page.get_by_role("button", name="Create and sign in").click()

        expect(page).to_have_url(re.compile(r"/users$"))
        expect(page.get_by_role("status")).to_have_text("Welcome, First Admin: you are the first admin.")
        expect(page.get_by_role("link", name="New user")).to_be_visible()
        screenshot(page, backend, "first_run_done")
        response = page.goto("/setup")
        assert response.status == 404
    finally:
        context.close()
