"""API tokens: every /api operation but the document and its viewer needs a bearer
token; POST /api/tokens makes one from HTTP Basic credentials or a token, GET
lists yours, DELETE revokes one. The secret is shown once and kept as a hash; a
revocation reaches every worker within API_TOKEN_CACHE_SECONDS."""

import base64
import hashlib
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import insert, select, update

from webapp.db import Session
from webapp.domain.models import ApiToken, tokens_table, utcnow

from helpers import ADMIN_EMAIL, ADMIN_PASSWORD, add_account, anonymous, assert_problem

BEARER_CHALLENGE = 'Bearer realm="api"'
BASIC_CHALLENGE = 'Basic realm="api"'


def basic(email: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def visitor(app, client):
    """No token, on the rolled-back database that holds the test admin."""
    return anonymous(app)


@pytest.fixture
def member(app, client):
    with app.app_context():
        credentials = add_account(Session().connection(), "Mia Member", "mia@example.com", "member-password", "member")
        Session().commit()
    return credentials


def assert_unauthorized(response, challenge: str = BEARER_CHALLENGE) -> dict:
    body = assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == challenge
    return body


# -- no token, no API -----------------------------------------------------------------


OPERATIONS = [
    ("get", "/api/users"),
    ("post", "/api/users"),
    ("get", "/api/users/1"),
    ("put", "/api/users/1"),
    ("patch", "/api/users/1"),
    ("delete", "/api/users/1"),
    ("get", "/api/users/1/history"),
    ("get", "/api/users.csv"),
    ("post", "/api/users/import"),
    ("get", "/api/tokens"),
    ("post", "/api/tokens"),
    ("delete", "/api/tokens/1"),
]


@pytest.mark.parametrize("method, path", OPERATIONS)
def test_every_api_operation_without_a_token_is_a_401_with_a_bearer_challenge(visitor, store, method, path):
    response = getattr(visitor, method)(path, json={"name": "Eve", "email": "eve@example.com"})

    assert "Authorization: Bearer" in assert_unauthorized(response)["detail"]
    assert store.users() == []


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Bearer not-a-token",
        "Bearer 1.",
        "Bearer .secret",
        "Bearer x.secret",
        "Bearer -1.secret",
        "Bearer ١.secret",  # an Arabic-Indic digit: isdigit, not an id
        "Bearer 99999999999999999999999.secret",
        "Token abc",
        "Digest username=x",
        "bearer",
    ],
)
def test_a_malformed_token_is_a_401(visitor, header):
    assert_unauthorized(visitor.get("/api/users", headers={"Authorization": header}))


def test_an_unknown_token_is_a_401(visitor, admin):
    token_id, _, secret = admin.token.partition(".")

    assert_unauthorized(visitor.get("/api/users", headers=bearer(f"{int(token_id) + 1000}.{secret}")))
    assert_unauthorized(visitor.get("/api/users", headers=bearer(f"{token_id}.{secret}x")))
    assert_unauthorized(visitor.get("/api/users", headers=bearer(f"{token_id}.{secret[:-1]}")))


def test_the_right_token_is_accepted_whatever_the_scheme_case(visitor, admin):
    assert visitor.get("/api/users", headers={"Authorization": f"bearer {admin.token}"}).status_code == 200
    assert visitor.get("/api/users", headers=bearer(admin.token)).status_code == 200


def add_token(app, user_id: int, expires_at: datetime, revoked_at: datetime | None = None) -> str:
    with app.app_context():
        token_id = (
            Session()
            .execute(
                insert(tokens_table)
                .values(
                    user_id=user_id,
                    name="made by the test",
                    secret_hash=hashlib.sha256(b"the-secret").hexdigest(),
                    created_at=utcnow() - timedelta(days=31),
                    expires_at=expires_at,
                    revoked_at=revoked_at,
                )
                .returning(tokens_table.c.id)
            )
            .scalar_one()
        )
        Session().commit()
    return f"{token_id}.the-secret"


def test_an_expired_token_is_a_401(app, visitor, admin):
    token = add_token(app, admin.user_id, expires_at=utcnow() - timedelta(seconds=1))

    assert "expired" in assert_unauthorized(visitor.get("/api/users", headers=bearer(token)))["detail"]


def test_a_token_until_it_expires(app, visitor, admin):
    token = add_token(app, admin.user_id, expires_at=utcnow() + timedelta(minutes=1))

    assert visitor.get("/api/users", headers=bearer(token)).status_code == 200


def test_a_revoked_token_is_a_401(app, visitor, admin):
    token = add_token(app, admin.user_id, expires_at=utcnow() + timedelta(days=1), revoked_at=utcnow())

    assert_unauthorized(visitor.get("/api/users", headers=bearer(token)))


