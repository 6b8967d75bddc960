"""Security headers, on every response: pages, JSON, errors and static files alike.

The pages use no inline script or style, so the Content-Security-Policy allows
nothing but this origin, and no page may be framed. HSTS only where the config
says the app is served over TLS (production).
"""

from flask import Flask, Response

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


def init_app(app: Flask) -> None:
    headers = dict(HEADERS)
    if app.config["HSTS_SECONDS"]:
        headers["Strict-Transport-Security"] = f"max-age={app.config['HSTS_SECONDS']}; includeSubDomains"

    @app.after_request
    def add_security_headers(response: Response) -> Response:
        response.headers.update(headers)
        return response
