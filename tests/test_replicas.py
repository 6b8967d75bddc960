"""Read replicas, routed by the session, on a real primary and streaming replica.

A throwaway primary and a replica of it made by pg_basebackup -R (pg_cluster.py).
Which server answered is told by the data itself: with the replica's replay
paused, a row written on the primary exists there and not on the replica.
"""

import re

import pytest
from flask import jsonify
from sqlalchemy import insert, select

from webapp import auth, migrations
from webapp.db import Session, binds, get_engine
from webapp.domain.models import User
from webapp.replicas import COOKIE, HEADER, format_lsn, parse_lsn

import pg_cluster as pg
from helpers import Forms, replay_paused, signed_in
from server import wait_for

CHECK_SECONDS = 0.2
TARGET = re.compile(r'db;dur=[\d.]+;desc="\d+ queries on (primary|replica)"')


@pytest.fixture(scope="module")
def pair():
    """A running primary and its streaming replica, with the schema."""
    bindir = pg.bindir()
    if bindir is None:
        pytest.skip("PostgreSQL's initdb, pg_ctl and pg_basebackup are not installed (pg_config --bindir)")
    primary = pg.Cluster(bindir)
    replica = None
    try:
        primary.start()
        primary_url = primary.create_database("app")
        replica = primary.replica()
        replica.start()
        yield primary_url, replica
    finally:
        if replica is not None:
            replica.destroy()
        primary.destroy()


@pytest.fixture(scope="module")
def _replica_schema(pair):
    from webapp import create_app

    primary_url, _ = pair
    app = create_app({"DATABASE_URL": primary_url})
    with app.app_context():
        migrations.upgrade("head")
    get_engine(app).dispose()


@pytest.fixture
def replicated(pair, _replica_schema, make_app):
    """An app on the primary with the replica, signed in, once the replica is usable."""
    primary_url, replica = pair
    if not replica.is_running():
        replica.start()
    app = make_app(
        DATABASE_URL=primary_url,
        DATABASE_REPLICA_URLS=(replica.url("app"),),
        REPLICA_CHECK_SECONDS=CHECK_SECONDS,
        REPLICA_MAX_LAG_SECONDS=2.0,
    )
    signed_in(app)
    wait_for(lambda: usable(app), seconds=15)
    yield app
    binds(app).replicas.close()


def usable(app) -> bool:
    """The replica is healthy and has replayed everything the primary has now."""
    replicas = binds(app).replicas
    replicas.pick(0)  # starts the checker
    now = replicas.primary_lsn()
    return all(each.healthy and each.replay_lsn >= now for each in replicas.all)


def target(response) -> str:
    return TARGET.fullmatch(response.headers["Server-Timing"]).group(1)


def add_user_on_primary(app, name: str) -> int:
    with get_engine(app).begin() as connection:
        return connection.execute(
            insert(User).values(name=name, email=f"{name.lower()}@replica.example.com").returning(User.id)
        ).scalar_one()


# -- routing ------------------------------------------------------------------------


def test_lsns_parse_and_print_as_postgresql_writes_them():
    assert parse_lsn("16/B374D848") == 0x16B374D848
    assert format_lsn(parse_lsn("0/3000148")) == "0/3000148"
    assert parse_lsn("A/0") > parse_lsn("9/FFFFFFFF")
    for bad in ("", "16", "x/1", "1/2/3", "123456789/0", "/1"):
        with pytest.raises(ValueError):
            parse_lsn(bad)


def test_a_get_reads_on_the_replica_and_says_so(replicated):
    user_id = add_user_on_primary(replicated, "Seen")
    wait_for(lambda: usable(replicated))

    response = replicated.test_client().get(f"/api/users/{user_id}")

    assert response.status_code == 200
    assert target(response) == "replica"


def test_a_replica_that_has_not_replayed_a_row_does_not_have_it(replicated, pair):
    with replay_paused(pair[1].url("app")):
        user_id = add_user_on_primary(replicated, "Unreplayed")
        response = replicated.test_client().get(f"/api/users/{user_id}")

    assert response.status_code == 404
    assert target(response) == "replica"


