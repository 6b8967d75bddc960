"""The OpenAPI 3.1 document at /api/openapi.json and the reference page at /api/docs."""

import re

import pytest
from openapi_spec_validator import validate

from webapp.api.openapi import inline_code
from webapp.domain.schemas import UserSchema

USER_PATHS = {"/api/users": {"get", "post"}, "/api/users/{user_id}": {"get", "put", "patch", "delete"}}


@pytest.fixture
def document(client):
    return client.get("/api/openapi.json").get_json()


def operations(document):
    """(path, method, operation) for every operation in the document."""
    return [(path, method, operation) for path, item in document["paths"].items() for method, operation in item.items()]


def test_the_document_is_served_as_json(client):
    response = client.get("/api/openapi.json")

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json()["openapi"] == "3.1.0"


def test_the_document_is_valid_openapi_3_1(document):
    validate(document)  # raises on anything the OpenAPI 3.1 schema refuses


def test_the_document_describes_exactly_the_api_routes_of_the_app(app, document):
    routes = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }

    documented = {(path, method) for path, method, _ in operations(document)}

    assert documented == routes
    assert {(path, method) for path, methods in USER_PATHS.items() for method in methods} <= documented


def test_every_operation_has_a_unique_id_a_summary_and_responses(document):
    ids = [operation["operationId"] for _, _, operation in operations(document)]

    assert len(ids) == len(set(ids))
    for _, _, operation in operations(document):
        assert operation["summary"] and operation["responses"]


def test_the_user_schema_is_generated_from_the_marshmallow_schema(document):
    user = document["components"]["schemas"]["User"]

    assert list(user["properties"]) == list(UserSchema().fields)
    assert sorted(user["required"]) == ["email", "name"]
    assert user["additionalProperties"] is False  # unknown fields are refused
    assert {name for name, field in user["properties"].items() if field.get("readOnly")} == {
        "id",
        "created_at",
        "updated_at",
    }
    assert user["properties"]["name"]["maxLength"] == 100
    assert (user["properties"]["email"]["format"], user["properties"]["email"]["maxLength"]) == ("idn-email", 254)


def test_patch_takes_a_schema_without_required_fields_and_put_the_full_one(document):
    item = document["paths"]["/api/users/{user_id}"]

    assert item["put"]["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/User"}
    assert item["patch"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/UserPatch"
    }
    assert "required" not in document["components"]["schemas"]["UserPatch"]


def test_the_list_documents_its_query_arguments_and_page_shape(document):
    operation = document["paths"]["/api/users"]["get"]

    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    assert set(parameters) == {"page", "per_page", "q", "cursor", "sort"}
    assert all(parameter["in"] == "query" and not parameter["required"] for parameter in parameters.values())
    assert parameters["q"]["schema"]["maxLength"] == 100
    assert parameters["per_page"]["schema"]["minimum"] == 1
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/UserPage"
    }


def test_create_documents_201_with_a_location_header(document):
    created = document["paths"]["/api/users"]["post"]["responses"]["201"]

    assert created["headers"]["Location"]["schema"]["type"] == "string"
    assert created["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/User"}


@pytest.mark.parametrize(
    "path, method, statuses",
    [
        ("/api/users", "get", {"401", "403", "422", "503"}),
        ("/api/users", "post", {"400", "401", "403", "409", "413", "415", "422", "503"}),
        ("/api/users/{user_id}", "get", {"400", "401", "403", "404", "503"}),
        ("/api/users/{user_id}", "put", {"400", "401", "403", "404", "409", "412", "413", "415", "422", "503"}),
        (
            "/api/users/{user_id}",
            "patch",
            {"400", "401", "403", "404", "409", "412", "413", "415", "422", "429", "503"},
        ),
        ("/api/users/{user_id}", "delete", {"400", "401", "403", "404", "409", "412", "503"}),
        ("/api/users/{user_id}/history", "get", {"401", "403", "404", "422", "503"}),
        ("/api/users.csv", "get", {"401", "403", "422", "503"}),
        ("/api/users/import", "post", {"400", "401", "403", "413", "415", "422", "503"}),
        ("/api/tokens", "post", {"400", "401", "403", "415", "422", "429", "503"}),
        ("/api/tokens", "get", {"401", "403", "503"}),
        ("/api/tokens/{token_id}", "delete", {"401", "403", "404", "503"}),
    ],
)
def test_errors_are_documented_as_problem_json(document, path, method, statuses):
    responses = document["paths"][path][method]["responses"]

    errors = {status for status in responses if int(status) >= 400}
    assert errors == statuses
    for status in errors:
        # A refused import's 422 carries its report too: a Problem with more members.
        problem = "ImportProblem" if (path, status) == ("/api/users/import", "422") else "Problem"
        assert responses[status]["content"] == {
            "application/problem+json": {"schema": {"$ref": f"#/components/schemas/{problem}"}}
        }
    assert "Retry-After" in responses["503"]["headers"]


def test_the_problem_schema_matches_a_real_error(client, document):
    problem = document["components"]["schemas"]["Problem"]

    body = client.post("/api/users", json={"name": ""}).get_json()

    assert set(problem["required"]) <= set(body) <= set(problem["properties"])


# -- /api/docs ------------------------------------------------------------------------


def test_the_reference_page_shows_every_operation_and_schema(client, document):
    page = client.get("/api/docs")

    assert page.status_code == 200 and page.mimetype == "text/html"
    for path, method, operation in operations(document):
        assert f'id="{operation["operationId"]}"' in page.text
        assert f'<span class="method method-{method}">{method.upper()}</span> <code>{path}</code>' in page.text
    for name, schema in document["components"]["schemas"].items():
        assert f'id="schema-{name}"' in page.text
        for member in schema["properties"]:
            assert f"<td><code>{member}</code></td>" in page.text
    assert 'href="/api/openapi.json"' in page.text


def test_the_reference_page_shows_no_raw_markdown(client):
    page = client.get("/api/docs").text

    assert "`" not in re.sub(r"<code>.*?</code>", "", page)


def test_the_reference_page_puts_each_response_header_on_its_own_line(client):
    page = client.get("/api/docs").text
    section = page[page.index('id="createUser"') : page.index('id="getUser"')]

    assert re.search(r'<ul class="headers"><li><code>ETag</code>: .*?</li><li><code>Location</code>: ', section)


def test_the_reference_page_works_offline_without_javascript(client):
    page = client.get("/api/docs")

    assert "<script" not in page.text
    assert not re.search(r'\b(src|href)="(https?:)?//', page.text)


def test_descriptions_are_escaped_with_backquoted_spans_as_code():
    assert inline_code("a `<b>` and <i>") == "a <code>&lt;b&gt;</code> and &lt;i&gt;"
