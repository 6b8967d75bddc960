"""What a browser asks the site for on its own, signed in or not: /favicon.ico."""

from flask import Blueprint, Response, current_app, send_from_directory

bp = Blueprint("site", __name__)


@bp.get("/favicon.ico")
def favicon() -> Response:
    """The SVG icon the pages link, for the browsers and tools that ask by the old name."""
    response = send_from_directory(current_app.static_folder or "static", "favicon.svg", mimetype="image/svg+xml")
    response.cache_control.public = True
    response.cache_control.max_age = 86400
    return response
