"""What a hostile or broken client sends on the wire, against the real server (gunicorn
with gunicorn.conf.py, tests/server.py) over raw sockets: chunked bodies that do
not parse or do not end, request lines and headers past gunicorn's limits, made-up
methods by the thousand, a Host the app does not serve."""

import contextlib
import json
import re
import socket
import time
from pathlib import Path

import pytest

from webapp import create_app, migrations
from webapp.db import get_engine

from helpers import add_admin_to, empty_database
from server import Metrics, Server

LIMIT = 64 * 1024  # the server's MAX_CONTENT_LENGTH here, to keep the bodies small


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module, on a database of its own: what these requests
    write must not show up in other tests' tables."""
    folder = tmp_path_factory.mktemp("hostile")
    with empty_database(folder) as url:
        app = create_app({"DATABASE_URL": url})
        with app.app_context():
            migrations.upgrade("head")
        get_engine(app).dispose()
        running = Server(url, folder, MAX_CONTENT_LENGTH=str(LIMIT)).start()
        running.authorize(add_admin_to(url).token)
        yield running
        running.stop()


class Answer:
    """The first HTTP response read from a socket."""

    def __init__(self, raw: bytes) -> None:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
        self.body = rest[: int(self.headers.get("content-length", len(rest)))]

    def problem(self) -> dict:
        assert self.headers["content-type"] == "application/problem+json", (self.status, self.body)
        body = json.loads(self.body)
        assert body["status"] == self.status
        return body


def exchange(server: Server, request: bytes, timeout: float = 10) -> Answer:
    """Send `request` on a fresh connection; read until the first response is whole."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        # The server may answer and close before it took all of the request.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            head, sep, rest = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if sep and length and len(rest) >= int(length.group(1)):
                break
    assert data, "no answer at all"
    return Answer(data)


def chunked(server: Server, path: str, content_type: str, body: bytes) -> bytes:
    """A chunked POST of `body`, which is sent as the chunks already framed."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Authorization: {server.headers['Authorization']}\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def framed(payload: bytes, size: int = 4096) -> bytes:
    """`payload` as well-formed chunks of `size` bytes, and the last chunk."""
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


BODIES = [
    ("/api/users", "application/json"),
    ("/api/users/import", "text/csv"),
    ("/api/users/import", "application/json"),
]
MALFORMED = {
    "a chunk size that is not hex": b"zz\r\nabc\r\n0\r\n\r\n",
    "a chunk longer than its size": b"3\r\nabcdef\r\n0\r\n\r\n",
    "a negative chunk size": b"-3\r\nabc\r\n0\r\n\r\n",
    "a size with a stray character": b"3;\x00\r\nabc\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("path, content_type", BODIES)
@pytest.mark.parametrize("malformed", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_chunked_body_is_a_400_problem(server, path, content_type, malformed):
    answer = exchange(server, chunked(server, path, content_type, malformed))

    assert answer.status == 400, answer.body
    assert "chunk" in answer.problem()["detail"].lower()


@pytest.mark.parametrize("path, content_type", BODIES)
def test_a_chunked_body_over_max_content_length_is_a_413_problem(server, path, content_type):
    oversized = b"[" + b" " * LIMIT + b"]" if "json" in content_type else b"name,email\n" + b"x" * LIMIT

    answer = exchange(server, chunked(server, path, content_type, framed(oversized)))

    assert answer.status == 413, answer.body
    answer.problem()


def test_a_chunked_body_of_exactly_max_content_length_is_read_whole(server):
    user = json.dumps({"name": "Chunked", "email": "chunked@example.com"}).encode()
    padded = user[:-1] + b" " * (LIMIT - len(user)) + b"}"
    assert len(padded) == LIMIT

    answer = exchange(server, chunked(server, "/api/users", "application/json", framed(padded)))

    assert answer.status == 201, answer.body


# -- errors gunicorn answers before the app (docs/api.md, "Errors before the app") ----------


def test_a_request_line_over_gunicorns_limit_is_414(server):
    answer = exchange(server, b"GET /api/users?q=" + b"x" * 5000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")

    assert answer.status == 414


def test_a_header_over_gunicorns_limit_is_431(server):
    answer = exchange(server, b"GET /api/users HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"x" * 9000 + b"\r\n\r\n")

    assert answer.status == 431


def test_more_headers_than_gunicorn_takes_is_431(server):
    headers = b"".join(b"X-H%d: v\r\n" % n for n in range(101))

    answer = exchange(server, b"GET /api/users HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n")

    assert answer.status == 431


# -- server state a client cannot grow ---------------------------------------------------


def series(metrics: Metrics) -> set[tuple[str, tuple]]:
    return {(name, tuple(sorted(labels.items()))) for name, samples in metrics.samples.items() for labels, _ in samples}


def test_two_thousand_made_up_methods_add_no_metrics_series(server):
    def made_up(n: int) -> bytes:
        method = f"X{n:04d}METHOD".encode()
        path = b"/api/users" if n % 2 else b"/no/such/route/%d" % n
        return b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % (method, path)

    for n in range(20):  # each kind of answer once, so that its series exist
        exchange(server, made_up(n))
    before = server.metrics()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        file = sock.makefile("rb")
        for n in range(20, 2020):  # kept alive: one connection, one request after another
            sock.sendall(made_up(n))
            status = file.readline()
            assert status.split()[1] in {b"404", b"405"}, status
            length = 0
            while (line := file.readline()) not in {b"\r\n", b""}:
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            file.read(length)
    after = server.metrics()

    assert series(after) == series(before)
    assert len(after.text) < len(before.text) * 1.1
    assert not [labels for labels, _ in after.samples["webapp_http_requests_total"] if "X00" in str(labels)]


def test_an_untrusted_host_is_a_400_problem_from_the_real_server(server):
    answer = exchange(server, b"GET /api/users HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")

    assert answer.status == 400
    assert "evil.example" not in answer.headers.get("location", "")
    answer.problem()


def test_an_idle_kept_alive_connection_is_closed_after_keepalive_seconds(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        started = time.monotonic()
        # Reads the response, then waits: read() returns only when the server closes
        # its end (a socket timeout, 15 s, fails the test).
        answer = sock.makefile("rb").read()

    assert answer.startswith(b"HTTP/1.1 200")
    assert time.monotonic() - started < 10  # keepalive is 2 s; the poller looks once a second


def test_a_scrape_while_a_workers_metrics_file_is_still_empty_is_a_503_never_a_500(server):
    # What a worker that is starting leaves for a moment: its file made, not yet sized.
    empty = Path(server.env["PROMETHEUS_MULTIPROC_DIR"]) / "counter_4000000.db"
    empty.touch()
    try:
        answer = server.get("/metrics")
    finally:
        empty.unlink()

    assert answer.status == 503 and answer.headers["Retry-After"]
    assert server.get("/metrics").status == 200
