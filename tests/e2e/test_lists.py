"""End to end, the list people work in: sorting, page sizes, per-row and bulk
delete, restore from the history, the import's redirect, dark mode and a phone.

Screenshots of each end state are kept under test-artifacts/e2e/ (the `page`
fixture), plus the README's picture of the list (readme-users.png there; copy it
to docs/screenshot-users.png when the list's look changes).
"""

import random
import re

from playwright.sync_api import expect

from e2e.conftest import ARTIFACTS, DESKTOP, screenshot, sign_in
from webapp.seed import fake_users

ADA = ("Ada Lovelace", "ada@example.com")
ALAN = ("Alan Turing", "alan@example.com")
GRACE = ("Grace Hopper", "grace@example.com")
ADMIN = "Test Admin"


def names(page) -> list[str]:
    return page.locator("tbody td.name a").all_inner_texts()


def header(page, name: str):
    return page.get_by_role("columnheader", name=name)


# -- sorting and page sizes -------------------------------------------------------------


def test_sort_by_clicking_a_column_header_and_again_to_reverse(store, page):
    store.add_users(GRACE, ADA, ALAN)
    page.goto("/users")
    expect(header(page, "Name")).to_have_attribute("aria-sort", "none")

    header(page, "Name").get_by_role("link").click()

    expect(page).to_have_url(re.compile(r"/users\?sort=name$"))
    expect(header(page, "Name")).to_have_attribute("aria-sort", "ascending")
    expect(header(page, "Email")).to_have_attribute("aria-sort", "none")
    assert names(page) == ["Ada Lovelace", "Alan Turing", "Grace Hopper", ADMIN]

    header(page, "Name").get_by_role("link").click()

    expect(page).to_have_url(re.compile(r"/users\?sort=-name$"))
    expect(header(page, "Name")).to_have_attribute("aria-sort", "descending")
    assert names(page) == [ADMIN, "Grace Hopper", "Alan Turing", "Ada Lovelace"]

    header(page, "Created").get_by_role("link").click()  # newest first, first

    expect(header(page, "Created")).to_have_attribute("aria-sort", "descending")
    assert names(page) == ["Alan Turing", "Ada Lovelace", "Grace Hopper", ADMIN]


def test_the_search_keeps_the_sort_and_an_empty_one_offers_to_clear_it(store, page):
    store.add_users(GRACE, ADA, ALAN)
    page.goto("/users?sort=-email")

    page.get_by_label("Search by name or email").fill("a")
    page.keyboard.press("Enter")

    expect(page).to_have_url(re.compile(r"/users\?q=a&sort=-email$"))
    assert names(page) == ["Grace Hopper", "Alan Turing", ADMIN, "Ada Lovelace"]  # admin@ after ada@
    page.get_by_label("Search by name or email").fill("nobody at all")
    page.keyboard.press("Enter")
    expect(page.get_by_text("No users match “nobody at all”.")).to_be_visible()

    page.get_by_role("link", name="Clear the search").click()

    expect(page).to_have_url(re.compile(r"/users\?sort=-email$"))
    expect(page.locator("tbody tr")).to_have_count(4)


def test_choose_a_page_size_and_keep_it_while_paging(store, page):
    store.add_numbered_users(120)
    page.goto("/users?sort=name")
    expect(page.locator("tbody tr")).to_have_count(20)

    page.get_by_role("link", name="50", exact=True).click()

    expect(page).to_have_url(re.compile(r"/users\?sort=name&per_page=50$"))
    expect(page.locator("tbody tr")).to_have_count(50)
    expect(page.get_by_role("link", name="50", exact=True)).to_have_attribute("aria-current", "true")
    expect(page.get_by_text("Page 1 of 3")).to_be_visible()
    page.get_by_role("link", name="Next").click()
    expect(page).to_have_url(re.compile(r"/users\?sort=name&per_page=50&page=2$"))
    expect(page.locator("tbody tr")).to_have_count(50)
    page.get_by_role("link", name="100", exact=True).click()
    expect(page.locator("tbody tr")).to_have_count(100)


# -- deleting from the list -------------------------------------------------------------


def test_delete_one_user_from_their_row(store, page):
    store.add_users(ADA, ALAN)
    page.goto("/users")

    page.get_by_role("link", name="Delete Ada Lovelace").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Delete Ada Lovelace?")
    page.get_by_role("button", name="Delete").click()

    expect(page).to_have_url(re.compile(r"/users$"))
    expect(page.get_by_role("status")).to_have_text("Deleted Ada Lovelace.")
    assert store.users() == [ALAN]


def test_edit_a_user_from_their_row(store, page):
    [user_id] = store.add_users(ADA)
    page.goto("/users")

    page.get_by_role("link", name="Edit Ada Lovelace").click()

    expect(page).to_have_url(re.compile(rf"/users/{user_id}/edit$"))
    expect(page.get_by_label("Name")).to_have_value("Ada Lovelace")


