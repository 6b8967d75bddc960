"""Serving: gunicorn's settings, the real server answering, and the Dockerfile."""

import io
import logging
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from helpers import users_table_held
from server import ROOT, run_clients, wait_for


def gunicorn_settings(monkeypatch, tmp_path, **env):
    for name in ("WEB_CONCURRENCY", "GUNICORN_THREADS", "PORT", "HOST", "GUNICORN_PRELOAD", "GUNICORN_MAX_REQUESTS"):
        monkeypatch.delenv(name, raising=False)
    # gunicorn.conf.py puts a metrics directory in the environment; keep ours clean.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def test_gunicorn_uses_the_gthread_worker_with_sensible_defaults(monkeypatch, tmp_path):
    settings = gunicorn_settings(monkeypatch, tmp_path)

    assert settings["worker_class"] == "gthread"
    assert settings["workers"] >= 2 and settings["threads"] >= 2
    assert settings["bind"] == "127.0.0.1:8000"
    assert settings["preload_app"] is False


def test_gunicorn_bounds_idle_connections_and_the_size_of_a_request_head(monkeypatch, tmp_path):
    settings = gunicorn_settings(monkeypatch, tmp_path)

    assert 1 <= settings["keepalive"] <= 5
    assert settings["threads"] < settings["worker_connections"] <= 1000
    assert (settings["limit_request_line"], settings["limit_request_fields"]) == (4094, 100)
    assert settings["limit_request_field_size"] == 8190


def test_gunicorn_recycles_workers_only_when_asked_and_then_with_jitter(monkeypatch, tmp_path):
    default = gunicorn_settings(monkeypatch, tmp_path)
    asked = gunicorn_settings(monkeypatch, tmp_path, GUNICORN_MAX_REQUESTS="1000")

    assert (default["max_requests"], default["max_requests_jitter"]) == (0, 0)
    assert asked["max_requests"] == 1000
    assert 0 < asked["max_requests_jitter"] < asked["max_requests"]
    assert default["graceful_timeout"] >= default["timeout"]


def test_gunicorn_takes_workers_threads_and_port_from_the_environment(monkeypatch, tmp_path):
    settings = gunicorn_settings(
        monkeypatch,
        tmp_path,
        WEB_CONCURRENCY="3",
        GUNICORN_THREADS="6",
        PORT="9123",
        HOST="0.0.0.0",
        GUNICORN_PRELOAD="1",
    )

    assert (settings["workers"], settings["threads"]) == (3, 6)
    assert settings["bind"] == "0.0.0.0:9123"
    assert settings["preload_app"] is True


