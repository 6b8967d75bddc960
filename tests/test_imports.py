"""Bulk import: three front doors (form, API, CLI), one code path, nothing half-written."""

import io
import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError, post_load
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from webapp import db
from webapp.bulk import imports, reports, staging, validation
from webapp.bulk.imports import BATCH_SIZE
from webapp.domain.models import User, import_reports_table
from webapp.domain.schemas import UserSchema, imported_user_schema

from helpers import BOUNDED, assert_problem

HEADER = "name,email\n"


def csv_body(*rows: str, header: str = HEADER) -> bytes:
    return (header + "".join(row + "\n" for row in rows)).encode()


def post_csv(client, body: bytes, mode: str | None = None):
    query = f"?mode={mode}" if mode else ""
    return client.post(f"/api/users/import{query}", data=body, content_type="text/csv")


# -- the API ----------------------------------------------------------------------------


def test_a_valid_csv_is_imported_with_201_and_a_report(store, client):
    response = post_csv(client, csv_body("Ada,ADA@example.com", " Alan , alan@example.com"))

    assert response.status_code == 201
    assert response.get_json() == {"created": 2, "rejected": [], "rejected_count": 0}
    assert store.users() == [("Ada", "ada@example.com"), ("Alan", "alan@example.com")]


def test_columns_may_come_in_any_order_and_a_bom_is_accepted(store, client):
    body = "\ufeffemail,name\r\nada@example.com,Ada\r\n".encode()

    assert post_csv(client, body).status_code == 201
    assert store.users() == [("Ada", "ada@example.com")]


def test_an_atomic_import_with_one_bad_row_writes_nothing_and_reports_every_error(store, client):
    response = post_csv(
        client,
        csv_body("Ada,ada@example.com", ",nameless@example.com", "Bad,not-an-email", "Ada again,ada@example.com"),
    )

    problem = assert_problem(response, 422)
    assert problem["created"] == 0 and problem["rejected_count"] == 3
    assert [(r["line"], r["field"]) for r in problem["rejected"]] == [(3, "name"), (4, "email"), (5, "email")]
    assert "Duplicate of line 2" in problem["rejected"][2]["message"]
    assert store.count() == 0


def test_a_partial_import_writes_the_valid_rows_and_reports_the_rest_by_line(store, client):
    store.add_users(("Stored", "stored@example.com"))

    response = post_csv(
        client,
        csv_body(
            "Ada,ada@example.com",
            "Bad,not-an-email",
            "Dup,STORED@example.com",
            "Alan,alan@example.com",
            "Ada twice,ada@example.com",
        ),
        mode="partial",
    )

    assert response.status_code == 201
    report = response.get_json()
    assert report["created"] == 2
    assert [(r["line"], r["field"]) for r in report["rejected"]] == [(3, "email"), (4, "email"), (6, "email")]
    assert "already exists" in report["rejected"][1]["message"]
    assert [email for _, email in store.users()] == ["stored@example.com", "ada@example.com", "alan@example.com"]


def test_duplicates_across_batches_of_one_file_are_caught_per_line(app, client):
    rows = [f"User {n},user{n}@example.com" for n in range(5)] + ["Again,user1@example.com"]
    with app.test_request_context():
        report = imports.import_users(imports.read_csv(io.BytesIO(csv_body(*rows))), "partial", batch_size=2)

    assert report.created == 5
    assert [(r.line, r.field, r.message) for r in report.rejected] == [(7, "email", "Duplicate of line 3.")]


def loaded(load, item):
    try:
        return "loaded", load(item)
    except ValidationError as error:
        return "refused", error.messages


@settings(BOUNDED, max_examples=300)
@given(
    item=st.fixed_dictionaries({"name": st.text(max_size=110), "email": st.emails() | st.text(max_size=30)})
    | st.dictionaries(
        st.sampled_from(["name", "email", "role", "password", "id"]),
        st.sampled_from(["member", "admin"]) | st.text(max_size=20) | st.integers(),
    )
    | st.text(max_size=5)
)
def test_an_import_row_is_loaded_exactly_as_the_schema_loads_it(item):
    assert loaded(validation.load_user, item) == loaded(imported_user_schema.load, item)