def test_delete_selected_users_after_a_page_that_lists_them(store, page, backend):
    store.add_users(ADA, ALAN, GRACE)
    page.goto("/users")
    page.get_by_label("Select Ada Lovelace").check()
    page.get_by_label("Select Grace Hopper").check()

    page.get_by_role("button", name="Delete selected…").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Delete 2 users?")
    expect(page.locator("ul.chosen li")).to_have_count(2)
    expect(page.locator("ul.chosen")).to_contain_text("Ada Lovelace")
    expect(page.locator("ul.chosen")).to_contain_text("Grace Hopper")
    assert store.count() == 3  # asking deletes nothing
    screenshot(page, backend, "delete-selected-confirm")

    page.get_by_role("button", name="Delete 2 users").click()

    expect(page).to_have_url(re.compile(r"/users$"))
    expect(page.get_by_role("status")).to_have_text("Deleted 2 users: Ada Lovelace, Grace Hopper.")
    assert store.users() == [ALAN]
    assert [action for _, action, _ in store.audit_rows() if action == "delete"] == ["delete", "delete"]


# -- restore ----------------------------------------------------------------------------


def test_restore_a_deleted_user_from_their_history(store, page, backend):
    ada_id, _ = store.add_users(ADA, ALAN)
    page.goto(f"/users/{ada_id}/delete")
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status")).to_have_text("Deleted Ada Lovelace.")

    page.goto(f"/users/{ada_id}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Ada Lovelace")
    expect(page.get_by_role("heading", level=1)).to_contain_text("deleted")
    expect(page.locator("ol.timeline > li").first).to_contain_text("Deleted")
    screenshot(page, backend, "deleted-user")

    page.get_by_role("button", name="Restore").click()

    expect(page).to_have_url(re.compile(rf"/users/{ada_id}$"))
    expect(page.get_by_role("status")).to_contain_text("Restored Ada Lovelace.")
    expect(page.get_by_role("heading", level=1)).to_have_text("Ada Lovelace")
    expect(page.locator("ol.timeline > li").first).to_contain_text("Restored")
    expect(page.locator("ol.timeline > li").first).to_contain_text("just now")
    assert store.users() == [ADA, ALAN]


# -- the import's redirect --------------------------------------------------------------


def test_an_import_redirects_to_its_report_and_a_reload_imports_nothing_again(store, page):
    page.goto("/users/import")
    expect(page.get_by_role("link", name="Download a sample CSV")).to_be_visible()
    csv = b"name,email,id\nAda Lovelace,ada@example.com,7\nNobody,not-an-email,8\n"
    page.get_by_label("CSV file").set_input_files({"name": "users.csv", "mimeType": "text/csv", "buffer": csv})
    page.get_by_label("import the valid rows, list the others (partial)").check()

    page.get_by_role("button", name="Import").click()

    expect(page).to_have_url(re.compile(r"/users/import\?report=[\w-]{43}$"))
    expect(page.get_by_role("status").first).to_have_text("Imported 1 user.")
    expect(page.get_by_text("1 created, 1 rejected.")).to_be_visible()
    expect(page.get_by_role("row", name="3 email Not a valid email address.")).to_be_visible()
    page.reload()
    expect(page.get_by_text("1 created, 1 rejected.")).to_be_visible()
    assert store.users() == [ADA]


# -- dark mode, a phone, the README's picture -------------------------------------------


def test_dark_mode_follows_the_systems_setting(store, browser, site, backend):
    store.add_users(ADA, ALAN, GRACE)
    context = browser.new_context(base_url=site, viewport=DESKTOP, color_scheme="dark")
    sign_in(context)
    page = context.new_page()
    try:
        page.goto("/users?q=nobody")
        background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
        ink = page.evaluate("getComputedStyle(document.body).color")
        assert background == "rgb(18, 21, 27)" and ink == "rgb(230, 233, 239)"
        page.goto("/users")
        table = page.locator(".table-wrap").evaluate("element => getComputedStyle(element).backgroundColor")
        assert table == "rgb(27, 31, 39)"
        screenshot(page, backend, "dark-list")
        page.goto("/api/docs")
        badge = page.locator(".method-delete").first.evaluate("element => getComputedStyle(element).backgroundColor")
        assert badge == "rgb(255, 138, 128)"
        screenshot(page, backend, "dark-api-docs")
    finally:
        context.close()


def test_at_360_px_the_list_keeps_name_email_and_actions_in_view(store, page, backend):
    store.add_users(ADA, ALAN, GRACE)
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto("/users")

    row = page.get_by_role("row", name=re.compile("Ada Lovelace"))
    expect(row.locator(".email-under")).to_have_text("ada@example.com")
    expect(row.locator(".email-under")).to_be_visible()
    expect(row.locator("td.email")).to_be_hidden()
    expect(row.get_by_role("columnheader")).to_have_count(0)
    for name in ("Edit Ada Lovelace", "Delete Ada Lovelace"):
        box = row.get_by_role("link", name=name).bounding_box()
        assert box["x"] + box["width"] <= 360, name
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    word = page.get_by_role("columnheader", name="Name").bounding_box()
    assert word["height"] < 48  # the heading is not split letter by letter
    screenshot(page, backend, "phone-list")


def test_a_picture_of_the_list_for_the_readme(store, page, backend):
    people = fake_users(random.Random(16))
    store.add_users(*[(person["name"], person["email"]) for person in (next(people) for _ in range(14))])
    page.set_viewport_size({"width": 1200, "height": 760})
    page.goto("/users?sort=name")
    expect(page.locator("tbody tr")).to_have_count(15)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "readme-users.png")
