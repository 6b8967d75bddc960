"""How gunicorn puts a response on the wire: its head and the start of its body in one send.

gunicorn 27 writes a response's status line and headers with one `sendall` and its
body with another. A worker killed between the two (SIGKILL, the OOM killer) leaves
the proxy holding a head: nginx has already passed it on to its client, so
`proxy_next_upstream` can no longer try the other instance, and the client gets a head
and a short body. Sent together, a kill leaves nginx either nothing (it retries an
idempotent request elsewhere) or the whole of a response the app returned in one piece,
which the kernel delivers after the process is gone. It also saves a system call per
response.

gunicorn has no setting for this. Its `Response` frames every body write in one
method, `_emit_body`, "so a subclass can frame it differently", and
`gunicorn.http.wsgi.create()` builds a `Response` for every HTTP/1 request of every
worker class: `install()` puts `OneSendResponse` there, in each worker
(gunicorn.conf.py's `post_worker_init`). HTTP/2 passes its own response class and is
left alone. docs/production.md says what can still be cut.
"""

from collections.abc import Callable
from typing import Any

from gunicorn.http import wsgi


class _Held:
    """Stands in for the socket while gunicorn frames bytes, and keeps them."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.parts.append(data)


class OneSendResponse(wsgi.Response):  # type: ignore[misc]  # gunicorn ships no type information
    """gunicorn's `Response`, holding the head until the first body bytes (or the end of a
    body-less response) so that both leave in one `sendall`.

    The bytes are gunicorn's own: its `send_headers`, `_emit_body` and `close` write
    into a `_Held` buffer, so status line, headers and chunked framing stay exactly
    gunicorn's. `headers_sent` keeps meaning "on the wire": until the head is sent, an
    error is still answered with a clean 500 by the worker.
    """

    sock: Any  # the connection's socket, set by gunicorn's __init__
    headers_sent: bool

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._head: bytes | None = None
        self._hold_head = True

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info:
            self._head = None  # nothing was sent: PEP 3333 lets the app replace the status
        return super().start_response(status, headers, exc_info)

    def send_headers(self) -> None:
        if self.headers_sent or self._head is not None:
            return
        if not self._hold_head:
            super().send_headers()
            return
        self._head = self._framed(super().send_headers)
        self.headers_sent = False  # gunicorn's send_headers said so, but the head is held

    def write(self, arg: bytes) -> None:
        super().write(arg)
        if not arg:
            # An empty item is how a WSGI app asks for the head now (gunicorn sends it then).
            self._send_head()

    def _emit_body(self, data: bytes) -> None:
        if self._head is None:
            super()._emit_body(data)
            return
        emit = super()._emit_body
        self._send_head(self._framed(lambda: emit(data)))

    def sendfile(self, respiter: Any) -> bool:
        # gunicorn's sendfile writes the file (and its chunk size) to the socket itself,
        # right after the head: that head cannot wait, and goes alone, as gunicorn sends it.
        self._hold_head = False
        try:
            return bool(super().sendfile(respiter))
        finally:
            self._hold_head = True

    def close(self) -> None:
        self.send_headers()
        if self._head is None:
            super().close()
        else:
            self._send_head(self._framed(super().close))  # with a chunked body's last chunk

    def _framed(self, write: Callable[[], None]) -> bytes:
        """What `write` would put on the socket, held back instead."""
        sock, held = self.sock, _Held()
        self.sock = held
        try:
            write()
        finally:
            self.sock = sock
        return b"".join(held.parts)

    def _send_head(self, after: bytes = b"") -> None:
        """The held head, if any, and the bytes that follow it, in one `sendall`."""
        if self._head is None:
            return
        head, self._head = self._head, None
        self.sock.sendall(head + after)
        self.headers_sent = True


def install() -> None:
    """Make every HTTP/1 response of this gunicorn process a `OneSendResponse`."""
    wsgi.Response = OneSendResponse
