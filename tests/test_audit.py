"""Every change to a user leaves an audit row in the same transaction; none leaves one
when the change is rolled back. History is served newest first, even after deletion."""

import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from webapp import csrf
from webapp.db import Session
from webapp.domain.models import AuditEntry, User
from webapp.ops.session_events import log as events_log
from webapp.pages import display

from helpers import NOT_THE_ADMIN, add_admin


def test_create_update_and_delete_each_leave_one_row_with_old_and_new_values(store, client):
    user_id = client.post("/api/users", json={"name": "Ada", "email": "ada@example.com"}).get_json()["id"]
    client.patch(f"/api/users/{user_id}", json={"name": "Ada King"})
    client.delete(f"/api/users/{user_id}")

    assert store.audit_rows() == [
        (user_id, "insert", {"name": [None, "Ada"], "email": [None, "ada@example.com"], "role": [None, "member"]}),
        (user_id, "update", {"name": ["Ada", "Ada King"]}),
        (user_id, "delete", {"name": ["Ada King", None], "email": ["ada@example.com", None], "role": ["member", None]}),
    ]


def test_an_update_that_changes_nothing_leaves_no_row(store, client):
    [user_id] = store.add_users(("Ada", "ada@example.com"))

    client.put(f"/api/users/{user_id}", json={"name": "Ada", "email": "ADA@example.com"})

    assert [action for _, action, _ in store.audit_rows(user_id)] == ["insert"]


def test_audit_rows_carry_the_request_id(client, store):
    response = client.post(
        "/api/users", json={"name": "Ada", "email": "ada@example.com"}, headers={"X-Request-ID": "trace-42"}
    )

    assert response.headers["X-Request-ID"] == "trace-42"
    assert store.scalar(select(AuditEntry.request_id)) == "trace-42"


def test_a_request_without_an_id_gets_a_fresh_one_echoed(client):
    first = client.get("/api/users").headers["X-Request-ID"]
    second = client.get("/api/users", headers={"X-Request-ID": "no spaces allowed"}).headers["X-Request-ID"]

    assert re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]+", first) and second != first and " " not in second


def test_a_rolled_back_change_leaves_no_audit_row(store, client):
    [ada] = store.add_users(("Ada", "ada@example.com"))
    client.post("/api/users", json={"name": "Alan", "email": "alan@example.com"})

    assert client.patch(f"/api/users/{ada}", json={"email": "alan@example.com"}).status_code == 409
    assert client.post("/api/users", json={"name": "Dup", "email": "ada@example.com"}).status_code == 409

    assert [action for _, action, _ in store.audit_rows()] == ["insert", "insert"]


def test_a_request_that_fails_after_flushing_leaves_neither_user_nor_audit_row(store, app, committing):
    @app.post("/half")
    @csrf.exempt
    def half():
        Session().add(User(name="Half", email="half@example.com"))
        Session().flush()  # the audit row is written here, in the same transaction
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        app.test_client().post("/half")

    assert store.audit_rows() == []


def test_bulk_inserts_record_their_own_history(store, runner, committing):
    assert runner.invoke(args=["seed-users", "30"]).exit_code == 0

    rows = store.audit_rows()
    assert len(rows) == 30 and {action for _, action, _ in rows} == {"insert"}
    ids = {user_id for user_id, _, _ in rows}
    assert ids == set(store.scalars(select(User.id).where(NOT_THE_ADMIN)))


# -- reading history ------------------------------------------------------------------


def test_history_is_newest_first_and_paginated(client):
    user_id = client.post("/api/users", json={"name": "V0", "email": "v@example.com"}).get_json()["id"]
    for n in range(1, 5):
        client.patch(f"/api/users/{user_id}", json={"name": f"V{n}"})

    first = client.get(f"/api/users/{user_id}/history?per_page=2").get_json()
    last = client.get(f"/api/users/{user_id}/history?per_page=2&page=3").get_json()

    assert (first["total"], first["page"], first["per_page"]) == (5, 1, 2)
    assert [e["changes"]["name"] for e in first["items"]] == [["V3", "V4"], ["V2", "V3"]]
    assert [e["action"] for e in last["items"]] == ["insert"]
    assert set(first["items"][0]) == {"id", "user_id", "action", "changes", "at", "request_id", "actor_id"}


