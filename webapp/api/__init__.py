"""The JSON API under /api: the users resource and its OpenAPI description.

Answers are JSON, errors problem JSON (webapp/errors.py). Every user response
carries an ETag; writes honour If-Match, reads If-None-Match (conditional.py).
"""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api")

from . import users  # noqa: E402,F401  (registers the routes on bp)
