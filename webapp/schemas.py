"""Marshmallow schemas: the single source of validation and serialization.

JSON bodies and form posts are loaded through the same schema; responses are
dumped through it. Fields the server sets are dump_only, so a client that sends
them gets "Unknown field." like any other stray key.
"""

import base64
import binascii
import json
import unicodedata
from typing import Any

from flask import current_app
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

from .routing import MAX_ID


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
    )
    email = NormalizedEmail(
        required=True,
        validate=validate.Length(max=254, error="Must be at most 254 characters."),
    )
    created_at = fields.DateTime(dump_only=True, format="iso")
    updated_at = fields.DateTime(dump_only=True, format="iso")


class UserFormSchema(UserSchema):
    """The edit form: the user's fields plus the version the form was rendered from."""

    version = fields.Integer(required=True, load_only=True, validate=validate.Range(min=1))


class AuditEntrySchema(Schema):
    class Meta:
        ordered = True

    id = fields.Integer()
    user_id = fields.Integer()
    action = fields.String()
    changes = fields.Dict()
    at = fields.DateTime(format="iso")
    request_id = fields.String(allow_none=True)


class PageArgsSchema(Schema):
    """Paging query arguments. Unknown arguments are ignored, not refused, so
    cache-busters and tracking parameters do not break a link."""

    class Meta:
        unknown = EXCLUDE

    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(load_default=None, validate=validate.Range(min=1))

    @post_load
    def cap_per_page(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # Asking for more than the cap gets the cap, as the response's per_page says.
        config = current_app.config
        data["per_page"] = min(data["per_page"] or config["DEFAULT_PER_PAGE"], config["MAX_PER_PAGE"])
        return data


def encode_cursor(after: int) -> str:
    """The opaque token for "the page after the user with id `after`"."""
    payload = json.dumps({"after": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


class Cursor(fields.Field):
    """An opaque keyset cursor, loaded as the id the page starts after.

    Clients get cursors from a list's `next` link and send them back unchanged;
    anything else (edited, truncated, made up) is "Not a valid cursor.", a 422.
    """

    default_error_messages = {"invalid": "Not a valid cursor."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if not isinstance(value, str) or not 0 < len(value) <= 64:
            raise self.make_error("invalid")
        try:
            decoded = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        except (binascii.Error, ValueError):
            raise self.make_error("invalid") from None
        after = decoded.get("after") if isinstance(decoded, dict) and len(decoded) == 1 else None
        if type(after) is not int or not 0 <= after <= MAX_ID:
            raise self.make_error("invalid")
        return after


class ListArgsSchema(PageArgsSchema):
    """Query arguments of a user list: a page by number (shallow pages) or by cursor
    (any depth, the `next` link), optionally narrowed by a search."""

    q = TrimmedString(load_default="", validate=validate.Length(max=100))
    after = Cursor(data_key="cursor", load_default=None)

    @validates_schema(pass_original=True)
    def page_or_cursor(self, data: dict[str, Any], original: Any, **kwargs: Any) -> None:
        if "cursor" in original and "page" in original:
            raise ValidationError("Give either page or cursor, not both.", "cursor")

    @post_load
    def no_page_number_after_a_cursor(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # A page reached by cursor has no number: counting the rows before it is
        # exactly the work keyset pagination avoids.
        if data["after"] is not None:
            data["page"] = None
        return data


user_schema = UserSchema()
user_form_schema = UserFormSchema()
audit_entry_schema = AuditEntrySchema()
page_args_schema = PageArgsSchema()
list_args_schema = ListArgsSchema()
