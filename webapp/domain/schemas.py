"""Marshmallow schemas: the single source of validation and serialization.

JSON bodies and form posts are loaded through the same schema; responses are
dumped through it. Fields the server sets are dump_only, so a client that sends
them gets "Unknown field." like any other stray key.
"""

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema
from werkzeug.datastructures import MultiDict

from ..routing import MAX_ID
from . import emails
from .accounts import PASSWORD_LENGTH, ROLES

_PASSWORD = validate.Length(
    min=PASSWORD_LENGTH[0],
    max=PASSWORD_LENGTH[1],
    error=f"Must be between {PASSWORD_LENGTH[0]} and {PASSWORD_LENGTH[1]} characters.",
)
_NAME_LENGTH = validate.Length(min=1, max=100, error="Must be between 1 and 100 characters.")

# Unicode category Cc: the C0 controls, DEL and the C1 controls.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Surrogates: JSON can carry an unpaired one ("\ud800"), UTF-8 cannot encode it.
_SURROGATES = re.compile("[\ud800-\udfff]")


def _printable(text: str) -> str:
    # Control characters have no place in a name or a search, PostgreSQL cannot
    # store NUL, and no database driver can send a lone surrogate: refuse them
    # here rather than fail in the driver.
    if _CONTROL_CHARACTERS.search(text):
        raise ValidationError("Must not contain control characters.")
    if _SURROGATES.search(text):
        raise ValidationError("Must be valid Unicode: an unpaired surrogate was found.")
    return text


class TrimmedString(fields.String):
    """A string with surrounding whitespace removed before it is validated."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return _printable(super()._deserialize(value, attr, data, **kwargs).strip())


class NormalizedEmail(fields.String):
    """An email address, loaded in the one form it is stored and compared in
    (emails.canonical: NFKC, lower-case, IDNA domain, RFC 5321 lengths)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = _printable(super()._deserialize(value, attr, data, **kwargs))
        try:
            return emails.canonical(text)
        except emails.InvalidEmail as error:
            raise ValidationError(str(error)) from None


class DecimalInteger(fields.Integer):
    """An integer: a JSON number, or a string of ASCII decimal digits without sign,
    space or leading zero. marshmallow's Integer reads strings with int(), which
    also takes "٥٧" (Arabic-Indic), "+57", " 57 ", "5_7" and "057": a query or a
    form's hidden version written any of those ways would name a number it does
    not spell. A number with a fraction (7.5) is refused too, where Integer would
    cut it to 7."""

    _DECIMAL = re.compile(r"0|[1-9][0-9]{0,17}")

    def _validated(self, value: Any) -> int:
        if isinstance(value, str) and not self._DECIMAL.fullmatch(value):
            raise self.make_error("invalid", input=value)
        if isinstance(value, float) and not value.is_integer():
            raise self.make_error("invalid", input=value)
        return super()._validated(value)


class RecordSchema(Schema):
    """A schema dumped from rows (mappings) on every read and list, and from ORM
    objects after a write: one lookup per field, not marshmallow's general search."""

    def get_attribute(self, obj: Any, attr: str, default: Any) -> Any:
        try:
            return obj[attr]
        except TypeError:
            return getattr(obj, attr, default)


class UserSchema(RecordSchema):
    class Meta:
        unknown = RAISE

    id = fields.Integer(dump_only=True)
    name = TrimmedString(
        required=True,
        validate=_NAME_LENGTH,
        metadata={"description": "Trimmed; no control characters."},
    )
    email = NormalizedEmail(
        required=True,
        metadata={
            "format": "idn-email",
            "maxLength": emails.MAX_LENGTH,
            "description": (
                "Trimmed, then stored in one form: Unicode NFKC, lower-case, the domain in IDNA ASCII form "
                "(user@bücher.de is stored as user@xn--bcher-kva.de). A dot-atom local part of at most 64 bytes, "
                "at most 254 bytes in all, no quoted local part or IP literal. Unique in that form, so "
                "whatever its case or spelling."
            ),
        },
    )
    role = fields.String(
        validate=validate.OneOf(ROLES),
        metadata={"description": "admin or member (the default). Only an admin may set it."},
    )
    password = fields.String(
        load_only=True,
        validate=_PASSWORD,
        metadata={"description": "Write-only: set by an admin, or by a member for themselves with current_password."},
    )
    current_password = fields.String(
        load_only=True, metadata={"description": "A member changing their own password: the one they have now."}
    )
    created_at = fields.DateTime(dump_only=True, format="iso", metadata={"description": "UTC."})
    updated_at = fields.DateTime(dump_only=True, format="iso", metadata={"description": "UTC."})


