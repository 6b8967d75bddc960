"""ETags, If-Match and If-None-Match (RFC 9110, section 13.1), read strictly.

A user's ETag is `"<id>.<version>"`. A write with If-Match happens only if the
current tag is among those listed (or `*`); a read with If-None-Match that lists
the current tag gets 304. A header that is present but not a well-formed list of
entity-tags (empty, a lone quote, a stray comma) is a 400: read as absent, it
would turn a conditional write into an unconditional one. So is a tag of our
shape spelled in a way we never write (other digits than ASCII, a leading zero, a
sign, `"57.¹"`): a client that sends one has mangled our tag, and a 412 would tell
it only that the user changed.
"""

import re
import unicodedata
from dataclasses import dataclass

from flask import Response, request
from werkzeug.exceptions import BadRequest

# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, etagc = %x21 / %x23-7E / obs-text,
# in a list whose members are separated by commas and optional whitespace.
_ENTITY_TAG = re.compile(r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"[ \t]*')
_SEPARATORS = re.compile(r"[ \t,]*")
# Our own tags, exactly as we write them: ASCII digits, no sign, no leading zero.
_OURS = re.compile(r"([1-9][0-9]*)\.([1-9][0-9]*)")


def etag(user_id: int, version: int) -> str:
    return f"{user_id}.{version}"


@dataclass(frozen=True)
class Tags:
    """A parsed If-Match or If-None-Match: `*`, or entity-tags as (weak, opaque)."""

    any: bool
    tags: tuple[tuple[bool, str], ...] = ()

    def strong_match(self, tag: str) -> bool:
        """If-Match compares strongly: a weak tag matches nothing."""
        return self.any or (False, tag) in self.tags

    def weak_match(self, tag: str) -> bool:
        """If-None-Match compares weakly: W/"x" matches "x"."""
        return self.any or any(opaque == tag for _, opaque in self.tags)

    def versions_of(self, user_id: int) -> set[int]:
        """The versions of user `user_id` that these tags name strongly."""
        versions = set()
        for weak, opaque in self.tags:
            ours = _OURS.fullmatch(opaque)
            if not weak and ours and int(ours.group(1)) == user_id:
                versions.add(int(ours.group(2)))
        return versions


def parse(header: str, value: str) -> Tags:
    """`*` or a comma-separated list of at least one entity-tag (empty members are
    ignored, as RFC 9110 asks); anything else is a 400."""
    if value.strip(" \t") == "*":
        return Tags(any=True)
    tags = _entity_tags(value)
    if not tags:
        raise BadRequest(f'{header} must be "*" or a list of entity-tags such as "12.3", not {value!r}.')
    for _, opaque in tags:
        if _misspelled(opaque):
            raise BadRequest(
                f"{header} names {_text(opaque)!r}, which is no ETag of this API: "
                'send the tag as the ETag header gave it, ASCII digits such as "12.3".'
            )
    return Tags(any=False, tags=tuple(tags))


def _text(opaque: str) -> str:
    # Header values arrive decoded as Latin-1; clients send UTF-8.
    return opaque.encode("latin-1").decode("utf-8", errors="replace")


def _misspelled(opaque: str) -> bool:
    """`<id>.<version>` written with what int() or a reader takes for digits, but not
    as we write it."""
    if _OURS.fullmatch(opaque):
        return False
    parts = _text(opaque).split(".")
    return len(parts) == 2 and all(_number_like(part) for part in parts)


def _number_like(part: str) -> bool:
    digits = part[1:] if part[:1] in "+-" else part
    return bool(digits) and all(unicodedata.digit(c, None) is not None for c in digits)


def _entity_tags(value: str) -> list[tuple[bool, str]] | None:
    tags: list[tuple[bool, str]] = []
    at = _SEPARATORS.match(value).end()  # type: ignore[union-attr]  # matches the empty string at worst
    while at < len(value):
        tag = _ENTITY_TAG.match(value, at)
        if tag is None:
            return None
        tags.append((tag.group(1) is not None, tag.group(2)))
        at = tag.end()
        if at < len(value) and value[at] != ",":
            return None  # two tags without a comma between them
        at = _SEPARATORS.match(value, at).end()  # type: ignore[union-attr]
    return tags


def _header(name: str) -> Tags | None:
    value = request.headers.get(name)
    return None if value is None else parse(name, value)


def if_match() -> Tags | None:
    """This request's If-Match, or None when it sent none."""
    return _header("If-Match")


def if_none_match() -> Tags | None:
    return _header("If-None-Match")


def expected_versions(user_id: int) -> set[int] | None:
    """The versions If-Match allows a write to start from; None for an unconditional
    write (no If-Match, or `*`). A tag of another user or another form matches nothing."""
    tags = if_match()
    if tags is None or tags.any:
        return None
    return tags.versions_of(user_id)


def not_modified(tag: str) -> Response | None:
    """A 304 when If-None-Match lists `tag`, else None."""
    tags = if_none_match()
    if tags is None or not tags.weak_match(tag):
        return None
    response = Response(status=304)
    response.set_etag(tag)
    return response
