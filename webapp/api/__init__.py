"""The JSON API under /api: the users resource and its OpenAPI description.

Answers are JSON, errors problem JSON (webapp/errors.py). Every user response
carries an ETag; writes honour If-Match, reads If-None-Match (conditional.py).
"""

from flask import Blueprint

from ..auth import require_token

bp = Blueprint("api", __name__, url_prefix="/api")
bp.before_request(require_token)

from . import tokens, users  # noqa: E402,F401  (register the routes on bp)