def test_a_worker_moves_what_it_loaded_out_of_the_collectors_reach(tmp_path):
    """Full collections under load must not walk the app's long-lived objects."""
    worker = (
        "import gc, runpy; "
        "settings = runpy.run_path('gunicorn.conf.py'); "
        "import wsgi; "
        "before = gc.get_freeze_count(); "
        "settings['post_worker_init'](None); "
        "print(before, gc.get_freeze_count(), gc.isenabled())"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "APP_ENV": "testing"}
    finished = subprocess.run(
        [sys.executable, "-c", worker], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    before, frozen, collecting = finished.stdout.split()

    assert int(before) == 0
    assert int(frozen) > 10_000  # modules, the app, SQLAlchemy's mappers: all of it
    assert collecting == "True"  # new garbage is still collected


def test_gunicorn_writes_log_lines_in_batches_and_warnings_at_once(monkeypatch, tmp_path):
    handler_class = gunicorn_settings(monkeypatch, tmp_path)["BatchingStreamHandler"]
    stream = io.StringIO()
    handler = handler_class(stream, flush_seconds=60)
    log = _logger_to(handler)

    log.info("first")
    log.info("second")
    assert stream.getvalue() == ""  # waiting: written within 60 s
    log.warning("third")
    assert stream.getvalue() == "first\nsecond\nthird\n"  # at once, after the lines before it
    for n in range(handler_class.MAX_LINES):
        log.info("line %d", n)
    assert stream.getvalue().count("line ") == handler_class.MAX_LINES  # a full batch goes at once
    log.info("last")
    handler.close()  # as logging.shutdown does at exit
    assert stream.getvalue().endswith("line 255\nlast\n")


def test_gunicorn_writes_a_waiting_log_line_within_the_flush_interval(monkeypatch, tmp_path):
    handler_class = gunicorn_settings(monkeypatch, tmp_path)["BatchingStreamHandler"]
    stream = io.StringIO()
    handler = handler_class(stream, flush_seconds=0.05)

    _logger_to(handler).info("soon")

    wait_for(lambda: stream.getvalue() == "soon\n", seconds=5)
    handler.close()


def test_a_forked_worker_does_not_write_the_log_lines_its_parent_has_waiting(monkeypatch, tmp_path):
    handler_class = gunicorn_settings(monkeypatch, tmp_path)["BatchingStreamHandler"]
    path = tmp_path / "out.log"
    with open(path, "w") as stream:
        handler = handler_class(stream, flush_seconds=60)
        _logger_to(handler).info("the parent's")
        child = os.fork()
        if child == 0:  # pragma: no cover - the child's coverage is not collected
            handler.flush()
            os._exit(0)
        os.waitpid(child, 0)
        assert path.read_text() == ""
        handler.close()

    assert path.read_text() == "the parent's\n"


def _logger_to(handler):
    log = logging.getLogger(f"test.batching.{id(handler)}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    return log


# -- the real server ----------------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["forked-app", "preloaded-app"])
def gunicorn(request, serve, database_url, committing):
    """The real server, the app loaded in each worker or preloaded in the master."""
    return serve(database_url, GUNICORN_PRELOAD="1" if request.param else "0")


def test_the_real_server_serves_the_api_from_every_worker(store, gunicorn):
    created = [gunicorn.post("/api/users", {"name": f"G{n}", "email": f"g{n}@example.com"}) for n in range(20)]
    assert [reply.status for reply in created] == [201] * 20

    for reply in created:
        user = reply.json()
        fetched = gunicorn.get(f"/api/users/{user['id']}")
        assert (fetched.status, fetched.json()) == (200, user)
    assert gunicorn.post("/api/users", {"name": "Dup", "email": "g0@example.com"}).status == 409
    assert len(store.users()) == 20


def test_the_start_up_log_says_what_matters_once(store, gunicorn, database_url):
    gunicorn.get("/api/users")  # every worker has loaded the app by now, or soon
    wait_for(gunicorn.workers_ready)

    output = gunicorn.output()
    serving = [line for line in output.splitlines() if "Serving" in line]
    assert len(serving) == 1
    assert "workers x" in serving[0] and "threads (gthread); database" in serving[0]
    assert "setup plugin" not in output and "alembic" not in output


# -- stopping and recycling workers -----------------------------------------------------


def connections_in_use(server) -> float:
    return sum(server.metrics().per_worker("webapp_db_pool_checked_out").values())


def test_sigterm_lets_requests_in_flight_finish(store, live_server, database_url):
    replies = {}

    def create(n):
        replies[n] = live_server.post("/api/users", {"name": f"In flight {n}", "email": f"f{n}@example.com"})

    with users_table_held(database_url):  # the two requests wait on the users table
        threads = [threading.Thread(target=create, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        wait_for(lambda: connections_in_use(live_server) == 2)
        live_server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "Handling signal: term" in live_server.output())
        time.sleep(0.5)  # the workers are stopping now
        assert all(thread.is_alive() for thread in threads)
    for thread in threads:
        thread.join(timeout=30)
    output = live_server.stop()  # exit status 0, no traceback

    assert [replies[n].status for n in range(2)] == [201, 201]
    assert sorted(store.users()) == [("In flight 0", "f0@example.com"), ("In flight 1", "f1@example.com")]
    stopped_at = output.index("Handling signal: term")
    answered = [output.index(f"request_id={replies[n].headers['X-Request-ID']}") for n in range(2)]
    assert all(at > stopped_at for at in answered)


def test_workers_replaced_after_max_requests_drop_no_request(serve, database_url, committing):
    server = serve(database_url, GUNICORN_MAX_REQUESTS="20")
    first_workers = set(server.metrics().per_worker("webapp_db_pool_size"))

    def client(n, budget):
        statuses = []
        while budget.take():
            statuses.append(server.get("/api/users").status)
        return statuses

    statuses = [status for seen in run_clients(8, seconds=60, max_requests=120, client=client) for status in seen]
    wait_for(server.workers_ready)

    assert statuses == [200] * 120
    assert server.output().count("Autorestarting worker") >= 2
    # Replaced workers are gone from the pool gauges (child_exit); only the live ones report.
    workers = server.metrics().per_worker("webapp_db_pool_size")
    assert len(workers) == 2 and not set(workers) & first_workers


# -- the Dockerfile and docker-compose.yml ------------------------------------------


def test_the_dockerfile_is_clean_under_hadolint():
    hadolint = shutil.which("hadolint", path=os.path.dirname(sys.executable)) or shutil.which("hadolint")
    assert hadolint, "hadolint is installed by requirements-dev.txt"

    result = subprocess.run([hadolint, "Dockerfile"], cwd=ROOT, capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_runs_gunicorn_as_a_non_root_user_with_a_healthcheck():
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert re.search(r"^FROM python:3\.\d+-slim", dockerfile, re.M)
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user and user[-1].split(":")[0] not in {"root", "0"}
    # Requirements are installed before the code is copied, in a layer of their own.
    assert dockerfile.index("COPY requirements.txt") < dockerfile.index("pip install") < dockerfile.index("COPY webapp")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", dockerfile, re.M)
    assert 'CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]' in dockerfile


def yaml_blocks(text: str, indent: int) -> dict[str, str]:
    """The keys at one indentation of a block-style YAML text, with their bodies."""
    parts = re.split(rf"^ {{{indent}}}([\w-]+):[^\S\n]*\n?", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_docker_compose_runs_the_app_and_postgresql_with_health_checks_and_a_volume(monkeypatch, tmp_path):
    compose = yaml_blocks((ROOT / "docker-compose.yml").read_text(), 0)
    services = yaml_blocks(compose["services"], 2)
    db, app = services["db"], services["app"]
    grace = int(re.search(r"stop_grace_period: (\d+)s", app).group(1))

    assert re.search(r"image: postgres:\d+", db)
    assert "pgdata:/var/lib/postgresql/data" in db and "pgdata" in yaml_blocks(compose["volumes"], 2)
    assert "healthcheck:" in db and "pg_isready" in db
    assert "build: ." in app and "healthcheck:" in app and "/healthz" in app
    assert re.search(r"db:\n\s+condition: service_healthy", app)
    assert 'flask", "--app", "wsgi", "init-db' in services["init-db"]
    assert grace > gunicorn_settings(monkeypatch, tmp_path)["graceful_timeout"]
