"""``GET /api/v1/openapi.json``: the API's OpenAPI 3.1 document, merged from each route module's
``PATHS`` with the shared ``COMPONENTS`` (schemas, problem responses, the bearer scheme).

Public: it describes the API and holds no data. Each route module documents its own routes next
to their code; tests/test_api_contract.py checks every route is documented and every answer the
tests get matches its schema.
"""

from __future__ import annotations

from typing import Any

from flask import jsonify
from werkzeug.wrappers import Response

from lab.api.core import PROBLEM_TYPE, TITLES, bp

API_VERSION = "1.0.0"


def ref(name: str) -> dict[str, str]:
    """A reference to the schema ``name`` of COMPONENTS."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A response with a JSON body of ``schema``."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def problems(*statuses: int) -> dict[str, Any]:
    """The shared problem responses for ``statuses``, keyed by status (for an operation's ``responses``)."""
    return {str(status): {"$ref": f"#/components/responses/Problem{status}"} for status in statuses}


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def path_parameter(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}
NULLABLE_TIME: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}
TIME: dict[str, Any] = {"type": "string", "format": "date-time",
                        "description": "ISO 8601, UTC, with Z."}

_PROBLEM_WHEN = {
    400: "The request is malformed: an unknown query parameter, an altered cursor, an unreadable parameter.",
    401: "No token, or a token that is unknown, expired or revoked (see the WWW-Authenticate header).",
    403: "The token's user may not do this (their role, their site), or a read token tried to write.",
    404: "No such batch, step, test, submission, patient or entry.",
    409: "The batch moved on: a stale version, or a state that forbids this.",
    413: "The request body or file is too large.",
    415: "The body was not sent with the media type this operation takes.",
    422: "The request was understood but its values are not acceptable; errors names each field.",
}

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem: detail says what was wrong and what to do.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {"type": "string"},
                   "description": "Each request field (query parameter, JSON member, field of a step) at "
                                  "fault, with its own reason."},
    },
    "additionalProperties": False,
}

#: Schemas shared by the route modules: each module adds the schemas of its own resources here.
SCHEMAS: dict[str, Any] = {"Problem": PROBLEM_SCHEMA}

RESPONSES: dict[str, Any] = {
    f"Problem{status}": {
        "description": f"{TITLES[status]}: {when}",
        "content": {PROBLEM_TYPE: {"schema": ref("Problem")}},
        **({"headers": {"WWW-Authenticate": {"schema": {"type": "string"},
                                             "description": 'Bearer realm="CellTrail"'}}}
           if status == 401 else {}),
    }
    for status, when in _PROBLEM_WHEN.items()
}

COMPONENTS: dict[str, Any] = {
    "schemas": SCHEMAS,
    "responses": RESPONSES,
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "ct_…",
                                   "description": "A personal API token, made on the API tokens page of the "
                                                  "account; it acts with its user's role. A read token only reads."}},
}

PATHS: dict[str, Any] = {
    "/openapi.json": {"get": {
        "operationId": "getOpenApi", "summary": "This document", "tags": ["meta"], "security": [],
        "responses": {"200": json_response("The OpenAPI 3.1 document of /api/v1.", {"type": "object"})},
    }},
}


def document() -> dict[str, Any]:
    """The OpenAPI document: every route module's PATHS, sorted by path."""
    from lab.api import batches, counters, patients, submissions, trail  # the modules import this one

    paths: dict[str, Any] = {}
    for module_paths in (batches.PATHS, patients.PATHS, trail.PATHS, submissions.PATHS, counters.PATHS, PATHS):
        for path, item in module_paths.items():
            paths.setdefault(path, {}).update(item)
    return {
        "openapi": "3.1.0",
        "info": {"title": "CellTrail API", "version": API_VERSION,
                 "description": "Read batches, their records, patients (pseudonymous) and the audit trail; "
                                "submit values that wait for a person's signature in the browser. An API call "
                                "never signs. Times are ISO 8601 UTC; problems are application/problem+json."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": dict(sorted(paths.items())),
        "components": COMPONENTS,
    }


@bp.route("/openapi.json")
def openapi_document() -> Response:
    return jsonify(document())
