"""Running the Alembic migrations in migrations/ against the app's engine."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from .db import get_engine

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def upgrade(revision: str = "head") -> None:
    """Upgrade the current app's database to `revision`, in one transaction."""
    _run(command.upgrade, revision)


def downgrade(revision: str) -> None:
    _run(command.downgrade, revision)


def current() -> str | None:
    """The database's revision, or None for an empty database."""
    with get_engine().connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head() -> str | None:
    """The newest revision in migrations/."""
    return ScriptDirectory.from_config(_config()).get_current_head()


IncludeObject = Callable[[Any, str | None, str, bool, Any], bool]


def include_object(dialect_name: str) -> IncludeObject:
    """Alembic's include_object filter for a database of `dialect_name`.

    Objects the models declare for another backend only (models.postgresql_only,
    such as the trigram indexes) do not exist there by design: leave them out of
    autogenerate's comparison instead of reporting them missing.
    """

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        only_on = getattr(obj, "info", {}).get("only_on")
        return only_on is None or only_on == dialect_name

    return include


def _config() -> Config:
    return Config(str(ALEMBIC_INI))


def _run(action: Callable[[Config, str], None], revision: str) -> None:
    config = _config()
    with get_engine().begin() as connection:
        config.attributes["connection"] = connection  # env.py uses it as is
        action(config, revision)
