"""The API keeps its OpenAPI contract: ``/api/v1/openapi.json`` is a valid OpenAPI 3.1 document
naming every route of the ``api`` blueprint (and only those), and the answers the API gives, data
and problems alike, match the schemas it documents for them. Refusals are problem+json with a
detail, never a server error."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from werkzeug.test import TestResponse

from lab.extensions import db
from lab.models import utcnow
from lab.services.api_tokens import create_token, revoke_token
from tests.factories import patient, user
from workflows.codes import CodeKind, make_code

pytestmark = [pytest.mark.requirements("API-4"), pytest.mark.usefixtures("never_500")]

PREFIX = "/api/v1"
METHODS = ("get", "put", "post", "delete", "patch")
PROBLEM = "application/problem+json"


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    response = client.get(f"{PREFIX}/openapi.json")  # public: no token
    assert response.status_code == 200 and response.mimetype == "application/json"
    found: dict[str, Any] = response.get_json()
    return found


def _template(rule: str) -> str:
    """A Flask rule as an OpenAPI path template relative to the server: ``<int:id>`` → ``{id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.removeprefix(PREFIX))


def _routes(app: Flask) -> set[tuple[str, str]]:
    return {(method.lower(), _template(rule.rule)) for rule in app.url_map.iter_rules()
            if rule.endpoint.startswith("api.") for method in rule.methods or () if method not in ("HEAD", "OPTIONS")}


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_route_is_documented_and_every_operation_exists(app: Flask, document: dict[str, Any]) -> None:
    documented = {(method, path) for method, path, _ in _operations(document)}
    routes = _routes(app)
    assert routes - documented == set(), "routes missing from /api/v1/openapi.json"
    assert documented - routes == set(), "documented operations without a route"


def test_every_operation_declares_its_parameters_and_answers(document: dict[str, Any]) -> None:
    ids = []
    for method, path, operation in _operations(document):
        declared = {p["name"] for p in [*document["paths"][path].get("parameters", []),
                                        *operation.get("parameters", [])] if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), (method, path)
        assert all("schema" in p for p in operation.get("parameters", [])), (method, path)
        statuses = set(operation["responses"])
        assert any(s.startswith("2") for s in statuses), (method, path)
        if operation.get("security") != []:  # all but the public document answer 401 without a token
            assert statuses & {"401", "4XX"}, (method, path)
        ids.extend([operation["operationId"]] if "operationId" in operation else [])
    assert len(ids) == len(set(ids))


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def conforms(document: dict[str, Any], response: TestResponse, method: str, path: str) -> Any:
    """``response``'s body, checked against what ``document`` says ``method`` ``path`` answers with its status."""
    operation = document["paths"][path][method]
    answer = _resolve(document, operation["responses"][str(response.status_code)])
    content = answer["content"]
    assert response.mimetype in content, (response.mimetype, list(content))
    body = response.get_json()
    check(document, content[response.mimetype]["schema"], body)
    for header in answer.get("headers", {}):
        assert response.headers.get(header), header
    return body


def check(document: dict[str, Any], schema: dict[str, Any], body: Any) -> None:
    """Validate ``body`` against ``schema``, its ``$ref``s resolved within ``document``."""
    rooted = {**schema, "components": document["components"]}
    validator = Draft202012Validator(rooted, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]


def test_the_answers_match_their_schemas(app: Flask, client: FlaskClient, released: str, sites, api_token,
                                         document: dict[str, Any]) -> None:
    headers = api_token("qa1")
    listed = conforms(document, client.get(f"{PREFIX}/batches", headers=headers), "get", "/batches")
    assert listed["items"][0]["batch_number"] == released
    batch = conforms(document, client.get(f"{PREFIX}/batches/{released}", headers=headers), "get",
                     "/batches/{batch_number}")
    assert batch["release_tests"] and batch["decisions"]
    trail = conforms(document, client.get(f"{PREFIX}/audit", headers=headers, query_string={"limit": "200"}),
                     "get", "/audit")
    assert trail["next_before"] is not None
    with app.app_context():
        coi = patient("SLE-01").coi
    conforms(document, client.get(f"{PREFIX}/patients/{coi}", headers=headers), "get", "/patients/{coi}")
    refused = conforms(document, client.get(f"{PREFIX}/batches", headers=headers, query_string={"limit": "0"}),
                       "get", "/batches")
    assert refused["status"] == 422 and "limit" in refused["errors"]
    bad = client.get(f"{PREFIX}/batches", headers=headers, query_string={"cursor": "forged"})
    assert conforms(document, bad, "get", "/batches")["status"] == 400