def test_a_deleted_users_token_is_a_401(app, client, visitor, member):
    assert visitor.get("/api/users", headers=bearer(member.token)).status_code == 200

    assert client.delete(f"/api/users/{member.user_id}").status_code == 204

    assert_unauthorized(visitor.get("/api/users", headers=bearer(member.token)))


def test_a_page_session_cookie_is_no_token_for_the_api(app, client):
    signed_in_browser = app.test_client()
    signed_in_browser.environ_base.pop("HTTP_AUTHORIZATION")

    assert signed_in_browser.get("/users").status_code == 200
    assert_unauthorized(signed_in_browser.get("/api/users"))


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/api/openapi.json", "/api/docs"])
def test_health_metrics_and_the_api_document_are_open(visitor, path):
    response = visitor.get(path)

    assert response.status_code == 200
    assert "WWW-Authenticate" not in response.headers


def test_a_valid_token_without_the_role_is_a_403_not_a_401(app, member):
    response = anonymous(app).delete(f"/api/users/{member.user_id}", headers=bearer(member.token))

    assert_problem(response, 403)
    assert "WWW-Authenticate" not in response.headers


# -- making a token -------------------------------------------------------------------


def test_basic_credentials_make_a_token(visitor, store, admin):
    before = datetime.now().astimezone()
    response = visitor.post("/api/tokens", headers=basic(ADMIN_EMAIL, ADMIN_PASSWORD), json={"name": "laptop"})

    assert response.status_code == 201
    body = response.get_json()
    assert list(body) == ["id", "name", "token", "created_at", "expires_at"]
    assert body["name"] == "laptop"
    created, expires = datetime.fromisoformat(body["created_at"]), datetime.fromisoformat(body["expires_at"])
    assert before - timedelta(seconds=5) <= created <= datetime.now().astimezone()
    assert expires - created == timedelta(days=30)
    assert response.headers["Location"] == "/api/tokens"
    assert visitor.get("/api/users", headers=bearer(body["token"])).status_code == 200
    token = store.scalars(select(ApiToken).where(ApiToken.id == body["id"]))[0]
    assert token.user_id == admin.user_id


def test_a_token_makes_a_token(visitor, admin):
    response = visitor.post("/api/tokens", headers=bearer(admin.token))

    assert response.status_code == 201
    assert response.get_json()["name"] == "API token"
    assert visitor.get("/api/tokens", headers=bearer(response.get_json()["token"])).status_code == 200


def test_a_body_less_basic_request_makes_a_token(visitor):
    assert visitor.post("/api/tokens", headers=basic(ADMIN_EMAIL, ADMIN_PASSWORD)).status_code == 201


def test_the_secret_has_32_random_bytes_and_is_stored_only_as_its_sha256(visitor, store):
    body = visitor.post("/api/tokens", headers=basic(ADMIN_EMAIL, ADMIN_PASSWORD)).get_json()
    token_id, _, secret = body["token"].partition(".")

    assert int(token_id) == body["id"]
    assert len(base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))) >= 32
    row = store.scalars(select(ApiToken).where(ApiToken.id == body["id"]))[0]
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    stored = " ".join(str(value) for value in vars(row).values())
    assert secret not in stored


def test_two_tokens_differ(visitor):
    first, second = (visitor.post("/api/tokens", headers=basic(ADMIN_EMAIL, ADMIN_PASSWORD)) for _ in range(2))

    assert first.get_json()["token"] != second.get_json()["token"]


def test_days_sets_the_lifetime(visitor):
    body = visitor.post("/api/tokens", headers=basic(ADMIN_EMAIL, ADMIN_PASSWORD), json={"days": 2}).get_json()

    lifetime = datetime.fromisoformat(body["expires_at"]) - datetime.fromisoformat(body["created_at"])
    assert lifetime == timedelta(days=2)


def test_api_token_days_sets_the_default_lifetime(make_app, database_url, _schema, committing):
    app = make_app(DATABASE_URL=database_url, API_TOKEN_DAYS=7)

    body = anonymous(app).post("/api/tokens", headers=basic(ADMIN_EMAIL, ADMIN_PASSWORD)).get_json()

    lifetime = datetime.fromisoformat(body["expires_at"]) - datetime.fromisoformat(body["created_at"])
    assert lifetime == timedelta(days=7)


@pytest.mark.parametrize(
    "body", [{"days": 0}, {"days": 3651}, {"days": 7.5}, {"name": ""}, {"name": "x" * 101}, {"token": "mine"}]
)
def test_a_bad_token_request_is_a_422(visitor, body):
    response = visitor.post("/api/tokens", headers=basic(ADMIN_EMAIL, ADMIN_PASSWORD), json=body)

    assert_problem(response, 422)


