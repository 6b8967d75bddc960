"""CSV export: every matching user, streamed in keyset chunks, with the scoped
session alive exactly as long as the stream and its connection only while a chunk is read."""

import csv
import io
import secrets
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, event

from webapp import migrations
from webapp.bulk import exports
from webapp.db import get_engine

from helpers import ADMIN_EMAIL, BOUNDED, add_admin, app_backends, assert_problem, assert_session_gone, client_class

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


@settings(BOUNDED, max_examples=60)
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


# -- a cap on exports at once ---------------------------------------------------------


def test_exports_beyond_the_workers_cap_are_503_with_retry_after_until_one_ends(store, app, committing):
    store.add_users(*[(f"User {n}", f"user{n}@example.com") for n in range(5)])
    client = app.test_client()
    cap = app.config["GUNICORN_THREADS"] // 2  # the default: half the threads
    held = [client.get("/api/users.csv", buffered=False) for _ in range(cap)]
    assert {response.status_code for response in held} == {200}

    refused = client.get("/api/users.csv")
    page = client.get("/users.csv")

    assert_problem(refused, 503)
    assert int(refused.headers["Retry-After"]) > 0
    assert page.status_code == 503 and int(page.headers["Retry-After"]) > 0  # the page's, in HTML
    # One client goes away half way: its slot is free again. (The streams share this
    # thread, each pushed a request context: they are closed newest first.)
    held.pop().close()
    assert len(parse(client.get("/api/users.csv"))) == 6
    for response in reversed(held):
        response.close()
    assert_session_gone(app)


def one_export_at_a_time(make_app):
    """A signed-in client of an app on its own database that allows one export at once."""
    app = make_app(EXPORT_MAX_CONCURRENT=1)
    with app.app_context():
        migrations.upgrade("head")
    app.test_client_class = client_class(add_admin(app))
    return app.test_client()


def test_the_cap_comes_from_export_max_concurrent(store, make_app):
    client = one_export_at_a_time(make_app)

    held = client.get("/api/users.csv", buffered=False)

    assert client.get("/api/users.csv").status_code == 503
    held.close()
    assert client.get("/api/users.csv").status_code == 200


# -- a real server, clients that stop reading -----------------------------------------

# A file of about 8 MB: more than the sockets' buffers hold (the client's 128 KiB
# while it reads nothing, the server's up to net.ipv4.tcp_wmem's 4 MiB).
SLOW_USERS = 80_000


def fill_users(database_url: str, count: int) -> None:
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO users (name, email, created_at, updated_at) "
            "SELECT 'Slow ' || n, 'slow' || n || '@example.com', now(), now() "
            f"FROM generate_series(1, {count}) AS n"
        )
    engine.dispose()


def open_export(server) -> socket.socket:
    """A GET of users.csv on a connection whose client then stops reading."""
    sock = socket.socket()
    sock.connect(("127.0.0.1", server.port))
    sock.settimeout(30)
    head = "GET /api/users.csv HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in server.headers.items())
    sock.sendall((head + "Connection: close\r\n\r\n").encode())
    return sock


def read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, rest


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def dechunk(body: bytes) -> bytes:
    """A chunked transfer's content (one chunk per CSV line here: no copying of the rest)."""
    out, at = [], 0
    while True:
        end = body.index(b"\r\n", at)
        size = int(body[at:end], 16)
        if size == 0:
            return b"".join(out)
        out.append(body[end + 2 : end + 2 + size])
        at = end + 2 + size + 2


def test_half_read_exports_hold_a_thread_each_but_no_transaction_and_never_every_thread(serve, cluster_database):
    fill_users(cluster_database, SLOW_USERS)
    server = serve(cluster_database, WEB_CONCURRENCY="1", GUNICORN_THREADS="4", EXPORT_MAX_CONCURRENT="2")
    paused = [open_export(server) for _ in range(2)]
    heads = [read_head(sock) for sock in paused]
    assert [status for status, _, _ in heads] == [200, 200]

    # The clients pause. The server goes on until the sockets' buffers are full, then
    # is blocked writing to them; between its chunks it holds no transaction.
    states = set()
    for _ in range(30):
        states |= {backend["state"] for backend in app_backends(cluster_database)}
        time.sleep(0.1)
    beyond = server.get("/api/users.csv")
    other = server.get("/api/users?per_page=1")

    assert states <= {"idle", "active"}  # a chunk being read, or nothing: never "idle in transaction"
    assert beyond.status == 503 and int(beyond.headers["Retry-After"]) > 0
    assert beyond.headers["Content-Type"] == "application/problem+json"
    assert other.status == 200 and other.seconds < 2  # threads are left for everything else

    for sock, (_, headers, rest) in zip(paused, heads, strict=True):
        body = rest + read_all(sock)
        if headers.get("transfer-encoding") == "chunked":
            body = dechunk(body)
        lines = body.decode().splitlines()
        assert len(lines) == 1 + 1 + SLOW_USERS  # the header, the admin, every user: a complete file
        assert lines[-2].startswith(f"{SLOW_USERS},Slow {SLOW_USERS},")
    assert server.get("/api/users.csv?q=admin").status == 200  # the slots are free again


def test_an_export_read_to_the_end_gives_its_slot_back_even_if_never_closed(store, make_app):
    client = one_export_at_a_time(make_app)

    first = client.get("/api/users.csv", buffered=False)
    assert b"".join(first.response).startswith(b"id,name")  # read to the end; close() not called

    assert client.get("/api/users.csv").status_code == 200
    first.close()


def test_behind_a_proxy_exports_have_no_cap_unless_one_is_set(make_app):
    assert make_app(TRUSTED_PROXIES=1).extensions["webapp.exports"] is None
    assert make_app(TRUSTED_PROXIES=1, EXPORT_MAX_CONCURRENT=3).extensions["webapp.exports"]._value == 3
    assert make_app(GUNICORN_THREADS=8).extensions["webapp.exports"]._value == 4
