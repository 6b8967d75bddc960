"""Liveness of the service and its database, for load balancers and HEALTHCHECK."""

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from ..db import Session

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """200 when the database answers; a database error becomes 503 in errors.py."""
    Session().execute(text("SELECT 1"))
    return jsonify(status="ok")
