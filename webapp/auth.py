"""Who is asking: a signed-in user for the pages (Flask-Login's cookie session), a
bearer token for the API, and what each of the two roles may do.

* Pages: every page but /login and /setup needs a signed-in user, otherwise a 302
  to /login?next=<path>. In development, while no admin exists, every page leads
  to /setup instead, where the first admin is made.
* API: every operation (not /api/openapi.json or /api/docs) needs
  `Authorization: Bearer <token>`, otherwise 401 with `WWW-Authenticate`.
* Either way the account is loaded through the request's `Session()` in a request
  hook and kept in `g.account`: the audit listener reads who is acting there, and
  teardown removes the session as it always does.

A token check is one indexed lookup, kept per worker for API_TOKEN_CACHE_SECONDS:
a revoked or expired token, a changed role, stop working within that time.
"""

import threading
import time
from collections import OrderedDict
from urllib.parse import urlsplit

from flask import Flask, current_app, g, redirect, request, url_for
from flask_login import LoginManager, current_user
from werkzeug.exceptions import Forbidden, Unauthorized
from werkzeug.wrappers import Response

from . import db
from .domain import accounts
from .domain.accounts import Account
from .domain.models import utcnow

login_manager = LoginManager()
# Pages anyone may open: signing in, and making the first admin.
OPEN_PAGES = frozenset({"pages.login", "pages.sign_in", "pages.setup"})
_TOKENS = "webapp.tokens"
_SETUP_DONE = "webapp.setup_done"


class NotSignedIn(Unauthorized):
    """No valid credentials: a 401 that says which scheme to use (RFC 9110)."""

    def __init__(self, description: str, scheme: str = "Bearer") -> None:
        super().__init__(description)
        self.response_headers = {"WWW-Authenticate": f'{scheme} realm="api"'}


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    # Flask-Login refreshes its remember-me cookie after every request, reading the
    # session to do so. Only the pages sign in and out, so only they run it
    # (pages/__init__.py): an API response then depends on no cookie, says no
    # "Vary: Cookie", and its request leaves the session alone.
    app.after_request_funcs[None].remove(login_manager._update_remember_cookie)
    login_manager.user_loader(_load_account)
    login_manager.unauthorized_handler(_to_sign_in)
    app.extensions[_TOKENS] = TokenCache(app.config["API_TOKEN_CACHE_SECONDS"])


# -- the pages --------------------------------------------------------------------


def require_sign_in() -> Response | None:
    """Before every page: the first-run setup, then a signed-in user."""
    if setup_pending():
        return None if request.endpoint == "pages.setup" else redirect(url_for("pages.setup"), redirect_code())
    if request.endpoint in OPEN_PAGES:
        return None
    if not current_user.is_authenticated:
        return _to_sign_in()
    g.account = current_user._get_current_object()
    return None


def setup_pending() -> bool:
    """Whether /setup is where every page leads: FIRST_RUN_SETUP (development) and
    no admin yet. Once an admin exists it stays (the last one cannot go), so the
    answer is kept and the question never asked again."""
    if not current_app.config["FIRST_RUN_SETUP"] or current_app.extensions.get(_SETUP_DONE):
        return False
    if accounts.any_admin():
        current_app.extensions[_SETUP_DONE] = True
        return False
    return True


def _to_sign_in() -> Response:
    return redirect(url_for("pages.login", next=request.full_path.rstrip("?")), redirect_code())


def redirect_code() -> int:
    """302 for a GET sent elsewhere, 303 (the next request is a GET) for anything else.
    Always given explicitly: Flask 3.2 changes redirect()'s default to 303."""
    return 302 if request.method in ("GET", "HEAD") else 303


def _load_account(user_id: str) -> Account | None:
    """Flask-Login's user loader: the account the session cookie names, if its
    password is still the one it signed in with."""
    number, _, mark = user_id.partition(".")
    if not number.isdigit():
        return None
    user = accounts.find_user(int(number))
    account = accounts.account_of(user) if user is not None else None
    return account if account is not None and account.password_mark == mark else None


def safe_next(target: str | None) -> str:
    """`target` if it is a path on this site, else the user list: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return url_for("pages.list_users")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in target):
        return url_for("pages.list_users")
    return target


# -- the API ----------------------------------------------------------------------


def require_token() -> None:
    """Before every API operation: a valid bearer token (POST /api/tokens also takes
    HTTP Basic, which its view checks)."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if request.endpoint == "api.create_token" and scheme.lower() == "basic":
        return
    if scheme.lower() != "bearer" or not credentials.strip():
        raise NotSignedIn("Send an API token: Authorization: Bearer <token> (POST /api/tokens makes one).")
    account = current_app.extensions[_TOKENS].account(credentials.strip())
    if account is None:
        raise NotSignedIn("The API token is unknown, expired or revoked.")
    g.account = account


class TokenCache:
    """Tokens this worker checked lately: id -> (when, what the database said).

    Bounded (the oldest go first) and short-lived: `seconds` is as long as a
    revocation may take to reach this worker. 0 checks the database every time.
    """

    def __init__(self, seconds: float, size: int = 10_000) -> None:
        self.seconds = seconds
        self.size = size
        self.entries: OrderedDict[int, tuple[float, accounts.TokenRecord]] = OrderedDict()
        self.lock = threading.Lock()

    def account(self, token: str) -> Account | None:
        parts = accounts.split_token(token)
        if parts is None:
            return None
        token_id, secret = parts
        record = self._record(token_id)
        return record.account if record is not None and record.accepts(secret, utcnow()) else None

    def _record(self, token_id: int) -> accounts.TokenRecord | None:
        now = time.monotonic()
        with self.lock:
            hit = self.entries.get(token_id)
        if hit is not None and now - hit[0] < self.seconds:
            return hit[1]
        record = accounts.token_record(token_id)
        # A replica may not have replayed a revocation or a demotion yet: what it says
        # serves this request only, never the writes that would read it from the cache.
        if record is not None and self.seconds > 0 and db.Session().target == "primary":
            with self.lock:
                self.entries[token_id] = (now, record)
                self.entries.move_to_end(token_id)
                while len(self.entries) > self.size:
                    self.entries.popitem(last=False)
        return record

    def forget(self, token_id: int) -> None:
        with self.lock:
            self.entries.pop(token_id, None)

    def forget_user(self, user_id: int) -> None:
        with self.lock:
            for token_id in [t for t, (_, record) in self.entries.items() if record.account.id == user_id]:
                del self.entries[token_id]


def forget_token(token_id: int) -> None:
    """A token revoked here stops working here at once (elsewhere within the cache's time)."""
    current_app.extensions[_TOKENS].forget(token_id)


def forget_user(user_id: int) -> None:
    """A user deleted or given another role here: their tokens are checked again."""
    current_app.extensions[_TOKENS].forget_user(user_id)


# -- roles ------------------------------------------------------------------------


def account() -> Account:
    """The account this request acts for (set by require_sign_in or require_token)."""
    acting: Account = g.account
    return acting


def require_admin(action: str = "do this") -> Account:
    acting = account()
    if not acting.is_admin:
        raise Forbidden(f"Only an admin may {action}.")
    return acting
