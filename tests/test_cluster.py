"""The production topology, for real: `make cluster`'s own script (deploy/cluster.py)
starts nginx, two gunicorn instances, a PgBouncer in front of a primary and one in
front of its streaming replica; the tests drive it through nginx.

One cluster serves the module, bounded in time and count. The tests run in file
order, the one that kills an instance last. They skip only where nginx or
pgbouncer cannot be installed, and never under CI=true.
"""

import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, delete, insert, select
from test_load import crud_client

from webapp.domain.models import User

import pg_cluster as pg
from helpers import add_admin_to, replay_paused
from server import ROOT, Metrics, call, free_port, run_clients, wait_for

sys.path.insert(0, str(ROOT / "deploy"))
import cluster as deploy  # noqa: E402

START_SECONDS = 120
CUT = -1  # a response that began and was cut off
TARGET = re.compile(r'desc="\d+ queries on (primary|replica)"')


class Topology:
    """The running script and what it said about itself (its READY line)."""

    def __init__(self, process: subprocess.Popen, log: Path, info: dict) -> None:
        self.process, self.log, self.info = process, log, info
        self.url = info["url"]
        self.primary_url = info["primary"]["url"]
        self.replica_url = info["replica"]["url"]
        self.headers: dict[str, str] = {}

    def replica(self) -> pg.Cluster:
        return pg.Cluster.attach(
            Path(self.info["bindir"]), Path(self.info["replica"]["dir"]), self.info["replica"]["port"]
        )

    def client(self) -> "Sticky":
        return Sticky(self.url, self.headers)

    def instance_metrics(self) -> list[Metrics]:
        """Each instance's /metrics, scraped from the instance itself (nginx denies it)."""
        return [Metrics(call("GET", f"{each['url']}/metrics").body.decode()) for each in self.info["instances"]]

    def statements(self, target: str) -> float:
        return sum(m.value("webapp_db_statements_total", target=target) for m in self.instance_metrics())


