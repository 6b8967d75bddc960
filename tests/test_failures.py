"""Database failures survived by the real server, without restarting it.

They run on the throwaway cluster (pg_cluster), which the restart test stops and
starts; the shared PostgreSQL server is never touched. They need no
TEST_DATABASE_URL, so they run in the SQLite and PostgreSQL runs alike. The
link itself fails through a fault proxy (faultproxy.py): cut, slowed, black-holed.
Last, the server's own restarts under load: a reload by SIGHUP, workers
recycled by max_requests.
"""

import signal
import threading
import time

import pytest
from flask import jsonify
from sqlalchemy import create_engine, make_url, text

from webapp import deadline
from webapp.db import Session, get_engine
from webapp.domain.models import User

from faultproxy import FaultProxy
from helpers import SLACK, app_backends, assert_problem, signed_in, users_table_held
from server import run_clients, wait_for

POOL_TIMEOUT = 2


def is_problem_503(reply) -> bool:
    return (
        reply.status == 503
        and reply.headers.get("Content-Type") == "application/problem+json"
        and reply.json()["status"] == 503
        and int(reply.headers.get("Retry-After", 0)) > 0
    )


def test_a_database_restart_under_load_is_quick_503s_then_no_errors_soon_after(serve, pg_cluster, cluster_database):
    # No recycling by max_requests: a new worker here could only mean one that died.
    server = serve(cluster_database, DB_POOL_TIMEOUT=str(POOL_TIMEOUT), GUNICORN_MAX_REQUESTS="0")
    ids = [server.post("/api/users", {"name": f"R{n}", "email": f"r{n}@example.com"}).json()["id"] for n in range(8)]
    workers = set(server.metrics().per_worker("webapp_db_pool_size"))

    def client(n, budget):
        replies = []
        while budget.take():
            if n % 2:
                replies.append(server.get(f"/api/users/{ids[n]}"))
            else:
                replies.append(server.post("/api/users", {"name": "L", "email": f"l{n}-{len(replies)}@x.com"}))
        return replies

    results = []
    load = threading.Thread(target=lambda: results.extend(run_clients(8, 8, 40_000, client)))
    load.start()
    time.sleep(1.5)
    stopping = time.monotonic()
    pg_cluster.stop(mode="fast")  # clients disconnected, transactions rolled back
    down = time.monotonic()
    time.sleep(2)
    starting = time.monotonic()
    pg_cluster.start()
    up = time.monotonic()
    load.join(timeout=60)

    replies = [reply for seen in results for reply in seen]
    before = [reply for reply in replies if reply.started + reply.seconds < stopping]
    outage = [reply for reply in replies if reply.started >= down and reply.started + reply.seconds < starting]
    soon_after = [reply for reply in replies if reply.started >= up + 2]
    assert {reply.status for reply in replies} <= {200, 201, 503}  # never a 500
    assert before and {reply.status for reply in before} <= {200, 201}
    assert len(outage) >= 10 and all(is_problem_503(reply) for reply in outage)
    assert all(reply.seconds < POOL_TIMEOUT for reply in replies if reply.status == 503)  # no hang
    assert len(soon_after) >= 10 and {reply.status for reply in soon_after} <= {200, 201}
    assert set(server.metrics().per_worker("webapp_db_pool_size")) == workers  # the same workers
    assert server.output().count("Booting worker") == 2


def test_an_exhausted_pool_is_a_503_after_pool_timeout_and_recovers_by_itself(serve, cluster_database):
    # One connection per worker; requests stuck on a locked table hold both.
    server = serve(
        cluster_database, DB_POOL_SIZE="1", DB_MAX_OVERFLOW="0", DB_POOL_TIMEOUT="1", DB_STATEMENT_TIMEOUT="60"
    )
    holders, further = [], []

    def send(into, path="/api/users"):
        thread = threading.Thread(target=lambda: into.append(server.get(path)))
        thread.start()
        return thread

    def stuck_on_the_lock():
        return len([b for b in app_backends(cluster_database) if b["wait_event_type"] == "Lock"])

    with users_table_held(cluster_database):
        threads = []
        while stuck_on_the_lock() < 2 and len(threads) < 40:  # until both workers' connections are held
            threads.append(send(holders))
            time.sleep(0.2)
        assert stuck_on_the_lock() == 2
        more = [send(further) for _ in range(4)] + [send(further, "/healthz")]
        for thread in more:
            thread.join(timeout=30)
    for thread in threads:
        thread.join(timeout=30)

    assert len(further) == 5 and all(is_problem_503(reply) for reply in further)
    assert all(0.9 <= reply.seconds < 1 + 3 for reply in further)  # after pool_timeout, not later
    assert sorted(reply.status for reply in holders).count(200) == 2  # the two that held on
    assert {reply.status for reply in holders} <= {200, 503}
    assert [server.get("/api/users").status for _ in range(8)] == [200] * 8
    wait_for(lambda: set(server.metrics().per_worker("webapp_db_pool_checked_out").values()) == {0}, seconds=3)


