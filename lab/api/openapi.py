"""``GET /api/v1/openapi.json``: the API's OpenAPI 3.1 document, merged from each route module's
``PATHS`` with the shared ``COMPONENTS`` (schemas, problem responses, the bearer scheme).

Public: it describes the API and holds no data. Each route module documents its own routes next
to their code (``PATHS``, and ``SCHEMAS`` for the schemas of its own resources, if any), referring
to the shared ones here by name (``ref("Problem")``, ``problems(401, 404)``);
tests/test_api_contract.py checks every route is documented and every answer the tests get
matches its schema.
"""

from __future__ import annotations

from typing import Any

from flask import jsonify
from werkzeug.wrappers import Response

from lab.api.core import PROBLEM_TYPE, TITLES, bp
from workflows.model import StepState

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
#: Beside the shared responses by status, ``Problem4xx``: any other refusal (for a ``4XX`` range).
_ANY_REFUSAL = "Refused: detail says why and what to do (401: see the WWW-Authenticate header)."

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


def strict(properties: dict[str, Any], description: str = "") -> dict[str, Any]:
    """An object schema holding exactly ``properties``, each always present (null where it has no value)."""
    schema: dict[str, Any] = {"type": "object", "required": list(properties), "properties": properties,
                              "additionalProperties": False}
    return {"description": description, **schema} if description else schema


STRING: dict[str, Any] = {"type": "string"}
INTEGER: dict[str, Any] = {"type": "integer"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
NULLABLE_NUMBER: dict[str, Any] = {"type": ["number", "null"]}
URL: dict[str, Any] = {"type": "string", "description": "The resource's address in this API."}
PERSON = strict({"username": STRING, "name": STRING}, "A user: username and full name.")
SIGNATURES = {"type": "array", "items": ref("Signature")}

BATCH_SUMMARY = {
    "batch_number": STRING, "coi": STRING,
    "state": {"type": "string", "description": "The state key of the batch's process definition."},
    "product": {"type": "string", "description": "The process key."}, "process_version": INTEGER,
    "patient_ref": STRING, "updated_at": TIME,
    "version": {"type": "integer", "description": "The batch's optimistic-lock version: send it back with a "
                                                  "submission to refuse it if the batch changed meanwhile."},
    "url": URL,
}
_VALUE = strict({
    "field": STRING, "label": STRING, "text": {"type": "string", "description": "As recorded (canonical text)."},
    "number": NULLABLE_NUMBER, "unit": NULLABLE_STRING, "limit": {"type": "string", "description": "In words."},
    "out_of_limit": BOOLEAN, "message": NULLABLE_STRING, "lot": NULLABLE_STRING, "equipment": NULLABLE_STRING,
    "recorded_by": ref("Person"), "recorded_at": TIME,
    "corrections": {"type": "array", "description": "Every correction of the value, oldest first.", "items": strict({
        "old_value": NULLABLE_STRING, "new_value": STRING, "reason": STRING, "corrected_by": ref("Person"),
        "corrected_at": TIME})},
}, "A field's current value.")
_DERIVED = strict({"key": STRING, "label": STRING, "text": STRING, "number": NULLABLE_NUMBER, "unit": NULLABLE_STRING,
                   "limit": STRING, "out_of_limit": BOOLEAN, "message": NULLABLE_STRING},
                  "A value computed from the entry (never typed); text is empty when it cannot be computed.")
_ENTRY = strict({
    "id": INTEGER, "occurrence": INTEGER, "performed_by": ref("Person"), "performed_at": TIME,
    "comment": NULLABLE_STRING, "values": {"type": "array", "items": _VALUE},
    "derived": {"type": "array", "items": _DERIVED}, "signatures": SIGNATURES,
    "verified_by": {"type": "array", "items": STRING,
                    "description": "Printed names of the verifications that still cover the entry's content."},
    "awaiting_verification": BOOLEAN,
})
_RESULT = strict({
    "id": INTEGER, "value": {"type": "string", "description": "As reported (without its unit)."},
    "number": NULLABLE_NUMBER, "unit": NULLABLE_STRING, "specification": STRING,
    "verdict": {"enum": ["pass", "fail", "interim"]},
    "in_specification": {"type": ["boolean", "null"], "description": "false: out of specification; null: interim."},
    "final": BOOLEAN, "message": NULLABLE_STRING, "comment": NULLABLE_STRING, "recorded_by": ref("Person"),
    "recorded_at": TIME, "late": BOOLEAN, "reason": {"type": ["string", "null"], "description": "Of a correction."},
    "supersedes": {"type": ["integer", "null"], "description": "The result this correction replaced."},
    "current": BOOLEAN, "superseded": BOOLEAN,
    "differs_from_record": {"type": ["string", "null"],
                            "description": "How the result differs from the value computed from the batch record."},
    "signatures": SIGNATURES,
})
BATCH_DETAIL = {
    **BATCH_SUMMARY, "state_title": STRING, "process_title": STRING, "process_sha256": STRING, "started_at": TIME,
    "started_by": ref("Person"),
    "steps": {"type": "array", "description": "In process order.", "items": strict({
        "key": STRING, "title": STRING,
        "state": {"enum": [state.value for state in StepState]},
        "verify": {"type": "boolean", "description": "A second person verifies each entry."},
        "entries": {"type": "array", "items": _ENTRY}})},
    "containers": {"type": "array", "items": strict({
        "code": STRING, "kind": STRING, "title": STRING, "status": STRING, "location": NULLABLE_STRING,
        "volume_ml": NULLABLE_NUMBER, "labels_printed": INTEGER, "reprints": INTEGER})},
    "custody": {"type": "array", "description": "Custody events, oldest first.", "items": strict({
        "occurred_at": TIME, "event": STRING, "container": NULLABLE_STRING, "scanned": STRING,
        "step": NULLABLE_STRING, "from_location": NULLABLE_STRING, "to_location": NULLABLE_STRING,
        "matched": BOOLEAN, "message": NULLABLE_STRING, "by": ref("Person")})},
    "release_tests": {"type": "array", "items": strict({
        "key": STRING, "title": STRING, "method": STRING, "specification": STRING,
        "status": {"enum": ["pass", "fail", "interim", "pending", "n/a"]},
        "results": {"type": "array", "description": "Every result reported, oldest first.", "items": _RESULT}})},
    "deviations": {"type": "array", "items": strict({
        "number": STRING, "title": STRING, "state": STRING, "source": STRING, "opened_at": TIME,
        "closed_at": NULLABLE_TIME})},
    "decisions": {"type": "array", "description": "QA dispositions, oldest first.", "items": strict({
        "decision": STRING, "title": STRING, "state_before": STRING, "state_after": STRING,
        "reason": NULLABLE_STRING, "decided_by": ref("Person"), "decided_at": TIME, "signatures": SIGNATURES})},
    "record_digest": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                      "description": "SHA-256 of the executed batch record's canonical form as it stands: the digest "
                                     "a current printout carries and /verify/{digest} recognises."},
    "pending_submissions": {"type": "array", "items": strict({
        "id": INTEGER, "kind": {"enum": ["step", "result"]}, "key": STRING, "url": URL})},
}

