"""A request id for every request: the caller's X-Request-ID if it sent a sane one,
else a fresh one. It is echoed in the response (observability.py) and stamped on
audit rows and log lines."""

import itertools
import os
import re
import secrets
from typing import Any

from flask import has_request_context, request

HEADER = "X-Request-ID"
_ENVIRON_KEY = "webapp.request_id"
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class _Ids:
    """Fresh ids: a random prefix per process and a counter. Unique, as a uuid4 would
    be, at a fraction of its cost; a forked child draws a prefix of its own."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = secrets.token_hex(8)
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}-{next(self.counter):x}"


_ids = _Ids()


def assign(environ: dict[str, Any]) -> str:
    """The id of the request `environ` describes, kept in it: an app context pushed
    inside the request, with a g of its own, finds the same one."""
    rid: str | None = environ.get(_ENVIRON_KEY)
    if rid is None:
        sent = environ.get("HTTP_X_REQUEST_ID", "")
        rid = environ[_ENVIRON_KEY] = sent if _SANE.fullmatch(sent) else _ids.next()
    return rid


def current() -> str | None:
    """This request's id; None outside a request (CLI commands)."""
    return assign(request.environ) if has_request_context() else None
