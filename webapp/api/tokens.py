"""API tokens: make one (with your email and password, or a token you have), list
yours, revoke one. The secret is in the answer that makes it, and nowhere else."""

from flask import Response, current_app, g, jsonify, request, url_for
from marshmallow import ValidationError

from .. import auth
from ..domain import accounts
from ..domain.schemas import sign_in_schema, token_schema
from ..routing import no_content
from . import bp


@bp.post("/tokens")
def create_token() -> Response:
    """201 and a new token, for the account of the HTTP Basic credentials or the bearer token."""
    credentials = request.authorization
    if credentials is not None and credentials.type == "basic":
        try:  # the sign-in form's rules: what no account can have is refused before the database
            fields = sign_in_schema.load({"email": credentials.username or "", "password": credentials.password or ""})
            account = accounts.authenticate(fields["email"], fields["password"])
        except ValidationError:
            account = None
        if account is None:
            raise auth.NotSignedIn("Unknown email or wrong password.", scheme="Basic")
        g.account = account
    elif request.headers.get("Authorization", "").lower().startswith("basic"):
        raise auth.NotSignedIn("Send HTTP Basic credentials as email:password.", scheme="Basic")
    account = auth.account()
    args = token_schema.load(request.get_json() if request.content_length else {})
    token, secret = accounts.new_token(account.id, args["name"], args["days"] or current_app.config["API_TOKEN_DAYS"])
    shown = token_schema.dump(token)
    response = jsonify(
        {
            "id": shown["id"],
            "name": shown["name"],
            "token": secret,
            "created_at": shown["created_at"],
            "expires_at": shown["expires_at"],
        }
    )
    response.status_code = 201
    response.headers["Location"] = url_for(".list_tokens")
    return response


@bp.get("/tokens")
def list_tokens() -> Response:
    """Your tokens that still work or have expired, newest first; no secrets."""
    return jsonify(items=token_schema.dump(accounts.tokens_of(auth.account().id), many=True))


@bp.delete("/tokens/<id:token_id>")
def revoke_token(token_id: int) -> Response:
    """Revoke one of your tokens (an admin: anyone's). 404 if there is none such."""
    accounts.revoke(token_id, auth.account())
    auth.forget_token(token_id)
    return no_content()
