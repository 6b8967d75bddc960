"""What the bench scripts share: a scratch database, gunicorn servers, a load generator.

Everything started here is stopped here: servers are terminated and scratch
databases dropped when their `with` block ends, whatever happened inside it.
"""

import base64
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
WRK_SCRIPTS = ROOT / "bench" / "wrk"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
# Every server runs with exactly these settings (and gunicorn.conf.py); the app
# keeps its defaults otherwise. BENCH_THREADS / BENCH_WORKERS change the shape.
GUNICORN_ENV = {
    "WEB_CONCURRENCY": os.environ.get("BENCH_WORKERS", "2"),
    "GUNICORN_THREADS": os.environ.get("BENCH_THREADS", "8"),
    "HOST": "127.0.0.1",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the database -------------------------------------------------------------------


@contextmanager
def scratch_database(server_url: str):
    """A new database on `server_url`'s server, dropped afterwards."""
    name = f"bench_{secrets.token_hex(4)}"
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        log(f"scratch database {name}")
        base, _, _ = server_url.rpartition("/")
        yield f"{base}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
        log(f"dropped {name}")


def api_token(database_url: str) -> str:
    """An admin's API token for the app on `database_url`, made with the app's CLI."""
    flask_cli(database_url, "create-admin", "bench@example.com", input="bench-password\n")
    return flask_cli(database_url, "create-token", "bench@example.com", "--name", "bench").strip().splitlines()[-1]


def flask_cli(database_url: str, *args: str, input: str | None = None) -> str:
    """Run the app's own CLI (`flask --app wsgi ...`) on the database."""
    env = {**os.environ, "DATABASE_URL": database_url, "APP_ENV": "testing"}
    finished = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=ROOT,
        env=env,
        check=True,
        input=input,
        capture_output=True,
        text=True,
    )
    return finished.stdout


def sql(database_url: str, statement: str, params=None) -> list[tuple]:
    if database_url.startswith("sqlite:///"):
        with closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as lite:
            return lite.execute(statement, params or ()).fetchall()
    connection = psycopg2.connect(database_url)
    connection.autocommit = True  # VACUUM cannot run in a transaction
    try:
        with connection.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        connection.close()


def seed(database_url: str, count: int) -> float:
    """Add `count` users with the app's seed-users; returns the seconds it took."""
    started = time.monotonic()
    flask_cli(database_url, "seed-users", str(count))
    elapsed = time.monotonic() - started
    sql(database_url, "VACUUM ANALYZE users")
    sql(database_url, "VACUUM ANALYZE audit_log")
    return elapsed


# -- servers ------------------------------------------------------------------------


@dataclass
class Server:
    base: str
    pid: int
    authorization: str = ""  # sent with every request ("Bearer <token>"), if set

    def cpu_seconds(self) -> float:
        """CPU time (user + system) spent so far by the gunicorn master and its workers,
        those that exited included (the master's cutime/cstime): on a shared machine a
        steadier measure of a request's cost than requests/s."""
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                pid, rest = stat.read_text().split(" (", 1)
            except OSError:
                continue  # the process ended meanwhile
            fields = rest.rsplit(") ", 1)[1].split()  # from field 3, the state, on
            if int(pid) == self.pid:
                total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
            elif int(fields[1]) == self.pid:
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")


