"""schemathesis fuzzes the JSON API from its own OpenAPI document, in process.

Every operation in /api/openapi.json gets a bounded, derandomized run of valid
(positive) and invalid (negative) requests. Each response must be no server error
and must match what the document promises: a documented status code, its content
type, its body schema and its headers; invalid requests must be refused. Requests go
to the test's own app inside the `client` fixture's outer transaction, so the
database is as clean afterwards as before, on SQLite and PostgreSQL alike.
(schemathesis leaves out GET /api/openapi.json itself: it is where it read the
document from.)
"""

import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from webapp import create_app
from webapp.db import get_engine

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
EXAMPLES = 40  # per operation and mode: enough to find the usual mistakes, bounded in time


def load_schema():
    """The document as the app serves it. Collection needs it before any test database
    exists, so it comes from an app on a database file that is never opened."""
    with tempfile.TemporaryDirectory() as folder:
        app = create_app({"DATABASE_URL": f"sqlite:///{Path(folder) / 'unused.sqlite3'}"})
        try:
            schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
            # Every request carries the admin's token (call_and_validate below): the
            # fuzzer must not count a request without one as an invalid it sent.
            schema.config.generation.update(with_security_parameters=False)
            return schema
        finally:
            get_engine(app).dispose()


OPERATIONS = [result.ok() for result in load_schema().get_all_operations()]
# An operation without parameters or body has no input to make invalid.
RUNS = [
    pytest.param(operation, mode, id=f"{operation.label} {mode.value}")
    for operation in OPERATIONS
    for mode in GenerationMode
    if mode is GenerationMode.POSITIVE or list(operation.iter_parameters()) or operation.body
]


@pytest.fixture
def fuzzed_app(store, app, rolled_back):
    # A few users, so that some of the ids the fuzzer picks exist.
    store.add_users(*[(f"Fuzz {n}", f"fuzz{n}@example.com") for n in range(5)])
    return app


def test_the_fuzzer_sees_every_user_operation():
    assert {operation.label for operation in OPERATIONS} >= {
        "GET /api/users",
        "POST /api/users",
        "GET /api/users/{user_id}",
        "PUT /api/users/{user_id}",
        "PATCH /api/users/{user_id}",
        "DELETE /api/users/{user_id}",
    }


@pytest.mark.parametrize("operation, mode", RUNS)
def test_every_operation_answers_as_its_openapi_document_says(operation, mode, fuzzed_app, admin):
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def fuzz(case):
        # buffered: the test client reads a streamed answer whole and closes it, as a real
        # server does, so an export gives its slot back (EXPORT_MAX_CONCURRENT).
        case.call_and_validate(checks=CHECKS, app=fuzzed_app, headers=admin.bearer, buffered=True)

    fuzz()
