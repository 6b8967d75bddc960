"""The Dumper (webapp/domain/dumping.py) says what the schema's dump says, for any rows.

It takes the schema's per-field decisions once; these tests hold it to
`schema.dump` for random rows and pages, and show that what it cannot plan
(hooks, method fields, rows without a field) goes to `schema.dump` itself.
"""

from collections import namedtuple
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import Schema, fields, post_dump

from webapp.domain import users
from webapp.domain.dumping import Dumper
from webapp.domain.models import users_table
from webapp.domain.schemas import RecordSchema, UserPageSchema, UserSchema, user_page_schema, user_schema

from helpers import BOUNDED

UserRow = namedtuple("UserRow", [column.key for column in users_table.c])  # the table's columns, in its order

zones = st.one_of(
    st.none(),
    st.just(UTC),
    st.builds(timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))),
)
moments = st.datetimes(timezones=zones)
texts = st.text()
user_rows = st.builds(
    UserRow,
    id=st.one_of(st.integers(), st.booleans()),
    name=st.one_of(texts, texts.map(str.encode)),  # bytes: ensure_text_type decodes them
    email=texts,
    role=st.one_of(st.none(), texts),
    password_hash=st.one_of(st.none(), texts),
    created_at=st.one_of(st.none(), moments),
    updated_at=moments,
    version=st.integers(min_value=1),
)


@settings(BOUNDED, max_examples=300)
@given(rows=st.lists(user_rows, max_size=25))
def test_rows_are_dumped_as_the_user_schema_dumps_them(rows):
    assert Dumper(user_schema).rows(rows) == user_schema.dump([row._asdict() for row in rows], many=True)


@settings(BOUNDED, max_examples=200)
@given(
    rows=st.lists(user_rows, max_size=5),
    page=st.one_of(st.none(), st.integers(min_value=1)),
    per_page=st.integers(min_value=1, max_value=100),
    total=st.integers(min_value=0),
    capped=st.booleans(),
    next_url=st.one_of(st.none(), texts),
)
def test_a_page_is_dumped_as_the_page_schema_dumps_it(rows, page, per_page, total, capped, next_url):
    fields_ = {"page": page, "per_page": per_page, "total": total, "total_capped": capped, "next": next_url}

    fast = Dumper(user_page_schema).one({**fields_, "items": rows})

    assert fast == user_page_schema.dump({**fields_, "items": [row._asdict() for row in rows]})
    assert list(fast) == list(user_page_schema.dump_fields)  # the schema's order, which the JSON keeps


def test_every_field_of_a_user_and_of_a_page_is_planned_so_no_row_goes_the_slow_way():
    assert Dumper(user_schema).steps is not None
    assert Dumper(user_page_schema).steps is not None
    assert [key for key, *_ in Dumper(user_schema).steps] == list(user_schema.dump_fields)


def test_rows_read_from_the_database_are_dumped_as_the_schema_dumps_their_mappings(app, rolled_back, store):
    store.add_numbered_users(30)
    with app.app_context():
        page = users.list_users(per_page=25, sort="-created_at")

        assert Dumper(user_schema).rows(page.items) == user_schema.dump([row._mapping for row in page.items], many=True)
        assert Dumper(user_schema).one(page.items[0]._mapping) == user_schema.dump(page.items[0]._mapping)


class Shouting(RecordSchema):
    name = fields.String()

    @post_dump
    def shout(self, data, **kwargs):
        return {key: value.upper() for key, value in data.items()}


class Methodical(Schema):
    name = fields.String()
    initial = fields.Method("first_letter")

    def first_letter(self, obj):
        return (obj["name"] if isinstance(obj, dict) else obj.name)[:1]


class Stringly(Schema):
    id = fields.Integer(as_string=True)


Named = namedtuple("Named", ["id", "name"])


def test_what_cannot_be_planned_is_dumped_by_the_schema_itself():
    for schema in (Shouting(), Methodical(), Stringly()):
        dumper = Dumper(schema)
        rows = [Named(1, "ada"), Named(2, "grace")]

        assert dumper.steps is None
        assert dumper.rows(rows) == schema.dump([row._asdict() for row in rows], many=True)
        assert dumper.one({"id": 3, "name": "edsger"}) == schema.dump({"id": 3, "name": "edsger"})


def test_rows_or_objects_without_a_field_are_dumped_by_the_schema_itself():
    Partial = namedtuple("Partial", ["id", "name", "email"])  # no role, no timestamps
    rows = [Partial(1, "Ada", "ada@example.com")]

    assert Dumper(UserSchema()).rows(rows) == [{"id": 1, "name": "Ada", "email": "ada@example.com"}]
    assert Dumper(UserPageSchema()).one({"items": [], "total": 1}) == {"items": [], "total": 1}

    moment = datetime(2026, 1, 2, tzinfo=UTC)
    row = UserRow(
        id=1, name="Ada", email="a@b.c", created_at=moment, updated_at=moment, version=1, role="admin", password_hash=""
    )
    assert Dumper(UserSchema()).rows(iter([row])) == [user_schema.dump(row._asdict())]  # any iterable of rows
