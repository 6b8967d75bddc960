"""`make bench-instructions`: CPU instructions per request, counted, not timed.

Requests/s on a shared 2-core machine move by 15% between rounds; the number of
instructions a request executes does not. This runs the same requests as
`make bench` straight through each server's WSGI callable (the app, the
Flask-SQLAlchemy peer, the floor; no gunicorn, no network), under valgrind's
callgrind, once with N requests and once with none, and prints the difference
divided by N: what one request costs in the server's own process, the database's
work excluded. Each server runs with what gunicorn.conf.py sets up before it is
loaded (its logging, written to a file, and the metrics' multiprocess files), so
the app's log line and metrics are counted as served. The same binary, inputs and
environment give the same count whatever else the machine is doing.

    python bench/instructions.py [--server URL] [--requests N] [--only pg|sqlite]
"""

import argparse
import atexit
import logging
import os
import random
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import harness
from harness import log
from inprocess import call, environ

SERVERS = {"app": "wsgi", "fsa": "bench.fsa_peer", "floor": "bench.floor"}
SCENARIOS = ["get-by-id", "list page (cursor)", "create"]
WARM_UP = 50


def requests_for(scenario: str, count: int, low: int, high: int, token: str) -> list[dict]:
    if scenario == "get-by-id":
        return [environ(f"/api/users/{random.randint(low, high)}", token) for _ in range(count)]
    if scenario == "list page (cursor)":
        after = [random.randint(low, high) - 1 for _ in range(count)]
        return [environ(f"/api/users?per_page=20&cursor={harness.cursor(a)}", token) for a in after]
    salt = int.from_bytes(os.urandom(4), "big")  # every run creates new emails
    new = [{"name": "Counted", "email": f"counted{salt}-{n}@example.com"} for n in range(count)]
    return [environ("/api/users", token, "POST", fields) for fields in new]


def serve(app, requests: list[dict]) -> None:
    for request in requests:
        if (status := call(app, request)) not in (200, 201):
            raise SystemExit(f"{request['PATH_INFO']}: {status}")


def as_under_gunicorn() -> None:
    """Set up what gunicorn.conf.py sets up before a server is loaded, so that a count
    includes what a request costs when served: its log line, written to a file as
    gunicorn's stdout is under `make bench`, and metrics kept in multiprocess files."""
    conf = runpy.run_path(str(harness.ROOT / "gunicorn.conf.py"))  # sets PROMETHEUS_MULTIPROC_DIR
    sys.stdout = tempfile.TemporaryFile("w")  # noqa: SIM115  # open for the life of the process
    conf["on_starting"](SimpleNamespace(log=logging.getLogger("gunicorn.error")))
    atexit.register(conf["on_exit"], None)


def child(server: str, scenario: str, count: int) -> None:
    """Inside valgrind: import the server, warm it up, serve `count` requests."""
    sys.path.insert(0, str(harness.ROOT))
    as_under_gunicorn()
    low, high = (int(x) for x in os.environ["BENCH_IDS"].split(","))
    token = os.environ["BENCH_TOKEN"]
    app = __import__(SERVERS[server], fromlist=["app"]).app
    serve(app, requests_for(scenario, WARM_UP, low, high, token))
    serve(app, requests_for(scenario, count, low, high, token))


def counted(server: str, scenario: str, count: int, env: dict) -> int:
    """Instructions callgrind counted for one child run."""
    finished = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__]
        + ["--child", server, scenario, str(count)],
        cwd=harness.ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    found = re.search(r"Collected : (\d+)", finished.stderr)
    if finished.returncode != 0 or not found:
        raise RuntimeError(f"{server} {scenario}: {finished.stderr[-2000:]}")
    return int(found.group(1))


def measure(url: str, names: list[str], scenarios: list[str], count: int) -> dict[str, dict[str, int]]:
    low, high = harness.id_range(url)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "APP_ENV": "production",
        "SECRET_KEY": "counted",
        "GUNICORN_THREADS": harness.GUNICORN_ENV["GUNICORN_THREADS"],
        "BENCH_IDS": f"{low},{high}",
        "BENCH_TOKEN": harness.api_token(url),
        "PYTHONHASHSEED": "0",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    results: dict[str, dict[str, int]] = {}
    for scenario in scenarios:
        for name in names:
            per_request = (counted(name, scenario, count, env) - counted(name, scenario, 0, env)) // count
            results.setdefault(scenario, {})[name] = per_request
            log(f"{scenario:20} {name:6} {per_request:>10,} instructions/request")
    return results


def report(title: str, results: dict[str, dict[str, int]], names: list[str]) -> None:
    headers = ["scenario", *(f"{name} instructions" for name in names), *(f"app/{name}" for name in names[1:])]
    rows = []
    for scenario, by_server in results.items():
        row = [scenario, *(f"{by_server[name] / 1e6:.2f}M" for name in names)]
        row += [f"{by_server['app'] / by_server[name]:.2f}" for name in names[1:]]
        rows.append(row)
    print(f"\n{title}\n")
    print(harness.table(headers, rows))


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=harness.DEFAULT_SERVER, help="PostgreSQL server for the scratch database")
    parser.add_argument("--requests", type=int, default=300, help="requests counted per server and scenario")
    parser.add_argument("--only", choices=["pg", "sqlite"], help="one backend only")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed: apt-get install valgrind")
    random.seed(1)
    if args.only != "sqlite":
        with harness.scratch_database(args.server) as url:
            harness.flask_cli(url, "db", "upgrade")
            harness.seed(url, 10_000)
            results = measure(url, [*SERVERS], SCENARIOS, args.requests)
            report("PostgreSQL, in-process, instructions per request", results, [*SERVERS])
    if args.only != "pg":
        with harness.tempdir() as work:
            url = f"sqlite:///{Path(work) / 'bench.sqlite3'}"
            harness.flask_cli(url, "db", "upgrade")
            harness.flask_cli(url, "seed-users", "10000")
            names = ["app", "fsa"]  # the floor speaks psycopg2 only
            results = measure(url, names, ["get-by-id", "create"], args.requests)
            report("SQLite, in-process, instructions per request", results, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
