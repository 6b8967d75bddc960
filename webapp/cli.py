"""Flask CLI commands: `db upgrade|downgrade|current`, `init-db`, `seed-users N`,
`import-users FILE`, `create-admin EMAIL`, `create-token EMAIL`.

Each command runs inside an application context (with_appcontext, also under the
test runner), so the same teardown that ends a request's session ends theirs.
"""

import os
import stat
import sys
from typing import IO

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from marshmallow import ValidationError
from sqlalchemy import select

from . import migrations, seed
from .bulk import imports, inserts
from .db import Session
from .domain import accounts, emails
from .domain.models import users_table
from .domain.schemas import IMPORT_MODES, user_schema

SEED_BATCH = 10_000
REJECTIONS_SHOWN = 20  # import-users prints the first ones; the count says how many in all
MAX_SEED_BATCH = 50_000


db = AppGroup("db", help="Schema migrations (Alembic).")


def init_app(app: Flask) -> None:
    app.cli.add_command(db)
    app.cli.add_command(init_db)
    app.cli.add_command(seed_users)
    app.cli.add_command(import_users)
    app.cli.add_command(create_admin)
    app.cli.add_command(create_token)


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Upgrade the schema to REVISION (default: head)."""
    migrations.upgrade(revision)
    click.echo(f"Database schema is at {migrations.current() or 'base'}.")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Downgrade the schema to REVISION (base: drop everything)."""
    migrations.downgrade(revision)
    click.echo(f"Database schema is at {migrations.current() or 'base'}.")


@db.command("current")
def db_current() -> None:
    """Print the schema's current revision."""
    click.echo(migrations.current() or "base")


@click.command("init-db")
@with_appcontext
def init_db() -> None:
    """Bring the schema up to date: an alias of `db upgrade head`."""
    migrations.upgrade("head")
    click.echo("Database schema is ready.")


@click.command("seed-users")
@click.argument("count", type=click.IntRange(min=1))
@click.option(
    "--batch",
    type=click.IntRange(min=1, max=MAX_SEED_BATCH),
    default=SEED_BATCH,
    show_default=True,
    help="Users per transaction.",
)
@with_appcontext
def seed_users(count: int, batch: int) -> None:
    """Add COUNT fake users, BATCH per transaction, with the bulk import's insert.

    Each batch is one transaction, its users' history included. Much of the time
    goes to the database updating the trigram indexes.
    """
    session = Session()
    people = seed.fake_users()
    added = 0
    while added < count:
        # The bulk import's insert: two statements per batch, history included. A user
        # whose email is taken (by an earlier run) is skipped by it, and made up again.
        added += len(inserts.insert_users([next(people) for _ in range(min(batch, count - added))]))
        session.commit()
    click.echo(f"Added {added} users.")


@click.command("import-users")
@click.argument("file", type=click.File("rb"))
@click.option(
    "--mode",
    type=click.Choice(IMPORT_MODES),
    default="atomic",
    show_default=True,
    help="atomic: nothing is written unless every row is valid and new. "
    "partial: valid rows are written, the others reported.",
)
@with_appcontext
def import_users(file: IO[bytes], mode: str) -> None:
    """Import users from a CSV FILE (header: name,email) of any size; - reads stdin.

    Exits with status 1 when rows were rejected, 2 when the file is unreadable.
    """
    size = _regular_file_size(file)
    with click.progressbar(
        length=size or 1, label="Importing", file=sys.stderr, show_pos=False, hidden=size is None
    ) as bar:

        def progress(report: imports.ImportReport) -> None:
            if size:
                bar.update(file.tell() - bar.pos)

        try:
            report = imports.import_users(imports.read_csv(file), mode, on_batch=progress)
        except imports.ImportFileError as error:
            click.echo(f"\nError: {error.description} Nothing was imported.", err=True)
            sys.exit(2)
    verdict = "nothing imported (atomic mode)" if report.refused else f"{report.created} created"
    click.echo(f"{verdict}, {report.rejected_count} rejected.")
    for rejection in report.rejected[:REJECTIONS_SHOWN]:
        click.echo(f"  line {rejection.line}: {rejection.column}: {rejection.message}", err=True)
    if report.rejected_count > REJECTIONS_SHOWN:
        click.echo(f"  ... and {report.rejected_count - REJECTIONS_SHOWN} more.", err=True)
    if report.rejected_count:
        sys.exit(1)


def _regular_file_size(file: IO[bytes]) -> int | None:
    try:
        info = os.fstat(file.fileno())
    except (OSError, ValueError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


@click.command("create-admin")
@click.argument("email")
@click.option("--name", help="The user's name (a new user's defaults to the part of EMAIL before the @).")
@with_appcontext
def create_admin(email: str, name: str | None) -> None:
    """Make EMAIL an admin, creating the user if needed, and set its password:
    read from standard input when that is not a terminal, else asked for twice."""
    try:
        fields = user_schema.load({"email": email, "name": name or email.partition("@")[0] or email})
    except ValidationError as error:
        raise click.BadParameter(_problems(error)) from None
    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        user_schema.load({"password": password}, partial=True)
    except ValidationError as error:
        raise click.UsageError(_problems(error)) from None
    user, created = accounts.make_admin(fields["email"], name and fields["name"], password)
    click.echo(f"{'Created' if created else 'Promoted'} {user.email} (id {user.id}) as an admin.")


@click.command("create-token")
@click.argument("email")
@click.option("--name", "label", default="API token", show_default=True, help="What the token is for.")
@click.option("--days", type=click.IntRange(min=1, max=3650), help="Lifetime in days (default: API_TOKEN_DAYS).")
@with_appcontext
def create_token(email: str, label: str, days: int | None) -> None:
    """Print a new API token for EMAIL's user, alone on the last line."""
    user = (
        Session().execute(select(users_table.c.id).where(users_table.c.email == emails.lookup_key(email))).one_or_none()
    )
    if user is None:
        raise click.UsageError(f"There is no user with the email {email}.")
    token, secret = accounts.new_token(user.id, label, days or current_app.config["API_TOKEN_DAYS"])
    click.echo(f"Token {token.id} ({token.name}) for {email}, valid until {token.expires_at:%Y-%m-%d %H:%M} UTC:")
    click.echo(secret)


def _problems(error: ValidationError) -> str:
    messages = error.messages if isinstance(error.messages, dict) else {"input": error.messages}
    return "; ".join(f"{field}: {' '.join(map(str, problems))}" for field, problems in messages.items())
