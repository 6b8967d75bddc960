"""Load against the real server: many clients at once, bounded in count and time.

* 32 clients mix create, read, list, update and delete on the test database
  (PostgreSQL or SQLite). Each client owns the users it creates and keeps a model
  of them from the responses it got, so afterwards the table must equal the
  union of the models exactly: no write lost, none doubled, none half-done.
* 16 writers at once on SQLite: they queue for the write lock, nobody is told
  "database is locked".
"""

import random
from dataclasses import dataclass, field

import pytest
from sqlalchemy import create_engine, delete, select

from webapp.domain.models import Base, User

from helpers import NOT_THE_ADMIN, add_admin_to, app_backends
from server import Server, run_clients, wait_for

CLIENTS, SECONDS, MAX_REQUESTS = 32, 5, 3000
DOMAIN = "load.example.com"


@dataclass
class Seen:
    """What one client did and what the server answered."""

    model: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (name, email)
    statuses: list[tuple[str, int]] = field(default_factory=list)
    surprises: list[str] = field(default_factory=list)  # answers that contradict the model


def crud_client(server):
    def client(n, budget):
        seen, rng, made = Seen(), random.Random(n), 0

        def expect(operation, reply, *statuses):
            seen.statuses.append((operation, reply.status))
            if reply.status not in statuses:
                seen.surprises.append(f"{operation}: {reply.status} {reply.body[:200]!r}")
            return reply.status in statuses

        while budget.take():
            operation = rng.choices(
                ["create", "duplicate", "read", "list", "update", "delete"], weights=[4, 1, 3, 1, 2, 1]
            )[0]
            if operation in ("duplicate", "read", "update", "delete") and not seen.model:
                operation = "create"
            if operation == "create":
                made += 1
                email = f"c{n}-{made}@{DOMAIN}"
                reply = server.post("/api/users", {"name": f"Client {n} #{made}", "email": email})
                if expect(operation, reply, 201):
                    user = reply.json()
                    seen.model[user["id"]] = (user["name"], user["email"])
            elif operation == "duplicate":
                _, email = seen.model[rng.choice(list(seen.model))]
                expect(operation, server.post("/api/users", {"name": "Again", "email": email.upper()}), 409)
            elif operation == "read":
                user_id = rng.choice(list(seen.model))
                reply = server.get(f"/api/users/{user_id}")
                if (
                    expect(operation, reply, 200)
                    and (reply.json()["name"], reply.json()["email"]) != seen.model[user_id]
                ):
                    seen.surprises.append(f"read {user_id}: {reply.json()} != {seen.model[user_id]}")
            elif operation == "list":
                reply = server.get(f"/api/users?q=c{n}-&per_page=100")
                if expect(operation, reply, 200) and len(seen.model) <= 100:
                    listed = {user["id"]: (user["name"], user["email"]) for user in reply.json()["items"]}
                    if listed != seen.model:
                        seen.surprises.append(f"list: {sorted(listed)} != {sorted(seen.model)}")
            elif operation == "update":
                user_id = rng.choice(list(seen.model))
                name = f"Client {n} renamed {rng.randrange(10**6)}"
                if expect(operation, server.request("PATCH", f"/api/users/{user_id}", {"name": name}), 200):
                    seen.model[user_id] = (name, seen.model[user_id][1])
            else:
                user_id = rng.choice(list(seen.model))
                if expect(operation, server.request("DELETE", f"/api/users/{user_id}"), 204):
                    del seen.model[user_id]
        return seen

    return client


@dataclass
class LoadRun:
    seen: list[Seen]
    stored: dict[int, tuple[str, str]]
    metrics: object
    backends: list[dict] | None


