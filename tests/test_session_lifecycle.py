"""The scoped session lives for one request on one thread, and then it is gone.

These tests use real commits (`committing`), because the lifecycle is about what
happens to real transactions and pooled connections.
"""

import threading

import pytest
from flask import Response, abort, appcontext_popped, appcontext_pushed, current_app, jsonify, stream_with_context
from sqlalchemy import select, text

from webapp import csrf, migrations
from webapp.db import Session, get_engine
from webapp.domain.models import User

from helpers import NOT_THE_ADMIN, Store, assert_session_gone, signed_in

# -- the registry -------------------------------------------------------------------


def test_session_is_the_same_object_within_a_thread(app):
    with app.app_context():
        assert Session() is Session()


def test_threads_get_different_sessions(app):
    seen = {}

    def record(name):
        with app.app_context():
            seen[name] = id(Session())
            barrier.wait()  # both sessions exist at the same time

    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=record, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert seen["a"] != seen["b"]


def test_removing_one_threads_session_leaves_anothers_alone(app, committing):
    with app.app_context():
        mine = Session()
        other_has_session = []

        def other():
            with app.app_context():
                Session().execute(text("SELECT 1"))
            other_has_session.append(Session.registry.has())

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()

        assert other_has_session == [False]
        assert Session() is mine


# -- every kind of request ends with the session removed ----------------------------


def test_a_successful_request_removes_its_session(app, committing):
    client = app.test_client()

    response = client.post("/api/users", json={"name": "Ada", "email": "ada@example.com"})

    assert response.status_code == 201
    assert_session_gone(app)


def test_a_request_that_raises_removes_its_session_and_writes_nothing(store, app, committing):
    @app.post("/explode")
    @csrf.exempt
    def explode():
        Session().add(User(name="Half", email="half@example.com"))
        Session().flush()  # the row is in the database's transaction...
        raise RuntimeError("boom")  # ...and then the request fails

    with pytest.raises(RuntimeError, match="boom"):
        app.test_client().post("/explode")

    assert_session_gone(app)
    assert store.count() == 0


def test_a_request_that_raises_is_a_500_page_and_still_removes_its_session(app, committing):
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/explode")
    def explode():
        Session().execute(text("SELECT 1"))
        raise RuntimeError("boom")

    response = app.test_client().get("/explode")

    assert response.status_code == 500
    assert_session_gone(app)


def test_an_aborted_request_removes_its_session(app, committing):
    @app.get("/forbidden")
    def forbidden():
        Session().execute(text("SELECT 1"))
        abort(403)

    assert app.test_client().get("/forbidden").status_code == 403
    assert_session_gone(app)


def test_a_request_ending_in_an_error_response_removes_its_session(app, committing):
    client = app.test_client()
    client.post("/api/users", json={"name": "Ada", "email": "ada@example.com"})

    assert client.post("/api/users", json={"name": "Ada", "email": "ada@example.com"}).status_code == 409
    assert_session_gone(app)
    assert client.get("/api/users/999999").status_code == 404
    assert_session_gone(app)


def _streaming_app(app, rows):
    """Adds /stream, which reads users while its response streams."""

    @app.get("/stream")
    def stream():
        def generate():
            for user in Session().scalars(select(User).where(NOT_THE_ADMIN).order_by(User.id)):
                yield f"{user.email} session={Session.registry.has()}\n"

        return Response(stream_with_context(generate()), mimetype="text/plain")

    with app.app_context():
        for n in range(rows):
            Session().add(User(name=f"User {n}", email=f"user{n}@example.com"))
        Session().commit()


def test_a_streamed_response_keeps_its_session_until_the_stream_ends(app, committing):
    _streaming_app(app, rows=3)

    response = app.test_client().get("/stream")

    assert response.text.splitlines() == [f"user{n}@example.com session=True" for n in range(3)]
    assert_session_gone(app)


def test_a_stream_the_client_abandons_half_way_still_removes_its_session(app, committing):
    _streaming_app(app, rows=3)

    response = app.test_client().get("/stream", buffered=False)
    first = next(iter(response.response))
    assert get_engine(app).pool.checkedout() == 1  # mid-stream the session holds its connection...
    response.close()  # ...the client goes away...

    assert first.startswith(b"user0@example.com")
    assert_session_gone(app)  # ...and the session goes with it


# -- transactions never outlive their request ---------------------------------------


def test_an_uncommitted_write_is_rolled_back_and_invisible_to_the_next_request(store, app, committing):
    @app.post("/forgetful")
    @csrf.exempt
    def forgetful():
        Session().add(User(name="Ghost", email="ghost@example.com"))
        Session().flush()
        return "forgot to commit"

    @app.get("/count")
    def count():
        return jsonify(Session().scalar(select(User.id).where(User.email == "ghost@example.com")))

    client = app.test_client()  # same thread serves both requests
    assert client.post("/forgetful").status_code == 200
    assert_session_gone(app)

    assert client.get("/count").get_json() is None
    assert store.count() == 0


