"""The scoped session lives for one request on one thread, and then it is gone.

These tests use real commits (`committing`), because the lifecycle is about what
happens to real transactions and pooled connections.
"""

import threading

import pytest
from flask import Response, abort, current_app, jsonify, stream_with_context
from sqlalchemy import select, text

from conftest import assert_session_gone, user_count
from webapp import csrf
from webapp.db import Session
from webapp.models import User


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


def test_a_request_that_raises_removes_its_session_and_writes_nothing(app, committing):
    @app.post("/explode")
    @csrf.exempt
    def explode():
        Session().add(User(name="Half", email="half@example.com"))
        Session().flush()  # the row is in the database's transaction...
        raise RuntimeError("boom")  # ...and then the request fails

    with pytest.raises(RuntimeError, match="boom"):
        app.test_client().post("/explode")

    assert_session_gone(app)
    assert user_count() == 0


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
            for user in Session().scalars(select(User).order_by(User.id)):
                yield f"{user.email} session={Session.registry.has()}\n"

        return Response(stream_with_context(generate()), mimetype="text/plain")

    for n in range(rows):
        Session().add(User(name=f"User {n}", email=f"user{n}@example.com"))
    Session().commit()
    Session.remove()


def test_a_streamed_response_keeps_its_session_until_the_stream_ends(app, committing):
    _streaming_app(app, rows=3)

    response = app.test_client().get("/stream")

    assert response.text.splitlines() == [f"user{n}@example.com session=True" for n in range(3)]
    assert_session_gone(app)


def test_a_stream_the_client_abandons_half_way_still_removes_its_session(app, committing):
    _streaming_app(app, rows=3)

    response = app.test_client().get("/stream", buffered=False)
    first = next(iter(response.response))
    assert Session.registry.has()  # mid-stream the session is alive...
    response.close()  # ...the client goes away...

    assert first.startswith(b"user0@example.com")
    assert_session_gone(app)  # ...and the session goes with it


# -- transactions never outlive their request ---------------------------------------


def test_an_uncommitted_write_is_rolled_back_and_invisible_to_the_next_request(app, committing):
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
    assert user_count() == 0


def test_a_nested_app_context_inside_a_request_does_not_remove_the_requests_session(app, committing):
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
    assert user_count() == 1
    assert_session_gone(app)  # removed when the request's own context ended


def test_a_cli_command_removes_its_session_when_it_ends(app, committing, runner):
    result = runner.invoke(args=["seed-users", "3"])

    assert result.exit_code == 0, result.output
    assert_session_gone(app)
    assert user_count() == 3


def test_one_thread_serving_many_requests_never_accumulates_connections(app, committing):
    client = app.test_client()
    for n in range(20):
        client.post("/api/users", json={"name": f"User {n}", "email": f"user{n}@example.com"})
        client.get("/api/users?q=user")
        client.get("/users")
        assert_session_gone(app)
    assert user_count() == 20
