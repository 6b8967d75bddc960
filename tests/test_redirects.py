"""Every redirect names its status: 303 after a POST, 302 for a GET sent elsewhere.
Flask 3.2 makes 303 redirect()'s default; nothing here may depend on the default."""

import ast
from pathlib import Path

from helpers import anonymous

WEBAPP = Path(__file__).resolve().parent.parent / "webapp"


def test_every_redirect_in_the_app_gives_its_status_code():
    implicit = []
    for path in WEBAPP.rglob("*.py"):
        calls = [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)]
        for call in calls:
            named = len(call.args) >= 2 or any(keyword.arg == "code" for keyword in call.keywords)
            if getattr(call.func, "id", None) == "redirect" and not named:
                implicit.append(f"{path.relative_to(WEBAPP)}:{call.lineno}")
    assert implicit == []


def test_a_signed_out_get_is_sent_to_sign_in_with_302(app, client):
    response = anonymous(app).get("/users?q=ada")

    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/users?q%3Dada"


def test_a_signed_out_post_is_sent_to_sign_in_with_303(app, client):
    app.config["WTF_CSRF_ENABLED"] = False  # the sign-in check comes first either way; no token to fetch
    response = anonymous(app).post("/users", data={"name": "Ada", "email": "ada@example.com"})

    assert response.status_code == 303
    assert response.headers["Location"].startswith("/login?next=/users")


def test_the_sign_in_page_sends_a_signed_in_user_on_with_302(client):
    response = client.get("/login?next=/users/new")

    assert response.status_code == 302
    assert response.headers["Location"] == "/users/new"