def test_a_schema_with_a_hook_is_loaded_by_load_itself():
    class Hooked(UserSchema):
        @post_load
        def mark(self, fields, **kwargs):
            return {**fields, "hooked": True}

    load = validation.row_loader(Hooked(), ("name", "email"))

    assert load({"name": "Ada", "email": "ada@example.com"})["hooked"] is True


@pytest.mark.parametrize("tail", [b"", "Jos\u00e9,jose@example.com\n".encode("latin-1")], ids=["good", "unreadable"])
def test_only_the_callers_thread_uses_the_session_and_no_thread_outlives_the_import(app, client, tail, monkeypatch):
    # 30 kB, so that an unreadable tail is found batches after the import began.
    body = csv_body(*[f"User {n},user{n}@example.com" for n in range(1000)]) + tail
    threads = []
    monkeypatch.setattr(db, "session_opened", [lambda session: threads.append(threading.current_thread())])
    with app.test_request_context():
        try:
            report = imports.import_users(imports.read_csv(io.BytesIO(body)), batch_size=100)
        except imports.ImportFileError as error:
            assert tail and "near line" in error.description
        else:
            assert not tail and report.created == 1000

    # Validation ran in the helper thread; the database was used from this one only.
    assert set(threads) == {threading.current_thread()}
    assert not any(thread.name == "import-validation" for thread in threading.enumerate())


@pytest.mark.parametrize("mode", ["atomic", "partial"])
def test_a_streamed_upload_over_the_size_limit_is_413_problem(store, app, client, mode, monkeypatch):
    # No Content-Length (chunked, as gunicorn passes it on): the limit is met by the
    # reader, in the import's helper thread, after the first batch went in.
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 200_000)
    body = csv_body(*[f"User {n},user{n}@example.com" for n in range(10_000)])
    response = client.post(
        f"/api/users/import?mode={mode}",
        input_stream=io.BytesIO(body),
        content_type="text/csv",
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
    )

    assert_problem(response, 413)
    assert store.count() == 0


def test_names_beyond_ascii_are_stored_exactly(store, client):
    # The batch reaches the database as one JSON document: escapes must round-trip.
    names = ["José Núñez", "李小龍", "Zoë 😀", 'Quote " and \\ backslash']
    rows = [{"name": name, "email": f"user{n}@example.com"} for n, name in enumerate(names)]

    assert client.post("/api/users/import", json=rows).status_code == 201
    assert [name for name, _ in store.users()] == names
    assert [changes["name"][1] for _, _, changes in store.audit_rows()] == names


def test_a_line_with_extra_columns_is_rejected_with_a_clear_message(client):
    response = post_csv(client, csv_body("Ada,ada@example.com,admin", "Alan,alan@example.com"), mode="partial")

    report = response.get_json()
    assert response.status_code == 201 and report["created"] == 1
    assert report["rejected"] == [{"line": 2, "field": "_row", "message": "Expected 2 columns (name, email), found 3."}]


def test_a_json_array_goes_through_the_same_path(client):
    users = [{"name": "Ada", "email": "ada@example.com"}, {"name": "Bad", "email": "nope"}, "not an object"]

    response = client.post("/api/users/import?mode=partial", json=users)

    report = response.get_json()
    assert response.status_code == 201 and report["created"] == 1
    assert [(r["line"], r["field"]) for r in report["rejected"]] == [(2, "email"), (3, "_schema")]


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "empty"),
        (b"name\nAda\n", "missing email"),
        (b"name,email,role\nAda,ada@example.com,admin\n", "unexpected 'role'"),
        (b"name,email,email\n", "repeated"),
        ("name,email\nJos\u00e9,jose@example.com\n".encode("latin-1"), "not UTF-8"),
        (b"name,email\n" + b"x" * 200_000 + b",big@example.com\n", "Line 2: field larger than field limit"),
    ],
)
def test_an_unreadable_file_is_422_naming_the_problem_and_writes_nothing(store, client, body, message):
    for mode in ("atomic", "partial"):
        problem = assert_problem(post_csv(client, body, mode), 422)
        assert message in problem["errors"]["file"][0]
    assert store.count() == 0


