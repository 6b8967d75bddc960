"""Flask CLI commands: `flask --app wsgi init-db`, `flask --app wsgi seed-users N`.

Each command runs inside an application context (with_appcontext, also under the
test runner), so the same teardown that ends a request's session ends theirs.
"""

import random
import secrets

import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy import insert

from .db import Session, get_engine
from .models import Base, User

FIRST_NAMES = ["Ada", "Alan", "Barbara", "Claude", "Dennis", "Edsger", "Frances", "Grace",
               "Guido", "Hedy", "John", "Katherine", "Ken", "Linus", "Margaret", "Niklaus"]
LAST_NAMES = ["Allen", "Dijkstra", "Hamilton", "Hopper", "Johnson", "Kernighan", "Knuth",
              "Lamarr", "Liskov", "Lovelace", "Ritchie", "Shannon", "Thompson", "Turing", "Wirth"]
SEED_BATCH = 1000


def init_app(app: Flask) -> None:
    app.cli.add_command(init_db)
    app.cli.add_command(seed_users)


@click.command("init-db")
@with_appcontext
def init_db() -> None:
    """Create the tables that do not exist yet."""
    Base.metadata.create_all(get_engine())
    click.echo("Database schema is ready.")


@click.command("seed-users")
@click.argument("count", type=click.IntRange(min=1))
@with_appcontext
def seed_users(count: int) -> None:
    """Add COUNT fake users, in batches of one multi-row INSERT each."""
    session = Session()
    for start in range(0, count, SEED_BATCH):
        size = min(SEED_BATCH, count - start)
        session.execute(insert(User), [fake_user() for _ in range(size)])
        session.commit()
    click.echo(f"Added {count} users.")


def fake_user() -> dict[str, str]:
    first, last = random.choice(FIRST_NAMES), random.choice(LAST_NAMES)
    # 64 random bits keep the unique email index happy across any number of runs.
    return {"name": f"{first} {last}", "email": f"{first}.{last}.{secrets.token_hex(8)}@example.com".lower()}
