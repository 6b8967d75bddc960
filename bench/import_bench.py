"""Bulk import benchmark: our import path beside COPY and beside a naive ORM loop.

    python bench/import_bench.py [--server URL] [--rows N] [--rounds N] [--naive-rows N] [--memory-rows N]

Runs in scratch databases created on that server and dropped afterwards. Prints
rows/s for 100k rows through webapp.bulk.imports (the code path of the form, the API
and the CLI) and for COPY ... FROM STDIN of the same rows, in alternating rounds
(each round's ratio, then the median: on a busy machine the rounds vary, their
ratios less), and for one ORM add and commit per row (measured on fewer rows: it
is slow); then the peak memory of `flask import-users` on a file of 1M rows.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import harness
from harness import ROOT

sys.path.insert(0, str(ROOT))

from webapp import create_app, migrations  # noqa: E402
from webapp.bulk import imports  # noqa: E402
from webapp.db import Session, get_engine  # noqa: E402
from webapp.domain.models import User  # noqa: E402


def write_csv(path: Path, rows: int) -> None:
    with path.open("w") as file:
        file.write("name,email\n")
        for n in range(rows):
            file.write(f"User {n},user{n}@example.com\n")


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def our_import(app, path: Path) -> float:
    with app.app_context():

        def run():
            with path.open("rb") as file:
                report = imports.import_users(imports.read_csv(file), "atomic")
            assert report.created > 0 and not report.rejected_count, report

        return timed(run)


def copy(app, path: Path) -> float:
    now = datetime.now(UTC).isoformat()

    def run():
        raw = get_engine(app).raw_connection()
        try:
            with path.open() as source, raw.cursor() as cursor:
                next(source)  # header
                rows = (f"{line.rstrip()},{now},{now}\n" for line in source)
                cursor.copy_expert(
                    "COPY users (name, email, created_at, updated_at) FROM STDIN WITH (FORMAT csv)", _Lines(rows)
                )
            raw.commit()
        finally:
            raw.close()

    return timed(run)


class _Lines:
    """A file-like object over an iterator of lines, for copy_expert."""

    def __init__(self, lines):
        self.lines = lines

    def read(self, size=-1):
        return next(self.lines, "")

    readline = read


def naive(app, rows: int) -> float:
    with app.app_context():

        def run():
            session = Session()
            for n in range(rows):
                session.add(User(name=f"Naive {n}", email=f"naive{n}@example.com"))
                session.commit()
            Session.remove()

        return timed(run)


def empty(app) -> None:
    with get_engine(app).begin() as connection:
        connection.exec_driver_sql("TRUNCATE users, audit_log CASCADE")


def peak_memory_mb(url: str, path: Path) -> float:
    """Peak RSS of `flask import-users FILE` in a process of its own."""
    env = {**os.environ, "DATABASE_URL": url, "APP_ENV": "development"}
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "import-users", str(path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    output = process.stdout.read().decode().strip()
    if status != 0:
        raise SystemExit(f"import-users failed: {output}")
    print(f"  ({output})")
    return usage.ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=harness.DEFAULT_SERVER, help="PostgreSQL server for the scratch databases")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the import and COPY")
    parser.add_argument("--naive-rows", type=int, default=5_000)
    parser.add_argument("--memory-rows", type=int, default=1_000_000)
    args = parser.parse_args()

    with harness.tempdir() as folder, harness.scratch_database(args.server) as url:
        data = Path(folder) / "users.csv"
        write_csv(data, args.rows)
        app = create_app({"DATABASE_URL": url})
        with app.app_context():
            migrations.upgrade("head")

        ratios = []
        print(f"PostgreSQL, {args.rows:,} rows, import and COPY in alternating rounds")
        for round_ in range(1, args.rounds + 1):
            rates = {}
            for name, run in [("import", lambda: our_import(app, data)), ("copy", lambda: copy(app, data))]:
                rates[name] = args.rows / run()
                empty(app)
            ratios.append(rates["import"] / rates["copy"])
            print(
                f"  round {round_}: webapp import {rates['import']:>8,.0f} rows/s, "
                f"COPY {rates['copy']:>8,.0f} rows/s, import/COPY = {ratios[-1]:.2f}",
                flush=True,
            )
        print(f"  import/COPY, median of {args.rounds} rounds = {statistics.median(ratios):.2f}  (target >= 0.7)")
        naive_rate = args.naive_rows / naive(app, args.naive_rows)
        empty(app)
        get_engine(app).dispose()
        print(
            f"  naive ORM loop {naive_rate:>8,.0f} rows/s on {args.naive_rows:,} rows, "
            f"import/naive = {rates['import'] / naive_rate:.1f}  (target >= 20)"
        )

        big = Path(folder) / "big.csv"
        write_csv(big, args.memory_rows)
        with harness.scratch_database(args.server) as memory_url:
            harness.flask_cli(memory_url, "db", "upgrade")
            started = time.perf_counter()
            peak = peak_memory_mb(memory_url, big)
            elapsed = time.perf_counter() - started
        print(
            f"  peak memory of import-users on {args.memory_rows:,} rows: {peak:.0f} MB "
            f"(target < 200 MB), {args.memory_rows / elapsed:,.0f} rows/s end to end"
        )


if __name__ == "__main__":
    main()