def test_a_bad_line_deep_in_a_file_rolls_back_the_batches_before_it(store, client):
    rows = [f"User {n},user{n}@example.com" for n in range(BATCH_SIZE + 500)]
    body = csv_body(*rows) + "Jos\u00e9,jose@example.com\n".encode("latin-1")

    problem = assert_problem(post_csv(client, body, mode="partial"), 422)
    # Found past the first batch, which the database had already taken.
    near = int(re.search(r"near line (\d+)", problem["errors"]["file"][0]).group(1))
    assert BATCH_SIZE + 1 < near <= BATCH_SIZE + 502
    assert store.count() == 0


def test_a_header_only_file_imports_nothing_with_200(client):
    response = post_csv(client, csv_body())

    assert response.status_code == 200 and response.get_json()["created"] == 0


@pytest.mark.parametrize("query", ["mode=all", "mode="])
def test_an_unknown_mode_is_422(client, query):
    assert_problem(client.post(f"/api/users/import?{query}", data=csv_body(), content_type="text/csv"), 422)


def test_a_body_that_is_neither_csv_nor_json_is_415(client):
    assert_problem(client.post("/api/users/import", data=b"name,email\n", content_type="text/plain"), 415)


def test_an_upload_over_the_size_limit_is_413_problem(store, app, client):
    body = csv_body(*["x" * 60 + ",x@example.com"] * (app.config["MAX_CONTENT_LENGTH"] // 70 + 10))

    assert_problem(post_csv(client, body), 413)
    assert store.count() == 0


def test_imported_users_have_history(store, client):
    post_csv(client, csv_body("Ada,ada@example.com"))

    assert [(action, changes) for _, action, changes in store.audit_rows()] == [
        ("insert", {"name": [None, "Ada"], "email": [None, "ada@example.com"], "role": [None, "member"]})
    ]


def test_a_refused_atomic_import_leaves_no_history(store, client):
    post_csv(client, csv_body("Ada,ada@example.com", "Bad,nope"))

    assert store.audit_rows() == []


def test_imported_users_and_their_history_are_stamped_with_the_time_of_the_import(client):
    post_csv(client, csv_body("Ada,ada@example.com"))

    user = client.get("/api/users?q=ada@example.com").get_json()["items"][0]
    created = datetime.fromisoformat(user["created_at"])
    history = client.get(f"/api/users/{user['id']}/history").get_json()["items"]
    # The database's clock: on PostgreSQL, the start of the transaction the test holds open.
    assert created.utcoffset() == timedelta(0) and abs(datetime.now(UTC) - created) < timedelta(minutes=1)
    assert user["updated_at"] == user["created_at"]
    assert datetime.fromisoformat(history[0]["at"]) == created


@pytest.fixture
def refuses_a_name(rolled_back):
    """The database refuses users named Refused by a rule of its own that the schema
    does not know (a CHECK constraint, a trigger on SQLite); the test's outer
    transaction takes the rule away again."""
    if rolled_back.dialect.name == "postgresql":
        rolled_back.exec_driver_sql("ALTER TABLE users ADD CONSTRAINT refuses_a_name CHECK (name <> 'Refused')")
    else:
        rolled_back.exec_driver_sql(
            "CREATE TRIGGER refuses_a_name BEFORE INSERT ON users WHEN NEW.name = 'Refused' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )


def test_a_row_the_database_refuses_is_rejected_alone_in_a_partial_import(store, client, refuses_a_name):
    store.add_users(("Stored", "stored@example.com"))

    response = post_csv(
        client,
        csv_body(
            "Ada,ada@example.com", "Refused,refused@example.com", "Dup,stored@example.com", "Alan,alan@example.com"
        ),
        mode="partial",
    )

    assert response.status_code == 201
    report = response.get_json()
    assert report["created"] == 2
    assert [(r["line"], r["field"], r["message"]) for r in report["rejected"]] == [
        (3, "_row", "The database refused this row."),
        (4, "email", "A user with this email address already exists."),
    ]
    assert store.users() == [("Stored", "stored@example.com"), ("Ada", "ada@example.com"), ("Alan", "alan@example.com")]
    assert [changes["email"][1] for _, action, changes in store.audit_rows() if action == "insert"] == [
        "stored@example.com",
        "ada@example.com",
        "alan@example.com",
    ]


def test_a_row_the_database_refuses_refuses_an_atomic_import(store, client, refuses_a_name):
    response = post_csv(client, csv_body("Ada,ada@example.com", "Refused,refused@example.com"))

    problem = assert_problem(response, 422)
    assert problem["created"] == 0
    assert [(r["line"], r["field"]) for r in problem["rejected"]] == [(3, "_row")]
    assert store.count() == 0 and store.audit_rows() == []


# -- the form --------------------------------------------------------------------------


def upload(forms, body: bytes, mode: str = "atomic"):
    return forms.post(
        "/users/import",
        {"file": (io.BytesIO(body), "users.csv"), "mode": mode},
        page="/users/import",
        content_type="multipart/form-data",
    )


def test_the_import_form_has_a_file_input_a_mode_choice_and_a_csrf_token(client, forms):
    page = client.get("/users/import")

    assert page.status_code == 200
    assert 'enctype="multipart/form-data"' in page.text and 'type="file"' in page.text
    assert 'value="atomic" checked' in page.text and 'value="partial"' in page.text
    assert "csrf_token" in forms.hidden("/users/import")


def redirected_report(client, response):
    """The page the upload redirected to (post/redirect/get)."""
    assert response.status_code == 303
    location = response.headers["Location"]
    assert re.fullmatch(r"/users/import\?report=[\w-]{43}", location)
    return client.get(location)


def test_an_upload_redirects_with_303_to_a_page_with_the_report(store, client, forms):
    response = upload(forms, csv_body("Ada,ada@example.com", "Alan,alan@example.com"))

    page = redirected_report(client, response)
    assert page.status_code == 200
    assert "Imported 2 users." in page.text and "2 created, 0 rejected." in page.text
    assert 'class="report report-ok"' in page.text
    assert store.count() == 2


def test_reloading_the_report_shows_it_again_and_imports_nothing_again(store, client, forms):
    response = upload(forms, csv_body("Ada,ada@example.com"))
    first = redirected_report(client, response)

    again = client.get(response.headers["Location"])

    assert "1 created, 0 rejected." in first.text and "1 created, 0 rejected." in again.text
    assert store.count() == 1


@pytest.mark.parametrize("token", ["%00", "x" * 43 + "%00", "not-a-token"])
def test_a_mangled_report_link_is_a_report_gone_not_an_error(client, token):
    page = client.get(f"/users/import?report={token}")

    assert page.status_code == 200
    assert "That import report is gone" in page.text


def test_a_report_is_for_who_imported_and_for_an_hour(app, store, client, forms):
    location = upload(forms, csv_body("Ada,ada@example.com")).headers["Location"]
    with app.app_context():
        db.Session().execute(
            update(import_reports_table).values(created_at=datetime.now(UTC) - reports.KEPT_FOR - timedelta(seconds=1))
        )
        db.Session().commit()

    page = client.get(location)

    assert page.status_code == 200
    assert "That import report is gone" in page.text and "created," not in page.text


def test_a_refused_upload_shows_the_errors_with_their_line_numbers(store, client, forms):
    page = redirected_report(client, upload(forms, csv_body("Ada,ada@example.com", "Bad,nope")))

    assert "Nothing imported" in page.text and "0 created, 1 rejected." in page.text
    assert 'class="report report-error"' in page.text
    assert "<td>3</td><td>email</td><td>Not a valid email address.</td>" in page.text
    assert store.count() == 0


def test_a_rejected_line_as_a_whole_is_named_the_whole_row(client, forms):
    page = redirected_report(client, upload(forms, csv_body("Ada,ada@example.com,extra"), mode="partial"))

    assert "<td>2</td><td>the whole row</td><td>Expected 2 columns (name, email), found 3.</td>" in page.text
    assert "_row" not in page.text


def test_a_partial_upload_writes_the_valid_rows(store, client, forms):
    page = redirected_report(client, upload(forms, csv_body("Ada,ada@example.com", "Bad,nope"), mode="partial"))

    assert "1 created, 1 rejected." in page.text
    assert store.users() == [("Ada", "ada@example.com")]


def test_the_form_links_a_sample_csv_that_imports(client, forms, store):
    page = client.get("/users/import").text
    assert '<a href="/static/sample-users.csv" download>Download a sample CSV</a>' in page
    with client.get("/static/sample-users.csv") as sample:
        assert sample.mimetype == "text/csv"
        body = sample.data

    response = upload(forms, body)

    assert "3 created, 0 rejected." in redirected_report(client, response).text
    assert store.count() == 3


def test_an_unreadable_upload_re_renders_the_form_with_the_problem(client, forms):
    page = upload(forms, b"nope\n")

    assert page.status_code == 422
    assert 'id="file-error"' in page.text and "missing name, email" in page.text


def test_an_upload_without_a_file_asks_for_one(client, forms):
    page = forms.post("/users/import", {"mode": "atomic"}, page="/users/import")

    assert page.status_code == 422 and "Choose a CSV file" in page.text


def test_an_oversized_upload_gets_the_form_back_with_a_message(app, client, forms):
    # Encoded in memory: the test client would spool a body this big to a temporary
    # file that nobody closes once the app refuses to read it.
    oversized = FileStorage(io.BytesIO(b"x" * (app.config["MAX_CONTENT_LENGTH"] + 1)), filename="users.csv")
    boundary, body = encode_multipart({**forms.hidden("/users/import"), "mode": "atomic", "file": oversized})

    page = client.post("/users/import", data=body, content_type=f"multipart/form-data; boundary={boundary}")

    assert page.status_code == 413
    assert "larger than" in page.text and "import-users" in page.text


def test_an_upload_without_a_csrf_token_is_400(store, client):
    response = client.post(
        "/users/import",
        data={"file": (io.BytesIO(csv_body("A,a@example.com")), "u.csv")},
        content_type="multipart/form-data",
    )

    assert response.status_code == 400 and store.count() == 0


# -- the CLI ---------------------------------------------------------------------------


def test_the_cli_imports_a_file_and_prints_a_summary(store, runner, committing, tmp_path):
    path = tmp_path / "users.csv"
    path.write_bytes(csv_body(*[f"User {n},user{n}@example.com" for n in range(2500)]))

    result = runner.invoke(args=["import-users", str(path)])

    assert result.exit_code == 0, result.output
    assert "2500 created, 0 rejected." in result.output
    assert store.count() == 2500


def test_the_cli_exits_non_zero_when_rows_were_rejected(store, runner, committing, tmp_path):
    path = tmp_path / "users.csv"
    path.write_bytes(csv_body("Ada,ada@example.com", "Bad,nope"))

    atomic = runner.invoke(args=["import-users", str(path)])
    partial = runner.invoke(args=["import-users", "--mode", "partial", str(path)])

    assert atomic.exit_code == 1 and "nothing imported" in atomic.output
    assert partial.exit_code == 1 and "1 created, 1 rejected." in partial.output
    assert "line 3: email: Not a valid email address." in partial.output
    assert store.users() == [("Ada", "ada@example.com")]


def test_the_cli_refuses_an_unreadable_file_with_status_2(store, runner, committing, tmp_path):
    path = tmp_path / "users.csv"
    path.write_bytes(b"")

    result = runner.invoke(args=["import-users", str(path)])

    assert result.exit_code == 2 and "empty" in result.output
    assert store.count() == 0


# -- what the export writes, the import reads ------------------------------------------


def test_the_exports_id_created_at_and_updated_at_columns_are_accepted_and_ignored(store, client):
    store.add_users(("Ada", "ada@example.com"), ("Alan", "alan@example.com"))
    exported = client.get("/api/users.csv?q=example.com").data
    client.delete(f"/api/users/{store.scalars(select(User.id).where(User.email == 'ada@example.com'))[0]}")
    edited = exported.replace(b"Alan,alan@example.com", b"Grace,grace@example.com")

    report = post_csv(client, edited, mode="partial").get_json()

    assert report["created"] == 2 and report["rejected"] == []
    assert sorted(store.users()) == [
        ("Ada", "ada@example.com"),
        ("Alan", "alan@example.com"),
        ("Grace", "grace@example.com"),
    ]


def test_a_json_import_ignores_the_same_fields(store, client):
    items = [{"id": 7, "name": "Ada", "email": "ada@example.com", "created_at": "x", "updated_at": "y"}]

    response = client.post("/api/users/import", json=items)

    assert response.status_code == 201
    assert store.users() == [("Ada", "ada@example.com")]


def test_a_json_import_makes_members_and_refuses_an_admin_or_a_password_by_line(store, client):
    items = [
        {"name": "Ada", "email": "ada@example.com", "role": "member"},  # as GET /api/users answers
        {"name": "Root", "email": "root@example.com", "role": "admin"},
        {"name": "Pat", "email": "pat@example.com", "password": "long enough"},
    ]

    response = client.post("/api/users/import?mode=partial", json=items)

    report = response.get_json()
    assert response.status_code == 201 and report["created"] == 1
    assert [(r["line"], r["field"], r["message"]) for r in report["rejected"]] == [
        (2, "role", "An import makes members: make an admin with PATCH /api/users/<id>."),
        (3, "password", "An import sets no passwords: set one with PATCH /api/users/<id>."),
    ]
    assert store.users() == [("Ada", "ada@example.com")]


def test_a_header_with_other_columns_names_what_is_accepted(client):
    response = post_csv(client, csv_body("Ada,ada@example.com,admin", header="name,email,role\n"))

    assert response.status_code == 422
    assert response.get_json()["errors"]["file"] == [
        "The header must be the columns name and email, in any order, and may have the export's id, "
        "created_at and updated_at, which are ignored (unexpected 'role')."
    ]


# -- the stage's COPY fails as any statement would ------------------------------------


def test_a_row_the_stage_refuses_raises_as_any_statement_would(app):
    with app.test_request_context(method="POST"):
        session = db.Session()
        staging.begin(session)
        staging.stage(session, [(2, "Ada", "ada@example.com")])

        with pytest.raises(IntegrityError):  # the same line twice: on PostgreSQL, from COPY
            staging.stage(session, [(2, "Ada", "ada@example.com")])
        session.rollback()


def test_a_connection_lost_during_the_stages_copy_is_invalidated(make_app, cluster_database):
    app = make_app(DATABASE_URL=cluster_database)
    killer = create_engine(cluster_database, isolation_level="AUTOCOMMIT")
    try:
        with app.test_request_context(method="POST"):
            session = db.Session()
            staging.begin(session)
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar()
            with killer.connect() as connection:  # as a restart would, between two batches
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

            with pytest.raises(DBAPIError) as raised:
                staging.stage(session, [(2, "Ada", "ada@example.com")])
            assert raised.value.connection_invalidated  # what the request's one retry looks for
    finally:
        killer.dispose()
