"""Running the Alembic migrations in migrations/ against the app's engine."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

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
    with get_engine().connect() as connection, _foreign_keys_off(connection), connection.begin():
        config.attributes["connection"] = connection  # env.py uses it as is
        action(config, revision)
        _check_foreign_keys(connection)


@contextmanager
def _foreign_keys_off(connection: Connection) -> Iterator[None]:
    """SQLite: foreign keys off while the migration runs, as SQLite's ALTER TABLE
    instructions say. A batch migration copies a table and drops the original, and
    with foreign keys on, that DROP deletes its rows first, cascading to the rows
    that reference them (a user's tokens). The pragma works outside a transaction
    only, so it goes to the driver's connection before SQLAlchemy begins one."""
    if connection.dialect.name != "sqlite":
        yield
        return
    driver = connection.connection.driver_connection
    driver.execute("PRAGMA foreign_keys = OFF")  # type: ignore[union-attr]
    try:
        yield
    finally:
        driver.execute("PRAGMA foreign_keys = ON")  # type: ignore[union-attr]


def _check_foreign_keys(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
        if broken:
            raise RuntimeError(f"the migration left rows whose foreign keys point nowhere: {broken[:10]}")
