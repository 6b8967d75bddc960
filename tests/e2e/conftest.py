"""Fixtures for the browser tests: a real gunicorn, a real Chromium, a fresh page per test.

Chromium is Debian's (`make browser` installs it); Playwright drives it through its
executable path, since Playwright's own browser downloads are not used. Without it
the tests skip on a developer machine, and fail under CI (CI=true), where a skip
would hide that nothing ran.
"""

import os
import re
import shutil

import pytest
from playwright.sync_api import sync_playwright

from helpers import ADMIN_EMAIL, ADMIN_PASSWORD
from server import ROOT, Server

ARTIFACTS = ROOT / "test-artifacts" / "e2e"
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        reason = "Chromium is not installed: run `make browser` (apt-get install chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + "; under CI the browser tests must run, not skip")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def browser(chromium_path):
    # Chromium's sandbox needs user namespaces that root in a container does not get.
    args = CHROMIUM_ARGS + (["--no-sandbox"] if os.geteuid() == 0 else [])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=args)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def server(database_url, _schema, tmp_path_factory):
    """One gunicorn for the whole run: 1 worker x 2 threads on the test database."""
    server = Server(
        database_url,
        tmp_path_factory.mktemp("e2e-server"),
        SECRET_KEY="browser-tests-only",
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS="2",
    ).start()
    yield server.url
    server.stop()


@pytest.fixture
def site(server, committing):
    """The server's base URL, on a users table emptied before and after the test."""
    return server


@pytest.fixture
def context(browser, site):
    """A browser signed in as the admin the test acts as, through the login form."""
    context = browser.new_context(base_url=site, viewport=DESKTOP)
    sign_in(context)
    yield context
    context.close()


def sign_in(context, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> None:
    page = context.new_page()
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/users")
    page.close()


@pytest.fixture
def console(context):
    """Every console error and uncaught page error of the test, as text."""
    messages: list[str] = []
    context.on("console", lambda message: message.type == "error" and messages.append(message.text))
    context.on("weberror", lambda error: messages.append(str(error.error)))
    return messages


@pytest.fixture
def page(context, console, request, backend):
    """A page of its own; a full-page screenshot of where it ended is saved as an artifact."""
    page = context.new_page()
    yield page
    screenshot(page, backend, request.node.name)


def screenshot(page, backend: str, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{backend}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png", full_page=True)