# -- the end of a request on a connection that died -----------------------------------


def test_a_connection_lost_after_the_last_statement_still_ends_the_request_cleanly(make_app, cluster_database):
    app = signed_in(make_app(DATABASE_URL=cluster_database))
    killer = create_engine(cluster_database, isolation_level="AUTOCOMMIT")

    @app.get("/lost")
    def lost():
        pid = Session().execute(text("SELECT pg_backend_pid()")).scalar()
        with killer.connect() as connection:  # as a restart would, between statement and teardown
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        return jsonify(pid=pid)

    client = app.test_client()  # one thread for both requests, as a gunicorn thread would be
    try:
        first = client.get("/lost")  # teardown's rollback fails on the dead connection
        gone = not Session.registry.has() and get_engine(app).pool.checkedout() == 0
        second = client.get("/api/users")  # the thread's next request starts clean
    finally:
        killer.dispose()

    assert first.status_code == 200
    assert gone
    assert second.status_code == 200


# -- connections killed under a running load ---------------------------------------------


def kill_app_connections(database_url: str) -> int:
    """Terminate every connection the app holds, as a failover or an idle cut-off would."""
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            return len(
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'webapp' AND datname = current_database()"
                    )
                ).all()
            )
    finally:
        engine.dispose()


def test_connections_killed_under_load_three_times_fail_no_read_and_no_write_is_lost(serve, cluster_database):
    server = serve(cluster_database)
    ids = [server.post("/api/users", {"name": f"K{n}", "email": f"k{n}@example.com"}).json()["id"] for n in range(8)]

    def client(n, budget):
        replies = []
        while budget.take():
            if n % 2:
                replies.append(("get", server.get(f"/api/users/{ids[n]}")))
            else:
                email = f"w{n}-{len(replies)}@example.com"
                replies.append((email, server.post("/api/users", {"name": "W", "email": email})))
        return replies

    results = []
    load = threading.Thread(target=lambda: results.extend(run_clients(8, 6, 40_000, client)))
    load.start()
    killed = []
    for _ in range(3):
        time.sleep(1.5)
        killed.append(kill_app_connections(cluster_database))
    load.join(timeout=60)

    replies = [pair for seen in results for pair in seen]
    reads = [reply for kind, reply in replies if kind == "get"]
    writes = [(email, reply) for email, reply in replies if email != "get"]
    assert all(count > 0 for count in killed)  # the app had connections open every time
    assert len(reads) > 100 and {reply.status for reply in reads} == {200}
    # A write whose COMMIT was in flight when its connection died may have happened
    # or not: the app answers 503 and lets the client decide. Any other write succeeds.
    assert {reply.status for _, reply in writes} <= {201, 503}
    assert all(is_problem_503(reply) for _, reply in writes if reply.status == 503)
    created = {email for email, reply in writes if reply.status == 201}
    engine = create_engine(cluster_database)
    with engine.connect() as connection:
        stored = set(connection.execute(text("SELECT email FROM users WHERE email LIKE 'w%'")).scalars())
    engine.dispose()
    assert created <= stored  # every 201 is there
    assert len(stored - created) <= sum(1 for _, reply in writes if reply.status == 503)


# -- a faulty link between the app and the database (faultproxy) -------------------------

CONNECT_TIMEOUT = 2  # libpq's smallest


@pytest.fixture
def proxy(cluster_database):
    """A FaultProxy in front of the throwaway cluster; its URL is `proxy.url`."""
    real = make_url(cluster_database)
    fault_proxy = FaultProxy(real.host, real.port).start()
    fault_proxy.url = real.set(port=fault_proxy.port).render_as_string(hide_password=False)
    yield fault_proxy
    fault_proxy.stop()


