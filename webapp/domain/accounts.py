"""Accounts: the users who sign in, their roles, passwords and API tokens, and the
count of failed sign-ins that turns a guesser away.

Every user is an account; one with no password cannot sign in. Passwords are
hashed with scrypt (werkzeug), memory-hard; an unknown email is checked against
a dummy hash, so that it costs what a wrong password costs. A token is
`<id>.<secret>`, 32 random bytes of secret kept only as their SHA-256.
"""

import hashlib
import hmac
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from flask import current_app, g, has_app_context
from sqlalchemy import Row, bindparam, case, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from werkzeug.exceptions import Conflict, NotFound, TooManyRequests
from werkzeug.security import check_password_hash, generate_password_hash

from ..db import Session
from . import emails
from .models import ApiToken, User, failures_table, tokens_table, users_table, utcnow

ROLES = ("admin", "member")
PASSWORD_LENGTH = (8, 128)
TOKEN_BYTES = 32


@dataclass(frozen=True)
class Account:
    """Who is acting: a signed-in user as the web layer needs it, and Flask-Login's
    user object. Loaded with the request, through the request's session."""

    id: int
    name: str
    email: str
    role: str
    password_mark: str = ""  # changes with the password (get_id)

    is_authenticated = True
    is_active = True
    is_anonymous = False

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def get_id(self) -> str:
        # The cookie names the password too: changing it signs out every other browser.
        return f"{self.id}.{self.password_mark}"


def account_of(user: User | Row[Any]) -> Account:
    return Account(user.id, user.name, user.email, user.role, _mark(user.password_hash))


def _mark(password_hash: str | None) -> str:
    return hashlib.sha256((password_hash or "").encode()).hexdigest()[:12]


def find_user(user_id: int) -> Row[Any] | None:
    """The user's columns, for loading the account a session cookie names."""
    return Session().execute(select(users_table).where(users_table.c.id == user_id)).one_or_none()


def acting_user_id() -> int | None:
    """The id of the account this request acts for; None for the CLI and system work."""
    account = g.get("account") if has_app_context() else None
    return account.id if account is not None else None


# -- passwords --------------------------------------------------------------------


def hash_password(password: str) -> str:
    return generate_password_hash(password, method=current_app.config["PASSWORD_HASH_METHOD"])


def password_matches(password_hash: str | None, password: str) -> bool:
    """Whether `password` is the one hashed; as slow for a user without a password
    (or no user at all) as for a wrong one, so the time tells nothing."""
    if password_hash is None:
        check_password_hash(_dummy_hash(current_app.config["PASSWORD_HASH_METHOD"]), password)
        return False
    return check_password_hash(password_hash, password)


@cache
def _dummy_hash(method: str) -> str:
    return generate_password_hash(secrets.token_hex(16), method=method)


def current_password_refused(user_id: int, password: str | None) -> str | None:
    """Why `password` does not prove that the user knows their current password
    (a member changing it must), or None when it does.

    It is a sign-in in all but name: a wrong one counts as a failed sign-in for
    the user's email, and once they are too many TooManyFailures (429) is raised,
    so whoever holds a member's token or an open session gets no more guesses at
    the password than a stranger at the sign-in form; the right one resets the
    count. A missing or empty one is no guess and is not counted. Commits.
    """
    if not password:
        return "Give your current password to set a new one."
    user = find_user(user_id)
    if user is None:
        return "This is not your current password."
    wait = _seconds_refused(user.email)
    if wait:
        raise TooManyFailures(wait)
    if password_matches(user.password_hash, password):
        _forget_failures(user.email)
        return None
    _count_failure(user.email)
    Session().commit()
    return "This is not your current password."


# -- signing in -------------------------------------------------------------------


class TooManyFailures(TooManyRequests):
    """Five failed sign-ins for an email within the window: wait, whoever you are."""

    def __init__(self, retry_after: int) -> None:
        minutes = -(-retry_after // 60)
        super().__init__(
            f"Too many failed sign-ins for this email. Try again in {minutes} minute{'s' if minutes != 1 else ''}."
        )
        self.retry_after = retry_after
        self.response_headers = {"Retry-After": str(retry_after)}


def authenticate(email: str, password: str) -> Account | None:
    """The account whose email and password these are, or None; commits the count
    of failures, which refuses an email for a while after SIGN_IN_MAX_FAILURES."""
    email = emails.lookup_key(email)  # as the schema stored it
    wait = _seconds_refused(email)
    if wait:
        raise TooManyFailures(wait)
    session = Session()
    user = session.execute(select(users_table).where(users_table.c.email == email)).one_or_none()
    if password_matches(user.password_hash if user else None, password):
        _forget_failures(email)
        return account_of(user)  # type: ignore[arg-type]  # password_matches: there is a user
    _count_failure(email)
    session.commit()
    return None


def _window() -> timedelta:
    return timedelta(seconds=current_app.config["SIGN_IN_WINDOW_SECONDS"])


def _seconds_refused(email: str) -> int:
    row = Session().execute(select(failures_table).where(failures_table.c.email == email)).one_or_none()
    if row is None or row.failures < current_app.config["SIGN_IN_MAX_FAILURES"]:
        return 0
    left = (row.window_start + _window() - utcnow()).total_seconds()
    return max(0, int(left) + 1) if left > 0 else 0


def _forget_failures(email: str) -> None:
    session = Session()
    session.execute(delete(failures_table).where(failures_table.c.email == email))
    session.commit()


def _count_failure(email: str) -> None:
    """One more failure for `email`, in one statement whoever else counts at once:
    a window that has passed starts again at one."""
    session = Session()
    now = utcnow()
    session.execute(
        _upsert_failure(session.get_bind().dialect.name),
        {"email": email, "now": now, "window_start_before": now - _window()},
    )


@cache
def _upsert_failure(dialect: str) -> Any:
    table = failures_table
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table).values(email=bindparam("email"), failures=1, window_start=bindparam("now"))
    expired = table.c.window_start < bindparam("window_start_before")
    return statement.on_conflict_do_update(
        index_elements=[table.c.email],
        set_={
            "failures": case((expired, 1), else_=table.c.failures + 1),
            "window_start": case((expired, bindparam("now")), else_=table.c.window_start),
        },
    )


