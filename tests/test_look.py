"""The app's identity and the stylesheet's promises, as the server sends them.
How they look is checked in a real browser (tests/e2e)."""

from helpers import anonymous


def test_every_page_says_the_apps_name_in_its_title_and_header(client):
    page = client.get("/users").text

    assert "<title>Users · Roster</title>" in page
    assert '<a class="brand" href="/users">Roster</a>' in page


def test_the_favicon_is_served_at_favicon_ico_too_without_signing_in(app):
    with anonymous(app).get("/favicon.ico") as response:
        assert response.status_code == 200
        assert response.mimetype == "image/svg+xml"
        assert response.data.startswith(b"<svg")
        assert response.cache_control.max_age == 86400


def test_flash_messages_are_styled_by_outcome(client, forms):
    failed = client.get("/users/delete", follow_redirects=True).text
    forms.post("/users", {"name": "Ada", "email": "ada@example.com"})
    worked = client.get("/users").text

    assert '<p class="flash flash-error" role="alert">Choose the users to delete first' in failed
    assert '<p class="flash flash-success" role="status">Created Ada.</p>' in worked


def test_the_stylesheet_splits_no_word_to_fit_and_has_a_dark_scheme(client):
    with client.get("/static/style.css") as response:
        css = response.get_data(as_text=True)

    assert "anywhere" not in css
    assert "@media (prefers-color-scheme: dark)" in css
    assert "tbody tr:last-child > * { border-bottom: 0; }" in css
