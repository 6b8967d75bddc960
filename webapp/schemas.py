"""Marshmallow schemas: the single source of validation and serialization.

JSON bodies and form posts are loaded through the same schema; responses are
dumped through it. Fields the server sets are dump_only, so a client that sends
them gets "Unknown field." like any other stray key.
"""

import re
from typing import Any

from flask import current_app
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, post_load, validate


# Unicode category Cc: the C0 controls, DEL and the C1 controls.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    # Control characters have no place in a name or a search, and PostgreSQL
    # cannot store NUL at all: refuse them here rather than fail in the driver.
    if _CONTROL_CHARACTERS.search(text):
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


class SearchArgsSchema(Schema):
    """The search of a user list or export."""

    class Meta:
        unknown = EXCLUDE

    q = TrimmedString(load_default="", validate=validate.Length(max=100))


class ListArgsSchema(PageArgsSchema, SearchArgsSchema):
    """Query arguments of a user list."""


IMPORT_MODES = ("atomic", "partial")


class ImportArgsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    mode = fields.String(load_default="atomic", validate=validate.OneOf(IMPORT_MODES))


class RejectionSchema(Schema):
    class Meta:
        ordered = True

    line = fields.Integer()
    field = fields.String()
    message = fields.String()


class ImportReportSchema(Schema):
    class Meta:
        ordered = True

    created = fields.Integer()
    rejected = fields.List(fields.Nested(RejectionSchema))
    rejected_count = fields.Integer()


user_schema = UserSchema()
user_form_schema = UserFormSchema()
audit_entry_schema = AuditEntrySchema()
page_args_schema = PageArgsSchema()
search_args_schema = SearchArgsSchema()
list_args_schema = ListArgsSchema()
import_args_schema = ImportArgsSchema()
import_report_schema = ImportReportSchema()
