"""End to end: a person using the pages in Chromium, served by the real gunicorn.

Each test drives the pages as a person would (labels, buttons, links, the keyboard)
and checks what the person sees and what the database holds afterwards.
"""

import re

import pytest
from playwright.sync_api import expect

from e2e.conftest import screenshot, sign_in

ADA = ("Ada Lovelace", "ada@example.com")
ALAN = ("Alan Turing", "alan@example.com")
GRACE = ("Grace Hopper", "grace@example.com")
LONG = (
    "Wolfeschlegelsteinhausenbergerdorffwelchevoralternwarengewissenhaftschaferswessenschafewaren",
    "a-very-long-mailbox-name-that-does-not-break-anywhere@subdomain.of.an.exceedingly-long-domain.example",
)


def rows(page):
    return page.locator("tbody tr")


def tab_to(page, locator, presses: int = 12) -> int:
    """Press Tab until `locator` has the focus; how many presses it took."""
    for count in range(1, presses + 1):
        page.keyboard.press("Tab")
        if locator.evaluate("element => element === document.activeElement"):
            return count
    raise AssertionError(f"{locator} not reached with {presses} presses of Tab")


# -- the main paths -------------------------------------------------------------------


def test_create_a_user_from_the_list(store, page):
    page.goto("/users")
    page.get_by_role("link", name="New user").click()
    page.get_by_label("Name").fill("Ada Lovelace")
    page.get_by_label("Email").fill("ADA@Example.com")
    page.get_by_role("button", name="Create").click()

    expect(page).to_have_url(re.compile(r"/users/\d+$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Ada Lovelace")
    expect(page.get_by_role("status")).to_have_text("Created Ada Lovelace.")
    expect(page.get_by_role("definition").first).to_have_text("ada@example.com")
    assert store.users() == [ADA]


def test_search_narrows_the_list(store, page):
    store.add_users(ADA, ALAN, GRACE)
    page.goto("/users")
    expect(rows(page)).to_have_count(4)  # and the admin the test signed in as

    page.get_by_label("Search by name or email").fill("LOVE")
    page.keyboard.press("Enter")

    expect(page).to_have_url(re.compile(r"/users\?q=LOVE$"))
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_contain_text("Ada Lovelace")
    expect(page.get_by_text("1 user matching")).to_be_visible()
    page.get_by_role("link", name="Clear").click()
    expect(rows(page)).to_have_count(4)


def test_paginate_through_the_list(store, page):
    store.add_users(*[(f"User {n:02d}", f"user{n}@example.com") for n in range(1, 26)])
    page.goto("/users")
    expect(rows(page)).to_have_count(20)
    expect(page.get_by_text("Page 1 of 2")).to_be_visible()
    expect(page.get_by_role("link", name="Previous")).to_have_count(0)

    page.get_by_role("link", name="Next").click()

    expect(page).to_have_url(re.compile(r"/users\?page=2$"))
    expect(rows(page)).to_have_count(6)  # page 1 held the admin and Users 01 to 19
    expect(rows(page).first).to_contain_text("User 20")
    expect(page.get_by_role("link", name="Next")).to_have_count(0)
    page.get_by_role("link", name="Previous").click()
    expect(rows(page).nth(1)).to_contain_text("User 01")


def test_edit_a_user(store, page):
    [user_id] = store.add_users(ADA)
    page.goto(f"/users/{user_id}")
    page.get_by_role("link", name="Edit").click()
    name = page.get_by_label("Name")
    expect(name).to_have_value("Ada Lovelace")

    name.fill("Ada King")
    page.get_by_role("button", name="Save").click()

    expect(page).to_have_url(re.compile(rf"/users/{user_id}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Ada King")
    expect(page.get_by_role("status")).to_have_text("Saved Ada King.")
    assert store.users() == [("Ada King", "ada@example.com")]


def test_an_edit_conflict_shows_both_versions_and_lets_the_user_reapply(store, page, context, backend):
    [user_id] = store.add_users(ADA)
    page.goto(f"/users/{user_id}/edit")
    page.get_by_label("Name").fill("Ada Mine")

    # Meanwhile someone else saves the same user in another tab.
    other = context.new_page()
    other.goto(f"/users/{user_id}/edit")
    other.get_by_label("Name").fill("Ada Theirs")
    other.get_by_role("button", name="Save").click()
    expect(other.get_by_role("status")).to_have_text("Saved Ada Theirs.")
    other.close()

    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Someone else changed Ada Theirs")
    expect(page.get_by_role("row", name="Name")).to_contain_text("Ada Theirs")
    expect(page.get_by_role("row", name="Name")).to_contain_text("Ada Mine")
    assert store.users() == [("Ada Theirs", "ada@example.com")]  # nothing overwritten
    screenshot(page, backend, "edit-conflict")

    page.get_by_role("button", name="Save mine over theirs").click()
    expect(page.get_by_role("status")).to_have_text("Saved Ada Mine.")
    assert store.users() == [("Ada Mine", "ada@example.com")]


def test_a_validation_error_is_shown_next_to_its_field_which_takes_the_focus(store, page):
    page.goto("/users/new")
    page.get_by_label("Name").fill("Ada")
    page.get_by_label("Email").fill("not-an-email")
    with page.expect_response(lambda response: response.request.method == "POST") as posted:
        page.get_by_role("button", name="Create").click()

    assert posted.value.status == 422
    email = page.get_by_label("Email")
    expect(email).to_be_focused()
    expect(email).to_have_attribute("aria-invalid", "true")
    expect(email).to_have_accessible_description("Not a valid email address.")
    expect(email).to_have_value("not-an-email")
    expect(page.get_by_label("Name")).to_have_value("Ada")
    expect(page.get_by_label("Name")).not_to_have_attribute("aria-invalid", "true")
    expect(page.get_by_role("alert")).to_have_text("Please correct the highlighted fields.")
    # The message sits right under its own input, aligned with it.
    field, message = email.bounding_box(), page.locator("#email-error").bounding_box()
    assert 0 <= message["y"] - (field["y"] + field["height"]) < 16
    assert abs(message["x"] - field["x"]) < 2
    assert store.count() == 0


def test_delete_asks_for_confirmation_first(store, page):
    ada_id, _ = store.add_users(ADA, ALAN)
    page.goto(f"/users/{ada_id}")

    page.get_by_role("link", name="Delete").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Delete Ada Lovelace?")
    assert store.users() == [ADA, ALAN]  # asking deletes nothing
    page.get_by_role("link", name="Cancel").click()
    expect(page).to_have_url(re.compile(rf"/users/{ada_id}$"))
    assert store.users() == [ADA, ALAN]

    page.get_by_role("link", name="Delete").click()
    page.get_by_role("button", name="Delete").click()

    expect(page).to_have_url(re.compile(r"/users$"))
    expect(page.get_by_role("status")).to_have_text("Deleted Ada Lovelace.")
    expect(rows(page)).to_have_count(2)  # Alan and the admin
    assert store.users() == [ALAN]


# -- keyboard, JavaScript, widths -----------------------------------------------------------


def test_create_with_the_keyboard_alone_recovering_from_an_error(store, page):
    page.goto("/users")
    tab_to(page, page.get_by_role("link", name="New user"))
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/users/new$"))

    name = page.get_by_label("Name")
    assert tab_to(page, name) <= 6  # past the header's links and the sign-out button only
    assert name.evaluate("element => getComputedStyle(element).outlineStyle") != "none"  # focus is visible
    page.keyboard.type("Grace Hopper")
    page.keyboard.press("Tab")
    page.keyboard.type("grace@")
    page.keyboard.press("Enter")  # submits the form from the field

    email = page.get_by_label("Email")
    expect(email).to_be_focused()
    page.keyboard.press("End")
    page.keyboard.type("example.com")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Create")).to_be_focused()
    page.keyboard.press("Enter")

    expect(page.get_by_role("heading", level=1)).to_have_text("Grace Hopper")
    assert store.users() == [GRACE]


def test_the_pages_work_with_javascript_turned_off(store, browser, site, backend):
    context = browser.new_context(base_url=site, java_script_enabled=False)
    sign_in(context)
    page = context.new_page()
    try:
        page.goto("/users/new")
        page.get_by_label("Name").fill("Grace Hopper")
        page.get_by_label("Email").fill("grace@example.com")
        page.get_by_role("button", name="Create").click()
        expect(page.get_by_role("status")).to_have_text("Created Grace Hopper.")
        page.get_by_role("link", name="Delete").click()
        page.get_by_role("button", name="Delete").click()
        expect(page.get_by_role("status")).to_have_text("Deleted Grace Hopper.")
        screenshot(page, backend, "without-javascript")
    finally:
        context.close()
    assert store.count() == 0


@pytest.mark.parametrize("width", [360, 1280])
def test_every_page_fits_the_width_without_sideways_scrolling(store, page, backend, width):
    long_id, ada_id, *_ = store.add_users(LONG, ADA, *[(f"User {n:02d}", f"user{n}@example.com") for n in range(25)])
    page.set_viewport_size({"width": width, "height": 800})
    views = {
        "list": "/users",
        "search": "/users?q=user",
        "show": f"/users/{long_id}",
        "edit": f"/users/{long_id}/edit",
        "delete": f"/users/{long_id}/delete",
        "new": "/users/new",
        "not-found": "/users/424242",
        "api-docs": "/api/docs",
    }

    for view, path in views.items():
        page.goto(path)
        check_fits(page, width, view)
        screenshot(page, backend, f"width-{width}-{view}")
    page.goto(f"/users/{ada_id}/edit")
    page.get_by_label("Email").fill("x" * 80)
    page.get_by_role("button", name="Save").click()
    check_fits(page, width, "form with errors")
    screenshot(page, backend, f"width-{width}-errors")


def check_fits(page, width: int, view: str) -> None:
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"{view}: the page is {scroll_width}px wide in a {width}px window"
    assert page.evaluate("getComputedStyle(document.body).fontSize") == "16px", view


# -- the content security policy, in the browser --------------------------------------------


def test_no_page_logs_an_error_and_the_stylesheet_applies(store, page, console):
    [user_id] = store.add_users(ADA)

    for path in (
        "/users",
        "/users/new",
        f"/users/{user_id}",
        f"/users/{user_id}/edit",
        f"/users/{user_id}/delete",
        "/api/docs",
        "/users/424242",
    ):
        page.goto(path)
        # --tint from style.css: the stylesheet loaded under the policy.
        assert page.evaluate("getComputedStyle(document.documentElement).backgroundColor") == "rgb(244, 246, 249)"

    # Only the last page's own status: no blocked script or style, no missing resource.
    assert console == ["Failed to load resource: the server responded with a status of 404 (NOT FOUND)"]


def test_the_browser_refuses_inline_script_even_if_markup_got_through(page, console):
    page.goto("/users")

    ran = page.evaluate("""() => new Promise(resolve => {
        document.addEventListener("securitypolicyviolation", () => resolve(window.injected === true));
        const script = document.createElement("script");
        script.textContent = "window.injected = true";
        document.body.append(script);
    })""")

    assert ran is False
    assert any("Content Security Policy" in message for message in console)
