"""Loading configuration into the app, and the secret key it cannot run without."""

import os
import secrets
import tempfile
from typing import Any

from flask import Flask

import config


def load(app: Flask, overrides: dict[str, Any] | None = None) -> None:
    """Class defaults (by APP_ENV), then the environment, then `overrides` (tests)."""
    cls = config.config_class()
    app.config.from_object(cls)
    app.config.update(config.from_environment())
    app.config.update(overrides or {})
    if not app.config["SECRET_KEY"]:
        if issubclass(cls, config.ProductionConfig):
            raise RuntimeError("SECRET_KEY must be set in production (APP_ENV=production).")
        app.config["SECRET_KEY"] = instance_secret_key(app.instance_path)


def instance_secret_key(instance_path: str) -> str:
    """A random key made once per instance folder and kept there, so sessions and
    CSRF tokens survive restarts and are shared by every worker."""
    path = os.path.join(instance_path, "secret_key")
    os.makedirs(instance_path, exist_ok=True)
    if not os.path.exists(path):
        # Write aside, then link into place: link fails if the name exists, so when
        # several workers start at once exactly one key wins, and nobody reads a
        # half-written file.
        fd, draft = tempfile.mkstemp(dir=instance_path)
        try:
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_hex(32))
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(draft)
    with open(path) as file:
        return file.read().strip()