class Sticky:
    """One client through nginx, as a well-behaved API client is: it sends back the
    X-Read-After of its last write, so it always reads what it wrote."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url, self.headers = url, headers
        self.read_after: str | None = None

    def request(self, method, path, body=None, headers=None, timeout: float = 30):
        sent = {**self.headers, **({"X-Read-After": self.read_after} if self.read_after else {}), **(headers or {})}
        reply = call(method, self.url + path, body, sent, timeout)
        if "X-Read-After" in reply.headers:
            self.read_after = reply.headers["X-Read-After"]
        return reply

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, body, **kwargs):
        return self.request("POST", path, body, **kwargs)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    problem = deploy.install_missing()
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem}; under CI the cluster tests must run, not skip")
        pytest.skip(problem)
    log = tmp_path_factory.mktemp("cluster") / "cluster.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "deploy" / "cluster.py")],
            cwd=ROOT,
            env={**os.environ, "PORT": str(free_port())},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_SECONDS
        while not (ready := [line for line in log.read_text().splitlines() if line.startswith("READY ")]):
            assert process.poll() is None, "make cluster's script exited:\n" + log.read_text()
            assert time.monotonic() < deadline, "make cluster's script did not get ready:\n" + log.read_text()
            time.sleep(0.2)
        topology = Topology(process, log, json.loads(ready[0].removeprefix("READY ")))
        topology.headers = {"Authorization": f"Bearer {add_admin_to(topology.primary_url).token}"}
        wait_for(lambda: replica_caught_up(topology), seconds=20)
        yield topology
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError("make cluster's script did not stop on SIGTERM:\n" + log.read_text()) from None
    # Ctrl-C or SIGTERM stops and removes it all.
    assert process.returncode == 0, log.read_text()
    assert not Path(topology.info["dir"]).exists()
    assert not any(_accepts(port) for port in topology.info["pgbouncers"])


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def scalar(url: str, sql: str):
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            return connection.exec_driver_sql(sql).scalar()
    finally:
        engine.dispose()


def replica_caught_up(topology) -> bool:
    primary = scalar(topology.primary_url, "SELECT pg_current_wal_lsn()::text")
    return bool(scalar(topology.replica_url, f"SELECT pg_last_wal_replay_lsn() >= '{primary}'::pg_lsn"))


def target(reply) -> str | None:
    match = TARGET.search(reply.headers.get("Server-Timing", ""))
    return match.group(1) if match else None


# -- the front door -----------------------------------------------------------------


def test_nginx_passes_the_request_id_and_denies_metrics_from_outside(cluster):
    client = cluster.client()

    mine = client.get("/api/users", headers={"X-Request-ID": "from-the-caller"})
    fresh = client.get("/api/users")

    assert mine.status == 200 and mine.headers["X-Request-ID"] == "from-the-caller"
    assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["X-Request-ID"])  # nginx's $request_id
    assert call("GET", cluster.url + "/metrics").status == 403
    assert all(m.samples for m in cluster.instance_metrics())  # each instance still serves its scraper


@pytest.mark.parametrize(
    "head, status",
    [
        ("POST /api/users HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 9000000\r\n", 413),
        ("GET /api/users HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + "x" * 9000 + "\r\n", 431),
        ("GET /api/users?q=" + "x" * 9000 + " HTTP/1.1\r\nHost: 127.0.0.1\r\n", 414),
        ("GET /api/users HTTP/1.1\r\nHost: 127.0.0.1\r\nBroken header line\r\n", 400),
    ],
)
def test_what_nginx_refuses_itself_is_problem_json(cluster, head, status):
    port = int(cluster.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall((head + "Connection: close\r\n\r\n").encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head_part, _, body = answer.partition(b"\r\n\r\n")

    assert head_part.startswith(f"HTTP/1.1 {status} ".encode()), head_part[:80]
    assert b"Content-Type: application/problem+json" in head_part
    assert json.loads(body)["status"] == status


def test_the_roles_timeouts_hold_behind_pgbouncer(cluster):
    bouncer = f"postgresql+psycopg2://webapp@127.0.0.1:{cluster.info['pgbouncers'][0]}/webapp"

    assert scalar(bouncer, "SHOW statement_timeout") == "15s"
    assert scalar(bouncer, "SHOW idle_in_transaction_session_timeout") == "30s"


# -- load -----------------------------------------------------------------------------


def test_32_clients_of_mixed_load_through_nginx_and_pgbouncer_get_no_5xx_and_the_rows_match(cluster):
    replica_before = cluster.statements("replica")

    seen = run_clients(32, 6, 2000, lambda n, budget: crud_client(cluster.client())(n, budget))

    statuses = [status for each in seen for _, status in each.statuses]
    assert len(statuses) >= 32 * 5
    assert [s for s in statuses if s >= 500] == []
    assert [surprise for each in seen for surprise in each.surprises] == []
    expected = {}
    for each in seen:
        expected.update(each.model)
    engine = create_engine(cluster.primary_url)
    with engine.begin() as connection:
        rows = connection.execute(select(User.id, User.name, User.email).where(User.email.like("%@load.example.com")))
        stored = {row.id: (row.name, row.email) for row in rows}
        connection.execute(delete(User).where(User.email.like("%@load.example.com")))
    engine.dispose()
    assert stored == expected
    assert cluster.statements("replica") > replica_before  # the replica did carry reads


def test_with_replay_paused_a_writer_reads_its_write_every_time_and_others_keep_reading(cluster):
    writer, other = cluster.client(), cluster.client()
    reads, stale = [], 0
    with replay_paused(cluster.replica_url):
        for n in range(15):
            created = writer.post("/api/users", {"name": f"Paused {n}", "email": f"paused{n}@replay.example.com"})
            assert created.status == 201, created.body
            path = created.headers["Location"].removeprefix(cluster.url)
            renamed = writer.request("PATCH", path, {"name": f"Paused {n} renamed"})
            assert renamed.status == 200
            again = writer.get(path)
            reads.append((again.status, again.json().get("name"), target(again)))
            theirs = other.get(path)  # no X-Read-After: any usable replica
            assert theirs.status in (200, 404)
            stale += theirs.status == 404
            assert other.get("/api/users?per_page=5").status == 200
    assert reads == [(200, f"Paused {n} renamed", "primary") for n in range(15)]
    assert stale > 0  # the replica really was behind: a reader without the header missed rows


def test_a_replica_stopped_under_load_costs_no_5xx_and_reads_move_to_the_primary_and_back(cluster):
    replica = cluster.replica()
    targets: list[tuple[float, str | None]] = []
    statuses: list[int] = []
    lock = threading.Lock()
    created = cluster.client().post("/api/users", {"name": "R", "email": "r@stop.example.com"})
    path = created.headers["Location"].removeprefix(cluster.url)
    wait_for(lambda: replica_caught_up(cluster), seconds=10)

    done = threading.Event()

    def reader(n, budget):
        client = cluster.client()
        # A restarted replica is usable again as soon as it is within the lag limit, possibly
        # before it has replayed R again: a client that wants R must say so (read-your-writes).
        client.read_after = created.headers["X-Read-After"]
        while budget.take() and not done.is_set():
            # When it was sent: on a busy machine a reply can be read long after the
            # server answered it, and only a read sent after the stop says anything.
            sent = time.monotonic()
            reply = client.get(path if n % 2 else "/api/users?per_page=10")
            with lock:
                statuses.append(reply.status)
                targets.append((sent, target(reply)))
            time.sleep(0.02)

    def stop_and_start():
        try:
            time.sleep(1.5)
            replica.stop(mode="immediate")
            stopped.append(time.monotonic())  # down for certain only once pg_ctl has returned
            time.sleep(4)
            replica.start()
            started.append(time.monotonic())
            # Back within a few checks: wait for reads on it (bounded), then end the load.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not any(t == "replica" for at, t in targets if at > started[0]):
                time.sleep(0.2)
        finally:
            done.set()

    stopped, started = [], []
    chaos = threading.Thread(target=stop_and_start)
    chaos.start()
    run_clients(8, 40, 20_000, reader)
    chaos.join()

    assert [s for s in statuses if s != 200] == []
    # Left out at once (a failed read, or the next check), not after REPLICA_MAX_LAG_SECONDS.
    during = [t for at, t in targets if stopped[0] + 1.5 < at < started[0]]
    assert during and set(during) == {"primary"}
    back = [at for at, t in targets if at > started[0] and t == "replica"]
    assert back, "reads went back to the replica once it returned"
    assert back[0] - started[0] < 15


# -- slow clients -------------------------------------------------------------------


def latencies(cluster, count: int = 20) -> list[float]:
    client = cluster.client()
    seconds = []
    for _ in range(count):
        reply = client.get("/api/users?per_page=5")
        assert reply.status == 200
        seconds.append(reply.seconds)
    return seconds


def app_at_rest(cluster) -> bool:
    """Every instance has removed every session it opened, and holds no connection."""
    for metrics in cluster.instance_metrics():
        opened = metrics.value("webapp_db_sessions_opened_total")
        if opened != metrics.value("webapp_db_sessions_removed_total"):
            return False
        if any(metrics.per_worker("webapp_db_pool_checked_out").values()):
            return False
    return True


def test_50_slowloris_connections_leave_other_requests_their_normal_latency(cluster):
    baseline = statistics.median(latencies(cluster))
    port = int(cluster.url.rsplit(":", 1)[1])
    sockets = []
    try:
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /api/users HTTP/1.1\r\nHost: slow\r\n")  # and never the blank line
            sockets.append(sock)
        during = latencies(cluster)
        for sock in sockets:  # still dribbling
            sock.sendall(b"X-Slow: 1\r\n")
        during += latencies(cluster)
    finally:
        for sock in sockets:
            sock.close()

    # Normal latency: the median as before (give or take a loaded machine), no request held up.
    assert statistics.median(during) < 3 * baseline + 0.05
    assert max(during) < max(2.0, 10 * baseline)


# Rows of about 400 bytes: an export of 8 MB, more than the kernel's socket buffers hold, so
# that straight to gunicorn a half-read one would hold its thread (measured: the next request
# to that instance timed out); through nginx it does not.
EXPORTED = 20_000
EXPORT_EMAIL = "e" * 50 + "{}@" + "a" * 60 + "." + "b" * 60 + "." + "c" * 40 + ".export.example.com"


def test_16_half_read_csv_exports_leave_other_requests_answered_quickly(cluster):
    engine = create_engine(cluster.primary_url)
    with engine.begin() as connection:
        connection.execute(
            insert(User), [{"name": f"Export {n} {'x' * 80}", "email": EXPORT_EMAIL.format(n)} for n in range(EXPORTED)]
        )
    engine.dispose()
    wait_for(lambda: replica_caught_up(cluster), seconds=20)
    baseline = statistics.median(latencies(cluster))
    port = int(cluster.url.rsplit(":", 1)[1])
    token = cluster.headers["Authorization"]
    sockets = []
    try:
        for _ in range(16):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing ahead
            sock.settimeout(60)
            sock.connect(("127.0.0.1", port))
            # HTTP/1.0: the body unchunked, to the end of the connection
            sock.sendall(f"GET /api/users.csv HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: {token}\r\n\r\n".encode())
            sockets.append((sock, b""))
        for n, (sock, _) in enumerate(sockets):
            sockets[n] = (sock, sock.recv(4096))  # begun, and then left unread
            assert sockets[n][1].startswith(b"HTTP/1.1 200")
        # The app writes each export into nginx's buffers as fast as it can make it,
        # then its thread and session are free, however long the client takes to read:
        # soon every session the exports opened is removed, with all 16 still unread.
        # (Straight to gunicorn, each would hold its thread and session until read.)
        wait_for(lambda: app_at_rest(cluster), seconds=60)
        during = latencies(cluster)
        # Still held: one of them, read now, has the whole export waiting for it in nginx.
        sock, rest = sockets[0]
        while chunk := sock.recv(1 << 16):
            rest += chunk
        assert rest.count(b".export.example.com") == EXPORTED
    finally:
        for sock, _ in sockets:
            sock.close()
        engine = create_engine(cluster.primary_url)
        with engine.begin() as connection:
            connection.execute(delete(User).where(User.email.like("%.export.example.com")))
        engine.dispose()

    # Normal latency: the median as before (give or take a loaded machine), no request held up.
    assert statistics.median(during) < 3 * baseline + 0.05
    assert max(during) < max(2.0, 10 * baseline)


# -- last: it leaves one instance dead ------------------------------------------------


def test_one_instance_killed_under_load_fails_no_get_and_the_other_carries_on(cluster):
    created = cluster.client().post("/api/users", {"name": "K", "email": "k@kill.example.com"})
    path = created.headers["Location"].removeprefix(cluster.url)
    wait_for(lambda: replica_caught_up(cluster), seconds=10)  # readers without its X-Read-After find it too
    seen: list[tuple[str, int, float]] = []
    lock = threading.Lock()
    victim = cluster.info["instances"][0]["pid"]
    killed = []

    def mixed(n, budget):
        client = cluster.client()
        made = 0
        while budget.take():
            method = "POST" if n % 4 == 0 else "GET"
            try:
                if method == "POST":
                    made += 1
                    reply = client.post("/api/users", {"name": f"K{n}", "email": f"k{n}-{made}@kill.example.com"})
                else:
                    reply = client.get(path if n % 2 else "/api/users?per_page=10")
                status = reply.status
            except http.client.IncompleteRead:
                # A head without its whole body. gunicorn sends these small answers' head
                # and body in one call (webapp/serving.py), so a kill leaves nginx nothing,
                # which it retries, or all of it: never seen, counted to say so if it were.
                status = CUT
            with lock:
                seen.append((method, status, time.monotonic()))

    def kill():
        time.sleep(1.5)
        os.killpg(victim, signal.SIGKILL)  # master and workers, mid-request
        killed.append(time.monotonic())

    killer = threading.Thread(target=kill)
    killer.start()
    run_clients(16, 6, 4000, mixed)
    killer.join()

    gets = [status for method, status, _ in seen if method == "GET"]
    assert len(gets) > 100
    assert set(gets) == {200}  # refused, reset and empty connections were retried on the other instance
    after = [status for _, status, at in seen if at > killed[0] + 0.5]
    assert len(after) > 50 and set(after) <= {200, 201}  # the other instance answers everything
    posts = [status for method, status, _ in seen if method == "POST"]
    assert set(posts) <= {201, 502, CUT}  # a POST in flight on the dead instance is never retried by nginx