@pytest.mark.parametrize(
    "header",
    [
        basic(ADMIN_EMAIL, "not-the-password"),
        basic("nobody@tests.example.org", ADMIN_PASSWORD),
        basic("", ""),
        {"Authorization": "Basic not-base64!"},
        {"Authorization": "Basic"},
    ],
)
def test_bad_basic_credentials_are_a_401_with_a_basic_challenge(visitor, store, header):
    assert_unauthorized(visitor.post("/api/tokens", headers=header), BASIC_CHALLENGE)
    assert store.scalar(select(ApiToken.id).where(ApiToken.name != "tests")) is None


def test_basic_credentials_work_only_for_making_a_token(visitor):
    assert_unauthorized(visitor.get("/api/users", headers=basic(ADMIN_EMAIL, ADMIN_PASSWORD)))
    assert_unauthorized(visitor.get("/api/tokens", headers=basic(ADMIN_EMAIL, ADMIN_PASSWORD)))


def test_a_member_makes_tokens_too(visitor, member):
    response = visitor.post("/api/tokens", headers=basic(member.email, member.password))

    assert response.status_code == 201


# -- listing and revoking -------------------------------------------------------------


def test_the_list_holds_the_callers_tokens_without_secrets(visitor, admin, member):
    made = visitor.post("/api/tokens", headers=bearer(admin.token), json={"name": "second"}).get_json()

    response = visitor.get("/api/tokens", headers=bearer(admin.token))

    assert response.status_code == 200
    items = response.get_json()["items"]
    assert [item["name"] for item in items] == ["second", "tests"]  # newest first, the member's left out
    for item in items:
        assert set(item) == {"id", "name", "created_at", "expires_at"}
    assert made["token"] not in response.text and admin.token.partition(".")[2] not in response.text


def test_revoking_a_token_ends_it_at_once_on_this_worker(visitor, admin):
    made = visitor.post("/api/tokens", headers=bearer(admin.token)).get_json()
    assert visitor.get("/api/users", headers=bearer(made["token"])).status_code == 200

    response = visitor.delete(f"/api/tokens/{made['id']}", headers=bearer(admin.token))

    assert response.status_code == 204
    assert_unauthorized(visitor.get("/api/users", headers=bearer(made["token"])))
    assert made["id"] not in [
        item["id"] for item in visitor.get("/api/tokens", headers=bearer(admin.token)).json["items"]
    ]


def test_a_token_may_revoke_itself(visitor, admin):
    token_id = admin.token.partition(".")[0]

    revoked = visitor.delete(f"/api/tokens/{token_id}", headers=bearer(admin.token))

    assert revoked.status_code == 204 and "Content-Type" not in revoked.headers
    assert_unauthorized(visitor.get("/api/users", headers=bearer(admin.token)))


def test_an_admin_revokes_anyones_token(visitor, admin, member):
    token_id = member.token.partition(".")[0]

    revoked = visitor.delete(f"/api/tokens/{token_id}", headers=bearer(admin.token))

    assert revoked.status_code == 204 and "Content-Type" not in revoked.headers
    assert_unauthorized(visitor.get("/api/users", headers=bearer(member.token)))


def test_a_member_gets_a_404_for_another_users_token_and_it_keeps_working(visitor, admin, member):
    token_id = admin.token.partition(".")[0]

    response = visitor.delete(f"/api/tokens/{token_id}", headers=bearer(member.token))

    assert_problem(response, 404)
    assert visitor.get("/api/users", headers=bearer(admin.token)).status_code == 200


def test_a_member_revokes_their_own_token(visitor, member):
    token_id = member.token.partition(".")[0]

    assert visitor.delete(f"/api/tokens/{token_id}", headers=bearer(member.token)).status_code == 204


def test_revoking_an_unknown_or_revoked_token_is_a_404(visitor, admin):
    made = visitor.post("/api/tokens", headers=bearer(admin.token)).get_json()
    visitor.delete(f"/api/tokens/{made['id']}", headers=bearer(admin.token))

    assert_problem(visitor.delete(f"/api/tokens/{made['id']}", headers=bearer(admin.token)), 404)
    assert_problem(visitor.delete("/api/tokens/999999", headers=bearer(admin.token)), 404)


# -- the per-worker cache: what a revocation elsewhere takes ---------------------------


