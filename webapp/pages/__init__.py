"""The HTML pages: server-rendered forms that work without JavaScript.

Writes follow post/redirect/get with a flash message. Invalid input re-renders the
form with what was typed and a message under each bad field, nothing written.
"""

from flask import Blueprint

from ..auth import login_manager, require_sign_in
from ..security import protect_forms
from .display import init_blueprint

bp = Blueprint("pages", __name__)
bp.before_request(require_sign_in)
bp.after_request(login_manager._update_remember_cookie)  # not app-wide: auth.init_app
protect_forms(bp)
init_blueprint(bp)

from . import account, selection, users  # noqa: E402,F401  (register the routes on bp)
