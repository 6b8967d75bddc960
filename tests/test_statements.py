"""No N+1, no surprises: how many SQL statements each endpoint costs.

Counted by a listener on the engine's before_cursor_execute (the `statements`
fixture), on both backends. A page costs the same whatever it holds; a user costs
the same whatever its history holds.
"""

import pytest


def cost(statements, call) -> int:
    """The statements one request (or command) runs, after asserting it succeeded."""
    statements.clear()
    response = call()
    assert getattr(response, "status_code", 200) < 400 and getattr(response, "exit_code", 0) == 0
    return len(statements)


@pytest.fixture
def users_with_history(store, client):
    """A user whose history is 30 entries long, beside 4 others."""
    [ada, *_] = store.add_users(*[(f"User {n}", f"user{n}@example.com") for n in range(5)])
    for n in range(29):
        assert client.patch(f"/api/users/{ada}", json={"name": f"Ada {n}"}).status_code == 200
    return ada


@pytest.mark.parametrize("rows", [5, 100])
def test_a_list_page_costs_one_statement_whether_it_holds_5_users_or_100(store, client, statements, rows):
    store.add_numbered_users(rows)

    assert cost(statements, lambda: client.get("/api/users?per_page=100")) == 1
    assert len(client.get("/api/users?per_page=100").get_json()["items"]) == min(rows + 1, 100)  # and the admin


def test_the_count_is_capped_and_the_page_limited_in_sql_not_in_python(store, client, statements):
    store.add_numbered_users(30)

    cost(statements, lambda: client.get("/api/users?per_page=5"))

    [(sql, parameters)] = statements
    assert "count(*)" in sql.lower() and 10_001 in _values(parameters)  # LIMIT cap + 1 inside the count
    assert 6 in _values(parameters)  # per_page + 1 rows fetched, no more


def test_a_page_past_the_end_asks_for_the_count_alone(store, client, statements):
    store.add_numbered_users(10)

    assert cost(statements, lambda: client.get("/api/users?per_page=5&page=9")) == 2  # no row carried the count
    assert client.get("/api/users?per_page=5&page=9").get_json()["total"] == 11  # and the admin
    assert cost(statements, lambda: client.get("/api/users?q=nobody")) == 1  # an empty first page: 0


def _values(parameters) -> list:
    return list(parameters.values()) if isinstance(parameters, dict) else list(parameters)


@pytest.mark.parametrize("rows", [5, 100])
def test_a_page_reached_by_cursor_costs_the_same_one_statement(store, client, statements, rows):
    store.add_numbered_users(rows + 100)
    deep = client.get("/api/users?per_page=100").get_json()["next"]

    assert cost(statements, lambda: client.get(deep)) == 1
    assert len(client.get(deep).get_json()["items"]) == min(rows + 1, 100)  # the admin was on the first page


@pytest.mark.parametrize("rows", [5, 100])
def test_a_search_page_costs_one_statement_whether_5_or_100_users_match(store, client, statements, rows):
    store.add_numbered_users(rows, name="Match")
    store.add_numbered_users(50, name="Other")

    assert cost(statements, lambda: client.get("/api/users?q=match&per_page=100")) == 1
    assert client.get("/api/users?q=match&per_page=100").get_json()["total"] == rows


def test_getting_a_user_costs_one_statement_however_long_its_history(client, statements, users_with_history):
    assert cost(statements, lambda: client.get(f"/api/users/{users_with_history}")) == 1


def test_a_conditional_get_answered_304_costs_one_statement(client, statements, users_with_history):
    tag = client.get(f"/api/users/{users_with_history}").headers["ETag"]

    statements.clear()
    response = client.get(f"/api/users/{users_with_history}", headers={"If-None-Match": tag})

    assert response.status_code == 304 and len(statements) == 1


