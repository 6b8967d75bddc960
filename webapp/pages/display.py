"""How the pages show things: template filters for times."""

from datetime import datetime

from flask import Blueprint

from ..domain.models import utcnow

# (seconds per unit, its name): the largest unit that fits is the one said.
_UNITS = ((365 * 86400, "year"), (30 * 86400, "month"), (7 * 86400, "week"), (86400, "day"), (3600, "hour"))


def ago(at: datetime, now: datetime | None = None) -> str:
    """`at` relative to now, as a person says it: "just now", "5 minutes ago", "yesterday"."""
    seconds = int(((now or utcnow()) - at).total_seconds())
    if seconds < 45:  # negative too: another server's clock, a little ahead
        return "just now"
    if seconds < 120:
        return "a minute ago"
    if seconds < 3600:
        return f"{seconds // 60} minutes ago"
    for size, unit in _UNITS:
        count = seconds // size
        if count == 1:
            return {"day": "yesterday", "hour": "an hour ago"}.get(unit, f"a {unit} ago")
        if count > 1:
            return f"{count} {unit}s ago"
    raise AssertionError("unreachable: an hour is the smallest unit")


def when(at: datetime) -> str:
    """The absolute time, to the second, in UTC."""
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def init_blueprint(bp: Blueprint) -> None:
    bp.add_app_template_filter(ago)
    bp.add_app_template_filter(when)
