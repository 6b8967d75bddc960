"""`make bench`: the app beside a Flask-SQLAlchemy peer and a bare-driver floor.

Three servers, each under gunicorn with the same settings (gunicorn.conf.py, 2
workers x 8 threads), on one scratch PostgreSQL database seeded by the app's
seed-users, driven by the same load generator (wrk when installed, else a Python
client), in alternating rounds (app, peer, floor, app, peer, floor, ...):

    app    this service, default configuration (make run), every request with an API token
    fsa    bench/fsa_peer.py: the same endpoints in Flask-SQLAlchemy's documented style
    floor  bench/floor.py: the same SQL with nothing between Flask and psycopg2

Then the same for the SQLite default, app and peer on one SQLite file with the same
settings (WAL, synchronous=NORMAL, busy timeout). Prints requests/s, p50/p99
latency and server CPU per request, with the ratios app/fsa and app/floor.

    python bench/run.py [--server URL] [--users N] [--seconds S] [--rounds R] [--only pg|sqlite]
"""

import argparse
import random
import sys
import time
from pathlib import Path

import harness
from harness import Result, Scenario, log

PEERS = {"app": "wsgi:app", "fsa": "bench.fsa_peer:app", "floor": "bench.floor:app"}


def scenarios(database_url: str, backend: str) -> list[Scenario]:
    low, high = harness.id_range(database_url)
    ids = [random.randint(low, high) for _ in range(2000)]
    plan = [Scenario("get-by-id", [f"/api/users/{id_}" for id_ in ids]), Scenario("create")]
    if backend == "postgresql":
        plan[1:1] = [
            Scenario("list page (cursor)", [f"/api/users?per_page=20&cursor={harness.cursor(id_ - 1)}" for id_ in ids]),
            Scenario("search", [f"/api/users?q={fragment}" for fragment in harness.rare_fragments(database_url)]),
        ]
    return plan


def measure(url: str, backend: str, names: list[str], args, work: Path) -> dict[str, dict[str, Result]]:
    plan = [s for s in scenarios(url, backend) if not args.scenarios or s.name in args.scenarios.split(",")]
    results = {}
    token = harness.api_token(url)  # the app wants one on every request; the peers want none
    with harness.servers({name: PEERS[name] for name in names}, url, work) as servers:
        servers["app"].authorization = f"Bearer {token}"
        for scenario in plan:
            results[scenario.name] = harness.alternate(servers, dict.fromkeys(servers, scenario), args, work)
    return results


def report(title: str, results: dict[str, dict[str, Result]], names: list[str]) -> None:
    headers = ["scenario", *(f"{name} req/s" for name in names)]
    headers += [f"app/{name}" for name in names[1:]]
    headers += [f"{name} CPU ms/req" for name in names]
    headers += [f"{name} p50 / p99 ms" for name in names]
    rows = []
    for scenario, by_server in results.items():
        app = by_server["app"]
        row = [scenario, *(f"{by_server[name].rps:.0f}" for name in names)]
        row += [f"{app.rps / by_server[name].rps:.2f}" for name in names[1:]]
        row += [f"{by_server[name].cpu_ms:.2f}" for name in names]
        row += [f"{by_server[name].p50_ms:.2f} / {by_server[name].p99_ms:.2f}" for name in names]
        rows.append(row)
    print(f"\n{title}\n")
    print(harness.table(headers, rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=harness.DEFAULT_SERVER, help="PostgreSQL server for the scratch database")
    parser.add_argument("--users", type=int, default=10_000, help="users seeded before the runs")
    parser.add_argument("--only", choices=["pg", "sqlite"], help="one backend only")
    parser.add_argument("--servers", default="app,fsa,floor", help="which of app,fsa,floor to run (app first)")
    parser.add_argument("--scenarios", help="a comma-separated subset, e.g. get-by-id,create")
    harness.add_load_options(parser, seconds=8, rounds="rounds per scenario, each server once a round")
    args = parser.parse_args()
    names = args.servers.split(",")

    started = time.monotonic()
    harness.log_load_generator()
    every: dict[str, dict[str, Result]] = {}
    shape = (
        f"{harness.GUNICORN_ENV['WEB_CONCURRENCY']} workers x {harness.GUNICORN_ENV['GUNICORN_THREADS']} "
        f"threads; {args.users} users; {args.rounds} rounds of {args.seconds:g} s per server and scenario, "
        f"{args.connections} connections; medians of the rounds. CPU = server CPU time per request."
    )
    with harness.tempdir() as workdir:
        work = Path(workdir)
        if args.only != "sqlite":
            with harness.scratch_database(args.server) as url:
                harness.flask_cli(url, "db", "upgrade")
                log(f"seeding {args.users} users")
                harness.seed(url, args.users)
                results = measure(url, "postgresql", names, args, work)
            report(f"PostgreSQL: {shape}", results, names)
            every.update({f"pg {k}": v for k, v in results.items()})
        if args.only != "pg":
            url = f"sqlite:///{work / 'bench.sqlite3'}"
            harness.flask_cli(url, "db", "upgrade")
            harness.flask_cli(url, "seed-users", str(args.users))
            sqlite_names = [name for name in names if name != "floor"]  # the floor speaks psycopg2 only
            results = measure(url, "sqlite", sqlite_names, args, work)
            report(f"SQLite: {shape}", results, sqlite_names)
            every.update({f"sqlite {k}": v for k, v in results.items()})
    return harness.finish(every, started)


if __name__ == "__main__":
    sys.exit(main())
