"""Hardening: security headers, injection, tracebacks, cookies and body sizes."""

import logging
from html.parser import HTMLParser

import pytest

from helpers import ADMIN_NAME, anonymous, signed_in

ADA = ("Ada Lovelace", "ada@example.com")
OBRIEN = ("Conan O'Brien", "conan@example.com")
RESPONSES = {  # one of every kind: (method, path, request arguments, status)
    "page": ("GET", "/users", {}, 200),
    "redirect": ("GET", "/", {}, 302),
    "json": ("GET", "/api/users", {}, 200),
    "created": ("POST", "/api/users", {"json": {"name": "Ada", "email": "ada@example.com"}}, 201),
    "problem-404": ("GET", "/api/users/424242", {}, 404),
    "problem-405": ("DELETE", "/api/users", {}, 405),
    "problem-422": ("POST", "/api/users", {"json": {}}, 422),
    "html-404": ("GET", "/users/424242", {}, 404),
    "csrf-400": ("POST", "/users", {"data": {"name": "Ada", "email": "ada@example.com"}}, 400),
    "static": ("GET", "/static/style.css", {}, 200),
    "health": ("GET", "/healthz", {}, 200),
    "openapi": ("GET", "/api/openapi.json", {}, 200),
    "docs": ("GET", "/api/docs", {}, 200),
}


@pytest.fixture
def production_app(make_app, database_url, _schema, committing, monkeypatch):
    """APP_ENV=production on the test database, with FLASK_DEBUG=1 in the way."""
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "a-production-key-for-tests-only")
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = signed_in(make_app(DATABASE_URL=database_url))

    @app.get("/explode")
    @app.get("/api/explode")
    def explode():
        raise RuntimeError("secret internals: password=hunter2")

    return app


def request(client, kind):
    method, path, kwargs, status = RESPONSES[kind]
    with client.open(path, method=method, **kwargs) as response:
        assert response.status_code == status
        return response


# -- headers --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", RESPONSES)
def test_every_kind_of_response_carries_the_security_headers(client, kind):
    headers = request(client, kind).headers

    policy = [directive.strip() for directive in headers["Content-Security-Policy"].split(";")]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "object-src 'none'" in policy and "base-uri 'none'" in policy
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert "unsafe-eval" not in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["X-Frame-Options"] == "DENY"
    assert "Strict-Transport-Security" not in headers  # served over plain HTTP outside production


@pytest.mark.parametrize("kind", ["page", "json", "problem-404", "static", "health"])
def test_production_adds_hsts_to_every_response(production_app, kind):
    headers = request(production_app.test_client(), kind).headers

    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert headers["X-Content-Type-Options"] == "nosniff"


# -- errors -----------------------------------------------------------------------------


def test_production_is_never_in_debug_mode(production_app):
    assert production_app.debug is False and not production_app.testing


@pytest.mark.parametrize("path, mimetype", [("/explode", "text/html"), ("/api/explode", "application/problem+json")])
def test_production_answers_an_unexpected_error_with_a_generic_500(production_app, caplog, path, mimetype):
    with caplog.at_level(logging.ERROR):
        response = production_app.test_client().get(path)

    assert response.status_code == 500 and response.mimetype == mimetype
    for leak in ("Traceback", "RuntimeError", "secret internals", "hunter2", "explode", ".py"):
        assert leak not in response.text
    assert "Internal Server Error" in response.text
    assert response.headers["Content-Security-Policy"]
    assert "hunter2" in caplog.text  # the details go to the log, not to the client


# -- injection ------------------------------------------------------------------------

SQL = [
    "' OR '1'='1",
    "' OR 1=1 --",
    "%' OR '%'='",
    "'; DROP TABLE users; --",
    '" OR ""="',
    "1) OR (1=1",
    "' UNION SELECT id, email, email, created_at, updated_at FROM users --",
]


@pytest.mark.parametrize("q", SQL)
def test_sql_in_the_api_search_matches_nothing_and_changes_nothing(store, client, q):
    store.add_users(ADA, OBRIEN)

    response = client.get("/api/users", query_string={"q": q})

    assert response.status_code == 200
    assert response.get_json()["items"] == [] and response.get_json()["total"] == 0
    assert store.users() == [ADA, OBRIEN]