#: Schemas shared by the route modules.
SCHEMAS: dict[str, Any] = {
    "Problem": PROBLEM_SCHEMA,
    "Person": PERSON,
    "Signature": strict({"printed_name": STRING, "meaning": STRING, "signed_at": TIME,
                         "valid": {"type": "boolean", "description": "Still matches the content it signed."}},
                        "An electronic signature as manifested (21 CFR 11.50)."),
    "BatchSummary": strict(BATCH_SUMMARY),
    "BatchPage": strict({"items": {"type": "array", "items": ref("BatchSummary")},
                         "next_cursor": NULLABLE_STRING}),
    "BatchDetail": strict(BATCH_DETAIL),
    "AuditEntry": strict({
        "id": INTEGER, "occurred_at": TIME,
        "actor": strict({"id": {"type": ["integer", "null"], "description": "null: the system."},
                         "username": STRING}),
        "action": STRING, "operation": STRING, "table": STRING, "row_id": STRING, "field": NULLABLE_STRING,
        "old_value": NULLABLE_STRING, "new_value": NULLABLE_STRING, "reason": NULLABLE_STRING,
        "batch_id": {"type": ["integer", "null"]}, "batch_number": NULLABLE_STRING,
        "via": {"type": ["string", "null"], "description": "The API token the change came through, if any."},
        "hash": STRING, "prev_hash": STRING,
    }, "An entry of the audit trail, values as stored."),
    "AuditPage": strict({"items": {"type": "array", "items": ref("AuditEntry")},
                         "next_before": {"type": ["integer", "null"]}}),
    "Patient": strict({
        "coi": STRING, "patient_ref": {"type": "string", "description": "Pseudonymous ID from the clinic or trial."},
        "indication": STRING, "weight_kg": {"type": "number"}, "registered_at": TIME,
        "treating_site": {"oneOf": [{"type": "null"}, strict({"code": STRING, "name": STRING})]},
        "batches": {"type": "array", "items": strict({"batch_number": STRING, "state": STRING, "url": URL})},
    }, "A patient, pseudonymous: never initials or date of birth."),
}

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
RESPONSES["Problem4xx"] = {"description": _ANY_REFUSAL, "content": {PROBLEM_TYPE: {"schema": ref("Problem")}}}

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
    """The OpenAPI document: every route module's PATHS, sorted by path, and the schemas of
    COMPONENTS with those a module adds in its own ``SCHEMAS`` (optional)."""
    from lab.api import batches, counters, patients, submissions, trail  # the modules import this one

    paths: dict[str, Any] = {}
    schemas = dict(SCHEMAS)
    for module in (batches, patients, trail, submissions, counters):
        for path, item in module.PATHS.items():
            paths.setdefault(path, {}).update(item)
        schemas.update(getattr(module, "SCHEMAS", {}))
    paths.update(PATHS)
    return {
        "openapi": "3.1.0",
        "info": {"title": "CellTrail API", "version": API_VERSION,
                 "description": "Read batches, their records, patients (pseudonymous) and the audit trail; "
                                "submit values that wait for a person's signature in the browser. An API call "
                                "never signs. Times are ISO 8601 UTC; problems are application/problem+json."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": dict(sorted(paths.items())),
        "components": {**COMPONENTS, "schemas": dict(sorted(schemas.items()))},
    }


@bp.route("/openapi.json")
def openapi_document() -> Response:
    return jsonify(document())