def two_workers(make_app, database_url, seconds: float):
    """Two app objects on one database, as two gunicorn workers are."""
    return (
        make_app(DATABASE_URL=database_url, API_TOKEN_CACHE_SECONDS=seconds),
        make_app(DATABASE_URL=database_url, API_TOKEN_CACHE_SECONDS=seconds),
    )


def test_with_no_cache_a_revocation_elsewhere_counts_at_once(make_app, database_url, _schema, committing, admin):
    here, there = two_workers(make_app, database_url, 0)
    made = anonymous(here).post("/api/tokens", headers=bearer(admin.token)).get_json()
    assert anonymous(here).get("/api/users", headers=bearer(made["token"])).status_code == 200

    assert anonymous(there).delete(f"/api/tokens/{made['id']}", headers=bearer(admin.token)).status_code == 204

    assert_unauthorized(anonymous(here).get("/api/users", headers=bearer(made["token"])))


def test_a_revocation_elsewhere_counts_within_the_cache_time(make_app, database_url, _schema, committing, admin):
    seconds = 1.0
    here, there = two_workers(make_app, database_url, seconds)
    made = anonymous(here).post("/api/tokens", headers=bearer(admin.token)).get_json()
    checked = time.monotonic()
    assert anonymous(here).get("/api/users", headers=bearer(made["token"])).status_code == 200

    assert anonymous(there).delete(f"/api/tokens/{made['id']}", headers=bearer(admin.token)).status_code == 204
    time.sleep(max(0.0, seconds - (time.monotonic() - checked)) + 0.05)

    assert_unauthorized(anonymous(here).get("/api/users", headers=bearer(made["token"])))


def test_an_expiry_in_the_database_counts_within_the_cache_time(make_app, database_url, _schema, committing, admin):
    here, _ = two_workers(make_app, database_url, 0.5)
    made = anonymous(here).post("/api/tokens", headers=bearer(admin.token)).get_json()
    assert anonymous(here).get("/api/users", headers=bearer(made["token"])).status_code == 200
    with here.app_context():
        Session().execute(update(tokens_table).values(expires_at=utcnow()).where(tokens_table.c.id == made["id"]))
        Session().commit()

    time.sleep(0.55)

    assert_unauthorized(anonymous(here).get("/api/users", headers=bearer(made["token"])))


def test_a_role_change_elsewhere_counts_within_the_cache_time(make_app, database_url, _schema, committing, admin):
    here, there = two_workers(make_app, database_url, 0.5)
    with here.app_context():
        second = add_account(Session().connection(), "Second", "second@tests.example.org", "second-password")
        Session().commit()
    as_second = anonymous(here)
    assert as_second.get("/api/users.csv", headers=bearer(second.token)).status_code == 200

    demoted = anonymous(there).patch(
        f"/api/users/{second.user_id}", json={"role": "member"}, headers=bearer(admin.token)
    )
    assert demoted.status_code == 200
    time.sleep(0.55)

    assert_problem(as_second.get("/api/users.csv", headers=bearer(second.token)), 403)


# -- through gunicorn -------------------------------------------------------------------


def test_token_auth_through_the_real_server(serve, database_url, committing):
    """Two workers, no token cache: a token made with Basic works on every worker,
    and once revoked fails on every worker at once."""
    server = serve(database_url, as_admin=False, API_TOKEN_CACHE_SECONDS="0")
    assert server.get("/api/users").status == 401
    assert server.get("/api/users").headers["WWW-Authenticate"] == BEARER_CHALLENGE
    bad = server.request("POST", "/api/tokens", headers=basic(ADMIN_EMAIL, "not-the-password"))
    assert (bad.status, bad.headers["WWW-Authenticate"]) == (401, BASIC_CHALLENGE)

    made = server.request("POST", "/api/tokens", {"name": "gunicorn"}, headers=basic(ADMIN_EMAIL, ADMIN_PASSWORD))
    assert made.status == 201
    token = made.json()["token"]
    answers = [server.get("/api/users", headers=bearer(token)) for _ in range(12)]  # fresh connections: both workers
    assert {reply.status for reply in answers} == {200}
    created = server.request("POST", "/api/users", {"name": "Ada", "email": "ada@example.com"}, headers=bearer(token))
    assert created.status == 201

    revoked = server.request("DELETE", f"/api/tokens/{made.json()['id']}", headers=bearer(token))
    assert revoked.status == 204
    after = [server.get("/api/users", headers=bearer(token)) for _ in range(12)]
    assert {reply.status for reply in after} == {401}
    assert {reply.headers["WWW-Authenticate"] for reply in after} == {BEARER_CHALLENGE}
    for path in ("/healthz", "/metrics", "/api/openapi.json", "/api/docs"):
        assert server.get(path).status == 200, path