# -- the last admin ---------------------------------------------------------------


class LastAdmin(Conflict):
    description = "This is the last admin: make another user admin first."


def ensure_another_admin(user_id: int | Collection[int]) -> None:
    """Raise LastAdmin unless an admin other than `user_id` (or all of several) exists.
    Checks that could each remove an admin take turns (an advisory lock on
    PostgreSQL; SQLite's writers take turns anyway), so two of them cannot remove
    the last two."""
    session = Session()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(_ADMINS_LOCK)))
    ids = [user_id] if isinstance(user_id, int) else list(user_id)
    others = session.scalar(
        select(func.count()).select_from(users_table).where(users_table.c.role == "admin", users_table.c.id.not_in(ids))
    )
    if not others:
        raise LastAdmin()


_ADMINS_LOCK = 0x7765626170700001  # "webapp" + 1: the key no other code of ours uses


def any_admin() -> bool:
    return Session().scalar(select(users_table.c.id).where(users_table.c.role == "admin").limit(1)) is not None


def make_admin(email: str, name: str | None, password: str) -> tuple[User, bool]:
    """Create the user `email` as an admin with this password, or promote it and set
    the password; commits. Returns the user and whether it was created."""
    session = Session()
    user = session.scalars(select(User).where(User.email == email)).one_or_none()
    created = user is None
    if user is None:
        now = utcnow()  # one stamp for both, as a create gives
        user = User(email=email, name=name or email.split("@")[0], created_at=now, updated_at=now)
        session.add(user)
    elif name:
        user.name = name
    user.role = "admin"
    user.password_hash = hash_password(password)
    session.commit()
    return user, created


# -- API tokens ---------------------------------------------------------------------


def new_token(user_id: int, name: str, days: int) -> tuple[ApiToken, str]:
    """A new token for the user, committed; returns it and its secret, the only time
    the secret exists outside the client."""
    secret = secrets.token_urlsafe(TOKEN_BYTES)
    now = utcnow()
    token = ApiToken(
        user_id=user_id, name=name, secret_hash=_digest(secret), created_at=now, expires_at=now + timedelta(days=days)
    )
    session = Session()
    session.add(token)
    session.commit()
    return token, f"{token.id}.{secret}"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    """What a token check needs, as read in one statement (tokens joined to users)."""

    secret_hash: str
    expires_at: datetime
    revoked: bool
    account: Account

    def accepts(self, secret: str, now: datetime) -> bool:
        return not self.revoked and now < self.expires_at and hmac.compare_digest(self.secret_hash, _digest(secret))


def split_token(token: str) -> tuple[int, str] | None:
    """(id, secret) of a token as we issue them; None for anything else."""
    token_id, dot, secret = token.partition(".")
    if not dot or not token_id.isascii() or not token_id.isdigit() or len(token_id) > 18 or not secret:
        return None
    return int(token_id), secret


_TOKEN = (
    select(
        tokens_table.c.secret_hash,
        tokens_table.c.expires_at,
        tokens_table.c.revoked_at,
        users_table.c.id,
        users_table.c.name,
        users_table.c.email,
        users_table.c.role,
        users_table.c.password_hash,
    )
    .join_from(tokens_table, users_table, tokens_table.c.user_id == users_table.c.id)
    .where(tokens_table.c.id == bindparam("token_id"))
)


def token_record(token_id: int) -> TokenRecord | None:
    """The token with this id and its user, in one indexed lookup; None if unknown."""
    row = Session().execute(_TOKEN, {"token_id": token_id}).one_or_none()
    if row is None:
        return None
    account = Account(row.id, row.name, row.email, row.role, _mark(row.password_hash))
    return TokenRecord(row.secret_hash, row.expires_at, row.revoked_at is not None, account)


def tokens_of(user_id: int) -> list[ApiToken]:
    """The user's tokens, newest first, revoked ones left out."""
    return list(
        Session().scalars(
            select(ApiToken)
            .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
            .order_by(ApiToken.id.desc())
        )
    )


def revoke(token_id: int, by: Account) -> None:
    """Revoke a token of `by`'s own, or anyone's if `by` is an admin; commits. Another
    user's token is a 404 to a member: it does not say whether it exists."""
    query = update(tokens_table).where(tokens_table.c.id == token_id, tokens_table.c.revoked_at.is_(None))
    if not by.is_admin:
        query = query.where(tokens_table.c.user_id == by.id)
    session = Session()
    if session.execute(query.values(revoked_at=utcnow())).rowcount != 1:  # type: ignore[attr-defined]
        raise NotFound(f"You have no token with id {token_id}.")
    session.commit()
