"""Email addresses in one canonical form, so that one mailbox is one user.

An address is compared as stored, so it is stored one way: Unicode NFKC (a
fullwidth `ａ` is `a`), lower-case (the service has always treated case as
insignificant), the domain in its IDNA ASCII form (`bücher.de` is stored as
`xn--bcher-kva.de`, which is how DNS and mail see it). Its syntax and lengths are
checked by email-validator, which knows RFC 5321 and 6531 and IDNA 2008 better
than a regex: dot-atom local parts only (no quoted strings, no IP literals), a
local part of at most 64 octets, at most 254 in all. Special-use domains
(`.invalid`, `.test`, `.local`) are accepted: tests, demos and internal
deployments name accounts with them, and an account needs no mail. It never
looks the domain up: that would put DNS on the request path.

The schema (schemas.NormalizedEmail) stores what `canonical` returns; sign-in and
the CLI look accounts up by `lookup_key`, the same form.

Nearly every address is plain ASCII, a dot-atom before the @ and letters, digits
and single hyphens in the domain. For those the canonical form is the folded text
itself, and `_is_plain` says so in a few microseconds, where email-validator takes
about forty (most of it on the domain's UTS-46 and IDNA checks, which change
nothing in an ASCII domain): a tenth of the instructions of a create, measured.
Anything else goes through email-validator. The shortcut accepts nothing the
validator refuses and changes nothing it would keep: a differential test
(tests/test_emails.py) holds the two to that.
"""

import re
import unicodedata

import email_validator
from email_validator import EmailNotValidError, validate_email

# email-validator refuses the domains on this list unless told otherwise; emptying it
# is how its documentation says to accept them.
email_validator.SPECIAL_USE_DOMAIN_NAMES = []

MAX_LENGTH = 254  # octets, RFC 5321's path limit less its angle brackets
MAX_LOCAL_LENGTH = 64


# RFC 5322 atext, dot-separated, before the @; after it, LDH labels of at most 63
# with no "--" at all (so neither IDNA's xn-- nor its forbidden R-LDH labels), at
# least one dot, and a last label that ends with a letter, as every TLD does. The
# lengths of the local part (64) and the whole (254) are checked beside it.
_ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9]|-(?!-)){0,62}(?<!-)"
_PLAIN = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@(?:{_LABEL}\.)+(?=[a-z0-9-]*[a-z]\Z){_LABEL}\Z")


class InvalidEmail(ValueError):
    """Not an address we store; the message says why, for the client."""


def _folded(address: str) -> str:
    if address.isascii():  # NFKC leaves ASCII as it is
        return address.strip().lower()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", address.strip()).lower())


def canonical(address: str) -> str:
    """The stored form of `address`; InvalidEmail when it is not one we accept."""
    folded = _folded(address)
    if _is_plain(folded):
        return folded
    return _validated(folded)


def _is_plain(folded: str) -> bool:
    local, _, _ = folded.rpartition("@")
    return len(local) <= MAX_LOCAL_LENGTH and len(folded) <= MAX_LENGTH and _PLAIN.match(folded) is not None


def _validated(folded: str) -> str:
    """What email-validator makes of `folded`, under our rules."""
    local, at, _ = folded.rpartition("@")
    if at and len(local.encode()) > MAX_LOCAL_LENGTH:
        raise InvalidEmail(f"The part before the @ must be at most {MAX_LOCAL_LENGTH} bytes (UTF-8).")
    try:
        # strict: enforce RFC 5321's lengths (email-validator's default only warns).
        valid = validate_email(folded, check_deliverability=False, strict=True)
    except EmailNotValidError:
        raise InvalidEmail("Not a valid email address.") from None
    stored = f"{valid.local_part}@{valid.ascii_domain}"
    if len(stored.encode()) > MAX_LENGTH:
        raise InvalidEmail(f"Must be at most {MAX_LENGTH} bytes (UTF-8), with the domain in its ASCII form.")
    return stored


def lookup_key(address: str) -> str:
    """What to look an account up by: the canonical form, or for something that is
    not a valid address, the typed text folded the same way (it matches nothing
    the schema stored, but it may match an account made before this rule, or one a
    test wrote directly)."""
    try:
        return canonical(address)
    except InvalidEmail:
        return _folded(address)