@pytest.mark.parametrize("q", SQL)
def test_sql_in_the_page_search_matches_nothing_and_changes_nothing(store, client, q):
    store.add_users(ADA, OBRIEN)

    page = client.get("/users", query_string={"q": q})

    assert page.status_code == 200 and "0 users" in page.text
    assert store.users() == [ADA, OBRIEN]


def test_quotes_in_a_search_are_plain_characters(store, client):
    store.add_users(ADA, OBRIEN)

    body = client.get("/api/users", query_string={"q": "o'brien"}).get_json()

    assert [user["name"] for user in body["items"]] == ["Conan O'Brien"]


def test_the_sort_is_one_of_a_fixed_list_and_nothing_else_reaches_the_order_by(store, client):
    store.add_users(OBRIEN, ADA)

    injected = client.get("/api/users", query_string={"sort": "name; DROP TABLE users"})
    ignored = client.get("/api/users", query_string={"order_by": "email DESC", "order": "(SELECT 1)"}).get_json()

    assert injected.status_code == 422 and "sort" in injected.get_json()["errors"]
    assert [user["name"] for user in ignored["items"]] == [ADMIN_NAME, "Conan O'Brien", "Ada Lovelace"]  # id order
    assert store.count() == 2


def test_markup_in_the_search_is_shown_as_text(client):
    page = client.get("/users", query_string={"q": '"><script>alert(1)</script>'})

    assert page.status_code == 200
    assert "<script>" not in page.text
    assert "&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


# -- no inline script or style, so the policy can forbid them ---------------------------


class InlineCode(HTMLParser):
    """Collects what a Content-Security-Policy without 'unsafe-inline' would block."""

    def __init__(self):
        super().__init__()
        self.found = []

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if name == "style" or name.startswith("on") or (value or "").strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}=...>")


def html_pages(client, forms, store):
    """Every kind of HTML page the app renders, with data in it."""
    [user_id] = store.add_users(ADA)
    created = forms.post("/users", {"name": "Alan Turing", "email": "alan@example.com"})
    yield "flash after create", client.get(created.headers["Location"])
    for path in (
        "/users",
        "/users?q=a",
        "/users/new",
        f"/users/{user_id}",
        f"/users/{user_id}/edit",
        f"/users/{user_id}/delete",
        "/users/424242",
        "/api/docs",
    ):
        yield path, client.get(path)
    yield "form with errors", forms.post("/users", {"name": "", "email": "nope"})
    yield "csrf error", client.post("/users", data={})


def test_no_page_has_inline_script_style_or_event_handlers(client, forms, store):
    pages = list(html_pages(client, forms, store))

    assert len(pages) == 11 and all(page.mimetype == "text/html" for _, page in pages)
    for name, page in pages:
        parser = InlineCode()
        parser.feed(page.text)
        assert parser.found == [], name


# -- cookies and sizes --------------------------------------------------------------------


def test_the_session_cookie_is_httponly_and_samesite_lax(client):
    cookie = client.get("/users/new").headers["Set-Cookie"]

    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # development and tests are served over plain HTTP


def test_api_responses_depend_on_no_cookie_and_pages_say_they_do(client):
    # Shared caches key a response on the request headers Vary names; an API
    # answer is the same with or without a session cookie, a page is not.
    api = client.get("/api/users")
    page = client.get("/users")

    assert api.status_code == 200 and "Cookie" not in api.headers.get("Vary", "")
    assert page.status_code == 200 and "Cookie" in page.headers["Vary"]


def test_the_session_is_found_among_other_cookies_and_not_made_up_without_one(app, client):
    # The session is looked for only when a Cookie header is sent (CookieSessions):
    # other cookies beside it, or alone, must change nothing.
    client.set_cookie("theme", "dark")
    stranger = anonymous(app)
    stranger.set_cookie("theme", "dark")

    assert client.get("/users").status_code == 200
    assert stranger.get("/users").status_code == 302
    assert anonymous(app).get("/users").status_code == 302


def test_production_marks_the_session_cookie_secure(production_app):
    cookie = production_app.test_client().get("/users/new").headers["Set-Cookie"]

    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_a_form_post_over_the_size_limit_is_a_413_page(store, app, client, forms):
    name = "x" * app.config["MAX_CONTENT_LENGTH"]

    page = forms.post("/users", {"name": name, "email": "big@example.com"})

    assert page.status_code == 413 and page.mimetype == "text/html"
    assert store.count() == 0
