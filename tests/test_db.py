"""The engine: one per app, psycopg2 for PostgreSQL, and the options each backend needs."""

import logging
import sqlite3
import sys
import threading
import time

import pytest
from sqlalchemy import event, make_url, text
from sqlalchemy.exc import IntegrityError

from config import Config
from webapp.db import get_engine
from webapp.engine import database_url

from helpers import SETTINGS, assert_problem, pg_engine_options, signed_in, users_table_held


@pytest.mark.parametrize(
    "raw", ["postgresql://u@db:5432/app", "postgres://u@db:5432/app", "postgresql+psycopg2://u@db:5432/app"]
)
def test_postgresql_urls_use_psycopg2(raw):
    url = database_url({**SETTINGS, "DATABASE_URL": raw}, "/unused")

    assert url.drivername == "postgresql+psycopg2"
    assert (url.host, url.port, url.database, url.username) == ("db", 5432, "app", "u")


def test_without_database_url_the_default_is_a_sqlite_file_in_the_instance_folder(tmp_path):
    url = database_url({**SETTINGS, "DATABASE_URL": None}, str(tmp_path / "instance"))

    assert url.drivername == "sqlite"
    assert url.database == str(tmp_path / "instance" / "webapp.sqlite3")
    assert (tmp_path / "instance").is_dir()


def test_postgresql_pool_is_recycled_sized_for_every_thread_and_quick_to_give_up():
    options = pg_engine_options(GUNICORN_THREADS=8)

    assert options["pool_pre_ping"] is False  # by default only idle connections are pinged (test_pool.py)
    assert options["pool_recycle"] == Config.DB_POOL_RECYCLE
    assert options["pool_size"] >= 8
    assert options["pool_timeout"] <= 10
    assert options["connect_args"]["connect_timeout"] == Config.DB_CONNECT_TIMEOUT


def test_ping_after_idle_0_pings_every_checkout():
    assert pg_engine_options(DB_PING_AFTER_IDLE=0)["pool_pre_ping"] is True


def test_an_explicit_pool_size_wins_over_the_thread_count():
    assert pg_engine_options(GUNICORN_THREADS=4, DB_POOL_SIZE=12)["pool_size"] == 12


def test_the_app_engine_for_postgresql_urls_is_psycopg2(make_app, database_url, backend):
    engine = get_engine(make_app(DATABASE_URL=database_url.replace("postgresql+psycopg2://", "postgresql://")))
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        dbapi_class = type(connection.connection.dbapi_connection)

    expected = "sqlite3" if backend == "sqlite" else "psycopg2"
    assert engine.dialect.driver == ("pysqlite" if backend == "sqlite" else "psycopg2")
    assert expected in {cls.__module__.split(".")[0] for cls in dbapi_class.__mro__}  # SQLite's is a subclass


# -- SQLite, always tested: it is the embedded default ------------------------------


@pytest.fixture
def sqlite_app(make_app):
    return make_app()  # a throwaway SQLite file, whatever the backend under test


def test_sqlite_connections_use_wal_a_busy_timeout_and_foreign_keys(sqlite_app):
    with get_engine(sqlite_app).connect() as connection:
        pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("busy_timeout") == sqlite_app.config["SQLITE_BUSY_TIMEOUT_MS"]
        assert pragma("foreign_keys") == 1


def test_sqlite_connections_may_be_used_from_another_thread(sqlite_app):
    engine = get_engine(sqlite_app)
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    errors = []

    def reuse_pooled_connection():
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as error:  # pragma: no cover - the failure we test against
            errors.append(error)

    thread = threading.Thread(target=reuse_pooled_connection)
    thread.start()
    thread.join()

    assert errors == []


def _begins(app):
    """Record the BEGIN statements SQLite runs, as its own trace sees them."""
    seen = []

    def trace(dbapi_connection, record, proxy):
        dbapi_connection.set_trace_callback(lambda sql: seen.append(sql) if sql.startswith("BEGIN") else None)

    event.listen(get_engine(app), "checkout", trace)
    return seen


def test_sqlite_writes_begin_immediate_and_reads_begin_nothing(sqlite_app):
    from webapp.domain.models import Base

    Base.metadata.create_all(get_engine(sqlite_app))
    client = signed_in(sqlite_app).test_client()
    begins = _begins(sqlite_app)

    client.get("/api/users")  # a read-only request reads in autocommit
    client.post("/api/users", json={"name": "Ada", "email": "ada@example.com"})

    assert begins == ["BEGIN IMMEDIATE"]