def test_creating_a_user_is_one_statement_on_postgresql_and_two_on_sqlite(store, client, statements, backend):
    store.add_numbered_users(100)
    statements.clear()

    response = client.post("/api/users", json={"name": "Ada", "email": "ada@example.com"})

    assert response.status_code == 201
    if backend == "postgresql":  # the user and its audit row in one data-modifying CTE
        [sql] = statements.sql()
        assert sql.split()[:3] == ["WITH", "created", "AS"] and "INSERT INTO audit_log" in sql
    else:
        assert [sql.split()[:3] for sql in statements.sql()] == [
            ["INSERT", "INTO", "users"],
            ["INSERT", "INTO", "audit_log"],
        ]
    assert store.audit_rows(response.get_json()["id"]) == [
        (
            response.get_json()["id"],
            "insert",
            {"name": [None, "Ada"], "email": [None, "ada@example.com"], "role": [None, "member"]},
        )
    ]


def test_updating_a_user_costs_three_statements_however_long_its_history(client, statements, users_with_history):
    assert cost(statements, lambda: client.patch(f"/api/users/{users_with_history}", json={"name": "Ada"})) == 3


def test_deleting_a_user_costs_three_statements_however_long_its_history(client, statements, users_with_history):
    assert cost(statements, lambda: client.delete(f"/api/users/{users_with_history}")) == 3


@pytest.mark.parametrize("per_page", [5, 30])
def test_a_history_page_costs_two_statements_whether_it_holds_5_entries_or_30(
    client, statements, users_with_history, per_page
):
    url = f"/api/users/{users_with_history}/history?per_page={per_page}"

    assert cost(statements, lambda: client.get(url)) == 2
    assert len(client.get(url).get_json()["items"]) == per_page


@pytest.mark.parametrize("rows", [5, 100])
def test_the_html_list_costs_two_statements_whether_it_shows_5_users_or_100(store, client, statements, rows):
    store.add_numbered_users(rows)

    # The signed-in account, and the page with its count.
    assert cost(statements, lambda: client.get("/users?per_page=100")) == 2
    assert client.get("/users?per_page=100").text.count("<tr>") == min(rows + 1, 100) + 1  # and the header row


def test_the_html_user_page_costs_four_statements_however_long_its_history(client, statements, users_with_history):
    # The signed-in account, the user, the history's count and its page.
    assert cost(statements, lambda: client.get(f"/users/{users_with_history}")) == 4


@pytest.mark.parametrize("count", [1000, 3000])
def test_seeding_costs_a_few_statements_per_batch_not_per_user(runner, committing, statements, count):
    assert cost(statements, lambda: runner.invoke(args=["seed-users", str(count), "--batch", "1000"])) == 2 * (
        count // 1000
    )


def test_an_import_costs_a_few_statements_per_batch_not_per_row(app, committing, statements, backend):
    from webapp.bulk import imports

    def imported(rows: int, first: int) -> list[str]:
        statements.clear()
        items = [{"name": f"User {n}", "email": f"user{n}@example.com"} for n in range(first, first + rows)]
        with app.test_request_context(method="POST"):  # a GET reads on an autocommit connection
            report = imports.import_users(imports.read_json(items), "partial", batch_size=100)
        assert report.created == rows and not report.rejected_count
        return statements.sql()

    two, four = imported(200, 0), imported(400, 1000)

    # PostgreSQL: a batch is staged by COPY (through the driver's cursor, unseen here),
    # its lines are read from the stage, and it moves with its audit rows in one
    # statement. SQLite: staged as JSON, its audit rows a statement of their own. (The
    # savepoints around each move are not counted.)
    per_batch = 2 if backend == "postgresql" else 4
    assert len(four) - len(two) == 2 * per_batch
    moves = [sql for sql in four if "INSERT INTO users" in sql]
    assert len(moves) == 4
    if backend == "postgresql":
        assert all(sql.split()[:3] == ["WITH", "moved", "AS"] and "INSERT INTO audit_log" in sql for sql in moves)