def test_writes_go_to_the_primary_and_answer_with_their_wal_position(replicated, pair):
    client = replicated.test_client()
    with replay_paused(pair[1].url("app")):
        created = client.post("/api/users", json={"name": "Writer", "email": "writer@replica.example.com"})

        assert created.status_code == 201
        assert target(created) == "primary"
        lsn = parse_lsn(created.headers[HEADER])
        assert lsn > binds(replicated).replicas.all[0].replay_lsn

        # The replica has not replayed it: the writer reads it on the primary, every time.
        for _ in range(5):
            again = client.get(created.headers["Location"], headers={HEADER: created.headers[HEADER]})
            assert again.status_code == 200
            assert target(again) == "primary"
        # Someone who did not write reads on the replica, which lacks it.
        assert client.get(created.headers["Location"]).status_code == 404

    # Replayed: the writer's reads go back to the replica.
    wait_for(lambda: usable(replicated))
    back = client.get(created.headers["Location"], headers={HEADER: created.headers[HEADER]})
    assert (back.status_code, target(back)) == (200, "replica")


@pytest.mark.parametrize("sent", ["", "garbage", "0/", "1/2/3", "ffffffffff/0", "0/0; DROP TABLE users"])
def test_a_malformed_read_after_reads_on_the_primary_and_is_never_a_500(replicated, sent):
    response = replicated.test_client().get("/api/users", headers={HEADER: sent})

    assert response.status_code == 200
    assert target(response) == "primary"


def test_a_page_write_sets_a_signed_cookie_that_keeps_the_next_pages_on_the_primary(replicated, pair):
    client = replicated.test_client()
    forms = Forms(client)
    with replay_paused(pair[1].url("app")):
        created = forms.post("/users", {"name": "Paged", "email": "paged@replica.example.com"})
        assert created.status_code in (302, 303), created.text
        cookie = client.get_cookie(COOKIE)
        assert cookie is not None and cookie.http_only
        assert HEADER in created.headers

        page = client.get(created.headers["Location"])
        assert (page.status_code, target(page)) == (200, "primary")

        # A cookie the server did not sign counts as nothing but a reason to use the primary.
        client.set_cookie(COOKIE, "0/0")
        tampered = client.get("/users")
        assert (tampered.status_code, target(tampered)) == (200, "primary")


def test_select_for_update_in_a_read_goes_to_the_primary(replicated, pair):
    @replicated.get("/locked/<int:user_id>")
    def locked(user_id):
        row = Session().execute(select(User.name).where(User.id == user_id).with_for_update()).first()
        return jsonify(found=row is not None)

    with replay_paused(pair[1].url("app")):
        user_id = add_user_on_primary(replicated, "Locked")
        response = replicated.test_client().get(f"/locked/{user_id}")

    assert response.get_json() == {"found": True}


def test_cli_commands_use_the_primary(replicated, pair):
    with replay_paused(pair[1].url("app")):
        user_id = add_user_on_primary(replicated, "Cli")
        with replicated.app_context():
            assert Session().scalar(select(User.name).where(User.id == user_id)) == "Cli"
            assert Session().target == "primary"


def test_metrics_count_statements_by_target_and_show_the_replica(replicated):
    from webapp.ops import metrics

    client = replicated.test_client()
    before = {t: metrics.STATEMENTS.labels(t)._value.get() for t in ("primary", "replica")}
    client.get("/api/users")
    client.post("/api/users", json={"name": "Counted", "email": "counted@replica.example.com"})
    after = {t: metrics.STATEMENTS.labels(t)._value.get() for t in ("primary", "replica")}
    text_ = client.get("/metrics").text

    assert after["replica"] > before["replica"]
    assert after["primary"] > before["primary"]
    name = binds(replicated).replicas.all[0].name
    assert f'webapp_db_replica_up{{replica="{name}"}} 1.0' in text_
    assert re.search(rf'webapp_db_replica_lag_seconds\{{replica="{re.escape(name)}"\}} \d', text_)


def test_the_replica_engines_listen_for_no_connection_event(replicated):
    # As for the primary's (test_observability.py): a replica's statements, health
    # checks included, are hooked on its dialect, so its connections build no
    # listener collections (webapp/statements.py).
    replicas = binds(replicated).replicas.all
    replicated.test_client().get("/api/users")  # every hook in place and used

    assert replicas
    assert [(r.engine._has_events, r.reads._has_events) for r in replicas] == [(False, False)] * len(replicas)


