"""/healthz answers for the service and its database."""

import time

import pytest


def test_healthz_is_ok_when_the_database_answers(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:1/test",  # nothing listens on port 1
        "sqlite:////nonexistent-directory/for/webapp.sqlite3",
    ],
)
def test_healthz_is_503_problem_json_quickly_when_the_database_is_unreachable(make_app, url):
    app = make_app(DATABASE_URL=url)
    started = time.monotonic()
    response = app.test_client().get("/healthz")

    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["status"] == 503
    assert int(response.headers["Retry-After"]) > 0
    assert time.monotonic() - started < app.config["DB_POOL_TIMEOUT"]
