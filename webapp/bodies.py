"""Request bodies the client controls: JSON of any depth, chunked streams of any size.

* JSON nested deeper than the parser can recurse is a 400 like any other JSON it
  cannot read, not the RecursionError that would escape as a 500.
* A chunked body (no Content-Length) is held to MAX_CONTENT_LENGTH as a body with
  one is: more is a 413. werkzeug's own guard stops reading at the limit and hands
  the view what it has, so an oversized JSON body would arrive truncated and fail
  as "invalid JSON" (a 400), and the view could never tell it was cut.
* A chunked body the server cannot parse (a bad chunk size, a missing CRLF) is a
  400. gunicorn raises its parse errors from the read the view makes, and they
  are not OSErrors, so nothing between would turn them into a client error.
"""

import io
from typing import IO, Any

from flask import Flask, Request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest, ClientDisconnected, RequestEntityTooLarge
from werkzeug.utils import cached_property


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, with a body too deeply nested to parse read as invalid JSON."""

    sort_keys = False  # responses keep the schema's field order

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            # A ValueError is what Request.get_json turns into a 400.
            raise ValueError("the document is nested too deeply") from None


class BodyRequest(Request):
    """A request whose chunked body is capped and checked as it is read, and whose
    unreadable JSON says why (Flask's 400 says only "could not understand")."""

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        if e is None:
            return super().on_json_loading_failed(e)  # not JSON at all: Flask's 415
        raise BadRequest(f"The body is not valid JSON: {e}.")

    @cached_property
    def stream(self) -> IO[bytes]:
        environ = self.environ
        chunked = self.content_length is None and environ.get("wsgi.input_terminated")
        if not chunked or self.shallow or self.max_content_length is None:
            return super().stream
        return io.BufferedReader(ChunkedBody(environ["wsgi.input"], self.max_content_length))


class ChunkedBody(io.RawIOBase):
    """The server's stream of a chunked body: at most `limit` bytes (a 413 past
    them), and a stream the server could not parse a 400."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self.stream = stream
        self.left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        # One byte more than the limit allows, to tell "exactly the limit" from "more".
        want = min(len(buffer), self.left + 1)
        try:
            data = self.stream.read(want)
        except OSError:
            raise ClientDisconnected() from None  # as werkzeug's own guard says it
        except Exception as error:  # gunicorn's ParseException family, among others
            raise BadRequest(f"The chunked request body is malformed: {error}") from None
        if len(data) > self.left:
            raise RequestEntityTooLarge()
        self.left -= len(data)
        buffer[: len(data)] = data
        return len(data)


def init_app(app: Flask) -> None:
    app.json = JSONProvider(app)
    app.request_class = BodyRequest
