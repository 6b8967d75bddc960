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

Most of email-validator's work is on the domain (IDNA, UTS #46, a check per
character), and the domain repeats: an import of 100,000 rows has a handful. So
what it said of a plain domain is remembered (`_DOMAINS`), and an address whose
parts are in the plainest form, an ASCII dot-atom before the @ and letters,
digits, hyphens and dots after it, is put together from that without asking it
again: about 1 µs instead of 16. Anything else, and any address the shortcut is
not sure of (near a length limit, a domain not seen yet or refused), goes
through email-validator whole, so the answer and the message are the same.
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

# email-validator's own dot-atom (its rfc_constants.DOT_ATOM_TEXT), lower-case as
# _folded leaves it: a local part it returns unchanged. And an LDH host name: no
# quote, bracket, space or combining mark, so it splits the address at its @.
_ATEXT = r"a-z0-9_!#$%&'*+\-/=?^`{|}~"
_PLAIN_LOCAL = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_PLAIN_DOMAIN = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)*")
# A plain domain email-validator accepted: its ASCII form, and the longest of its
# forms in UTF-8 bytes (it checks the address's length with each of them).
_DOMAINS: dict[str, tuple[str, int]] = {}
_MAX_DOMAINS = 1024  # then forgotten all at once: a file of new domains cannot grow it


class InvalidEmail(ValueError):
    """Not an address we store; the message says why, for the client."""


def _folded(address: str) -> str:
    if address.isascii():  # NFKC leaves ASCII as it is
        return address.strip().lower()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", address.strip()).lower())


def canonical(address: str) -> str:
    """The stored form of `address`; InvalidEmail when it is not one we accept."""
    folded = _folded(address)
    local, at, domain = folded.rpartition("@")
    plain = (
        at != ""
        and folded.isascii()
        and len(local) <= MAX_LOCAL_LENGTH
        and _PLAIN_LOCAL.fullmatch(local) is not None
        and _PLAIN_DOMAIN.fullmatch(domain) is not None
    )
    if plain and (known := _DOMAINS.get(domain)) and len(local) + 1 + known[1] <= MAX_LENGTH:
        return f"{local}@{known[0]}"
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
    if plain and valid.local_part == local and valid.display_name is None:
        if len(_DOMAINS) >= _MAX_DOMAINS:
            _DOMAINS.clear()
        longest = max(len(domain), len(valid.domain.encode()), len(valid.ascii_domain))
        _DOMAINS[domain] = (valid.ascii_domain, longest)
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