def _expired(app: Flask) -> dict[str, str]:
    with app.app_context():
        _, secret = create_token(user("tech1"), "old", "read", 1, actor=user("tech1"), now=utcnow() - timedelta(days=2))
        db.session.commit()
    return {"Authorization": f"Bearer {secret}"}


def _revoked(app: Flask) -> dict[str, str]:
    with app.app_context():
        token, secret = create_token(user("tech1"), "lost", "read", 30, actor=user("tech1"))
        revoke_token(token, actor=user("tech1"), reason="Laptop lost.")
        db.session.commit()
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize(("case", "expected"), [
    ("none", "Authorization: Bearer"),
    ("basic", "Authorization: Bearer"),
    ("unknown", "not known"),
    ("expired", "expired"),
    ("revoked", "revoked"),
])
def test_a_request_without_a_live_token_is_unauthorized(app: Flask, client: FlaskClient, users,
                                                        document: dict[str, Any], case: str, expected: str) -> None:
    headers = {"none": dict, "basic": lambda: {"Authorization": "Basic dGVjaDE6cHc="},
               "unknown": lambda: {"Authorization": "Bearer ct_not-a-token"},
               "expired": lambda: _expired(app), "revoked": lambda: _revoked(app)}[case]()
    for path, url in (("/batches", f"{PREFIX}/batches"), ("/audit", f"{PREFIX}/audit")):
        response = client.get(url, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="CellTrail"'
        assert expected in conforms(document, response, "get", path)["detail"]


def test_refusals_are_problems(client: FlaskClient, make_batch, sites, api_token, document: dict[str, Any]) -> None:
    number = make_batch(until="receipt")
    nurse, tech = api_token("nurse1"), api_token("tech1")
    forbidden = conforms(document, client.get(f"{PREFIX}/batches/{number}", headers=nurse), "get",
                         "/batches/{batch_number}")
    assert forbidden["status"] == 403 and "manufacturing lab" in forbidden["detail"]
    assert conforms(document, client.get(f"{PREFIX}/audit", headers=tech), "get", "/audit")["status"] == 403
    unknown = str(make_code(CodeKind.BATCH, "A9999", 26, 99999))
    missing = conforms(document, client.get(f"{PREFIX}/batches/{unknown}", headers=tech), "get",
                       "/batches/{batch_number}")
    assert missing["status"] == 404 and unknown in missing["detail"]
    malformed = conforms(document, client.get(f"{PREFIX}/batches/B-123", headers=tech), "get",
                         "/batches/{batch_number}")
    assert malformed["status"] == 400 and malformed["detail"]
    extra = client.get(f"{PREFIX}/batches/{number}", headers=tech, query_string={"fields": "all"})
    assert conforms(document, extra, "get", "/batches/{batch_number}")["errors"] == {
        "fields": "Unknown query parameter; this route takes none."}


@pytest.mark.parametrize(("method", "url", "status"), [
    ("post", f"{PREFIX}/batches", 405),
    ("delete", f"{PREFIX}/audit", 405),
    ("get", f"{PREFIX}/nothing-here", 404),
    ("get", f"{PREFIX}/batches/B-A9999-26-00001-5/steps", 404),
])
def test_an_unknown_route_or_method_is_a_problem(client: FlaskClient, users, api_token, document: dict[str, Any],
                                                 method: str, url: str, status: int) -> None:
    response = getattr(client, method)(url, headers=api_token("tech1"))
    assert response.status_code == status and response.mimetype == PROBLEM
    body = response.get_json()
    check(document, {"$ref": "#/components/schemas/Problem"}, body)
    assert body["status"] == status and body["detail"]
    if status == 405:
        assert "GET" in response.headers["Allow"]