def test_a_deleted_users_history_stays_readable(store, client):
    [user_id] = store.add_users(("Ada", "ada@example.com"))
    client.delete(f"/api/users/{user_id}")

    response = client.get(f"/api/users/{user_id}/history")

    assert client.get(f"/api/users/{user_id}").status_code == 404
    assert response.status_code == 200
    assert [e["action"] for e in response.get_json()["items"]] == ["delete", "insert"]


def test_history_of_a_user_that_never_existed_is_404(client):
    assert client.get("/api/users/424242/history").status_code == 404


def test_the_user_page_shows_the_history(client):
    user_id = client.post("/api/users", json={"name": "Ada", "email": "ada@example.com"}).get_json()["id"]
    client.patch(f"/api/users/{user_id}", json={"name": "Ada King"})

    page = client.get(f"/users/{user_id}").text

    history = page[page.index('<h2 id="history">') :]
    assert history.index("Changed") < history.index("Created")
    assert "<dd><del>Ada</del> → <ins>Ada King</ins></dd>" in history


# -- watching sessions live and die -----------------------------------------------------


def test_session_events_log_shows_begin_commit_rollback_and_remove(committing, make_app, database_url, caplog):
    app = make_app(DATABASE_URL=database_url, SESSION_EVENTS_LOG=True)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {add_admin(app).token}"
    caplog.clear()  # adding the admin had a session of its own
    try:
        with caplog.at_level(logging.INFO, logger="webapp.session"):
            client.post(
                "/api/users", json={"name": "Log", "email": "log@example.com"}, headers={"X-Request-ID": "req-1"}
            )
            client.post(
                "/api/users", json={"name": "Log", "email": "log@example.com"}, headers={"X-Request-ID": "req-2"}
            )
    finally:
        events_log.setLevel(logging.NOTSET)  # quiet again for the tests that follow
        events_log.handlers.clear()

    lines = [r.getMessage() for r in caplog.records if r.name == "webapp.session"]
    events = [(line.split()[0], line.split("request=")[1]) for line in lines]
    assert events == [
        ("begin", "req-1"),
        ("commit", "req-1"),
        ("remove", "req-1"),
        ("begin", "req-2"),
        ("rollback", "req-2"),
        ("remove", "req-2"),
    ]
    assert all("thread=MainThread" in line for line in lines)


# -- the timeline on the pages ----------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (-5, "just now"),
        (10, "just now"),
        (60, "a minute ago"),
        (150, "2 minutes ago"),
        (3599, "59 minutes ago"),
        (3600, "an hour ago"),
        (3 * 3600, "3 hours ago"),
        (86400 + 5, "yesterday"),
        (3 * 86400, "3 days ago"),
        (8 * 86400, "a week ago"),
        (40 * 86400, "a month ago"),
        (800 * 86400, "2 years ago"),
    ],
)
def test_times_in_the_timeline_read_as_a_person_says_them(seconds, said):
    now = datetime(2025, 1, 1, tzinfo=UTC)

    assert display.ago(now - timedelta(seconds=seconds), now) == said


def test_the_timeline_says_who_when_and_what_changed_newest_first(client, admin):
    user_id = client.post("/api/users", json={"name": "Ada", "email": "ada@example.com"}).get_json()["id"]
    client.patch(f"/api/users/{user_id}", json={"email": "ada@example.org", "password": "a-new-password"})

    page = client.get(f"/users/{user_id}").text
    timeline = page[page.index('<ol class="timeline">') :]

    changed, created = timeline.index("<strong>Changed</strong>"), timeline.index("<strong>Created</strong>")
    assert changed < created
    assert f'by <span class="actor"><a href="/users/{admin.user_id}">Test Admin</a></span>' in timeline
    assert ">just now</time>" in timeline
    assert re.search(r'<span class="absolute">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</span>', timeline)
    assert "<dt>Email</dt>\n        <dd><del>ada@example.com</del> → <ins>ada@example.org</ins></dd>" in timeline
    assert "<dt>Password</dt>\n        <dd>changed</dd>" in timeline
    assert "<dt>Name</dt>\n        <dd><ins>Ada</ins></dd>" in timeline[created:]