# -- health -------------------------------------------------------------------------


def test_a_lagging_replica_is_left_out_until_it_catches_up(replicated, pair):
    replicas = binds(replicated).replicas
    with replay_paused(pair[1].url("app")):
        add_user_on_primary(replicated, "Lag")
        wait_for(lambda: not replicas.all[0].healthy, seconds=10)  # past REPLICA_MAX_LAG_SECONDS (2)
        assert replicas.all[0].lag > 2.0
        response = replicated.test_client().get("/api/users")
        assert (response.status_code, target(response)) == (200, "primary")
    wait_for(lambda: usable(replicated), seconds=10)
    assert target(replicated.test_client().get("/api/users")) == "replica"


def test_a_stopped_replica_fails_no_read_and_is_used_again_when_it_returns(replicated, pair):
    replica = pair[1]
    client = replicated.test_client()
    assert target(client.get("/api/users")) == "replica"  # a pooled connection to it, soon dead

    replica.stop(mode="immediate")
    try:
        # The first read finds the dead connection, leaves the replica out and runs again.
        statuses = [client.get("/api/users").status_code for _ in range(5)]
        assert statuses == [200] * 5
        assert not binds(replicated).replicas.all[0].healthy
        assert target(client.get("/api/users")) == "primary"
    finally:
        replica.start()
    wait_for(lambda: usable(replicated), seconds=15)
    assert target(client.get("/api/users")) == "replica"


def test_replicas_need_a_postgresql_primary(make_app):
    with pytest.raises(RuntimeError, match="DATABASE_REPLICA_URLS"):
        make_app(DATABASE_REPLICA_URLS=("postgresql://127.0.0.1:1/app",))


def test_the_environment_names_the_replicas(make_app, monkeypatch):
    monkeypatch.setenv("DATABASE_REPLICA_URLS", " postgresql://a/app , postgresql://b/app ,")
    from config import from_environment

    assert from_environment()["DATABASE_REPLICA_URLS"] == ("postgresql://a/app", "postgresql://b/app")


def test_no_replicas_means_no_read_after_header_and_an_unnamed_target(client):
    response = client.post("/api/users", json={"name": "Plain", "email": "plain@example.com"})

    assert response.status_code == 201
    assert HEADER not in response.headers
    assert "on primary" not in response.headers["Server-Timing"]


# -- behind the proxy ---------------------------------------------------------------


def _whoami(app):
    @app.get("/whoami")
    def whoami():
        from flask import request

        return jsonify(addr=request.remote_addr, scheme=request.scheme, host=request.host)

    return app


FORWARDED = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "example.org"}


def test_behind_one_proxy_the_app_believes_only_what_that_proxy_added(make_app):
    # The forwarded host must be one the app serves (TRUSTED_HOSTS), or it is a 400.
    app = _whoami(make_app(TRUSTED_PROXIES=1, TRUSTED_HOSTS=["example.org"]))

    seen = app.test_client().get("/whoami", headers=FORWARDED).get_json()

    # The client's own "6.6.6.6" is further left than the one proxy: ignored.
    assert seen == {"addr": "203.0.113.7", "scheme": "https", "host": "example.org"}


def test_a_prefix_the_proxy_does_not_set_is_not_believed(make_app):
    app = _whoami(make_app(TRUSTED_PROXIES=1, TRUSTED_HOSTS=["example.org"]))

    response = app.test_client().get("/", headers={**FORWARDED, "X-Forwarded-Prefix": "//evil.example"})

    assert "evil.example" not in response.headers.get("Location", "")


def test_a_token_checked_on_a_replica_is_not_cached_for_later_requests(replicated):
    client = replicated.test_client()
    cache = replicated.extensions[auth._TOKENS]
    cache.entries.clear()

    assert target(client.get("/api/users")) == "replica"
    assert not cache.entries  # a revocation the replica has not replayed must not outlive this request

    client.post("/api/users", json={"name": "Cached", "email": "cached@replica.example.com"})
    assert cache.entries  # read on the primary: cached


def test_without_trusted_proxies_forwarded_headers_are_ignored(make_app):
    app = _whoami(make_app())

    seen = app.test_client().get("/whoami", headers=FORWARDED).get_json()

    assert seen == {"addr": "127.0.0.1", "scheme": "http", "host": "localhost"}