@pytest.fixture(scope="module")
def crud_load(database_url, _schema, tmp_path_factory):
    """One bounded run of 32 mixed-CRUD clients against the real server."""
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(delete(User))
    server = Server(database_url, tmp_path_factory.mktemp("load")).start().authorize(add_admin_to(database_url).token)
    try:
        seen = run_clients(CLIENTS, SECONDS, MAX_REQUESTS, crud_client(server))
        # Each worker refreshes its pool gauges once a second: wait for the first
        # refresh after the load rather than read one taken in the middle of it.
        wait_for(lambda: set(server.metrics().per_worker("webapp_db_pool_checked_out").values()) == {0}, seconds=3)
        metrics = server.metrics()
        backends = app_backends(database_url) if engine.dialect.name == "postgresql" else None
    finally:
        server.stop()
    with engine.begin() as connection:
        stored = {row.id: (row.name, row.email) for row in connection.execute(select(User).where(NOT_THE_ADMIN))}
        connection.execute(delete(User))
    engine.dispose()
    return LoadRun(seen, stored, metrics, backends)


def test_the_load_was_real_and_bounded(crud_load):
    operations = {operation for seen in crud_load.seen for operation, _ in seen.statuses}
    requests = sum(len(seen.statuses) for seen in crud_load.seen)

    assert operations == {"create", "duplicate", "read", "list", "update", "delete"}
    assert CLIENTS * 5 <= requests <= MAX_REQUESTS


def test_no_request_under_load_gets_a_5xx(crud_load):
    failed = [(operation, status) for seen in crud_load.seen for operation, status in seen.statuses if status >= 500]

    assert failed == []


def test_every_answer_under_load_agrees_with_what_the_client_did(crud_load):
    assert [surprise for seen in crud_load.seen for surprise in seen.surprises] == []


def test_the_rows_afterwards_are_exactly_what_the_successful_responses_said(crud_load):
    expected = {}
    for seen in crud_load.seen:
        expected.update(seen.model)

    assert crud_load.stored == expected


def test_every_workers_pool_has_all_its_connections_back_afterwards(crud_load):
    checked_out = crud_load.metrics.per_worker("webapp_db_pool_checked_out")

    assert len(checked_out) == 2
    assert set(checked_out.values()) == {0}


def test_every_session_opened_under_load_was_removed(crud_load):
    opened = crud_load.metrics.value("webapp_db_sessions_opened_total")

    assert opened >= CLIENTS * 5
    assert crud_load.metrics.value("webapp_db_sessions_removed_total") == opened


def test_no_postgresql_connection_is_left_idle_in_transaction(crud_load, backend):
    if backend != "postgresql":
        pytest.skip("pg_stat_activity is PostgreSQL's")

    assert crud_load.backends, "the server's pooled connections are visible"
    assert [b for b in crud_load.backends if b["state"].startswith("idle in transaction")] == []


# -- SQLite: writers queue, nobody is told "database is locked" --------------------------


def test_sixteen_concurrent_sqlite_writers_are_never_told_the_database_is_locked(serve, tmp_path):
    url = f"sqlite:///{tmp_path / 'writers.sqlite3'}"
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    server = serve(url)

    def writer(n, budget):
        statuses, created = [], []
        while budget.take():
            if created and len(statuses) % 2:
                reply = server.request("PATCH", f"/api/users/{created[-1]}", {"name": f"Writer {n} again"})
            else:
                reply = server.post("/api/users", {"name": f"Writer {n}", "email": f"w{n}-{len(statuses)}@x.com"})
                if reply.status == 201:
                    created.append(reply.json()["id"])
            statuses.append(reply.status)
        return statuses, created

    results = run_clients(16, seconds=4, max_requests=1500, client=writer)

    statuses = [status for seen, _ in results for status in seen]
    with engine.connect() as connection:
        stored = connection.execute(select(User.id).where(NOT_THE_ADMIN)).scalars().all()
    engine.dispose()
    assert len(statuses) >= 16 * 5
    assert set(statuses) <= {200, 201}
    assert sorted(stored) == sorted(user_id for _, created in results for user_id in created)
    assert "database is locked" not in server.output()
