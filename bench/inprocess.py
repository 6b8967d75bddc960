"""Requests served straight through a WSGI callable, with no server and no network:
for the scripts that look inside one process (hotpath.py, instructions.py)."""

import io
import json

from werkzeug.test import EnvironBuilder


def environ(path: str, token: str, method: str = "GET", body: dict | None = None) -> dict:
    """A request's WSGI environ, its body kept aside so that it can be served again."""
    data = json.dumps(body).encode() if body is not None else b""
    built = EnvironBuilder(
        path=path,
        method=method,
        data=data,
        content_type="application/json" if body is not None else None,
        headers={"Authorization": f"Bearer {token}"},
    ).get_environ()
    built["bench.body"] = data
    return built


def call(app, environ: dict) -> int:
    """Serve `environ` with `app`, reading the whole body; the status code."""
    status = []
    body = app(
        dict(environ, **{"wsgi.input": io.BytesIO(environ["bench.body"])}), lambda s, h, exc_info=None: status.append(s)
    )
    for _ in body:
        pass
    getattr(body, "close", lambda: None)()
    return int(status[0].split()[0])
