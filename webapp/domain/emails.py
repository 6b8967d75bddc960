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
"""

import unicodedata

import email_validator
from email_validator import EmailNotValidError, validate_email

# email-validator refuses the domains on this list unless told otherwise; emptying it
# is how its documentation says to accept them.
email_validator.SPECIAL_USE_DOMAIN_NAMES = []

MAX_LENGTH = 254  # octets, RFC 5321's path limit less its angle brackets
MAX_LOCAL_LENGTH = 64


class InvalidEmail(ValueError):
    """Not an address we store; the message says why, for the client."""


def _folded(address: str) -> str:
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", address.strip()).lower())


def canonical(address: str) -> str:
    """The stored form of `address`; InvalidEmail when it is not one we accept."""
    folded = _folded(address)
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
