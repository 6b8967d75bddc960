"""One mailbox, one user: email addresses are stored in one canonical form (NFKC,
lower-case, IDNA domain), with RFC 5321's lengths, by the API, the forms, the import
and sign-in alike (webapp/domain/emails.py, used by the schema)."""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from webapp.domain import emails

from helpers import BOUNDED, anonymous, assert_problem, sign_in

# Ways of writing ada@bücher.de that are the same mailbox.
SPELLINGS = [
    "ada@bücher.de",
    "ada@xn--bcher-kva.de",
    "ADA@BÜCHER.DE",
    "ada@bu\u0308cher.de",  # ü decomposed: u + combining diaeresis
    "ａｄａ@bücher.de",  # fullwidth letters, folded by NFKC
    "  ada@XN--BCHER-KVA.de ",
]
STORED = "ada@xn--bcher-kva.de"


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_of_one_mailbox_is_stored_in_one_form(store, client, spelling):
    response = client.post("/api/users", json={"name": "Ada", "email": spelling})

    assert response.status_code == 201
    assert response.get_json()["email"] == STORED
    assert store.users() == [("Ada", STORED)]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_second_spelling_of_a_taken_mailbox_is_409(store, client, spelling):
    store.add_users(("Ada", STORED))

    body = assert_problem(client.post("/api/users", json={"name": "Other", "email": spelling}), 409)

    assert "email" in body["errors"]
    assert store.users() == [("Ada", STORED)]


@pytest.mark.parametrize(
    "email, why",
    [
        ("a" * 65 + "@example.com", "64 bytes"),
        ("é" * 33 + "@example.com", "64 bytes"),  # 33 characters, 66 bytes
        ("a" * 64 + "@" + ".".join(["b" * 62] * 3) + ".example.com", "Not a valid"),  # 255 in all
        ("ada@" + "b" * 64 + ".com", "Not a valid"),  # a label over 63
        ('"ada lovelace"@example.com', "Not a valid"),
        ("ada@[192.0.2.1]", "Not a valid"),
        ("ada@localhost", "Not a valid"),
        ("ada..king@example.com", "Not a valid"),
        ("ada@ab--cd.example.com", "Not a valid"),
    ],
)
def test_addresses_outside_rfc_5321_or_that_no_mail_reaches_are_422(store, client, email, why):
    body = assert_problem(client.post("/api/users", json={"name": "Ada", "email": email}), 422)

    assert why in " ".join(body["errors"]["email"])
    assert store.users() == []


@pytest.mark.parametrize("email", ["admin@cluster.invalid", "ada@example.test", "ada@printer.local"])
def test_special_use_domains_are_accepted_for_tests_and_internal_use(client, email):
    assert client.post("/api/users", json={"name": "Ada", "email": email}).status_code == 201


def test_a_local_part_of_64_bytes_is_accepted(client):
    assert client.post("/api/users", json={"name": "Ada", "email": "a" * 64 + "@example.com"}).status_code == 201


@settings(BOUNDED, max_examples=200)
@given(address=st.emails())
def test_the_canonical_form_is_a_fixed_point(address):
    stored = emails.canonical(address)

    assert emails.canonical(stored) == stored
    assert stored == stored.lower() and stored.rpartition("@")[2].isascii()
    assert len(stored.encode()) <= emails.MAX_LENGTH


@settings(BOUNDED, max_examples=60)
@given(address=st.emails())
def test_any_address_a_fuzzer_calls_valid_is_accepted_once(client, address):
    created = client.post("/api/users", json={"name": "Fuzzed", "email": address})

    assert created.status_code == 201, (address, created.text)
    assert created.get_json()["email"] == emails.canonical(address)
    again = client.post("/api/users", json={"name": "Again", "email": address.upper()})
    assert again.status_code == 409, (address, again.text)


def outcome(normalise, address):
    try:
        return normalise(address)
    except emails.InvalidEmail:
        return emails.InvalidEmail


# Addresses near the shortcut's edges: hyphens and "xn--" in labels, numeric and
# hyphenated TLDs, dots at the ends, lengths around 63, 64 and 254, and characters
# that send an address the long way (Unicode, quotes, brackets, spaces).
_PIECES = st.one_of(
    st.text(alphabet="axn0-", min_size=0, max_size=5),
    st.sampled_from(["xn--", "ab--c", "-a", "a-", "0", "a.", ".a"]),
    st.integers(60, 66).map(lambda n: "a" * n),
)
_ODD = st.text(alphabet='ab0-.@"[] éｘÜ\u0308+!~', max_size=12)
EDGES = st.builds(
    lambda local, labels, tail: f"{local}@{'.'.join(labels)}{tail}",
    st.one_of(_PIECES, _ODD),
    st.lists(_PIECES, min_size=1, max_size=4),
    st.sampled_from(["", ".com", ".c0m", ".x-y", ".xn--p1ai", "." + "b" * 63 + ".com"]),
)