@contextmanager
def gunicorn(module: str, database_url: str, logs: Path):
    """`gunicorn -c gunicorn.conf.py MODULE` on a free port, healthy, then terminated."""
    port = free_port()
    env = {
        **os.environ,
        **GUNICORN_ENV,
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "APP_ENV": "production",
        "SECRET_KEY": secrets.token_hex(16),
    }
    log_path = logs / f"{module.replace(':', '_')}.log"
    with open(log_path, "w") as log_file:  # the server keeps its own copy of the descriptor
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", module],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{module} did not become healthy; see {log_path}")
            time.sleep(0.2)
        log(f"{module} on {base}")
        yield Server(base, server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextmanager
def servers(modules: dict[str, str], database_url: str, logs: Path):
    """Several `gunicorn()` servers at once: name -> Server, all terminated afterwards."""
    with ExitStack() as stack:
        yield {name: stack.enter_context(gunicorn(module, database_url, logs)) for name, module in modules.items()}


# -- load ---------------------------------------------------------------------------


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    failed: int  # socket errors and responses with a 4xx/5xx status
    requests: int = 0
    cpu_ms: float = 0.0  # server CPU time per request


@dataclass
class Scenario:
    """GETs of random paths from a list, or POSTs creating fresh users."""

    name: str
    paths: list[str] | None = None  # None: create
    path_file: Path | None = None  # written on first use, one per scenario (never shared)

    def wrk_args(self, workdir: Path, authorization: str = "") -> list[str]:
        auth = authorization or "-"
        if self.paths is None:
            return ["-s", str(WRK_SCRIPTS / "create.lua"), "--", secrets.token_hex(4), auth]
        if self.path_file is None:
            self.path_file = workdir / f"paths-{secrets.token_hex(6)}.txt"
            self.path_file.write_text("\n".join(self.paths) + "\n")
        return ["-s", str(WRK_SCRIPTS / "paths.lua"), "--", str(self.path_file), str(random.randrange(1 << 30)), auth]


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def log_load_generator() -> None:
    log(f"load generator: {'wrk' if wrk_available() else 'Python client (wrk not installed)'}")


def finish(results: dict[str, dict[str, Result]], started: float) -> int:
    """Report any failed requests of `results` and the time since `started`; the exit status."""
    failed = {name: pair[side].failed for name, pair in results.items() for side in pair if pair[side].failed}
    if failed:
        print(f"\nFAILED REQUESTS: {failed}")
    log(f"done in {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


def drive(server: Server, scenario: Scenario, seconds: float, connections: int, workdir: Path) -> Result:
    """Load `server` with `scenario` for `seconds` over `connections` keep-alive connections."""
    cpu_before = server.cpu_seconds()
    if wrk_available():
        result = _wrk(server, scenario, seconds, connections, workdir)
    else:
        result = _python_client(server, scenario, seconds, connections)
    result.cpu_ms = 1000 * (server.cpu_seconds() - cpu_before) / max(1, result.requests)
    return result


def _wrk(server, scenario, seconds, connections, workdir) -> Result:
    command = [
        "wrk",
        "-t",
        str(min(2, connections)),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        server.base,
        *scenario.wrk_args(workdir, server.authorization),
    ]
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"wrk failed: {finished.stdout}{finished.stderr}")
    summary = json.loads(finished.stdout.strip().splitlines()[-1])
    return Result(
        rps=summary["requests"] / (summary["duration_us"] / 1e6),
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        failed=summary["socket_errors"] + summary["bad_status"],
        requests=summary["requests"],
    )


def _python_client(server, scenario, seconds, connections) -> Result:
    """The fallback load generator: one thread per keep-alive connection."""
    host, port = server.base.removeprefix("http://").split(":")
    auth = {"Authorization": server.authorization} if server.authorization else {}
    latencies: list[float] = []
    failed = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    run_id = secrets.token_hex(4)

    def worker(number: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        mine, errors, count = [], 0, 0
        while time.monotonic() < deadline:
            count += 1
            started = time.perf_counter()
            try:
                if scenario.paths is None:
                    body = json.dumps(
                        {"name": f"Bench User {count}", "email": f"bench-{run_id}-{number}-{count}@example.com"}
                    )
                    connection.request("POST", "/api/users", body, {"Content-Type": "application/json", **auth})
                else:
                    connection.request("GET", random.choice(scenario.paths), headers=auth)
                response = connection.getresponse()
                response.read()
                errors += response.status >= 400
            except OSError:
                errors += 1
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=10)
            mine.append(time.perf_counter() - started)
        connection.close()
        with lock:
            latencies.extend(mine)
            failed[0] += errors

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    return Result(
        rps=len(latencies) / elapsed,
        p50_ms=1000 * latencies[len(latencies) // 2],
        p99_ms=1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        failed=failed[0],
        requests=len(latencies),
    )


def combine(results: list[Result]) -> Result:
    """Several runs of one scenario on one server: the median of each figure."""
    return Result(
        rps=statistics.median(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        failed=sum(r.failed for r in results),
        requests=sum(r.requests for r in results),
        cpu_ms=statistics.median(r.cpu_ms for r in results),
    )


def add_load_options(parser, seconds: float, rounds: str) -> None:
    """The options every side-by-side benchmark takes."""
    parser.add_argument("--seconds", type=float, default=seconds, help="length of each measured run")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured run before each scenario")
    parser.add_argument("--rounds", type=int, default=2, help=rounds)
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections")


def alternate(servers: dict, scenarios: dict, args, workdir: Path) -> dict[str, Result]:
    """Warm every server up on its scenario, then drive them in turn (A, B, A, B) for
    `args.rounds` rounds; the median result per server name."""
    runs: dict[str, list[Result]] = {name: [] for name in servers}
    for name, server in servers.items():  # imports, pools, caches
        drive(server, scenarios[name], args.warmup, args.connections, workdir)
    for round_ in range(args.rounds):
        for name, server in servers.items():
            result = drive(server, scenarios[name], args.seconds, args.connections, workdir)
            runs[name].append(result)
            log(
                f"{scenarios[name].name:<36} {name:<5} round {round_ + 1}: {result.rps:7.0f} req/s  "
                f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
                f"CPU {result.cpu_ms:5.2f} ms/req  failed {result.failed}"
            )
    return {name: combine(results) for name, results in runs.items()}


# -- paths --------------------------------------------------------------------------


def cursor(after: int) -> str:
    """The app's cursor format (webapp.domain.schemas.encode_cursor), for paths at any depth."""
    return base64.urlsafe_b64encode(json.dumps({"after": after}, separators=(",", ":")).encode()).rstrip(b"=").decode()


def sorted_cursor(sort: str, key, after: int) -> str:
    """The app's cursor for a sorted list (encode_cursor with a sort): after the user
    whose `sort` column is `key` and whose id is `after`."""
    key = key.isoformat() if hasattr(key, "isoformat") else key
    payload = json.dumps({"sort": sort, "key": key, "after": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


def sort_positions(database_url: str, column: str, count: int = 500) -> list[tuple]:
    """(key, id) of `count` users picked at random: where deep pages of a sort start."""
    return sql(database_url, f"SELECT {column}, id FROM users ORDER BY random() LIMIT %s", (count,))


def id_range(database_url: str) -> tuple[int, int]:
    return sql(database_url, "SELECT min(id), max(id) FROM users")[0]


def rare_fragments(database_url: str, count: int = 300) -> list[str]:
    """Existing emails, whole: as fragments, each matches its own user (and now and
    then another whose email contains it)."""
    emails = [row[0] for row in sql(database_url, "SELECT email FROM users TABLESAMPLE SYSTEM (10) LIMIT %s", (count,))]
    if len(emails) < count:
        emails += [row[0] for row in sql(database_url, "SELECT email FROM users ORDER BY random() LIMIT %s", (count,))]
    return emails[:count]


def tempdir():
    return tempfile.TemporaryDirectory(prefix="bench-")


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, ready to paste into README."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(headers), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, rows)])