def users_and_their_inserts(database_url: str, prefix: str) -> tuple[set[str], list[str]]:
    """Emails starting with `prefix`: of the stored users, and of the insert audit rows."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            users = set(connection.execute(text("SELECT email FROM users")).scalars())
            audited = connection.execute(text("SELECT changes FROM audit_log WHERE action = 'insert'")).scalars()
            inserts = [changes["email"][1] for changes in audited]
    finally:
        engine.dispose()
    return {e for e in users if e.startswith(prefix)}, [e for e in inserts if e.startswith(prefix)]


def writes_and_reads(server, count: int, prefix: str, read_path: str = "/api/users"):
    """`count` client threads, not started: the odd ones create `<prefix><n>@x.com`, the
    even ones GET `read_path`. Their replies go to the list returned beside them."""
    replies: list = []

    def send(n: int) -> None:
        if n % 2:
            replies.append(server.post("/api/users", {"name": prefix, "email": f"{prefix}{n}@x.com"}))
        else:
            replies.append(server.get(read_path))

    return [threading.Thread(target=send, args=(n,)) for n in range(count)], replies


def lock_waiters(database_url: str) -> int:
    return len([b for b in app_backends(database_url) if b["wait_event_type"] == "Lock"])


def test_links_cut_mid_transaction_roll_back_whole_and_the_writes_run_again(serve, proxy, cluster_database):
    server = serve(proxy.url, DB_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT))
    replies = []
    with users_table_held(cluster_database):  # every write waits inside its transaction
        threads = [
            threading.Thread(
                target=lambda n=n: replies.append(server.post("/api/users", {"name": "C", "email": f"cut{n}@x.com"}))
            )
            for n in range(4)
        ]
        for thread in threads:
            thread.start()
        wait_for(lambda: lock_waiters(cluster_database) >= 4)
        assert proxy.cut() >= 4  # the link goes, mid-transaction; the writes reconnect and wait again
        time.sleep(0.5)
    for thread in threads:
        thread.join(timeout=30)

    # No COMMIT had been sent: each write was run once more, and happened exactly once.
    assert sorted(reply.status for reply in replies) == [201] * 4
    users, inserts = users_and_their_inserts(cluster_database, "cut")
    assert users == {f"cut{n}@x.com" for n in range(4)}
    assert sorted(inserts) == sorted(users)  # one history row each: nothing half-done


def test_latency_on_the_link_slows_requests_but_fails_none(serve, proxy):
    server = serve(proxy.url)
    proxy.latency(0.02)

    replies = [server.get("/api/users?per_page=5") for _ in range(3)]
    replies += [server.post("/api/users", {"name": "L", "email": f"slow{n}@x.com"}) for n in range(3)]

    assert [reply.status for reply in replies] == [200] * 3 + [201] * 3
    assert all(reply.seconds >= 0.02 for reply in replies)


def test_a_black_holed_database_is_a_quick_503_for_every_request_then_heals_by_itself(serve, proxy, cluster_database):
    pool_timeout = 1
    server = serve(proxy.url, DB_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT), DB_POOL_TIMEOUT=str(pool_timeout))
    assert server.get("/api/users").status == 200
    proxy.blackhole()
    proxy.cut()  # the connections in the pools are gone; new ones reach nothing

    senders, replies = writes_and_reads(server, 8, "bh")
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(timeout=60)
    proxy.blackhole(False)

    assert len(replies) == 8 and all(is_problem_503(reply) for reply in replies)
    assert max(reply.seconds for reply in replies) < CONNECT_TIMEOUT + pool_timeout + SLACK  # none hangs
    wait_for(lambda: server.get("/api/users").status == 200, seconds=10)  # healed, without a restart
    assert server.post("/api/users", {"name": "B", "email": "after@x.com"}).status == 201
    users, inserts = users_and_their_inserts(cluster_database, "bh")
    assert users == set() and inserts == []  # the refused writes left nothing


# The pooled connections were cut above, so only new connections were tried. A
# statement already sent when the link goes silent has its own bound: the deadline.

STATEMENT_TIMEOUT = 3  # the server's; room enough to see every request wait on the lock
STATEMENT_DEADLINE = STATEMENT_TIMEOUT + deadline.MARGIN
# Requests sent at once: as many as one worker has threads, so that none waits for
# a thread (gunicorn's workers share requests unevenly) and each timing is its own.
THREADS = 4


def test_requests_in_flight_when_the_link_black_holes_are_503s_at_the_deadline_then_heal(
    serve, proxy, cluster_database
):
    server = serve(proxy.url, DB_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT), DB_STATEMENT_TIMEOUT=str(STATEMENT_TIMEOUT))
    user = server.post("/api/users", {"name": "F", "email": "read-me@x.com"}).json()["id"]
    senders, replies = writes_and_reads(server, THREADS, "flight", read_path=f"/api/users/{user}")
    with users_table_held(cluster_database):  # each request's statement is sent, and waits
        for sender in senders:
            sender.start()
        wait_for(lambda: lock_waiters(cluster_database) >= THREADS)
        proxy.blackhole()
    # The lock is gone: the server answers, into the void; the writes wait for a COMMIT.
    for sender in senders:
        sender.join(timeout=60)
    proxy.blackhole(False)

    assert len(replies) == THREADS and all(is_problem_503(reply) for reply in replies)
    # At the deadline, and not run again (a second try would need a new connection first).
    assert all(STATEMENT_DEADLINE <= reply.seconds < STATEMENT_DEADLINE + deadline.TICK + SLACK for reply in replies)
    assert "the link is taken for gone" in server.output() and " again: " not in server.output()
    wait_for(lambda: server.get("/api/users").status == 200, seconds=10)  # healed, without a restart
    assert server.post("/api/users", {"name": "F", "email": "after@x.com"}).status == 201
    users, inserts = users_and_their_inserts(cluster_database, "flight")
    assert users == set() and inserts == []  # the server rolled back what the writes had begun


def test_a_commit_sent_into_a_black_holed_link_is_a_503_at_the_deadline_and_lands_nothing(
    make_app, proxy, cluster_database
):
    app = signed_in(make_app(DATABASE_URL=proxy.url, DB_STATEMENT_TIMEOUT=1))
    deadline_seconds = deadline.of(get_engine(app)).seconds  # DB_STATEMENT_TIMEOUT + the margin

    @app.post("/api/commit-into-the-void")
    def commit_into_the_void():
        session = Session()
        session.add(User(name="V", email="void@x.com"))
        session.flush()  # the row is written, inside the transaction...
        proxy.blackhole()  # ...and the link goes silent before the COMMIT
        session.commit()
        return jsonify(committed=True)

    client = app.test_client()
    started = time.monotonic()
    response = client.post("/api/commit-into-the-void")
    seconds = time.monotonic() - started
    proxy.blackhole(False)

    assert_problem(response, 503)
    assert deadline_seconds <= seconds < deadline_seconds + deadline.TICK + SLACK
    assert client.get("/api/users").status_code == 200  # a new connection, the link back
    users, inserts = users_and_their_inserts(cluster_database, "void")
    assert users == set() and inserts == []  # the server rolled the transaction back


def test_a_link_black_holed_under_idle_pooled_connections_is_503s_within_two_connect_timeouts(
    serve, proxy, cluster_database
):
    server = serve(proxy.url, DB_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT), DB_POOL_TIMEOUT="1")
    warm = [threading.Thread(target=lambda: server.get("/api/users")) for _ in range(8)]
    for thread in warm:  # connections in both workers' pools
        thread.start()
    for thread in warm:
        thread.join(timeout=30)
    proxy.blackhole()  # not cut: the pooled connections look alive...
    time.sleep(1.5)  # ...and have been idle long enough to be pinged first (DB_PING_AFTER_IDLE)

    senders, replies = writes_and_reads(server, THREADS, "ping")
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(timeout=60)
    proxy.blackhole(False)

    # A ping waits DB_CONNECT_TIMEOUT at most, like the new connection that replaces it.
    assert len(replies) == THREADS and all(is_problem_503(reply) for reply in replies)
    assert max(reply.seconds for reply in replies) < 2 * CONNECT_TIMEOUT + deadline.TICK + SLACK
    assert "the link is taken for gone" in server.output()
    wait_for(lambda: server.get("/api/users").status == 200, seconds=10)
    assert server.post("/api/users", {"name": "P", "email": "after@x.com"}).status == 201
    users, inserts = users_and_their_inserts(cluster_database, "ping")
    assert users == set() and inserts == []


# -- reloads and recycled workers under load -------------------------------------------------


def steady_load(server, seconds: float):
    """Reads and writes from 8 clients for `seconds`; the replies, and the emails written."""

    def client(n, budget):
        replies = []
        while budget.take():
            if n % 2:
                replies.append(server.get("/api/users?per_page=5"))
            else:
                replies.append(server.post("/api/users", {"name": "H", "email": f"h{n}-{len(replies)}@x.com"}))
        return replies

    return [reply for seen in run_clients(8, seconds, 20_000, client) for reply in seen]


def test_a_reload_by_sighup_under_load_fails_no_request(serve, cluster_database):
    server = serve(cluster_database, GUNICORN_MAX_REQUESTS="0")
    results = []
    load = threading.Thread(target=lambda: results.extend(steady_load(server, 6)))
    load.start()
    time.sleep(2)
    server.process.send_signal(signal.SIGHUP)
    load.join(timeout=90)

    assert len(results) > 50
    assert {reply.status for reply in results} <= {200, 201}, [r.body[:200] for r in results if r.status >= 300][:3]
    wait_for(lambda: server.output().count("Booting worker") >= 4)  # two new workers after the two first


def test_workers_recycled_by_max_requests_under_load_fail_no_request(serve, cluster_database):
    server = serve(cluster_database, GUNICORN_MAX_REQUESTS="40")

    results = steady_load(server, 6)

    assert len(results) > 50
    assert {reply.status for reply in results} <= {200, 201}, [r.body[:200] for r in results if r.status >= 300][:3]
    assert server.output().count("Booting worker") > 2  # workers were recycled
