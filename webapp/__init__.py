"""The user service: a Flask app whose requests share nothing but a session registry."""

from typing import Any

from flask import Flask

import config

from . import api, auth, bodies, cli, db, errors, pages, security, site
from .api import openapi
from .bulk import exports
from .domain import audit
from .ops import health, metrics, observability, session_events
from .routing import IdConverter, options_response
from .security import csrf

__all__ = ["create_app", "csrf"]


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the app: config (defaults, environment, `overrides`), database, routes."""
    app = Flask(__name__, instance_relative_config=True)
    config.load(app, overrides)
    app.url_map.converters["id"] = IdConverter
    app.make_default_options_response = options_response  # type: ignore[method-assign]
    bodies.init_app(app)

    db.init_app(app)
    auth.init_app(app)
    audit.init_app(app)
    session_events.init_app(app)
    metrics.init_app(app)
    observability.init_app(app)
    cli.init_app(app)
    errors.init_app(app)
    security.init_app(app)
    exports.init_app(app)

    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(site.bp)
    return app
