"""A real gunicorn serving wsgi:app on a free port, for tests that need the real server."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def gunicorn(**env: str) -> Iterator[str]:
    """`gunicorn -c gunicorn.conf.py wsgi:app` with `env` over os.environ; yields its base URL.

    Fails if the server does not become healthy in time, and afterwards if it did not
    stop cleanly on SIGTERM or logged a traceback. Its output goes to a file, not a
    pipe, so a long session of requests cannot fill a buffer and stall it.
    """
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile(mode="w+") as log:
        server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                                  cwd=ROOT, env={**os.environ, "PORT": str(port), **env},
                                  stdout=log, stderr=subprocess.STDOUT)

        def output() -> str:
            log.seek(0)
            return log.read()

        deadline = time.monotonic() + 20
        while not healthy(base):
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                server.wait()
                pytest.fail("gunicorn did not become healthy:\n" + output())
            time.sleep(0.1)
        try:
            yield base
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        assert server.returncode == 0, output()
        assert "Traceback" not in output(), output()