def test_sqlite_concurrent_writers_wait_their_turn_instead_of_failing(sqlite_app):
    # Updates read before they write: with a plain deferred BEGIN, a writer whose
    # snapshot went stale gets "database is locked" at once, busy timeout or not.
    from webapp.domain.models import Base

    Base.metadata.create_all(get_engine(sqlite_app))
    signed_in(sqlite_app)
    ids = [
        sqlite_app.test_client().post("/api/users", json={"name": "W", "email": f"w{n}@example.com"}).get_json()["id"]
        for n in range(2)
    ]
    writers, per_writer = 8, 10
    barrier = threading.Barrier(writers)
    statuses = []

    def write(n):
        client = sqlite_app.test_client()
        barrier.wait()
        for i in range(per_writer):
            statuses.append(client.patch(f"/api/users/{ids[i % 2]}", json={"name": f"W{n}.{i}"}).status_code)
            statuses.append(client.post("/api/users", json={"name": "W", "email": f"w{n}.{i}@example.com"}).status_code)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200] * writers * per_writer + [201] * writers * per_writer


def test_a_sqlite_writer_that_waits_out_the_busy_timeout_gets_a_503_and_writes_nothing(make_app):
    from webapp.domain.models import Base

    app = make_app(SQLITE_BUSY_TIMEOUT_MS=200)
    Base.metadata.create_all(get_engine(app))
    client = signed_in(app).test_client()
    client.get("/api/users")  # the token is checked, and cached, before the lock is taken

    with users_table_held(app.config["DATABASE_URL"]):  # another writer has the write lock
        response = client.post("/api/users", json={"name": "Late", "email": "late@example.com"})

    assert_problem(response, 503)
    emails = [user["email"] for user in client.get("/api/users").get_json()["items"]]
    assert emails and "late@example.com" not in emails


def _inside(thread, function):
    """Wait until `thread` is running the function of that name; False if it never does."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(thread.ident)
        while frame is not None:
            if frame.f_code.co_name == function:
                return True
            frame = frame.f_back
        time.sleep(0.01)
    return False


def _hold_the_write_lock(app):
    """Begin a write transaction on `app`'s own engine, in this thread; the caller ends it."""
    connection = get_engine(app).connect()
    transaction = connection.begin()
    connection.execute(text("UPDATE users SET name = name WHERE id = 0"))
    return connection, transaction


def test_sqlite_writers_of_one_process_wait_in_line_before_asking_sqlite_for_the_lock(sqlite_app):
    # SQLite's busy handler retries after sleeps growing to 100 ms; the line hands over at once.
    from webapp.domain.models import Base

    Base.metadata.create_all(get_engine(sqlite_app))
    client = signed_in(sqlite_app).test_client()
    client.get("/api/users")  # the token is checked and cached
    begins = _begins(sqlite_app)
    statuses = []
    second = threading.Thread(
        target=lambda: statuses.append(
            client.post("/api/users", json={"name": "Next", "email": "next@example.com"}).status_code
        )
    )

    connection, first = _hold_the_write_lock(sqlite_app)
    second.start()
    assert _inside(second, "begin_immediate")
    time.sleep(0.2)  # time enough to send a BEGIN, had it not been waiting for the first writer
    assert second.is_alive() and begins == ["BEGIN IMMEDIATE"]  # it waits in its process, not in SQLite
    first.commit()
    connection.close()
    second.join(timeout=10)

    assert statuses == [201]
    assert begins == ["BEGIN IMMEDIATE", "BEGIN IMMEDIATE"]


def test_a_sqlite_writer_waiting_for_another_process_asks_for_the_lock_every_half_millisecond(sqlite_app):
    # SQLite's busy handler would send one BEGIN and sleep up to 100 ms between its
    # own tries, through most of the moments another process's writers leave the lock free.
    from webapp.domain.models import Base
    from webapp.engine import POLL_SECONDS

    Base.metadata.create_all(get_engine(sqlite_app))
    client = signed_in(sqlite_app).test_client()
    client.get("/api/users")  # the token is checked and cached
    statements = []
    event.listen(
        get_engine(sqlite_app),
        "checkout",
        lambda dbapi_connection, record, proxy: dbapi_connection.set_trace_callback(statements.append),
    )
    statuses = []
    writer = threading.Thread(
        target=lambda: statuses.append(
            client.post("/api/users", json={"name": "Next", "email": "next@example.com"}).status_code
        )
    )

    with users_table_held(sqlite_app.config["DATABASE_URL"]):  # the writer of another process
        started = time.monotonic()
        writer.start()
        assert _inside(writer, "_take_write_lock")
        time.sleep(0.04)  # within PATIENT_SECONDS: every try half a millisecond apart
    writer.join(timeout=10)
    waited = time.monotonic() - started

    assert statuses == [201]
    off = statements.index("PRAGMA busy_timeout = 0")
    restored = statements.index(f"PRAGMA busy_timeout = {sqlite_app.config['SQLITE_BUSY_TIMEOUT_MS']}", off)
    tries = statements[off + 1 : restored]
    assert set(tries) == {"BEGIN IMMEDIATE"}
    assert 5 <= len(tries) <= waited / POLL_SECONDS + 1  # many tries, none without its pause
    # Every other statement has SQLite's busy handler back.
    assert statements[restored + 1].startswith("INSERT INTO users")