def _no_password(value: Any) -> None:
    raise ValidationError("An import sets no passwords: set one with PATCH /api/users/<id>.")


class ImportedUserSchema(UserSchema):
    """One user of a bulk import. An import makes members without a password (the
    stage holds a name and an email), so a JSON item that asks for more is refused
    by line and field, where dropping it would store a member the caller did not ask for."""

    class Meta(UserSchema.Meta):
        exclude = ("current_password",)

    role = fields.String(
        validate=validate.Equal("member", error="An import makes members: make an admin with PATCH /api/users/<id>.")
    )
    password = fields.String(load_only=True, validate=_no_password)


class UserFormSchema(Schema):
    """The edit form: name and email (name only for a member's own page) and the
    version the form was rendered from."""

    class Meta:
        unknown = RAISE

    name = UserSchema._declared_fields["name"]
    email = UserSchema._declared_fields["email"]
    version = DecimalInteger(required=True, load_only=True, validate=validate.Range(min=1))


class NewPasswordSchema(Schema):
    """A password typed twice (the setup and password forms), and the current one
    when a member changes their own."""

    class Meta:
        unknown = RAISE

    password = fields.String(required=True, validate=_PASSWORD)
    password_again = fields.String(required=True)
    current_password = fields.String(load_default=None)

    @validates_schema
    def typed_twice_the_same(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("password") != data.get("password_again"):
            raise ValidationError("The two passwords differ.", "password_again")


class SetupSchema(NewPasswordSchema):
    """The first admin: who, and their password twice."""

    name = UserSchema._declared_fields["name"]
    email = UserSchema._declared_fields["email"]


class SignInSchema(Schema):
    class Meta:
        unknown = EXCLUDE  # the CSRF token and `next` ride along

    # What no account's email can be (too long, control characters) is refused here,
    # before it reaches the database: a NUL or 300 characters would fail there.
    email = TrimmedString(required=True, validate=validate.Length(min=1, max=emails.MAX_LENGTH))
    password = fields.String(required=True, validate=validate.Length(min=1, max=PASSWORD_LENGTH[1]))


class RoleSchema(Schema):
    class Meta:
        unknown = RAISE

    role = fields.String(required=True, validate=validate.OneOf(ROLES))


class TokenSchema(Schema):
    """An API token. `token`, the secret, is in the answer that makes it and nowhere else."""

    id = fields.Integer(dump_only=True)
    name = TrimmedString(
        load_default="API token",
        validate=validate.Length(min=1, max=100, error="Must be between 1 and 100 characters."),
    )
    days = DecimalInteger(
        load_only=True,
        load_default=None,
        validate=validate.Range(min=1, max=3650),
        metadata={"description": "Lifetime in days; API_TOKEN_DAYS (30) unless given."},
    )
    token = fields.String(dump_only=True, metadata={"description": "Shown once: send it as Authorization: Bearer."})
    created_at = fields.DateTime(dump_only=True, format="iso")
    expires_at = fields.DateTime(dump_only=True, format="iso")


class AuditEntrySchema(RecordSchema):
    id = fields.Integer(required=True)
    user_id = fields.Integer(required=True)
    action = fields.String(required=True, validate=validate.OneOf(("insert", "update", "delete", "restore")))
    changes = fields.Dict(required=True, metadata={"description": "{field: [old, new]}; null where absent."})
    at = fields.DateTime(format="iso", required=True)
    request_id = fields.String(required=True, allow_none=True)
    actor_id = fields.Integer(
        required=True, allow_none=True, metadata={"description": "Who did it; null for the CLI and system work."}
    )


class QueryArgsSchema(Schema):
    """Query arguments. Unknown ones are ignored, not refused, so cache-busters and
    tracking parameters do not break a link."""

    class Meta:
        unknown = EXCLUDE

    def load(self, data: Any, **kwargs: Any) -> Any:
        # marshmallow asks data.get() for every field, and a werkzeug MultiDict answers
        # an absent key by raising and catching a BadRequestKeyError, about 10k
        # instructions each. to_dict() holds the first values, what get() returns.
        if isinstance(data, MultiDict):
            data = data.to_dict()
        return super().load(data, **kwargs)


class PageArgsSchema(QueryArgsSchema):
    """Paging query arguments."""

    page = DecimalInteger(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = DecimalInteger(
        load_default=lambda: current_app.config["DEFAULT_PER_PAGE"],
        validate=validate.Range(min=1),
        metadata={"description": "Items per page: 20 unless given, at most 100 (more asks get 100)."},
    )

    @post_load
    def cap_per_page(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # Asking for more than the cap gets the cap, as the response's per_page says.
        data["per_page"] = min(data["per_page"], current_app.config["MAX_PER_PAGE"])
        return data


class SearchArgsSchema(QueryArgsSchema):
    """The search of a user list or export."""

    q = TrimmedString(
        load_default="",
        validate=validate.Length(max=100),
        metadata={"description": "A case-insensitive fragment of the name or the email; % and _ are literal."},
    )


# The orders a user list can be in: a column, "-" first for descending. Each is a
# keyset on (column, id), served by an index (migration 0006).
SORTS = ("id", "-id", "name", "-name", "email", "-email", "created_at", "-created_at")


@dataclass(frozen=True)
class Position:
    """Where a page by cursor starts: after the user with this sort key and id."""

    sort: str
    key: Any
    after: int


def encode_cursor(after: int, sort: str = "id", key: Any = None) -> str:
    """The opaque token for "the page after the user with id `after`", whose sort
    key (the column `sort` orders by) is `key`. An id cursor is just the id."""
    payload: dict[str, Any] = {"after": after}
    if sort not in ("id", "-id"):
        payload = {"sort": sort, "key": key.isoformat() if isinstance(key, datetime) else key, "after": after}
    elif sort == "-id":
        payload = {"sort": sort, "after": after}
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).rstrip(b"=").decode()


class Cursor(fields.Field[Position]):
    """An opaque keyset cursor, loaded as the Position the page starts after.

    Clients get cursors from a list's `next` link and send them back unchanged.
    A cursor is a position, not a secret: it is not signed, so one written by hand
    the same way works; anything that does not decode to a position (edited,
    truncated, made up) is "Not a valid cursor.", a 422.
    """

    default_error_messages = {"invalid": "Not a valid cursor."}
    # A name or an email key, JSON-escaped and in base64: at most about 1.6 KB.
    MAX_LENGTH = 2048

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Position:
        if not isinstance(value, str) or not 0 < len(value) <= self.MAX_LENGTH:
            raise self.make_error("invalid")
        try:
            decoded = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        except (binascii.Error, ValueError):
            raise self.make_error("invalid") from None
        if not isinstance(decoded, dict):
            raise self.make_error("invalid")
        sort, after = decoded.get("sort", "id"), decoded.get("after")
        if sort not in SORTS or type(after) is not int or not 0 <= after <= MAX_ID:
            raise self.make_error("invalid")
        if sort in ("id", "-id"):
            if decoded.keys() - {"sort", "after"}:
                raise self.make_error("invalid")
            return Position(sort, after, after)
        if decoded.keys() != {"sort", "key", "after"}:
            raise self.make_error("invalid")
        return Position(sort, self._key(sort.lstrip("-"), decoded["key"]), after)

    def _key(self, column: str, key: Any) -> Any:
        if not isinstance(key, str) or len(key) > emails.MAX_LENGTH:  # the longest key: an email
            raise self.make_error("invalid")
        if _CONTROL_CHARACTERS.search(key) or _SURROGATES.search(key):
            raise self.make_error("invalid")  # no name or email we store has them; drivers refuse them
        if column != "created_at":
            return key
        try:
            at = datetime.fromisoformat(key)
        except ValueError:
            raise self.make_error("invalid") from None
        if at.tzinfo is None:
            raise self.make_error("invalid")
        return at


class ListArgsSchema(PageArgsSchema, SearchArgsSchema):
    """Query arguments of a user list: a page by number (shallow pages) or by cursor
    (any depth, the `next` link), optionally narrowed by a search, in a sort order."""

    sort = fields.String(
        load_default="id",
        validate=validate.OneOf(SORTS, error="Must be one of: " + ", ".join(SORTS) + "."),
        metadata={"description": "The order: id (the default), name, email or created_at; a leading - reverses it."},
    )
    after = Cursor(
        data_key="cursor",
        load_default=None,
        metadata={"description": "The opaque token of a list's `next` link: the page after it."},
    )

    @validates_schema(pass_original=True)
    def page_or_cursor(self, data: dict[str, Any], original: Any, **kwargs: Any) -> None:
        if "cursor" in original and "page" in original:
            raise ValidationError("Give either page or cursor, not both.", "cursor")
        position = data.get("after")
        if position is not None and "sort" in original and position.sort != data.get("sort"):
            raise ValidationError(
                f"This cursor continues a list sorted by {position.sort}: send it with sort={position.sort}.",
                "cursor",
            )

    @post_load
    def unpack_cursor(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # A cursor knows its sort: a `next` link followed without one stays in order.
        position = data.pop("after")
        data["after"], data["after_key"] = (None, None) if position is None else (position.after, position.key)
        if position is not None:
            data["sort"] = position.sort
        return data


class SelectionSchema(Schema):
    """Users picked on the list (checkboxes named `id`), for a bulk action."""

    class Meta:
        unknown = EXCLUDE  # the CSRF token rides along

    id = fields.List(
        DecimalInteger(validate=validate.Range(min=1, max=MAX_ID)),
        required=True,
        validate=validate.Length(min=1, max=100, error="Choose between 1 and 100 users."),
    )


IMPORT_MODES = ("atomic", "partial")


class ImportArgsSchema(QueryArgsSchema):
    mode = fields.String(load_default="atomic", validate=validate.OneOf(IMPORT_MODES))


class RejectionSchema(Schema):
    line = fields.Integer(required=True, metadata={"description": "The CSV line, or the JSON item from 1."})
    field = fields.String(required=True, metadata={"description": "_row: the line as a whole."})
    message = fields.String(required=True)


class ImportReportSchema(Schema):
    created = fields.Integer(required=True)
    rejected = fields.List(
        fields.Nested(RejectionSchema), required=True, metadata={"description": "At most 10,000 rows, by line."}
    )
    rejected_count = fields.Integer(required=True, metadata={"description": "Every rejected row."})


class UserPageSchema(Schema):
    """One page of a user list (a users.Page)."""

    items = fields.Nested(UserSchema, many=True, required=True)
    page = fields.Integer(
        required=True, allow_none=True, metadata={"description": "null for a page reached by cursor."}
    )
    per_page = fields.Integer(required=True, metadata={"description": "The page size used, after the cap."})
    total = fields.Integer(
        required=True,
        metadata={"description": "Users matching, exact up to LIST_TOTAL_CAP; past it, the cap (see total_capped)."},
    )
    total_capped = fields.Boolean(required=True, metadata={"description": "More users match than total says."})
    next = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "The URL of the next page (a cursor), also in a Link header; null on the last page."},
    )


class ProblemSchema(Schema):
    """An RFC 9457 problem, the body of every error of the API (built in errors.py)."""

    type = fields.String(required=True, metadata={"description": "Always about:blank: the status says it all."})
    title = fields.String(required=True, metadata={"description": "The HTTP status phrase."})
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "Messages per field (422, 409); _schema for the body as a whole."},
    )


class ImportProblemSchema(ProblemSchema):
    """A refused import: the problem, with the import's report beside it when rows were
    rejected (an unreadable file has `errors.file` instead)."""

    created = fields.Integer()
    rejected = fields.List(fields.Nested(RejectionSchema))
    rejected_count = fields.Integer()


class AuditPageSchema(Schema):
    """One page of a user's history, newest first."""

    items = fields.List(fields.Nested(AuditEntrySchema), required=True)
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)
    total = fields.Integer(required=True)


user_schema = UserSchema()
imported_user_schema = ImportedUserSchema()
user_form_schema = UserFormSchema()
page_args_schema = PageArgsSchema()
search_args_schema = SearchArgsSchema()
list_args_schema = ListArgsSchema()
selection_schema = SelectionSchema()
import_args_schema = ImportArgsSchema()
import_report_schema = ImportReportSchema()
user_page_schema = UserPageSchema()
audit_page_schema = AuditPageSchema()
new_password_schema = NewPasswordSchema()
setup_schema = SetupSchema()
sign_in_schema = SignInSchema()
role_schema = RoleSchema()
token_schema = TokenSchema()
