"""Serving: gunicorn's settings, the real server answering, and the Dockerfile."""

import os
import re
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
import json

import pytest

from conftest import stored_users

ROOT = Path(__file__).parents[1]


def gunicorn_settings(monkeypatch, **env):
    for name in ("WEB_CONCURRENCY", "GUNICORN_THREADS", "PORT", "HOST", "GUNICORN_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def test_gunicorn_uses_the_gthread_worker_with_sensible_defaults(monkeypatch):
    settings = gunicorn_settings(monkeypatch)

    assert settings["worker_class"] == "gthread"
    assert settings["workers"] >= 2 and settings["threads"] >= 2
    assert settings["bind"] == "127.0.0.1:8000"
    assert settings["preload_app"] is False


def test_gunicorn_takes_workers_threads_and_port_from_the_environment(monkeypatch):
    settings = gunicorn_settings(monkeypatch, WEB_CONCURRENCY="3", GUNICORN_THREADS="6", PORT="9123",
                                 HOST="0.0.0.0", GUNICORN_PRELOAD="1")

    assert (settings["workers"], settings["threads"]) == (3, 6)
    assert settings["bind"] == "0.0.0.0:9123"
    assert settings["preload_app"] is True


# -- the real server ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@pytest.fixture(params=[False, True], ids=["forked-app", "preloaded-app"])
def gunicorn(request, database_url, committing):
    """gunicorn -c gunicorn.conf.py wsgi:app, 2 workers x 2 threads, on a free port."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "2",
           "DATABASE_URL": database_url, "APP_ENV": "testing",
           "GUNICORN_PRELOAD": "1" if request.param else "0"}
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if call("GET", base + "/healthz")[0] == 200:
                break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail("gunicorn did not become healthy:\n" + server.communicate()[0])
        time.sleep(0.1)
    yield base
    server.send_signal(signal.SIGTERM)
    output = server.communicate(timeout=30)[0]
    assert server.returncode == 0, output
    assert "Traceback" not in output, output


def test_the_real_server_serves_the_api_from_every_worker(gunicorn):
    created = [call("POST", gunicorn + "/api/users", {"name": f"G{n}", "email": f"g{n}@example.com"})
               for n in range(20)]
    assert [status for status, _ in created] == [201] * 20

    for _, user in created:
        assert call("GET", f"{gunicorn}/api/users/{user['id']}") == (200, user)
    assert call("POST", gunicorn + "/api/users", {"name": "Dup", "email": "g0@example.com"})[0] == 409
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
