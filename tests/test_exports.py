"""CSV export: every matching user, streamed in keyset chunks, with the scoped
session alive exactly as long as the stream and its connection only while a chunk is read."""

import csv
import io
import secrets

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from webapp.bulk import exports
from webapp.db import get_engine

from helpers import ADMIN_EMAIL, assert_session_gone

PATHS = ["/users.csv", "/api/users.csv"]


def parse(response) -> list[list[str]]:
    """The CSV's rows, but for the admin the test acts as (the first user)."""
    return [row for row in csv.reader(io.StringIO(response.text)) if ADMIN_EMAIL not in row]


@pytest.mark.parametrize("path", PATHS)
def test_export_is_a_csv_download_of_every_user_in_id_order(store, client, path):
    ids = store.add_users(("Ada", "ada@example.com"), ("Alan", "alan@example.com"))

    response = client.get(path)

    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == 'attachment; filename="users.csv"'
    rows = parse(response)
    assert rows[0] == ["id", "name", "email", "created_at", "updated_at"]
    assert [row[:3] for row in rows[1:]] == [
        [str(ids[0]), "Ada", "ada@example.com"],
        [str(ids[1]), "Alan", "alan@example.com"],
    ]
    assert rows[1][3].endswith("+00:00")


@pytest.mark.parametrize("path", PATHS)
def test_export_honours_the_search(store, client, path):
    store.add_users(("Ada", "ada@example.com"), ("Alan", "alan@example.com"))

    rows = parse(client.get(path, query_string={"q": "ALAN"}))

    assert [row[1] for row in rows[1:]] == ["Alan"]


def test_cells_that_a_spreadsheet_would_run_as_formulas_are_defused(store, client):
    names = ["=1+1", "+SUM(A1)", "-2+3", "@cmd", "Plain"]
    store.add_users(*[(name, f"u{n}@example.com") for n, name in enumerate(names)])

    rows = parse(client.get("/api/users.csv"))

    assert [row[1] for row in rows[1:]] == ["'=1+1", "'+SUM(A1)", "'-2+3", "'@cmd", "Plain"]


FORMULA_STARTS = tuple(exports.FORMULA_STARTS)


def cells_as_a_spreadsheet_splits_them(text: str):
    """Every cell of `text` read with each common separator, as a spreadsheet set to
    that separator would read the file (quotes honoured, leniently)."""
    for delimiter in (",", ";", "\t"):
        for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
            yield from row


@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(names=st.lists(st.text(alphabet="=+-@,;\t\r\n\" 'aZ9＝", min_size=1, max_size=12), min_size=1, max_size=5))
def test_no_cell_starts_a_formula_whatever_separator_the_spreadsheet_splits_on(store, client, names):
    store.add_users(*[(name, f"{secrets.token_hex(6)}@example.com") for name in names])

    text = client.get("/api/users.csv").text

    for cell in cells_as_a_spreadsheet_splits_them(text):
        assert not cell.lstrip(" ").startswith(FORMULA_STARTS), (names, cell)


@pytest.mark.parametrize(
    "name, exported",
    [("Ada;=HYPERLINK(1)", "Ada;'=HYPERLINK(1)"), ("Ada, +1", "Ada,' +1"), ('Ada"=1', "Ada\"'=1"), ("＝1", "'＝1")],
)
def test_a_formula_after_a_separator_or_a_quote_is_defused_too(store, client, name, exported):
    store.add_users((name, "ada@example.com"))

    assert parse(client.get("/api/users.csv"))[1][1] == exported


def test_an_invalid_search_is_422(client):
    assert client.get("/api/users.csv?q=" + "x" * 101).status_code == 422


def test_export_reads_in_keyset_chunks_and_holds_no_connection_between_them(store, app, committing, monkeypatch):
    monkeypatch.setattr(exports, "CHUNK", 10)
    store.add_users(*[(f"User {n}", f"user{n}@example.com") for n in range(25)])
    selects, in_use = [], []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("SELECT") and "FROM users" in statement:
            selects.append(parameters)

    client = app.test_client()
    event.listen(get_engine(app), "before_cursor_execute", record)
    response = client.get("/api/users.csv", buffered=False)
    lines = []
    for chunk in response.response:  # the client reads, slowly, one line at a time
        lines.append(chunk)
        in_use.append(get_engine(app).pool.checkedout())
    response.close()

    assert len(lines) == 27  # the header, the admin the test acts as, 25 users
    assert len(selects) == 3  # 10 + 10 + 6 rows, each chunk a statement of its own
    assert set(in_use) == {0}  # while the client reads, the pool has every connection
    assert_session_gone(app)


# -- the session lives as long as the stream ------------------------------------------


def test_after_the_stream_is_consumed_the_connection_is_back_in_the_pool(store, app, committing):
    store.add_users(*[(f"User {n}", f"user{n}@example.com") for n in range(50)])

    response = app.test_client().get("/api/users.csv")

    assert len(parse(response)) == 51
    assert_session_gone(app)


def test_when_the_client_disconnects_half_way_the_connection_is_back_in_the_pool(store, app, committing):
    store.add_users(*[(f"User {n}", f"user{n}@example.com") for n in range(50)])

    response = app.test_client().get("/users.csv", buffered=False)
    chunks = iter(response.response)
    header, _admin, first = next(chunks), next(chunks), next(chunks)
    response.close()  # the client goes away half way

    assert header.startswith(b"id,name") and first.split(b",")[1] == b"User 0"
    assert_session_gone(app)