@settings(BOUNDED, max_examples=400)
@given(address=st.one_of(EDGES, st.emails(), st.emails().map(str.upper)))
@example("a@a.0")  # a TLD ends with a letter
@example("a@b.a0")
@example("a" * 64 + "@b.com")
@example("a" * 65 + "@b.com")
@example("a@ab--cd.com")  # R-LDH
@example("a@xn--bcher-kva.de")
@example("a@" + "b" * 63 + ".com")
@example("a@" + "b" * 64 + ".com")
@example("a@" + ".".join(["b" * 63] * 3) + ".com")  # 258 in all
def test_the_plain_address_shortcut_agrees_with_email_validator(address):
    # canonical() skips email-validator for plain ASCII addresses; it must accept
    # and store exactly what the validator alone would (emails._validated).
    assert outcome(emails.canonical, address) == outcome(lambda a: emails._validated(emails._folded(a)), address)


def test_an_import_sees_two_spellings_of_one_mailbox_as_duplicates(store, client):
    csv = "name,email\nAda,ada@bücher.de\nAda again,ADA@xn--bcher-kva.de\n"

    response = client.post("/api/users/import?mode=partial", data=csv.encode(), content_type="text/csv")

    report = response.get_json()
    assert response.status_code == 201 and report["created"] == 1
    assert report["rejected"] == [{"line": 3, "field": "email", "message": "Duplicate of line 2."}]
    assert store.users() == [("Ada", STORED)]


def test_an_import_rejects_another_spelling_of_a_stored_mailbox(store, client):
    store.add_users(("Ada", STORED))

    response = client.post(
        "/api/users/import?mode=partial", data="name,email\nAda,ａｄａ@BÜCHER.de\n".encode(), content_type="text/csv"
    )

    assert response.get_json()["rejected"][0]["field"] == "email"
    assert store.users() == [("Ada", STORED)]


def test_sign_in_finds_the_account_by_any_spelling_of_its_email(app, client):
    member = client.post(
        "/api/users", json={"name": "Ada", "email": "ada@bücher.de", "password": "correct horse battery"}
    )
    assert member.status_code == 201

    response = sign_in(anonymous(app), "ＡＤＡ@BÜCHER.DE", "correct horse battery")

    assert response.status_code == 303


def test_the_openapi_document_says_what_the_server_accepts(client):
    schema = client.get("/api/openapi.json").get_json()["components"]["schemas"]["User"]["properties"]["email"]

    assert schema["format"] == "idn-email" and schema["maxLength"] == 254
    assert "64 bytes" in schema["description"] and "IDNA" in schema["description"]


# The limits: 254 bytes in all, 64 before the @, a domain's IDNA form longer than
# its Unicode one, labels of 63, and what is not plain at all.
LIMITS = [
    "a" * 64 + "@" + ".".join(["b" * 62] * 3) + ".example.com",
    "a" * 63 + "@" + ".".join(["b" * 62] * 3) + ".example.com",
    "a" * 60 + "@" + ".".join(["b" * 62] * 3) + ".example.com",
    "a" * 65 + "@example.com",
    "a" * 64 + "@example.com",
    "ada@" + "b" * 63 + ".com",
    "ada@" + "b" * 64 + ".com",
    "a" * 200 + "@xn--bcher-kva.de",
    "a" * 64 + "@" + ".".join(["xn--bcher-kva"] * 16) + ".de",
    "ada@xn--bcher-kva.de",
    "ada@xn--bcher.de",
    "ada@ab--cd.example.com",
    "ada@-example.com",
    "ada@example-.com",
    "ada@example.com.",
    "ada@localhost",
    "ada@example.invalid",
    "Ada@Example.COM",
    " ada@example.com ",
    "ada..king@example.com",
    ".ada@example.com",
    "ada.@example.com",
    "a!#$%&'*+-/=?^_`{|}~@example.com",
    '"ada"@example.com',
    "Ada <ada@example.com>",
    "ada@@example.com",
    "ada@example..com",
    "postmaster@example.com",
]


@pytest.mark.parametrize("address", LIMITS)
def test_the_plain_address_shortcut_agrees_with_email_validator_at_the_limits(address):
    assert outcome(emails.canonical, address) == outcome(lambda a: emails._validated(emails._folded(a)), address)
