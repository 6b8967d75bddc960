"""The floor: the app's hot endpoints with nothing between Flask and psycopg2.

`make bench` serves this beside the app, under the same gunicorn settings, on the
same database, to measure what the app's layers (ORM session, schemas, request
id, CSRF, audit listener) cost. Same URLs, same JSON, same SQL work per request:

    GET  /api/users/<id>   one SELECT; the user, with its ETag
    GET  /api/users        ?per_page=&q=&cursor=: a page with its capped count, one SELECT
    POST /api/users        INSERT the user and its audit row, one transaction

Each request borrows a connection from a psycopg2 pool of GUNICORN_THREADS and
runs in a transaction (`with connection:`), as the app's requests do. There is
no validation beyond what keeps the database consistent: this is a yardstick,
not a service.
"""

import base64
import json
import os
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg2.errors
from flask import Flask, Response, jsonify, request, url_for
from psycopg2.pool import ThreadedConnectionPool

CAP = 10_000
COLUMNS = "id, name, email, created_at, updated_at, version"

app = Flask(__name__)
app.json.sort_keys = False
# min = max: psycopg2's pool closes connections returned beyond `minconn`, which
# would make most requests under load pay for a new connection.
THREADS = int(os.environ.get("GUNICORN_THREADS", "4"))
pool = ThreadedConnectionPool(THREADS, THREADS, os.environ["DATABASE_URL"])


@contextmanager
def cursor():
    connection = pool.getconn()
    try:
        with connection, connection.cursor() as cur:  # commit on success, roll back on error
            yield cur
    finally:
        pool.putconn(connection)


def as_json(row) -> dict:
    id_, name, email, created_at, updated_at = row[:5]
    return {
        "id": id_,
        "name": name,
        "email": email,
        "created_at": created_at.astimezone(UTC).isoformat(),
        "updated_at": updated_at.astimezone(UTC).isoformat(),
    }


def user_response(row, status: int = 200) -> Response:
    response = jsonify(as_json(row))
    response.status_code = status
    response.set_etag(f"{row[0]}.{row[5]}")
    return response


@app.get("/api/users/<int:user_id>")
def get_user(user_id: int):
    with cursor() as cur:
        cur.execute(f"SELECT {COLUMNS} FROM users WHERE id = %s", (user_id,))
        row = cur.fetchone()
    if row is None:
        return jsonify(status=404), 404
    return user_response(row)


@app.get("/api/users")
def list_users():
    per_page = min(int(request.args.get("per_page", 20)), 100)
    q = request.args.get("q", "").strip()
    after = None
    if "cursor" in request.args:
        raw = request.args["cursor"]
        after = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))["after"]
    where, params = "TRUE", []
    if q:
        pattern = "%" + q.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"
        where, params = "(name ILIKE %s ESCAPE '/' OR email ILIKE %s ESCAPE '/')", [pattern, pattern]
    # The app's one statement: the page, with the capped count beside it as a scalar
    # subquery (the last column); only an empty page past the first asks for the count alone.
    count_sql = f"SELECT count(*) FROM (SELECT id FROM users WHERE {where} LIMIT %s) AS capped"
    with cursor() as cur:
        keyset = " AND id > %s" if after is not None else ""
        cur.execute(
            f"SELECT {COLUMNS}, ({count_sql}) AS total FROM users WHERE {where}{keyset} ORDER BY id LIMIT %s",
            [*params, CAP + 1, *params, *([after] if after is not None else []), per_page + 1],
        )
        rows = cur.fetchall()
        if rows:
            count = rows[0][-1]
        elif after is None:
            count = 0
        else:
            cur.execute(count_sql, [*params, CAP + 1])
            count = cur.fetchone()[0]
    next_url = None
    if len(rows) > per_page:
        token = (
            base64.urlsafe_b64encode(json.dumps({"after": rows[per_page - 1][0]}, separators=(",", ":")).encode())
            .rstrip(b"=")
            .decode()
        )
        next_url = url_for("list_users", q=q or None, per_page=per_page, cursor=token, _external=True)
    response = jsonify(
        items=[as_json(row) for row in rows[:per_page]],
        page=None if after is not None else 1,
        per_page=per_page,
        total=min(count, CAP),
        total_capped=count > CAP,
        next=next_url,
    )
    if next_url:
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    return response


@app.post("/api/users")
def create_user():
    body = request.get_json()
    name, email = body["name"].strip(), body["email"].strip().lower()
    now = datetime.now(UTC)
    try:
        with cursor() as cur:
            cur.execute(
                f"INSERT INTO users (name, email, created_at, updated_at) VALUES (%s, %s, %s, %s) RETURNING {COLUMNS}",
                (name, email, now, now),
            )
            row = cur.fetchone()
            changes = json.dumps({"name": [None, name], "email": [None, email]})
            cur.execute(
                "INSERT INTO audit_log (user_id, action, changes, at) VALUES (%s, 'insert', %s, %s)",
                (row[0], changes, now),
            )
    except psycopg2.errors.UniqueViolation:
        return jsonify(status=409), 409
    response = user_response(row, 201)
    response.headers["Location"] = f"/api/users/{row[0]}"
    return response


@app.get("/healthz")
def healthz():
    with cursor() as cur:
        cur.execute("SELECT 1")
    return jsonify(status="ok")
