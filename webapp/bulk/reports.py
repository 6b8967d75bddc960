"""Import reports kept briefly for the upload form's redirect (post/redirect/get).

The form's POST imports, saves the report here and redirects to
/users/import?report=<token>; that GET, on whichever worker, shows it, as often as
the page is reloaded, without importing again. Only who imported may read it,
and it is gone after KEPT_FOR: the rows rejected name people's data.
"""

import re
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, delete, insert, select

from ..db import Session
from ..domain.accounts import acting_user_id
from ..domain.models import UTCDateTime, import_reports_table, utcnow
from .imports import ImportReport

KEPT_FOR = timedelta(hours=1)
_reports = import_reports_table
_INSERT = insert(_reports)
_EXPIRED = delete(_reports).where(_reports.c.created_at < bindparam("before", type_=UTCDateTime))
_BY_TOKEN = select(_reports.c.report).where(
    _reports.c.token == bindparam("token"),
    _reports.c.actor_id == bindparam("actor_id"),
    _reports.c.created_at >= bindparam("since", type_=UTCDateTime),
)


def save(report: ImportReport, shown: int) -> str:
    """Keep `report` (its first `shown` rejections) and commit; returns its token.
    Reports past their time are deleted on the way."""
    now = utcnow()
    token = secrets.token_urlsafe(32)
    kept = {
        "mode": report.mode,
        "created": report.created,
        "rejected_count": report.rejected_count,
        "refused": report.refused,
        "rejected": [
            {"line": r.line, "field": r.field, "column": r.column, "message": r.message}
            for r in report.rejected[:shown]
        ],
    }
    session = Session()
    session.execute(_EXPIRED, {"before": now - KEPT_FOR})
    session.execute(_INSERT, {"token": token, "actor_id": acting_user_id(), "created_at": now, "report": kept})
    session.commit()
    return token


_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


def well_formed(token: str) -> bool:
    """Whether `token` could be one save() made (a link typed or mangled may not be)."""
    return _TOKEN.fullmatch(token) is not None


def load(token: str) -> dict[str, Any] | None:
    """The report kept under `token` for the acting user, or None (unknown, another's, expired)."""
    report: dict[str, Any] | None = Session().scalar(
        _BY_TOKEN, {"token": token, "actor_id": acting_user_id(), "since": utcnow() - KEPT_FOR}
    )
    return report
