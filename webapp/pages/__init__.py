"""The HTML pages: server-rendered forms that work without JavaScript.

Writes follow post/redirect/get with a flash message. Invalid input re-renders the
form with what was typed and a message under each bad field, nothing written.
"""

from flask import Blueprint

from ..security import protect_forms

bp = Blueprint("pages", __name__)
protect_forms(bp)

from . import users  # noqa: E402,F401  (registers the routes on bp)