def test_a_sqlite_writer_waits_in_line_and_for_the_lock_within_one_busy_timeout(make_app):
    from webapp.domain.models import Base
    from webapp.engine import _writers_queue

    app = make_app(SQLITE_BUSY_TIMEOUT_MS=500)
    Base.metadata.create_all(get_engine(app))
    client = signed_in(app).test_client()
    client.get("/api/users")  # the token is checked and cached
    line = _writers_queue(make_url(app.config["DATABASE_URL"]).database)

    with users_table_held(app.config["DATABASE_URL"]):  # another process holds the lock throughout
        line.acquire()  # and a writer of this one is ahead in line, for 0.4 s
        threading.Timer(0.4, line.release).start()
        started = time.monotonic()
        response = client.post("/api/users", json={"name": "Late", "email": "late@example.com"})
        waited = time.monotonic() - started

    assert_problem(response, 503)
    assert 0.5 <= waited < 0.8  # 0.5 s in all, not 0.4 in line and 0.5 more for the lock
    assert get_engine(app).pool.checkedin() == 1  # the requests' one connection, its busy timeout set back
    with get_engine(app).connect() as connection:
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 500


def test_a_sqlite_writer_in_line_behind_a_stuck_one_gets_a_503_and_the_line_moves_on(make_app):
    from webapp.domain.models import Base

    app = make_app(SQLITE_BUSY_TIMEOUT_MS=200)
    Base.metadata.create_all(get_engine(app))
    client, other = signed_in(app).test_client(), app.test_client()
    client.post("/api/users", json={"name": "Ada", "email": "ada@example.com"})
    other.get("/api/users")  # the token is checked and cached
    late = []
    writer = threading.Thread(
        target=lambda: late.append(other.post("/api/users", json={"name": "L", "email": "late@example.com"}))
    )

    connection, stuck = _hold_the_write_lock(app)
    writer.start()
    writer.join(timeout=10)
    stuck.rollback()
    connection.close()

    assert_problem(late[0], 503)
    # Writers get through again, one that failed in between included.
    assert client.post("/api/users", json={"name": "Ada", "email": "ada@example.com"}).status_code == 409
    assert client.post("/api/users", json={"name": "Bo", "email": "bo@example.com"}).status_code == 201
    emails = [user["email"] for user in client.get("/api/users").get_json()["items"]]
    assert "late@example.com" not in emails


def test_a_sqlite_commit_that_fails_leaves_no_write_lock_behind(make_app):
    # SQLite keeps a transaction whose COMMIT failed on a deferred constraint open,
    # and SQLAlchemy sends no ROLLBACK after a failed COMMIT.
    app = make_app(SQLITE_BUSY_TIMEOUT_MS=200)
    engine = get_engine(app)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        connection.exec_driver_sql(
            "CREATE TABLE child (parent_id INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )

    with engine.connect() as connection:
        connection.exec_driver_sql("INSERT INTO child VALUES (1)")
        with pytest.raises(IntegrityError):
            connection.commit()

    other = sqlite3.connect(make_url(app.config["DATABASE_URL"]).database, timeout=0.2, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # SQLite's own lock is free
    other.execute("ROLLBACK")
    other.close()
    done = []
    writer = threading.Thread(target=lambda: done.append(_insert_parent(engine)))
    writer.start()
    writer.join(timeout=10)
    assert done == [1]  # and so is the process's, for a writer of another thread


def _insert_parent(engine):
    with engine.begin() as connection:
        connection.exec_driver_sql("INSERT INTO parent VALUES (1)")
        return connection.exec_driver_sql("SELECT count(*) FROM parent").scalar()


def test_sql_echo_logs_every_statement(make_app, caplog):
    app = make_app(SQL_ECHO=True)
    with caplog.at_level(logging.INFO, logger="sqlalchemy.engine"):
        app.test_client().get("/healthz")

    assert any("SELECT 1" in record.getMessage() for record in caplog.records)
