"""Security headers on every response, CSRF tokens for the pages, and cookie
sessions opened only when sent.

The pages use no inline script or style, so the Content-Security-Policy allows
nothing but this origin, and no page may be framed. HSTS only where the config
says the app is served over TLS (production). CSRF tokens are checked on the
pages' forms only: the JSON API accepts only application/json bodies, which a
cross-site form cannot send, nor a cross-site script without a CORS preflight
this app never grants.

Behind a proxy (TRUSTED_PROXIES, 1 behind deploy/nginx.conf), X-Forwarded-For,
-Proto, -Host, -Port and -Prefix are believed as far as that many proxies set
them (werkzeug's ProxyFix): the client's own values, further left, are ignored.
"""

from typing import Any

from flask import Blueprint, Flask, Request, Response
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

csrf = CSRFProtect()

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",  # scripts, styles, images, fetches: this origin only, nothing inline
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ]
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate CSP 2
    "Cross-Origin-Opener-Policy": "same-origin",
}


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie session, without the signing machinery for a request
    that brings no cookie (every API call): an empty session is all it can have."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        # No Cookie header at all is checked first: parsing an absent one into
        # request.cookies costs about 3% of a get-by-id.
        if "HTTP_COOKIE" not in request.environ or self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        if not (session or session.modified or session.accessed):
            return  # nothing to store or delete, and the response depended on no cookie
        super().save_session(app, session, response)


def protect_forms(bp: Blueprint) -> None:
    """Check the CSRF token of every unsafe request to `bp`'s routes."""
    bp.before_request(csrf.protect)


def init_app(app: Flask) -> None:
    app.session_interface = CookieSessions()
    # Checked where forms are (protect_forms), not by a hook on every request.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    csrf.init_app(app)
    headers = dict(HEADERS)
    if app.config["HSTS_SECONDS"]:
        headers["Strict-Transport-Security"] = f"max-age={app.config['HSTS_SECONDS']}; includeSubDomains"
    app.wsgi_app = SecurityHeaders(app.wsgi_app, list(headers.items()))  # type: ignore[method-assign]
    if proxies := app.config["TRUSTED_PROXIES"]:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies, x_port=proxies
        )  # Not X-Forwarded-Prefix: deploy/nginx.conf does not set it, so it would be the client's.


class SecurityHeaders:
    """WSGI middleware adding `headers` to every response, errors included: appended
    as the response starts, the cheapest place (no view sets any of them)."""

    def __init__(self, wsgi_app: Any, headers: list[tuple[str, str]]) -> None:
        self.wsgi_app = wsgi_app
        self.headers = headers

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        def with_headers(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.extend(self.headers)
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, with_headers)
