"""webapp/serving.py: a response's head leaves with the start of its body, in one send.

The first half drives gunicorn's own `Response` and ours with a request gunicorn's
parser read, over a SOCK_SEQPACKET socket pair, where every send arrives as one
message: the bytes must be gunicorn's, the sends fewer. The second half asks a real
gunicorn (gunicorn.conf.py installs it in every worker) through a raw socket.
"""

import json
import re
import socket
import struct

import pytest
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

from webapp.serving import OneSendResponse

from server import ROOT

BODY = b'{"id": 1}'
JSON = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]
CSV = [("Content-Type", "text/csv")]  # no length: chunked on HTTP/1.1, read to the close on 1.0


def request(method: str = "GET", version: str = "1.1") -> bytes:
    return f"{method} /api/users/1 HTTP/{version}\r\nHost: example.com\r\n\r\n".encode()


def sends(response_class, raw_request: bytes, status: str, headers, body) -> list[bytes]:
    """Each send the response made, in order."""
    cfg = Config()
    req = next(RequestParser(cfg, [raw_request], ("127.0.0.1", 50000)))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        response = response_class(req, ours, cfg)
        response.start_response(status, list(headers))
        try:
            if isinstance(body, wsgi.FileWrapper):
                response.write_file(body)
            else:
                for item in body:
                    response.write(item)
            response.close()
        finally:
            if hasattr(body, "close"):
                body.close()  # as the worker does with the app's iterable
        ours.shutdown(socket.SHUT_WR)
        return list(iter(lambda: theirs.recv(1 << 20), b""))


def same_second(wire: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", wire)


CASES = {
    # name: (request, status, headers, body items, our sends, the body bytes in the first)
    "json in one item": (request(), "200 OK", JSON, [BODY], 1, BODY),
    "json in two": (request(), "200 OK", JSON, [BODY[:4], BODY[4:]], 2, BODY[:4]),
    "Content-Length cuts a longer body": (request(), "200 OK", JSON, [BODY + b"more", b"!"], 1, BODY),
    "chunked": (request(), "200 OK", CSV, [b"id\r\n", b"1\r\n"], 3, b"4\r\nid\r\n\r\n"),
    "chunked, empty": (request(), "200 OK", CSV, [], 1, b"0\r\n\r\n"),
    "chunked, an empty first item asks for the head": (request(), "200 OK", CSV, [b"", b"1\r\n"], 3, b""),
    "streamed to the close on HTTP/1.0": (request(version="1.0"), "200 OK", CSV, [b"id\r\n", b"1\r\n"], 2, b"id\r\n"),
    "HEAD": (request("HEAD"), "200 OK", JSON, [], 1, b""),
    "304": (request(), "304 Not Modified", [("ETag", '"1-1"')], [], 1, b""),
    "204": (request("DELETE"), "204 No Content", [("Content-Length", "0")], [], 1, b""),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_the_wire_carries_gunicorns_bytes_with_the_head_in_the_first_body_send(case):
    raw_request, status, headers, body, expected_sends, first_body = case
    theirs = sends(wsgi.Response, raw_request, status, headers, body)
    ours = sends(OneSendResponse, raw_request, status, headers, body)

    assert same_second(b"".join(ours)) == same_second(b"".join(theirs))
    assert len(ours) == expected_sends
    head, _, after = ours[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and after == first_body


def test_until_the_head_is_sent_headers_sent_is_false_and_the_app_may_still_replace_it():
    cfg = Config()
    req = next(RequestParser(cfg, [request()], ("127.0.0.1", 50000)))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        response = OneSendResponse(req, ours, cfg)
        response.start_response("200 OK", [("Content-Length", "0")])
        response.write(b"more than its length")  # nothing of it goes: the head waits for the end
        theirs.setblocking(False)
        with pytest.raises(BlockingIOError):
            theirs.recv(1 << 20)
        # What the worker asks before it answers an error with a 500 of its own (PEP 3333's
        # exc_info likewise): nothing was sent yet.
        assert response.headers_sent is False
        try:
            raise RuntimeError("the app failed")
        except RuntimeError as error:
            response.start_response("500 Internal Server Error", [], (type(error), error, error.__traceback__))
        response.close()
        assert response.headers_sent is True
        assert theirs.recv(1 << 20).startswith(b"HTTP/1.1 500 Internal Server Error\r\n")


def test_gunicorns_own_response_sends_a_small_body_apart_from_its_head():
    # Why webapp/serving.py exists: if gunicorn ever sends them together, it can go.
    theirs = sends(wsgi.Response, request(), "200 OK", JSON, [BODY])

    assert [part.endswith(b"\r\n\r\n") for part in theirs] == [True, False]


def test_a_file_goes_by_gunicorns_sendfile_its_head_sent_alone_before_it():
    path = ROOT / "webapp" / "static" / "style.css"
    headers = [("Content-Type", "text/css"), ("Content-Length", str(path.stat().st_size))]
    with open(path, "rb") as first, open(path, "rb") as second:
        theirs = sends(wsgi.Response, request(), "200 OK", headers, wsgi.FileWrapper(first))
        ours = sends(OneSendResponse, request(), "200 OK", headers, wsgi.FileWrapper(second))

    assert same_second(b"".join(ours)) == same_second(b"".join(theirs))
    assert ours[0].endswith(b"\r\n\r\n") and b"".join(ours[1:]) == path.read_bytes()


# -- a real gunicorn, through a raw socket ----------------------------------------------


class Connection:
    """One kept-alive HTTP/1.1 connection that reads each response strictly by its framing."""

    def __init__(self, server) -> None:
        self.server = server
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        self.stream = self.sock.makefile("rb")

    def ask(self, method: str, path: str, close: bool = False, **headers: str):
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in self.server.headers.items())]
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        lines += ["Connection: close"] if close else []
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status = int(self.stream.readline().split()[1])
        head = {}
        while (line := self.stream.readline()) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            head[name.lower()] = value.strip()
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif head.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self.stream.readline(), 16):
                body += self.stream.read(size)
                assert self.stream.read(2) == b"\r\n"
            assert self.stream.read(2) == b"\r\n"  # the last chunk, no trailers
        else:
            body = self.stream.read(int(head["content-length"]))
        return status, head, body

    def rest(self) -> bytes:
        """What the server sent after the last response, until it closed."""
        return self.stream.read()

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