def test_a_nested_app_context_inside_a_request_does_not_remove_the_requests_session(store, app, committing):
    @app.post("/nested")
    @csrf.exempt
    def nested():
        session = Session()
        user = User(name="Nested", email="nested@example.com")
        session.add(user)
        with current_app.app_context():  # as helper code and tests do
            inner_is_same = Session() is session
        # The inner context's teardown ran; the request's session must be intact.
        survived = Session() is session and user in session
        session.commit()
        return jsonify(inner_is_same=inner_is_same, survived=survived)

    response = app.test_client().post("/nested")

    assert response.get_json() == {"inner_is_same": True, "survived": True}
    assert store.count() == 1
    assert_session_gone(app)  # removed when the request's own context ended


def test_a_cli_command_removes_its_session_when_it_ends(store, app, committing, runner):
    result = runner.invoke(args=["seed-users", "3"])

    assert result.exit_code == 0, result.output
    assert_session_gone(app)
    assert store.count() == 3


def test_one_thread_serving_many_requests_never_accumulates_connections(store, app, committing):
    client = app.test_client()
    for n in range(20):
        client.post("/api/users", json={"name": f"User {n}", "email": f"user{n}@example.com"})
        client.get("/api/users?q=user")
        client.get("/users")
        assert_session_gone(app)
    assert store.count() == 20


# -- one engine per app, never the last one built ----------------------------------------


def test_two_apps_in_one_process_each_talk_to_their_own_database(app, committing, make_app, tmp_path, store):
    other = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'other.sqlite3'}")  # built after `app`
    with other.app_context():
        migrations.upgrade()
    signed_in(other)

    assert app.test_client().post("/api/users", json={"name": "Ada", "email": "ada@example.com"}).status_code == 201
    assert other.test_client().post("/api/users", json={"name": "Bob", "email": "bob@example.com"}).status_code == 201

    assert store.users() == [("Ada", "ada@example.com")]
    assert Store(other).users() == [("Bob", "bob@example.com")]


def test_a_context_of_another_app_inside_a_request_gets_that_apps_session(app, committing, make_app, tmp_path):
    other = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'other.sqlite3'}")
    with other.app_context():
        migrations.upgrade()
    Store(other).add_users(("Bob", "bob@example.com"))

    @app.get("/both")
    def both():
        mine = Session()
        with other.app_context():
            theirs = Session()
            other_emails = theirs.scalars(select(User.email)).all()
        return jsonify(
            distinct=theirs is not mine,
            other=other_emails,
            still_mine=Session() is mine,
            mine=mine.scalars(select(User.email).where(NOT_THE_ADMIN)).all(),
        )

    assert app.test_client().get("/both").get_json() == {
        "distinct": True,
        "other": ["bob@example.com"],
        "still_mine": True,
        "mine": [],
    }
    assert_session_gone(app)
    assert_session_gone(other)


def test_session_outside_an_application_context_fails_and_says_what_to_do(app):
    with pytest.raises(RuntimeError, match=r"outside an application context.*with app\.app_context\(\):"):
        Session()


def test_a_nested_context_that_opened_the_session_removes_it_at_its_end(app, committing):
    with app.app_context():
        with app.app_context():
            inner = Session()
        assert not Session.registry.has()  # the inner context opened it, the inner context closed it
        assert Session() is not inner
    assert_session_gone(app)


def test_the_nested_rule_holds_without_flasks_context_signals(app, committing):
    # Flask 3.2 changes how and when contexts are pushed; the rule must not hang on signals.
    @app.get("/nested-quietly")
    def nested_quietly():
        session = Session()
        with current_app.app_context():
            inner_is_same = Session() is session
        return jsonify(inner_is_same=inner_is_same, survived=Session.registry.has() and Session() is session)

    with appcontext_pushed.muted(), appcontext_popped.muted():
        response = app.test_client().get("/nested-quietly")

    assert response.get_json() == {"inner_is_same": True, "survived": True}
    assert_session_gone(app)


# -- a read-only request reads without a transaction ---------------------------------------


def test_a_get_reads_each_statement_on_its_own_without_a_transaction(app, committing, backend):
    @app.get("/snapshot")
    def snapshot():
        session = Session()
        if backend == "postgresql":  # now() is the start of the transaction: within one it stays put
            first = session.execute(text("SELECT now() FROM pg_sleep(0.01)")).scalar()
            second = session.execute(text("SELECT now()")).scalar()
            return jsonify(in_transaction=first == second)
        session.execute(text("SELECT 1"))
        return jsonify(in_transaction=session.connection().connection.dbapi_connection.in_transaction)

    assert app.test_client().get("/snapshot").get_json() == {"in_transaction": False}


def test_a_get_that_tries_to_write_through_the_orm_is_refused(app, committing, store):
    app.config["PROPAGATE_EXCEPTIONS"] = True

    @app.get("/sneaky-write")
    def sneaky_write():
        Session().add(User(name="Sneaky", email="sneaky@example.com"))
        Session().flush()
        return jsonify()

    with pytest.raises(RuntimeError, match="only reads"):
        app.test_client().get("/sneaky-write")
    assert store.count() == 0
    assert_session_gone(app)
