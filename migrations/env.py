"""Alembic environment: the app's engine and the models' metadata.

`flask --app wsgi db upgrade` hands us a connection of the running app's engine;
plain `alembic upgrade head` builds the app from the environment to get one.
"""

from logging.config import fileConfig

from alembic import context

from webapp import create_app
from webapp.db import get_engine
from webapp.domain.models import Base
from webapp.migrations import include_object

config = context.config
if config.config_file_name is not None and not config.attributes.get("connection"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things: Alembic copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=include_object(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


def _engine():
    """The engine of an app built from the environment (plain `alembic` commands)."""
    return get_engine(create_app())


def run_offline() -> None:
    context.configure(
        url=_engine().url, target_metadata=Base.metadata, literal_binds=True, dialect_opts={"paramstyle": "named"}
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    engine = _engine()
    try:
        with engine.begin() as connection:
            run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