@pytest.fixture
def user(live_server):
    return live_server.post("/api/users", {"name": "Wire", "email": "wire@example.com"}).json()


def test_every_kind_of_response_is_framed_right_on_one_kept_alive_connection(live_server, user):
    connection = Connection(live_server)
    path = f"/api/users/{user['id']}"

    status, head, body = connection.ask("GET", path)
    assert (status, json.loads(body)) == (200, user) and int(head["content-length"]) == len(body)
    status, head_only, _ = connection.ask("HEAD", path)
    assert (status, head_only["content-length"], head_only["etag"]) == (200, head["content-length"], head["etag"])
    assert connection.ask("GET", path, If_None_Match=head["etag"])[0] == 304
    assert connection.ask("OPTIONS", "/api/users")[0] == 204
    status, csv_head, csv = connection.ask("GET", "/api/users.csv")
    assert (status, csv_head["transfer-encoding"]) == (200, "chunked") and b"wire@example.com" in csv
    status, _, style = connection.ask("GET", "/static/style.css")
    assert (status, style) == (200, (ROOT / "webapp" / "static" / "style.css").read_bytes())
    assert connection.ask("GET", path, close=True)[0] == 200
    assert connection.rest() == b""  # not a stray byte after the last response
    connection.close()


TCPI_DATA_SEGS_IN = 152  # offset of struct tcp_info's tcpi_data_segs_in (Linux 4.6+), a __u32


def data_segments_in(sock: socket.socket) -> int:
    return struct.unpack_from("I", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256), TCPI_DATA_SEGS_IN)[0]


@pytest.fixture(params=[False, True], ids=["forked-app", "preloaded-app"])
def gunicorn(request, serve, database_url, committing):
    return serve(database_url, GUNICORN_PRELOAD="1" if request.param else "0")


def test_the_json_of_a_user_and_of_a_page_of_users_arrives_in_one_tcp_segment(gunicorn):
    made = [gunicorn.post("/api/users", {"name": f"Wire {n}", "email": f"wire{n}@example.com"}) for n in range(10)]
    paths = [f"/api/users/{made[0].json()['id']}", "/api/users?per_page=10"]  # what the cluster's kill test reads
    for path in paths * 3:  # each worker, more than likely
        connection = Connection(gunicorn)
        status, _, body = connection.ask("GET", path, close=True)
        assert (status, connection.rest()) == (200, b"") and json.loads(body)
        # Sent apart, head and body are two segments even on loopback: gunicorn sets
        # TCP_NODELAY on its listener, which its connections inherit.
        assert data_segments_in(connection.sock) == 1, path
        connection.close()
