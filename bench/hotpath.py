"""`make bench-profile`: where the app's time goes on its hot paths.

Runs get-by-id and create requests straight through the app's WSGI callable (no
server, no network, so the app's own work is all there is) on a scratch
PostgreSQL database, under pyinstrument, and prints each call tree.

    python bench/hotpath.py [--server URL] [--requests N]
"""

import argparse
import os
import random
import sys

from pyinstrument import Profiler

import harness
from inprocess import call, environ

sys.path.insert(0, str(harness.ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=harness.DEFAULT_SERVER)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()

    with harness.scratch_database(args.server) as url:
        harness.flask_cli(url, "db", "upgrade")
        harness.seed(url, 10_000)
        token = harness.api_token(url)
        os.environ.update(DATABASE_URL=url, APP_ENV="production", SECRET_KEY="profile")
        from webapp import create_app
        from webapp.db import get_engine

        app = create_app()
        try:
            low, high = harness.id_range(url)
            gets = [environ(f"/api/users/{random.randint(low, high)}", token) for _ in range(args.requests)]
            creates = [
                environ("/api/users", token, "POST", {"name": "Profile", "email": f"profile{n}@example.com"})
                for n in range(args.requests)
            ]
            for name, requests, expected in (("get-by-id", gets, 200), ("create", creates, 201)):
                for request in requests[:100]:  # warm up: connections, compiled-statement caches
                    call(app, request)
                profiler = Profiler(interval=0.0002)
                with profiler:
                    statuses = {call(app, request) for request in requests[100:]}
                assert statuses == {expected}, statuses
                print(f"\n===== {name}: {len(requests) - 100} requests =====")
                print(profiler.output_text(unicode=True, color=False, show_all=os.environ.get("PROFILE_ALL") == "1"))
        finally:
            get_engine(app).dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
