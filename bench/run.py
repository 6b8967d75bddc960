"""`make bench`: the app against the floor (bench/floor.py), side by side.

Both are served by gunicorn with the same settings (gunicorn.conf.py, 2 workers x
4 threads) on one scratch PostgreSQL database seeded by the app's seed-users, and
driven by the same load generator (wrk when installed, else a Python client),
alternating app, floor, app, floor for each scenario. Prints requests/s and
p50/p99 latency and the ratio app/floor, as a Markdown table.

    python bench/run.py [--server URL] [--users N] [--seconds S] [--rounds R]
"""

import argparse
import random
import sys
import time
from pathlib import Path

import harness
from harness import Scenario, log


def scenarios(database_url: str) -> list[Scenario]:
    low, high = harness.id_range(database_url)
    ids = [random.randint(low, high) for _ in range(2000)]
    return [
        Scenario("get-by-id", [f"/api/users/{id_}" for id_ in ids]),
        Scenario("list page", [f"/api/users?per_page=20&cursor={harness.cursor(id_ - 1)}" for id_ in ids]),
        Scenario("search", [f"/api/users?q={fragment}" for fragment in harness.rare_fragments(database_url)]),
        Scenario("create"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=harness.DEFAULT_SERVER, help="PostgreSQL server for the scratch database")
    parser.add_argument("--users", type=int, default=10_000, help="users seeded before the runs")
    harness.add_load_options(parser, seconds=8, rounds="app, floor pairs per scenario")
    args = parser.parse_args()

    started = time.monotonic()
    harness.log_load_generator()
    with harness.tempdir() as workdir, harness.scratch_database(args.server) as url:
        work = Path(workdir)
        harness.flask_cli(url, "db", "upgrade")
        log(f"seeding {args.users} users")
        harness.seed(url, args.users)
        plan = scenarios(url)
        with harness.gunicorn("wsgi:app", url, work) as app, harness.gunicorn("bench.floor:app", url, work) as floor:
            servers = {"app": app, "floor": floor}
            results = {}
            for scenario in plan:
                results[scenario.name] = harness.alternate(servers, {name: scenario for name in servers}, args, work)

    rows = []
    for name, pair in results.items():
        app_, floor_ = pair["app"], pair["floor"]
        rows.append([name, f"{app_.rps:.0f}", f"{floor_.rps:.0f}", f"{app_.rps / floor_.rps:.2f}",
                     f"{app_.cpu_ms:.2f}", f"{floor_.cpu_ms:.2f}", f"{floor_.cpu_ms / app_.cpu_ms:.2f}",
                     f"{app_.p50_ms:.2f} / {app_.p99_ms:.2f}", f"{floor_.p50_ms:.2f} / {floor_.p99_ms:.2f}"])
    print()
    print(f"{args.users} users; {args.rounds} rounds of {args.seconds:g} s per server and scenario, "
          f"{args.connections} connections; medians of the rounds. CPU = server CPU time per request "
          "(gunicorn master and workers); floor/app CPU compares cost the way app/floor compares req/s")
    print()
    print(harness.table(["scenario", "app req/s", "floor req/s", "app/floor", "app CPU ms/req",
                         "floor CPU ms/req", "floor/app CPU", "app p50 / p99 ms", "floor p50 / p99 ms"], rows))
    return harness.finish(results, started)


if __name__ == "__main__":
    sys.exit(main())
