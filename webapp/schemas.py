"""Marshmallow schemas: the single source of validation and serialization.

JSON bodies and form posts are loaded through the same schema; responses are
dumped through it. Fields the server sets are dump_only, so a client that sends
them gets "Unknown field." like any other stray key.
"""

import unicodedata
from typing import Any

from flask import current_app
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, post_load, validate


def _printable(text: str) -> str:
    # Control characters have no place in a name or a search, and PostgreSQL
    # cannot store NUL at all: refuse them here rather than fail in the driver.
    if any(unicodedata.category(char) == "Cc" for char in text):
        raise ValidationError("Must not contain control characters.")
    return text


class TrimmedString(fields.String):
    """A string with surrounding whitespace removed before it is validated."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return _printable(super()._deserialize(value, attr, data, **kwargs).strip())


class NormalizedEmail(fields.Email):
    """An email address, trimmed and lower-cased before it is validated."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return _printable(super()._deserialize(value, attr, data, **kwargs).strip().lower())


class UserSchema(Schema):
    class Meta:
        unknown = RAISE
        ordered = True

    id = fields.Integer(dump_only=True)
    name = TrimmedString(
        required=True,
        validate=validate.Length(min=1, max=100, error="Must be between 1 and 100 characters."),
        metadata={"description": "Trimmed; no control characters."},
    )
    email = NormalizedEmail(
        required=True,
        validate=validate.Length(max=254, error="Must be at most 254 characters."),
        metadata={"description": "Trimmed and stored lower-case; unique whatever its case."},
    )
    created_at = fields.DateTime(dump_only=True, format="iso", metadata={"description": "UTC."})
    updated_at = fields.DateTime(dump_only=True, format="iso", metadata={"description": "UTC."})


class ListArgsSchema(Schema):
    """Query arguments of a user list. Unknown arguments are ignored, not refused,
    so cache-busters and tracking parameters do not break a link."""

    class Meta:
        unknown = EXCLUDE

    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(
        load_default=lambda: current_app.config["DEFAULT_PER_PAGE"],
        validate=validate.Range(min=1),
        metadata={"description": "Users per page: 20 unless given, at most 100 (more asks get 100)."},
    )
    q = TrimmedString(
        load_default="",
        validate=validate.Length(max=100),
        metadata={"description": "A case-insensitive fragment of the name or the email; % and _ are literal."},
    )

    @post_load
    def cap_per_page(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # Asking for more than the cap gets the cap, as the response's per_page says.
        data["per_page"] = min(data["per_page"], current_app.config["MAX_PER_PAGE"])
        return data


class UserPageSchema(Schema):
    """One page of a user list (a users.Page)."""

    class Meta:
        ordered = True

    items = fields.List(fields.Nested(UserSchema), required=True)
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True, metadata={"description": "The page size used, after the cap."})
    total = fields.Integer(required=True, metadata={"description": "Users matching, on every page."})


class ProblemSchema(Schema):
    """An RFC 9457 problem, the body of every error of the API (built in errors.py)."""

    class Meta:
        ordered = True

    type = fields.String(required=True, metadata={"description": "Always about:blank: the status says it all."})
    title = fields.String(required=True, metadata={"description": "The HTTP status phrase."})
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "Messages per field (422, 409); _schema for the body as a whole."},
    )


user_schema = UserSchema()
list_args_schema = ListArgsSchema()
user_page_schema = UserPageSchema()
