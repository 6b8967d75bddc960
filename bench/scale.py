"""`make bench-scale`: does a request cost the same with 1M users as with 10k?

Scenarios: get-by-id, the next page at depth in id order and in each of SORTED,
search for a rare and a common fragment, and for contrast a deep page by OFFSET.

Two scratch PostgreSQL databases, seeded by the app's seed-users with 10,000 and
1,000,000 users, each served by the app under the same gunicorn settings, driven
alternately (10k, 1M, 10k, 1M) with the same load generator. For each scenario it
prints requests/s and p50/p99 at both sizes and the cost ratio 1M/10k (the
10k requests/s over the 1M requests/s: time per request, 1.0 is flat).

    python bench/scale.py [--server URL] [--small N] [--large N] [--seconds S] [--rounds R]
"""

import argparse
import random
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import harness
from harness import Scenario, log

# A surname shared by one user in 66 (seed.LAST_NAMES): a search with many matches.
COMMON_FRAGMENT = "lovelace"
# Sorted lists at depth: each a keyset on (column, id) over its own index.
SORTED = ("name", "-name", "email", "-created_at")


def scenarios(database_url: str, per_page: int = 20) -> list[Scenario]:
    low, high = harness.id_range(database_url)
    ids = [random.randint(low, high) for _ in range(2000)]
    deep_pages = [random.randint((high - low) // (2 * per_page), (high - low) // per_page) for _ in range(200)]
    return [
        Scenario("get-by-id", [f"/api/users/{id_}" for id_ in ids]),
        Scenario(
            "next page at depth (cursor)",
            [f"/api/users?per_page={per_page}&cursor={harness.cursor(id_ - 1)}" for id_ in ids],
        ),
        *(
            Scenario(
                f"next page at depth, sort={sort}",
                [
                    f"/api/users?per_page={per_page}&sort={sort}&cursor={harness.sorted_cursor(sort, key, id_)}"
                    for key, id_ in harness.sort_positions(database_url, sort.lstrip("-"))
                ],
            )
            for sort in SORTED
        ),
        Scenario(
            "search, rare fragment", [f"/api/users?q={fragment}" for fragment in harness.rare_fragments(database_url)]
        ),
        Scenario("search, common fragment", [f"/api/users?q={COMMON_FRAGMENT}"]),
        Scenario(
            "for contrast: page at depth (offset)",
            [f"/api/users?per_page={per_page}&page={page}" for page in deep_pages],
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=harness.DEFAULT_SERVER, help="PostgreSQL server for the scratch databases")
    parser.add_argument("--small", type=int, default=10_000, help="users in the small database")
    parser.add_argument("--large", type=int, default=1_000_000, help="users in the large database")
    harness.add_load_options(parser, seconds=5, rounds="small, large pairs per scenario")
    args = parser.parse_args()

    started = time.monotonic()
    sizes = {"small": args.small, "large": args.large}
    harness.log_load_generator()
    with ExitStack() as stack:
        work = Path(stack.enter_context(harness.tempdir()))
        urls, seeded = {}, {}
        for size, count in sizes.items():
            urls[size] = stack.enter_context(harness.scratch_database(args.server))
            harness.flask_cli(urls[size], "db", "upgrade")
            log(f"seeding {count} users")
            seeded[size] = harness.seed(urls[size], count)
            log(f"seeded {count} users in {seeded[size]:.0f} s ({count / seeded[size]:.0f} users/s)")
        plans = {size: scenarios(url) for size, url in urls.items()}
        tokens = {size: harness.api_token(url) for size, url in urls.items()}  # every request needs one
        servers = {size: stack.enter_context(harness.gunicorn("wsgi:app", url, work)) for size, url in urls.items()}
        for size, server in servers.items():
            server.authorization = f"Bearer {tokens[size]}"

        results = {}
        for index, name in enumerate(scenario.name for scenario in plans["small"]):
            results[name] = harness.alternate(servers, {size: plans[size][index] for size in servers}, args, work)

    small, large = f"{args.small:,}", f"{args.large:,}"
    rows = []
    for name, pair in results.items():
        s, l = pair["small"], pair["large"]  # noqa: E741
        rows.append(
            [
                name,
                f"{s.rps:.0f}",
                f"{s.p50_ms:.2f} / {s.p99_ms:.2f}",
                f"{l.rps:.0f}",
                f"{l.p50_ms:.2f} / {l.p99_ms:.2f}",
                f"{s.rps / l.rps:.2f}",
                f"{l.cpu_ms / s.cpu_ms:.2f}",
            ]
        )
    print()
    print(
        f"seed-users: {small} users in {seeded['small']:.0f} s, {large} in {seeded['large']:.0f} s "
        f"({args.large / seeded['large']:.0f} users/s)"
    )
    print(
        f"{args.rounds} rounds of {args.seconds:g} s per size and scenario, {args.connections} connections; "
        "medians of the rounds; cost ratio = time per request at the large size over the small "
        "(from req/s), CPU ratio = the app's CPU time per request, large over small (the database's "
        "own work is not in it)"
    )
    print()
    print(
        harness.table(
            [
                "scenario",
                f"{small}: req/s",
                "p50 / p99 ms",
                f"{large}: req/s",
                "p50 / p99 ms",
                "cost ratio",
                "CPU ratio",
            ],
            rows,
        )
    )
    return harness.finish(results, started)


if __name__ == "__main__":
    sys.exit(main())
