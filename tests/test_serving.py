"""Serving: gunicorn's settings, the real server answering, and the Dockerfile."""

import os
import re
import runpy
import shutil
import subprocess
import sys

import pytest

from conftest import stored_users
from server import ROOT


def gunicorn_settings(monkeypatch, tmp_path, **env):
    for name in ("WEB_CONCURRENCY", "GUNICORN_THREADS", "PORT", "HOST", "GUNICORN_PRELOAD"):
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


def test_gunicorn_takes_workers_threads_and_port_from_the_environment(monkeypatch, tmp_path):
    settings = gunicorn_settings(monkeypatch, tmp_path, WEB_CONCURRENCY="3", GUNICORN_THREADS="6", PORT="9123",
                                 HOST="0.0.0.0", GUNICORN_PRELOAD="1")

    assert (settings["workers"], settings["threads"]) == (3, 6)
    assert settings["bind"] == "0.0.0.0:9123"
    assert settings["preload_app"] is True


# -- the real server ----------------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["forked-app", "preloaded-app"])
def gunicorn(request, serve, database_url, committing):
    """The real server, the app loaded in each worker or preloaded in the master."""
    return serve(database_url, GUNICORN_PRELOAD="1" if request.param else "0")


def test_the_real_server_serves_the_api_from_every_worker(gunicorn):
    created = [gunicorn.post("/api/users", {"name": f"G{n}", "email": f"g{n}@example.com"}) for n in range(20)]
    assert [reply.status for reply in created] == [201] * 20

    for reply in created:
        user = reply.json()
        fetched = gunicorn.get(f"/api/users/{user['id']}")
        assert (fetched.status, fetched.json()) == (200, user)
    assert gunicorn.post("/api/users", {"name": "Dup", "email": "g0@example.com"}).status == 409
    assert len(stored_users()) == 20


# -- the Dockerfile -----------------------------------------------------------------


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
    assert dockerfile.index("COPY requirements.txt") < dockerfile.index("pip install") < dockerfile.index(
        "COPY webapp")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", dockerfile, re.M)
    assert 'CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]' in dockerfile
